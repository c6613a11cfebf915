package com.samedge.demo

import kotlin.math.ceil
import kotlin.math.max

/**
 * Pixel maths free of Android classes (JVM-tested in src/test/.../ImageMathTest.kt):
 *
 * - [resizeBilinearPil]: PIL's `Image.resize(size, Image.BILINEAR)` on 8-bit RGB, with its integer
 *   arithmetic (Pillow's libImaging/Resample.c: triangle filter widened by the downscale factor,
 *   22-bit fixed-point coefficients, horizontal pass then vertical pass, each rounded to 8 bits).
 *   sam_edge.transforms.ResizeLongestSide resizes with it, so the app feeds the encoder the pixels
 *   the Python runtime feeds it (Bitmap.createScaledBitmap does not antialias on downscaling).
 * - [encoderInput]: sam_edge.runtime.predictor.encoder_input on packed ARGB pixels.
 * - [binaryMask], [iou]: the instrumented golden-mask test's comparison.
 */
object ImageMath {
    private const val PRECISION_BITS = 32 - 8 - 2

    /** One axis of a resample: for output index i, source taps bounds[2i] until bounds[2i] + bounds[2i+1]
     * with weights kk[i * ksize + t] in 1 / 2^22 units. */
    class Coefficients(val ksize: Int, val bounds: IntArray, val kk: IntArray)

    private fun triangle(x: Double): Double {
        val a = if (x < 0.0) -x else x
        return if (a < 1.0) 1.0 - a else 0.0
    }

    /** Pillow's precompute_coeffs + normalize_coeffs_8bpc for the bilinear filter (support 1). */
    fun coefficients(inSize: Int, outSize: Int): Coefficients {
        require(inSize > 0 && outSize > 0) { "resize $inSize -> $outSize: sizes must be positive" }
        val scale = inSize.toDouble() / outSize
        val filterScale = max(scale, 1.0)
        val support = 1.0 * filterScale
        val ksize = ceil(support).toInt() * 2 + 1
        val bounds = IntArray(outSize * 2)
        val kk = IntArray(outSize * ksize)
        val k = DoubleArray(ksize)
        for (xx in 0 until outSize) {
            val center = (xx + 0.5) * scale
            val ss = 1.0 / filterScale
            var xmin = (center - support + 0.5).toInt()  // C's (int): truncation toward zero
            if (xmin < 0) xmin = 0
            var xmax = (center + support + 0.5).toInt()
            if (xmax > inSize) xmax = inSize
            xmax -= xmin
            var ww = 0.0
            for (x in 0 until xmax) {
                val w = triangle((x + xmin - center + 0.5) * ss)
                k[x] = w
                ww += w
            }
            for (x in 0 until ksize) {
                val v = if (x < xmax) (if (ww != 0.0) k[x] / ww else k[x]) else 0.0
                kk[xx * ksize + x] = if (v < 0) (-0.5 + v * (1 shl PRECISION_BITS)).toInt()
                else (0.5 + v * (1 shl PRECISION_BITS)).toInt()
            }
            bounds[xx * 2] = xmin
            bounds[xx * 2 + 1] = xmax
        }
        return Coefficients(ksize, bounds, kk)
    }

    private fun clip8(v: Int): Int = (v shr PRECISION_BITS).coerceIn(0, 255)

    /** One resample pass over packed 0x??RRGGBB pixels; [horizontal] picks the axis. */
    private fun pass(src: IntArray, w: Int, h: Int, outW: Int, outH: Int, c: Coefficients, horizontal: Boolean): IntArray {
        val out = IntArray(outW * outH)
        val half = 1 shl (PRECISION_BITS - 1)
        for (y in 0 until outH) {
            for (x in 0 until outW) {
                val i = if (horizontal) x else y
                val start = c.bounds[i * 2]
                val taps = c.bounds[i * 2 + 1]
                val base = i * c.ksize
                var r = half
                var g = half
                var b = half
                for (t in 0 until taps) {
                    val p = if (horizontal) src[y * w + start + t] else src[(start + t) * w + x]
                    val wt = c.kk[base + t]
                    r += ((p shr 16) and 0xFF) * wt
                    g += ((p shr 8) and 0xFF) * wt
                    b += (p and 0xFF) * wt
                }
                out[y * outW + x] = (0xFF shl 24) or (clip8(r) shl 16) or (clip8(g) shl 8) or clip8(b)
            }
        }
        return out
    }

    /**
     * Packed ARGB pixels ([width] x [height], row-major, alpha ignored) resized to [outWidth] x
     * [outHeight] exactly as PIL's BILINEAR resize of the RGB image; returns 0xFFRRGGBB pixels.
     */
    fun resizeBilinearPil(argb: IntArray, width: Int, height: Int, outWidth: Int, outHeight: Int): IntArray {
        require(argb.size == width * height) { "${argb.size} pixels for a $width x $height image" }
        var src = argb
        var w = width
        if (outWidth != width) {
            src = pass(src, w, height, outWidth, height, coefficients(width, outWidth), horizontal = true)
            w = outWidth
        }
        if (outHeight != height) {
            src = pass(src, w, height, w, outHeight, coefficients(height, outHeight), horizontal = false)
        }
        return if (src === argb) IntArray(argb.size) { (0xFF shl 24) or (argb[it] and 0xFFFFFF) } else src
    }

    /** The encoder's input for a photo and the resized (h, w) it occupies. */
    class EncoderInput(val data: FloatArray, val height: Int, val width: Int)

    /**
     * Photo pixels -> encoder input 1 x 3 x S x S (planar RGB): ResizeLongestSide with PIL's bilinear
     * resize, then raw 0..255 values padded bottom-right with [mean] ([normalizeInside]: the graph
     * normalises) or (x - mean) / std padded with zeros, as sam_edge.runtime.predictor.encoder_input.
     */
    fun encoderInput(
        argb: IntArray, width: Int, height: Int, imageSize: Int,
        mean: FloatArray, std: FloatArray, normalizeInside: Boolean,
    ): EncoderInput {
        val (h, w) = MaskMath.preprocessShape(height, width, imageSize)
        val resized = resizeBilinearPil(argb, width, height, w, h)
        val s = imageSize
        val out = FloatArray(3 * s * s)
        for (c in 0 until 3) {
            val pad = if (normalizeInside) mean[c] else 0f
            val shift = 16 - 8 * c  // R at bits 16..23, G 8..15, B 0..7
            val plane = c * s * s
            for (y in 0 until s) for (x in 0 until s) {
                out[plane + y * s + x] = if (y < h && x < w) {
                    val raw = ((resized[y * w + x] shr shift) and 0xFF).toFloat()
                    if (normalizeInside) raw else (raw - mean[c]) / std[c]
                } else pad
            }
        }
        return EncoderInput(out, h, w)
    }

    /** logits > [threshold] (the app's and sam-edge's mask rule). */
    fun binaryMask(logits: FloatArray, threshold: Float): BooleanArray =
        BooleanArray(logits.size) { logits[it] > threshold }

    /** Intersection over union of two masks of the same size; 1.0 when both are empty. */
    fun iou(a: BooleanArray, b: BooleanArray): Double {
        require(a.size == b.size) { "masks of ${a.size} and ${b.size} pixels" }
        var inter = 0L
        var union = 0L
        for (i in a.indices) {
            if (a[i] && b[i]) inter++
            if (a[i] || b[i]) union++
        }
        return if (union == 0L) 1.0 else inter.toDouble() / union
    }
}
