package com.samedge.demo

import android.annotation.SuppressLint
import android.graphics.Bitmap
import android.graphics.Canvas
import android.graphics.Color
import android.graphics.ImageDecoder
import android.graphics.Matrix
import android.graphics.Paint
import android.net.Uri
import android.os.Bundle
import android.view.GestureDetector
import android.view.MotionEvent
import android.view.View
import android.widget.Button
import android.widget.FrameLayout
import android.widget.ImageView
import android.widget.RadioButton
import android.widget.RadioGroup
import android.widget.TextView
import androidx.activity.result.PickVisualMediaRequest
import androidx.activity.result.contract.ActivityResultContracts
import androidx.appcompat.app.AppCompatActivity
import androidx.lifecycle.lifecycleScope
import java.util.concurrent.Executors
import kotlinx.coroutines.asCoroutineDispatcher
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext
import kotlin.math.max
import kotlin.math.roundToInt

/**
 * "Sample photo" (the bundled assets/sample.jpg) or "Photo…" (the system photo picker); tap = foreground
 * point, long-press = background point; the selected mask is drawn over the photo, and the three
 * multimask outputs (with their predicted IoU) can be chosen. Before anything is loaded, the models'
 * sha256 and the runtime version are checked (ModelCheck); a failed check is shown on screen.
 *
 * Benchmark mode: `adb shell am start -n com.samedge.demo/.MainActivity --ez benchmark true
 * [--ei warmup 10 --ei runs 50 --ei threads 4]`; see Benchmark.kt.
 *
 * Not compiled on the machine this was written on (no Android SDK there): see the README.
 */
class MainActivity : AppCompatActivity() {
    companion object {
        /** Photos are downscaled to this longest side: the model sees IMAGE_SIZE px anyway. */
        const val MAX_PHOTO_SIDE = 1024
        /** The bundled sample photo (copied in by `sam-edge app-bundle`, committed). */
        const val SAMPLE_ASSET = "sample.jpg"
    }

    /** One thread owns every model call (ExecuTorch modules are not meant for concurrent use). */
    private val worker = Executors.newSingleThreadExecutor().asCoroutineDispatcher()
    private var predictor: SamPredictor? = null
    private var photo: Bitmap? = null
    private var imageReady = false
    private val points = ArrayList<PointPrompt>()
    private var masks: List<MaskResult> = emptyList()

    private lateinit var imageView: ImageView
    private lateinit var overlayView: ImageView
    private lateinit var maskGroup: RadioGroup
    private lateinit var status: TextView
    private lateinit var errorView: TextView

    private val pickPhoto = registerForActivityResult(ActivityResultContracts.PickVisualMedia()) { uri ->
        if (uri != null) loadPhoto { decodeUpright(ImageDecoder.createSource(contentResolver, uri)) }
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        bindViews()
        if (intent.getBooleanExtra("benchmark", false)) {
            val config = try {
                BenchmarkConfig.fromIntent(intent)
            } catch (e: IllegalArgumentException) {
                showError(getString(R.string.error_benchmark, e.message))
                return
            }
            runBenchmark(config)
            return
        }
        setStatus(getString(R.string.status_loading, ModelConstants.ENCODER_FILE, ModelConstants.DECODER_FILE,
            ModelConstants.FORMAT, ModelConstants.PRECISION))
        lifecycleScope.launch {
            try {
                val p = withContext(worker) { SamPredictor(this@MainActivity) }
                predictor = p
                setStatus(getString(R.string.status_loaded, p.encoderLoadSeconds, p.decoderLoadSeconds))
            } catch (e: ModelCheckException) {
                // wrong file, missing file or too old a runtime: the message names the file, expected and found
                showError(getString(R.string.error_model_load, e.message))
                setStatus(getString(R.string.status_models_not_loaded))
            } catch (e: Throwable) {
                showError(getString(R.string.error_model_load, "${e.javaClass.simpleName}: ${e.message}"))
                setStatus(getString(R.string.status_models_not_loaded))
            }
        }
    }

    override fun onDestroy() {
        super.onDestroy()
        predictor?.close()
        worker.close()
    }

    @SuppressLint("ClickableViewAccessibility")
    private fun bindViews() {
        imageView = findViewById(R.id.photo)
        overlayView = findViewById(R.id.overlay)
        maskGroup = findViewById(R.id.mask_choices)
        status = findViewById(R.id.status)
        errorView = findViewById(R.id.error)
        findViewById<Button>(R.id.button_sample).setOnClickListener {
            loadPhoto { decodeUpright(ImageDecoder.createSource(assets, SAMPLE_ASSET)) }
        }
        findViewById<Button>(R.id.button_photo).setOnClickListener {
            pickPhoto.launch(PickVisualMediaRequest(ActivityResultContracts.PickVisualMedia.ImageOnly))
        }
        findViewById<Button>(R.id.button_undo).setOnClickListener { undo() }
        findViewById<Button>(R.id.button_benchmark).setOnClickListener { runBenchmark(BenchmarkConfig()) }

        val detector = GestureDetector(this, object : GestureDetector.SimpleOnGestureListener() {
            override fun onDown(e: MotionEvent) = true
            override fun onSingleTapUp(e: MotionEvent): Boolean { addPoint(e.x, e.y, foreground = true); return true }
            override fun onLongPress(e: MotionEvent) { addPoint(e.x, e.y, foreground = false) }
        })
        findViewById<FrameLayout>(R.id.photo_frame).setOnTouchListener { _, event -> detector.onTouchEvent(event) }
        maskGroup.setOnCheckedChangeListener { _, id -> if (id > 0) showMask(id - 1) }
    }

