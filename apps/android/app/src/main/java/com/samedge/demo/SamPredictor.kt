package com.samedge.demo

import android.content.Context
import android.graphics.Bitmap
import android.graphics.RectF
import java.io.File
import java.io.FileNotFoundException
import java.nio.ByteBuffer
import java.nio.ByteOrder
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor
import org.tensorflow.lite.DataType
import org.tensorflow.lite.Interpreter
import kotlin.math.roundToInt

/** A click in original-image pixels. */
data class PointPrompt(val x: Float, val y: Float, val foreground: Boolean)

/** One decoder mask at the original image size: logits, row-major height x width. */
class MaskResult(val width: Int, val height: Int, val logits: FloatArray, val iou: Float, val outputIndex: Int)

/** One exported graph: float32 arrays in, float32 arrays out, in ModelConstants' graph order. */
interface SamGraph : AutoCloseable {
    fun run(inputs: List<Pair<FloatArray, LongArray>>): List<FloatArray>
}

/**
 * ExecuTorch .pte (XNNPACK delegate) through the Module API of org.pytorch:executorch-android
 * (1.x: `loadMethod` throws ExecutorchRuntimeException instead of returning an error code;
 * [threads] sizes the threadpool, 0 = the runtime's default).
 */
class ExecuTorchGraph(path: File, threads: Int) : SamGraph {
    private val module: Module = Module.load(path.absolutePath, Module.LOAD_MODE_FILE, threads)

    init {
        try {
            module.loadMethod("forward")
        } catch (e: RuntimeException) {
            module.destroy()
            throw IllegalStateException("${path.name}: loading method 'forward' failed: ${e.message}", e)
        }
    }

    override fun run(inputs: List<Pair<FloatArray, LongArray>>): List<FloatArray> {
        val args = inputs.map { (data, shape) -> EValue.from(Tensor.fromBlob(data, shape)) }.toTypedArray()
        return module.forward(*args).map { it.toTensor().dataAsFloatArray }
    }

    override fun close() = module.destroy()
}

/**
 * LiteRT (TFLite) through the Interpreter's signature runner: litert-torch names the inputs
 * args_0.. and the outputs output_0.. in the wrapper's order (as sam_edge/formats/tflite.py).
 * Integer (full-int8) inputs / outputs are quantised / dequantised here.
 */
class LiteRtGraph(path: File, threads: Int) : SamGraph {
    private val interpreter = Interpreter(path, Interpreter.Options().setNumThreads(threads))
    private val key = interpreter.signatureKeys.let { keys -> if ("serving_default" in keys) "serving_default" else keys.first() }
    private val inKeys = interpreter.getSignatureInputs(key).sortedBy { trailingIndex(it) }
    private val outKeys = interpreter.getSignatureOutputs(key).sortedBy { trailingIndex(it) }

    private fun trailingIndex(name: String) = Regex("(\\d+)$").find(name)?.value?.toInt() ?: 0

    /** Decoder inputs 1 and 2 (point_coords, point_labels) padded to the graph's fixed number of
     * point slots with (0, 0) / PAD_LABEL, as sam_edge/formats/tflite.py pad_points; more points are refused. */
    private fun padPoints(inputs: List<Pair<FloatArray, LongArray>>): List<Pair<FloatArray, LongArray>> {
        if (inputs.size != 5) return inputs
        val slots = interpreter.getInputTensorFromSignature(inKeys[2], key).shape()[1]
        val n = inputs[2].first.size
        require(n <= slots) { "$n points given, this TFLite decoder has $slots point slots (re-export with a larger max_points)" }
        if (n == slots) return inputs
        val coords = inputs[1].first.copyOf(slots * 2)  // zero-filled
        val labels = FloatArray(slots) { if (it < n) inputs[2].first[it] else ModelConstants.PAD_LABEL }
        return inputs.toMutableList().apply {
            this[1] = coords to longArrayOf(1, slots.toLong(), 2)
            this[2] = labels to longArrayOf(1, slots.toLong())
        }
    }

