package com.samedge.demo

import android.content.Context
import android.graphics.Bitmap
import android.graphics.RectF
import java.io.File
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

/** ExecuTorch .pte (XNNPACK delegate) through the Java Module API. */
class ExecuTorchGraph(path: File) : SamGraph {
    private val module: Module = Module.load(path.absolutePath)

    init {
        val err = module.loadMethod("forward")
        check(err == 0) { "${path.name}: loading method 'forward' failed (ExecuTorch error 0x${err.toString(16)})" }
    }

    override fun run(inputs: List<Pair<FloatArray, LongArray>>): List<FloatArray> {
        val args = inputs.map { (data, shape) -> EValue.from(Tensor.fromBlob(data, shape)) }.toTypedArray()
        return module.forward(*args).map { it.toTensor().dataAsFloatArray }
    }

    override fun close() = module.destroy()
}

/**
 * LiteRT (TFLite) through the Interpreter's signature runner: litert-torch names the inputs
 * args_0.. and the outputs output_0.. in the wrapper's order (as sam_edge/runtime/backend_tflite.py).
 * Integer (full-int8) inputs / outputs are quantised / dequantised here.
 */
class LiteRtGraph(path: File, threads: Int) : SamGraph {
    private val interpreter = Interpreter(path, Interpreter.Options().setNumThreads(threads))
    private val key = interpreter.signatureKeys.let { keys -> if ("serving_default" in keys) "serving_default" else keys.first() }
    private val inKeys = interpreter.getSignatureInputs(key).sortedBy { trailingIndex(it) }
    private val outKeys = interpreter.getSignatureOutputs(key).sortedBy { trailingIndex(it) }

    private fun trailingIndex(name: String) = Regex("(\\d+)$").find(name)?.value?.toInt() ?: 0

    /** Decoder inputs 1 and 2 (point_coords, point_labels) padded to the graph's fixed number of
     * point slots with (0, 0) / PAD_LABEL, as backend_tflite.pad_points; more points are refused. */
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
    /** ExecuTorch loads from a path: copy the asset to files/ once (re-copied when the size changes). */
    fun file(context: Context, name: String): File {
        val out = File(context.filesDir, name)
        val assetSize = context.assets.openFd(name).use { it.length }
        if (!out.exists() || out.length() != assetSize) {
            context.assets.open(name).use { input -> out.outputStream().use { input.copyTo(it) } }
        }
        return out
    }

    fun openGraph(context: Context, name: String, threads: Int = 4): SamGraph {
        val f = file(context, name)
        return when {
            name.endsWith(".pte") -> ExecuTorchGraph(f)
            name.endsWith(".tflite") -> LiteRtGraph(f, threads)
            else -> error("$name: neither .pte (ExecuTorch) nor .tflite (LiteRT)")
        }
    }

    /** encoder_* / decoder_* model files bundled in assets. */
    fun bundled(context: Context): List<String> =
        (context.assets.list("") ?: emptyArray()).filter {
            (it.startsWith("encoder_") || it.startsWith("decoder_")) && (it.endsWith(".pte") || it.endsWith(".tflite"))
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
        var t0 = System.nanoTime()
        encoder = ModelFiles.openGraph(context, ModelConstants.ENCODER_FILE, threads)
        encoderLoadSeconds = (System.nanoTime() - t0) / 1e9
        t0 = System.nanoTime()
        decoder = ModelFiles.openGraph(context, ModelConstants.DECODER_FILE, threads)
        decoderLoadSeconds = (System.nanoTime() - t0) / 1e9
    }

    /** Bitmap -> encoder input 1 x 3 x S x S: ResizeLongestSide (bilinear), then raw 0..255 RGB
     * padded bottom-right with the pixel mean (NORMALIZE_INSIDE) or normalised + zero-padded. */
    fun preprocess(bitmap: Bitmap): FloatArray {
        val s = ModelConstants.IMAGE_SIZE
        val (h, w) = MaskMath.preprocessShape(bitmap.height, bitmap.width, s)
        val resized = Bitmap.createScaledBitmap(bitmap, w, h, true)
        val pixels = IntArray(w * h)
        resized.getPixels(pixels, 0, w, 0, 0, w, h)
        val mean = ModelConstants.PIXEL_MEAN
        val std = ModelConstants.PIXEL_STD
        val out = FloatArray(3 * s * s)
        for (c in 0 until 3) {
            val pad = if (ModelConstants.NORMALIZE_INSIDE) mean[c] else 0f
            val shift = 16 - 8 * c // ARGB: R at bits 16..23, G 8..15, B 0..7
            for (y in 0 until s) for (x in 0 until s) {
                out[c * s * s + y * s + x] = if (y < h && x < w) {
                    val raw = ((pixels[y * w + x] shr shift) and 0xFF).toFloat()
                    if (ModelConstants.NORMALIZE_INSIDE) raw else (raw - mean[c]) / std[c]
                } else pad
            }
        }
        inputHeight = h
        inputWidth = w
        return out
    }

    fun setImage(bitmap: Bitmap) {
        embeddings = null
        val x = preprocess(bitmap)
        embeddings = encoder.run(listOf(x to ModelConstants.ENCODER_INPUTS[0].shape))[0]
        originalHeight = bitmap.height
        originalWidth = bitmap.width
    }

    /** Prompt in original pixels -> (coords 1 x N x 2, labels 1 x N) in the model frame; see
     * sam_edge/runtime/predictor.py _point_inputs and backend_tflite.pad_points. */
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
        val (coords, labels) = pointInputs(points, box)
        val (lowRes, iou) = decode(coords, labels)
        val useMulti = (multimask && ModelConstants.MULTIMASK_INDICES.isNotEmpty()) || ModelConstants.SINGLE_MASK_INDEX < 0
        val indices = if (useMulti) ModelConstants.MULTIMASK_INDICES.toList() else listOf(ModelConstants.SINGLE_MASK_INDEX)
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
