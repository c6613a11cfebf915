package com.samedge.demo

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Test

/**
 * The app's pixel maths against values computed by the Python side it mirrors (the fixtures were
 * produced with Pillow 13.0 / PyTorch 2.13 by the snippets quoted above each one).
 */
class ImageMathTest {
    // numpy.random.default_rng(7).integers(0, 256, (5, 7, 3), dtype=uint8), packed 0xRRGGBB
    private val src = intArrayOf(
        0x8b4ae5, 0xf1a941, 0x06a095, 0x6a26af, 0xbccdaf, 0xe562f9, 0x0a945f,
        0x5693c6, 0x42276a, 0xd5ab2d, 0xa73945, 0x51370e, 0x99b2d7, 0x4c3427,
        0xfa48d7, 0x32a1df, 0x70aca1, 0xe92611, 0x5901dd, 0x06f27f, 0x8f063c,
        0xd25e19, 0xa621f9, 0xbd0ccc, 0x21397c, 0x1ec795, 0xca7748, 0xdc03d1,
        0x7a8893, 0x4d8552, 0x7357a2, 0xe64647, 0xf03e2f, 0xb81f22, 0x3f4192,
    )

    private fun resized(w: Int, h: Int) =
        ImageMath.resizeBilinearPil(src, 7, 5, w, h).map { it and 0xFFFFFF }.toIntArray()

    @Test
    fun downscaleMatchesPil() {
        // numpy.array(Image.fromarray(img).resize((4, 3), Image.BILINEAR))
        val pil = intArrayOf(
            0x887099, 0x787a6b, 0x96718b, 0x6f778f,
            0x9465b6, 0x8f6983, 0x68537c, 0x73616f,
            0x8c677c, 0x8c4097, 0x9d5e54, 0x9d3774,
        )
        assertArrayEquals(pil, resized(4, 3))
    }

    @Test
    fun upscaleMatchesPil() {
        // .resize((11, 6), Image.BILINEAR)
        val pil = intArrayOf(
            0x8b4ae5, 0xb9759a, 0xdca849, 0x46a27e, 0x2a749e, 0x6a26af, 0x9e90af, 0xc7b0c3, 0xe16cf2, 0x6e7da5, 0x0a945f,
            0x6381ce, 0x68679c, 0x72505d, 0x938e4e, 0x9e7f50, 0x983460, 0x7c4e45, 0x7e6f65, 0xa698d0, 0x6f7183, 0x3c4c35,
            0xb667d0, 0x7d6ac1, 0x4274a8, 0x809b82, 0xad7e56, 0xcd2e27, 0x812064, 0x514c8e, 0x45c6a1, 0x5e6f66, 0x731933,
            0xe95188, 0xac5db5, 0x676be5, 0x846ac2, 0x925389, 0x962e3e, 0x5f4590, 0x4771a7, 0x56b570, 0x885972, 0xaf057a,
            0xbc6938, 0xa8537d, 0x9238ce, 0xa427c5, 0x8a29a4, 0x523c6f, 0x527f77, 0x72926b, 0xbb6744, 0xbd3786, 0xb513c1,
            0x7a8893, 0x668775, 0x508159, 0x69648c, 0x9d5181, 0xe64647, 0xec4138, 0xe1362b, 0xbd2223, 0x76325f, 0x3f4192,
        )
        assertArrayEquals(pil, resized(11, 6))
    }

    @Test
    fun oneAxisOnlyMatchesPil() {
        // .resize((7, 2)) resamples rows only; .resize((3, 5)) columns only
        val rows = intArrayOf(
            0x9268cc, 0x7b6c7e, 0x7ba170, 0x9d2f5d, 0x736176, 0x92a4c7, 0x4d4645,
            0xb96973, 0x6b5eb7, 0x954fae, 0x933950, 0x71687f, 0x957a4f, 0x921a93,
        )
        val cols = intArrayOf(
            0x9a858e, 0x7575a7, 0x8e8bb2,
            0x696a7e, 0x97593d, 0x6e6b6d,
            0x8784cf, 0x935075, 0x496a7b,
            0xbb329f, 0x575299, 0xac5f89,
            0x657c7a, 0xc24a55, 0x99324d,
        )
        assertArrayEquals(rows, resized(7, 2))
        assertArrayEquals(cols, resized(3, 5))
        assertArrayEquals(src, resized(7, 5))  // same size: a copy
    }

    @Test
    fun encoderInputPadsWithTheMeanOrZero() {
        val mean = floatArrayOf(123.675f, 116.28f, 103.53f)
        val std = floatArrayOf(58.395f, 57.12f, 57.375f)
        // 7 x 5 -> longest side 4: 4 x 3 (get_preprocess_shape: int(5 * 4 / 7 + 0.5) = 3)
        val raw = ImageMath.encoderInput(src, 7, 5, 4, mean, std, normalizeInside = true)
        assertEquals(3, raw.height)
        assertEquals(4, raw.width)
        assertEquals(0x88.toFloat(), raw.data[0], 0f)             // R of (0, 0)
        assertEquals(0x70.toFloat(), raw.data[16], 0f)            // G plane
        assertEquals(0x99.toFloat(), raw.data[32], 0f)            // B plane
        assertEquals(mean[0], raw.data[3 * 4 + 0], 0f)            // row 3 is padding
        val norm = ImageMath.encoderInput(src, 7, 5, 4, mean, std, normalizeInside = false)
        assertEquals((0x88 - mean[0]) / std[0], norm.data[0], 0f)
        assertEquals(0f, norm.data[3 * 4 + 2], 0f)
    }

    @Test
    fun iouOfMasks() {
        val a = ImageMath.binaryMask(floatArrayOf(1f, 0.5f, -1f, 0f), 0f)
        assertArrayEquals(booleanArrayOf(true, true, false, false), a)
        val b = booleanArrayOf(true, false, true, false)
        assertEquals(1.0 / 3.0, ImageMath.iou(a, b), 1e-12)
        assertEquals(1.0, ImageMath.iou(BooleanArray(3), BooleanArray(3)), 0.0)
    }
}