    private fun setStatus(text: String) = runOnUiThread { status.text = text }

    private fun showError(text: String) = runOnUiThread {
        errorView.text = text
        errorView.visibility = View.VISIBLE
    }

    private fun loadPhoto(decode: () -> Bitmap) {
        val p = predictor ?: return setStatus(getString(R.string.status_models_not_loaded))
        lifecycleScope.launch {
            try {
                val bitmap = withContext(worker) { decode() }
                photo = bitmap
                points.clear()
                masks = emptyList()
                imageReady = false
                imageView.setImageBitmap(bitmap)
                overlayView.setImageDrawable(null)
                maskGroup.removeAllViews()
                val ms = withContext(worker) {
                    val t0 = System.nanoTime()
                    p.setImage(bitmap)
                    (System.nanoTime() - t0) / 1e6
                }
                imageReady = true
                setStatus(getString(R.string.status_encoder_done, ms))
            } catch (e: Throwable) {
                setStatus(getString(R.string.error_photo, "${e.javaClass.simpleName}: ${e.message}"))
            }
        }
    }

    /** ImageDecoder applies the EXIF orientation; software ARGB_8888 so getPixels works. */
    private fun decodeUpright(source: ImageDecoder.Source): Bitmap =
        ImageDecoder.decodeBitmap(source) { decoder, info, _ ->
            decoder.allocator = ImageDecoder.ALLOCATOR_SOFTWARE
            val w = info.size.width
            val h = info.size.height
            val scale = minOf(1f, MAX_PHOTO_SIDE.toFloat() / max(w, h))
            if (scale < 1f) decoder.setTargetSize((w * scale).roundToInt(), (h * scale).roundToInt())
        }.copy(Bitmap.Config.ARGB_8888, false)

    /** View coordinates -> bitmap pixels through the inverse of FIT_CENTER's image matrix. */
    private fun addPoint(viewX: Float, viewY: Float, foreground: Boolean) {
        val p = predictor ?: return
        val bmp = photo ?: return
        if (!imageReady) return
        val inverse = Matrix()
        if (!imageView.imageMatrix.invert(inverse)) return
        val pt = floatArrayOf(viewX - imageView.paddingLeft, viewY - imageView.paddingTop)
        inverse.mapPoints(pt)
        if (pt[0] < 0 || pt[1] < 0 || pt[0] >= bmp.width || pt[1] >= bmp.height) return
        points += PointPrompt(pt[0], pt[1], foreground)
        runDecoder(p)
    }

    private fun undo() {
        val p = predictor ?: return
        if (points.isEmpty()) return
        points.removeAt(points.size - 1)
        if (points.isEmpty()) {
            masks = emptyList()
            maskGroup.removeAllViews()
            overlayView.setImageDrawable(null)
        } else {
            runDecoder(p)
        }
    }

    private fun runDecoder(p: SamPredictor) {
        val prompt = points.toList()
        lifecycleScope.launch {
            try {
                val (result, ms) = withContext(worker) {
                    val t0 = System.nanoTime()
                    val r = p.predict(prompt, multimask = true)
                    r to (System.nanoTime() - t0) / 1e6
                }
                masks = result
                maskGroup.setOnCheckedChangeListener(null)
                maskGroup.removeAllViews()
                result.forEachIndexed { i, m ->
                    maskGroup.addView(RadioButton(this@MainActivity).apply {
                        id = i + 1  // RadioGroup ids: mask index + 1
                        text = getString(R.string.mask_choice, i + 1, m.iou)
                    })
                }
                val best = result.indices.maxByOrNull { result[it].iou } ?: 0
                maskGroup.check(best + 1)
                showMask(best)
                maskGroup.setOnCheckedChangeListener { _, id -> if (id > 0) showMask(id - 1) }
                setStatus(getString(R.string.status_decoder_done, ms, prompt.size))
            } catch (e: Throwable) {
                setStatus(getString(R.string.error_decoder, e.message))
            }
        }
    }

    /** Mask (logits > threshold) -> translucent overlay with the point markers. */
    private fun showMask(index: Int) {
        val m = masks.getOrNull(index) ?: return
        val colors = IntArray(m.width * m.height)
        val fill = Color.argb(140, 30, 144, 255)
        for (i in colors.indices) if (m.logits[i] > ModelConstants.MASK_THRESHOLD) colors[i] = fill
        val overlay = Bitmap.createBitmap(colors, m.width, m.height, Bitmap.Config.ARGB_8888).copy(Bitmap.Config.ARGB_8888, true)
        val canvas = Canvas(overlay)
        val radius = max(m.width, m.height) / 120f + 3f
        val paint = Paint(Paint.ANTI_ALIAS_FLAG)
        for (p in points) {
            paint.color = if (p.foreground) Color.GREEN else Color.RED
            canvas.drawCircle(p.x, p.y, radius, paint)
        }
        overlayView.setImageBitmap(overlay)
    }

    private fun runBenchmark(config: BenchmarkConfig) {
        setStatus(getString(R.string.status_benchmark_running, config.warmup, config.runs))
        lifecycleScope.launch {
            try {
                val file = withContext(worker) { Benchmark.run(this@MainActivity, config) { setStatus(it) } }
                setStatus(getString(R.string.status_benchmark_written, file.absolutePath))
            } catch (e: Throwable) {
                setStatus(getString(R.string.error_benchmark, e.message))
            }
        }
    }
}