    override fun run(inputs: List<Pair<FloatArray, LongArray>>): List<FloatArray> {
        require(inputs.size == inKeys.size) { "expected ${inKeys.size} inputs, got ${inputs.size}" }
        val feed = HashMap<String, Any>()
        padPoints(inputs).forEachIndexed { i, (data, _) ->
            val t = interpreter.getInputTensorFromSignature(inKeys[i], key)
            feed[inKeys[i]] = when (t.dataType()) {
                DataType.FLOAT32 -> floatBuffer(data)
                DataType.INT8 -> {
                    val q = t.quantizationParams()
                    val buf = ByteBuffer.allocateDirect(data.size).order(ByteOrder.nativeOrder())
                    for (v in data) buf.put((v / q.scale + q.zeroPoint).roundToInt().coerceIn(-128, 127).toByte())
                    buf.rewind()
                    buf
                }
                else -> error("${inKeys[i]}: unsupported input type ${t.dataType()}")
            }
        }
        val outputs = HashMap<String, Any>()
        val outTensors = outKeys.map { interpreter.getOutputTensorFromSignature(it, key) }
        outKeys.forEachIndexed { i, k ->
            outputs[k] = ByteBuffer.allocateDirect(outTensors[i].numBytes()).order(ByteOrder.nativeOrder())
        }
        interpreter.runSignature(feed, outputs, key)
        return outKeys.mapIndexed { i, k ->
            val buf = (outputs[k] as ByteBuffer).apply { rewind() }
            val t = outTensors[i]
            when (t.dataType()) {
                DataType.FLOAT32 -> FloatArray(t.numElements()).also { buf.asFloatBuffer().get(it) }
                DataType.INT8 -> {
                    val q = t.quantizationParams()
                    FloatArray(t.numElements()) { (buf.get().toInt() - q.zeroPoint) * q.scale }
                }
                else -> error("$k: unsupported output type ${t.dataType()}")
            }
        }
    }

    private fun floatBuffer(data: FloatArray): ByteBuffer {
        val buf = ByteBuffer.allocateDirect(data.size * 4).order(ByteOrder.nativeOrder())
        buf.asFloatBuffer().put(data)
        return buf
    }

    override fun close() = interpreter.close()
}

object ModelFiles {
    /** The runtime versions this APK bundles (BuildConfig fields written from gradle/libs.versions.toml). */
    val bundledRuntimes: Map<String, String> = mapOf(
        "executorch" to BuildConfig.EXECUTORCH_VERSION,
        "litert" to BuildConfig.LITERT_VERSION,
    )

    /** The sha256 ModelConstants.kt records for [name]; null for other bundled models (benchmark mode). */
    fun expectedSha256(name: String): String? = when (name) {
        ModelConstants.ENCODER_FILE -> ModelConstants.ENCODER_SHA256
        ModelConstants.DECODER_FILE -> ModelConstants.DECODER_SHA256
        else -> null
    }

    /**
     * The checks before a model is loaded: a file of ModelConstants.RUNTIME's kind needs that runtime
     * at MIN_RUNTIME_VERSION or newer. Throws [ModelCheckException] with the on-screen message.
     */
    fun checkRuntime(name: String) {
        val runtime = ModelCheck.runtimeOf(name)
        if (runtime != null && runtime != ModelConstants.RUNTIME && expectedSha256(name) == null) return
        ModelCheck.runtimeProblem(name, ModelConstants.RUNTIME, ModelConstants.MIN_RUNTIME_VERSION,
            ModelConstants.RUNTIME, ModelConstants.EXPORTER_VERSION, bundledRuntimes)
            ?.let { throw ModelCheckException(it) }
    }

    /**
     * ExecuTorch loads from a path: the asset is copied to files/ (through a temporary file, renamed
     * when complete). A model named in ModelConstants must have the sha256 recorded there, checked on
     * the copy in files/ at every load and on the asset when it is (re)copied; other bundled models
     * (benchmark mode) are copied afresh each time.
     */
    fun file(context: Context, name: String): File {
        val out = File(context.filesDir, name)
        val expected = expectedSha256(name)
        if (expected != null && out.isFile && ModelCheck.sha256Hex(out).equals(expected, ignoreCase = true)) return out
        val tmp = File(context.filesDir, "$name.part")
        val found = try {
            context.assets.open(name).use { input -> tmp.outputStream().use { ModelCheck.sha256Hex(input, it) } }
        } catch (e: FileNotFoundException) {
            tmp.delete()
            throw ModelCheckException(ModelCheck.missingAsset(name))
        }
        if (expected != null) {
            ModelCheck.sha256Problem(name, expected, found)?.let {
                tmp.delete()
                throw ModelCheckException(it)
            }
        }
        check(tmp.renameTo(out)) { "$name: could not move the copied model to ${out.absolutePath}" }
        return out
    }

    /** Checked and copied: the file to hand to [open] (whose time is the model's load time). */
    fun prepare(context: Context, name: String): File {
        checkRuntime(name)
        return file(context, name)
    }

