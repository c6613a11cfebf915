package com.samedge.demo

import org.junit.Assert.assertEquals
import org.junit.Test

/** MaskMath against sam_edge.runtime.predictor (the values below come from the Python runtime). */
class MaskMathTest {
    @Test
    fun preprocessShapeAndCoordinates() {
        assertEquals(Pair(256, 256), MaskMath.preprocessShape(384, 384, 256))
        assertEquals(Pair(3, 4), MaskMath.preprocessShape(5, 7, 4))
        val (x, y) = MaskMath.toModelFrame(192.0, 96.0, 384, 384, 256)
        assertEquals(128f, x, 0f)
        assertEquals(64f, y, 0f)
    }

    @Test
    fun postprocessMatchesUpscaleLowRes() {
        // low = numpy.random.default_rng(3).normal(size=(1, 2, 4, 4)).astype(float32);
        // upscale_low_res(low, 8, (5, 8), (7, 11))[0, 1]
        val low = floatArrayOf(
            2.040919f, -2.555665f, 0.418099f, -0.567770f, -0.452649f, -0.215597f, -2.019986f, -0.231932f,
            -0.865213f, 3.322999f, 0.225787f, -0.352631f, -0.281287f, -0.668046f, -1.055151f, -0.390801f,
            0.481945f, -0.238554f, 0.957759f, -0.199802f, 0.024260f, 1.545821f, 0.545106f, -0.505229f,
            -0.182839f, 0.540525f, 1.935088f, -0.269620f, -0.243559f, 1.002314f, -0.886460f, -0.291720f,
        )
        val expected = floatArrayOf(
            0.481945f, 0.375508f, 0.187196f, -0.053022f, 0.033490f, 0.359603f, 0.660882f, 0.667928f, 0.273745f, -0.028799f, -0.199802f,
            0.416562f, 0.357441f, 0.252842f, 0.121888f, 0.209569f, 0.457583f, 0.663435f, 0.616200f, 0.223846f, -0.074694f, -0.243434f,
            0.302140f, 0.325822f, 0.367722f, 0.427981f, 0.517709f, 0.629048f, 0.667901f, 0.525675f, 0.136523f, -0.155011f, -0.319791f,
            0.138681f, 0.280654f, 0.531836f, 0.865256f, 0.957909f, 0.873998f, 0.674281f, 0.396354f, 0.011776f, -0.269749f, -0.428872f,
            0.019970f, 0.200031f, 0.518602f, 0.943252f, 1.089219f, 1.030820f, 0.831341f, 0.525852f, 0.075805f, -0.254593f, -0.441340f,
            -0.071893f, 0.098136f, 0.398958f, 0.805679f, 1.035197f, 1.134766f, 1.078808f, 0.810642f, 0.253099f, -0.161500f, -0.395839f,
            -0.131064f, 0.005275f, 0.246491f, 0.580651f, 0.893134f, 1.189721f, 1.324999f, 1.121295f, 0.455342f, -0.045460f, -0.328522f,
        )
        val got = MaskMath.postprocess(low, 1, 4, 8, 5, 8, 7, 11)
        assertEquals(expected.size, got.size)
        for (i in expected.indices) assertEquals("pixel $i", expected[i], got[i], 2e-6f)
    }

    @Test
    fun latencyStatsFollowTheHost() {
        // benchmarks.devices.latency_stats([1, 2, 3, 4, 5, 6]): p50 3.5, p90 index round(4.5) = 4 -> 5
        val s = MaskMath.latencyStats(listOf(6.0, 1.0, 2.0, 3.0, 4.0, 5.0))!!
        assertEquals(1.0, s["min"]!!.toDouble(), 0.0)
        assertEquals(3.5, s["p50"]!!.toDouble(), 0.0)
        assertEquals(5.0, s["p90"]!!.toDouble(), 0.0)
        assertEquals(6, s["n"]!!.toInt())
    }
}
