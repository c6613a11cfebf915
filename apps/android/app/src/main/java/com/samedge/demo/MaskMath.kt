package com.samedge.demo

import kotlin.math.max
import kotlin.math.min
import kotlin.math.sqrt

/**
 * Pure pre/post-processing maths, mirroring sam_edge/transforms.py (ResizeLongestSide) and
 * sam_edge/runtime/predictor.py (postprocess_masks: bilinear to SxS, crop to the resized image,
 * bilinear to the original size, PyTorch align_corners=False sampling, no antialiasing).
 * Same code as apps/ios/SamEdgeDemo/MaskMath.swift.
 */
object MaskMath {
    /** (h, w) after scaling so that the longer side equals [longSide] (get_preprocess_shape). */
    fun preprocessShape(height: Int, width: Int, longSide: Int): Pair<Int, Int> {
        val scale = longSide.toDouble() / max(height, width)
        return Pair((height * scale + 0.5).toInt(), (width * scale + 0.5).toInt())
    }

    /** Original-image pixel -> model input frame (ResizeLongestSide.apply_coords). */
    fun toModelFrame(x: Double, y: Double, originalHeight: Int, originalWidth: Int, longSide: Int): Pair<Float, Float> {
        val (h, w) = preprocessShape(originalHeight, originalWidth, longSide)
        return Pair((x * w / originalWidth).toFloat(), (y * h / originalHeight).toFloat())
    }

    private class Axis(val i0: IntArray, val i1: IntArray, val w1: FloatArray)

    /** src = max((dst + 0.5) * in / out - 0.5, 0) for dst in 0 until count (count <= outSize). */
    private fun axisTable(inSize: Int, outSize: Int, count: Int): Axis {
        val scale = inSize.toDouble() / outSize
        val i0 = IntArray(count)
        val i1 = IntArray(count)
        val w1 = FloatArray(count)
        for (d in 0 until count) {
            val src = max((d + 0.5) * scale - 0.5, 0.0)
            val a = min(src.toInt(), inSize - 1)
            i0[d] = a
            i1[d] = if (a < inSize - 1) a + 1 else a
            w1[d] = (src - a).toFloat()
        }
        return Axis(i0, i1, w1)
    }

    /** Bilinear resize of the row-major inH x inW plane at [offset] of [src] to outH x outW,
     * keeping the top-left cropH x cropW of the output. */
    fun resizeBilinear(
        src: FloatArray, offset: Int, inH: Int, inW: Int, outH: Int, outW: Int,
        cropH: Int = outH, cropW: Int = outW,
    ): FloatArray {
        val ys = axisTable(inH, outH, cropH)
        val xs = axisTable(inW, outW, cropW)
        val out = FloatArray(cropH * cropW)
        for (y in 0 until cropH) {
            val r0 = offset + ys.i0[y] * inW
            val r1 = offset + ys.i1[y] * inW
            val wy = ys.w1[y]
            for (x in 0 until cropW) {
                val x0 = xs.i0[x]
                val x1 = xs.i1[x]
                val wx = xs.w1[x]
                val top = src[r0 + x0] * (1 - wx) + src[r0 + x1] * wx
                val bottom = src[r1 + x0] * (1 - wx) + src[r1 + x1] * wx
                out[y * cropW + x] = top * (1 - wy) + bottom * wy
            }
        }
        return out
    }

    /** Low-res logit plane k (m x m) of [lowRes] -> logits at the original size. */
    fun postprocess(
        lowRes: FloatArray, k: Int, m: Int, imageSize: Int,
        inputH: Int, inputW: Int, originalH: Int, originalW: Int,
    ): FloatArray {
        val cropped = resizeBilinear(lowRes, k * m * m, m, m, imageSize, imageSize, inputH, inputW)
        return resizeBilinear(cropped, 0, inputH, inputW, originalH, originalW)
    }

    /**
     * {min, p50, p90, mean, std, n} in ms with the definitions of benchmarks.devices.latency_stats
     * (p50 the median, p90 the nearest-rank element with round-half-to-even, population std).
     */
    fun latencyStats(values: List<Double>): Map<String, Number>? {
        if (values.isEmpty()) return null
        val ms = values.sorted()
        val n = ms.size
        val mean = ms.sum() / n
        val mid = n / 2
        val p50 = if (n % 2 == 1) ms[mid] else (ms[mid - 1] + ms[mid]) / 2
        val std = if (n > 1) sqrt(ms.sumOf { (it - mean) * (it - mean) } / n) else 0.0
        val p90 = ms[min(n - 1, Math.rint(0.9 * (n - 1)).toInt())]
        return linkedMapOf("min" to ms[0], "p50" to p50, "p90" to p90, "mean" to mean, "std" to std, "n" to n)
    }
}