    /** Load a prepared model file with the runtime its extension names. */
    fun open(file: File, threads: Int = 4): SamGraph = when (ModelCheck.runtimeOf(file.name)) {
        "executorch" -> ExecuTorchGraph(file, threads)
        "litert" -> LiteRtGraph(file, threads)
        else -> throw ModelCheckException("${file.name}: neither .pte (ExecuTorch) nor .tflite (LiteRT)")
    }

    /** encoder_* / decoder_* model files bundled in assets. */
    fun bundled(context: Context): List<String> =
        (context.assets.list("") ?: emptyArray()).filter {
            (it.startsWith("encoder_") || it.startsWith("decoder_")) && ModelCheck.runtimeOf(it) != null
        }.sorted()
}

/** Kotlin twin of sam_edge/runtime/predictor.py (ArtifactPredictor) over ModelConstants' artifacts. */
class SamPredictor(context: Context, threads: Int = 4) : AutoCloseable {
    val encoderLoadSeconds: Double
    val decoderLoadSeconds: Double
    private val encoder: SamGraph
    private val decoder: SamGraph

    private var embeddings: FloatArray? = null
    var originalHeight = 0
        private set
    var originalWidth = 0
        private set
    private var inputHeight = 0
    private var inputWidth = 0

    init {
        // Refuse before loading anything: a runtime older than the exporter, or a bundled file that is
        // not the one ModelConstants.kt was generated for (ModelCheckException, shown on screen).
        ModelFiles.checkRuntime(ModelConstants.ENCODER_FILE)
        ModelFiles.checkRuntime(ModelConstants.DECODER_FILE)
        val encoderFile = ModelFiles.prepare(context, ModelConstants.ENCODER_FILE)
        val decoderFile = ModelFiles.prepare(context, ModelConstants.DECODER_FILE)
        var t0 = System.nanoTime()
        encoder = ModelFiles.open(encoderFile, threads)
        encoderLoadSeconds = (System.nanoTime() - t0) / 1e9
        t0 = System.nanoTime()
        decoder = try {
            ModelFiles.open(decoderFile, threads)
        } catch (e: Throwable) {
            encoder.close()
            throw e
        }
        decoderLoadSeconds = (System.nanoTime() - t0) / 1e9
    }

    /** Bitmap -> encoder input 1 x 3 x S x S: ResizeLongestSide with PIL's bilinear arithmetic, then raw
     * 0..255 RGB padded bottom-right with the pixel mean (NORMALIZE_INSIDE) or normalised + zero-padded
     * (ImageMath.encoderInput, the twin of sam_edge.runtime.predictor.encoder_input). */
    fun preprocess(bitmap: Bitmap): FloatArray {
        val w = bitmap.width
        val h = bitmap.height
        val pixels = IntArray(w * h)
        bitmap.getPixels(pixels, 0, w, 0, 0, w, h)
        val x = ImageMath.encoderInput(pixels, w, h, ModelConstants.IMAGE_SIZE, ModelConstants.PIXEL_MEAN,
            ModelConstants.PIXEL_STD, ModelConstants.NORMALIZE_INSIDE)
        inputHeight = x.height
        inputWidth = x.width
        return x.data
    }

    fun setImage(bitmap: Bitmap) {
        embeddings = null
        val x = preprocess(bitmap)
        embeddings = encoder.run(listOf(x to ModelConstants.ENCODER_INPUTS[0].shape))[0]
        originalHeight = bitmap.height
        originalWidth = bitmap.width
    }

    /** Prompt in original pixels -> (coords 1 x N x 2, labels 1 x N) in the model frame; see
     * sam_edge/runtime/feeds.py point_inputs and sam_edge/formats/tflite.py pad_points. */
    fun pointInputs(points: List<PointPrompt>, box: RectF? = null): Pair<FloatArray, FloatArray> {
        val slots = ModelConstants.FIXED_POINT_SLOTS
        val maxPoints = if (slots > 0) slots else if (ModelConstants.POINTS_MAX > 0) ModelConstants.POINTS_MAX else MAX_POINTS
        promptRuleError(points.size, box, maxPoints)?.let { throw IllegalArgumentException(it) }
        val coords = ArrayList<Float>()
        val labels = ArrayList<Float>()
        val s = ModelConstants.IMAGE_SIZE
        for (p in points) {
            val (mx, my) = MaskMath.toModelFrame(p.x.toDouble(), p.y.toDouble(), originalHeight, originalWidth, s)
            coords += listOf(mx, my)
            labels += if (p.foreground) ModelConstants.LABEL_FOREGROUND else ModelConstants.LABEL_BACKGROUND
        }
        if (box != null) {
            val a = MaskMath.toModelFrame(box.left.toDouble(), box.top.toDouble(), originalHeight, originalWidth, s)
            val b = MaskMath.toModelFrame(box.right.toDouble(), box.bottom.toDouble(), originalHeight, originalWidth, s)
            coords += listOf(a.first, a.second, b.first, b.second)
            labels += listOf(ModelConstants.LABEL_BOX_TOP_LEFT, ModelConstants.LABEL_BOX_BOTTOM_RIGHT)
        } else {
            coords += listOf(0f, 0f)
            labels += ModelConstants.LABEL_NOT_A_POINT
        }
        while (slots > 0 && labels.size < slots) {
            coords += listOf(0f, 0f)
            labels += ModelConstants.PAD_LABEL
        }
        return coords.toFloatArray() to labels.toFloatArray()
    }

