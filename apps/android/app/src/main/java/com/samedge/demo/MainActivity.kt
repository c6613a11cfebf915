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
import android.widget.LinearLayout
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
 * Pick a photo, tap = foreground point, long-press = background point; the selected mask is drawn
 * over the photo, and the three multimask outputs (with their predicted IoU) can be chosen.
 *
 * Benchmark mode: `adb shell am start -n com.samedge.demo/.MainActivity --ez benchmark true
 * [--ei warmup 10 --ei runs 50 --ei threads 4]`; see Benchmark.kt.
 */
class MainActivity : AppCompatActivity() {
    companion object {
        /** Photos are downscaled to this longest side: the model sees 256 px anyway. */
        const val MAX_PHOTO_SIDE = 1024
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

    private val pickPhoto = registerForActivityResult(ActivityResultContracts.PickVisualMedia()) { uri ->
        if (uri != null) loadPhoto(uri)
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(buildLayout())
        if (intent.getBooleanExtra("benchmark", false)) {
            runBenchmark(BenchmarkConfig.fromIntent(intent))
            return
        }
        setStatus("Loading ${ModelConstants.ENCODER_FILE} + ${ModelConstants.DECODER_FILE} (${ModelConstants.FORMAT})...")
        lifecycleScope.launch {
            try {
                val p = withContext(worker) { SamPredictor(this@MainActivity) }
                predictor = p
                setStatus("Models loaded (%.2f s + %.2f s). Pick a photo.".format(p.encoderLoadSeconds, p.decoderLoadSeconds))
            } catch (e: Throwable) {
                setStatus("Could not load the models: ${e.message} (copy them into app/src/main/assets, see README)")
            }
        }
    }

    override fun onDestroy() {
        super.onDestroy()
        predictor?.close()
        worker.close()
    }

    @SuppressLint("ClickableViewAccessibility")
    private fun buildLayout(): View {
        val root = LinearLayout(this).apply { orientation = LinearLayout.VERTICAL; setPadding(16, 16, 16, 16) }
        val bar = LinearLayout(this).apply { orientation = LinearLayout.HORIZONTAL }
        bar.addView(Button(this).apply {
            text = "Photo"
            setOnClickListener {
                pickPhoto.launch(PickVisualMediaRequest(ActivityResultContracts.PickVisualMedia.ImageOnly))
            }
        })
        bar.addView(Button(this).apply { text = "Undo"; setOnClickListener { undo() } })
        bar.addView(Button(this).apply { text = "Benchmark"; setOnClickListener { runBenchmark(BenchmarkConfig()) } })
        root.addView(bar)

        val frame = FrameLayout(this)
        imageView = ImageView(this).apply { scaleType = ImageView.ScaleType.FIT_CENTER; adjustViewBounds = false }
        overlayView = ImageView(this).apply { scaleType = ImageView.ScaleType.FIT_CENTER }
        frame.addView(imageView, FrameLayout.LayoutParams(-1, -1))
        frame.addView(overlayView, FrameLayout.LayoutParams(-1, -1))
        root.addView(frame, LinearLayout.LayoutParams(-1, 0, 1f))

        val detector = GestureDetector(this, object : GestureDetector.SimpleOnGestureListener() {
            override fun onDown(e: MotionEvent) = true
            override fun onSingleTapUp(e: MotionEvent): Boolean { addPoint(e.x, e.y, foreground = true); return true }
            override fun onLongPress(e: MotionEvent) { addPoint(e.x, e.y, foreground = false) }
        })
        frame.setOnTouchListener { _, event -> detector.onTouchEvent(event) }

        maskGroup = RadioGroup(this).apply {
            orientation = LinearLayout.HORIZONTAL
            setOnCheckedChangeListener { _, id -> if (id > 0) showMask(id - 1) }
        }
        root.addView(maskGroup)
        status = TextView(this)
        root.addView(status)
        return root
    }

    private fun setStatus(text: String) = runOnUiThread { status.text = text }

    private fun loadPhoto(uri: Uri) {
        val p = predictor ?: return setStatus("Models not loaded")
        lifecycleScope.launch {
            try {
                val bitmap = withContext(worker) { decodeUpright(uri) }
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
                setStatus("Encoder %.0f ms. Tap: foreground point, long-press: background point.".format(ms))
            } catch (e: Throwable) {
                setStatus("Encoder failed: ${e.message}")
            }
        }
    }

    /** ImageDecoder applies the EXIF orientation; software ARGB_8888 so getPixels works. */
    private fun decodeUpright(uri: Uri): Bitmap {
        val source = ImageDecoder.createSource(contentResolver, uri)
        return ImageDecoder.decodeBitmap(source) { decoder, info, _ ->
            decoder.allocator = ImageDecoder.ALLOCATOR_SOFTWARE
            val w = info.size.width
            val h = info.size.height
            val scale = minOf(1f, MAX_PHOTO_SIDE.toFloat() / max(w, h))
            if (scale < 1f) decoder.setTargetSize((w * scale).roundToInt(), (h * scale).roundToInt())
        }.copy(Bitmap.Config.ARGB_8888, false)
    }

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
                        text = "Mask %d  IoU %.2f".format(i + 1, m.iou)
                    })
                }
                val best = result.indices.maxByOrNull { result[it].iou } ?: 0
                maskGroup.check(best + 1)
                showMask(best)
                maskGroup.setOnCheckedChangeListener { _, id -> if (id > 0) showMask(id - 1) }
                setStatus("Decoder + upscaling %.0f ms, %d point(s).".format(ms, prompt.size))
            } catch (e: Throwable) {
                setStatus("Decoder failed: ${e.message}")
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
        setStatus("Benchmark running (${config.warmup} warm-up + ${config.runs} timed runs per model)...")
        lifecycleScope.launch {
            try {
                val file = withContext(worker) { Benchmark.run(this@MainActivity, config) { setStatus(it) } }
                setStatus("Benchmark written: ${file.absolutePath}\n" +
                    "adb pull ${file.absolutePath}")
            } catch (e: Throwable) {
                setStatus("Benchmark failed: ${e.message}")
            }
        }
    }
}