    /** Raw decoder run -> (low_res_masks 1 x M x m x m, iou_predictions 1 x M). */
    fun decode(coords: FloatArray, labels: FloatArray): Pair<FloatArray, FloatArray> {
        val emb = checkNotNull(embeddings) { "set an image before prompting" }
        val m = ModelConstants.MASK_INPUT_SIZE
        val n = labels.size.toLong()
        val out = decoder.run(listOf(
            emb to ModelConstants.DECODER_INPUTS[0].shape,
            coords to longArrayOf(1, n, 2),
            labels to longArrayOf(1, n),
            FloatArray(m * m) to longArrayOf(1, 1, m.toLong(), m.toLong()),
            floatArrayOf(0f) to longArrayOf(1),
        ))
        check(out[0].size == ModelConstants.NUM_MASK_OUTPUTS * m * m) { "low_res_masks has ${out[0].size} values" }
        return out[0] to out[1]
    }

    /** Masks at the original size: the multimask outputs (multimask) or the single-mask output. */
    fun predict(points: List<PointPrompt>, box: RectF? = null, multimask: Boolean = true): List<MaskResult> {
        val useMulti = (multimask && ModelConstants.MULTIMASK_INDICES.isNotEmpty()) || ModelConstants.SINGLE_MASK_INDEX < 0
        val indices = if (useMulti) ModelConstants.MULTIMASK_INDICES.toList() else listOf(ModelConstants.SINGLE_MASK_INDEX)
        return predictOutputs(points, box, indices)
    }

    /** The masks at positions [indices] of low_res_masks (0 until NUM_MASK_OUTPUTS), upscaled to the
     * original size (sam_edge.runtime.predictor.upscale_low_res). */
    fun predictOutputs(points: List<PointPrompt>, box: RectF?, indices: List<Int>): List<MaskResult> {
        for (k in indices) require(k in 0 until ModelConstants.NUM_MASK_OUTPUTS) {
            "mask index $k: low_res_masks has ${ModelConstants.NUM_MASK_OUTPUTS} outputs"
        }
        val (coords, labels) = pointInputs(points, box)
        val (lowRes, iou) = decode(coords, labels)
        return indices.map { k ->
            val logits = MaskMath.postprocess(lowRes, k, ModelConstants.MASK_INPUT_SIZE, ModelConstants.IMAGE_SIZE,
                inputHeight, inputWidth, originalHeight, originalWidth)
            MaskResult(originalWidth, originalHeight, logits, iou[k], k)
        }
    }

    override fun close() {
        encoder.close()
        decoder.close()
    }
}

/** The prompt rule's default limit: ONNX / ExecuTorch / Core ML decoders take 1..64 point rows. */
const val MAX_POINTS = 64

/** The prompt rule, the same in every runtime (sam_edge/predictor.py prompt_rule_error,
 * apps/web/prompt_rule.js, the iOS sample), word for word: the decoder takes at most [maxPoints]
 * point rows, a box fills 2 of them and a prompt without a box 1 padding row; a box needs a width
 * and a height. null when the prompt is usable. */
fun promptRuleError(numPoints: Int, box: RectF?, maxPoints: Int): String? {
    if (box != null) {
        val b = listOf(box.left, box.top, box.right, box.bottom).map { it.toDouble() }
        if (b[2] == b[0] || b[3] == b[1]) {
            val text = b.joinToString(", ") { if (it == Math.rint(it) && Math.abs(it) < 1e15) it.toLong().toString() else it.toString() }
            return "box [$text] has zero width or height (x0 == x1 or y0 == y1)"
        }
    }
    val limit = maxPoints - (if (box == null) 1 else 2)
    if (numPoints > limit) {
        return "point_coords: $numPoints points, at most $limit ${if (box == null) "without" else "with"} a box " +
            "(max_points=$maxPoints decoder point rows: a box fills 2, no box 1 padding row)"
    }
    return null
}
