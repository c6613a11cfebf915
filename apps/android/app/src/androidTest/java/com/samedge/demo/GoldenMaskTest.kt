package com.samedge.demo

import android.graphics.Bitmap
import android.graphics.BitmapFactory
import androidx.test.ext.junit.runners.AndroidJUnit4
import androidx.test.platform.app.InstrumentationRegistry
import java.io.FileNotFoundException
import org.json.JSONObject
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test
import org.junit.runner.RunWith

/**
 * Sanity test on a device or emulator (arm64-v8a or x86_64): one tap on the sample photo, through
 * the bundled encoder + decoder, gives the mask sam-edge's Python runtime computed on exactly the
 * same model files, within the IoU golden.json asks for (0.95).
 *
 *     sam-edge app-bundle --artifacts runs/demo/export   # models, sample.jpg, golden.json + golden_mask.png
 *     ./gradlew :app:connectedDebugAndroidTest
 *
 * Inputs: app/src/androidTest/assets/golden.json ({"image", "width", "height", "points", "labels",
 * "mask_index" (into low_res_masks), "mask_png", "min_iou", "encoder_sha256", "decoder_sha256"}) and
 * its golden_mask.png (width x height, 8-bit grey, 255 = mask), written by `sam-edge app-bundle`; the
 * models and sample.jpg come from the app's own assets.
 *
 * NOT RUN on the machine this was written on: it has no Android SDK, emulator or device (see the
 * README, "What was verified here"). The pure parts it relies on (ImageMath.encoderInput / iou,
 * MaskMath.postprocess, ModelCheck) are JVM-tested in src/test against the Python runtime's values.
 */
@RunWith(AndroidJUnit4::class)
class GoldenMaskTest {
    private val instrumentation = InstrumentationRegistry.getInstrumentation()

    private fun decode(bytes: ByteArray, what: String): Bitmap {
        val opts = BitmapFactory.Options().apply {
            inPreferredConfig = Bitmap.Config.ARGB_8888
            inScaled = false
        }
        return BitmapFactory.decodeByteArray(bytes, 0, bytes.size, opts) ?: throw AssertionError("$what: not an image")
    }

    private fun testAsset(name: String): ByteArray = try {
        instrumentation.context.assets.open(name).use { it.readBytes() }
    } catch (e: FileNotFoundException) {
        throw AssertionError("app/src/androidTest/assets/$name is missing: run sam-edge app-bundle --artifacts DIR", e)
    }

    @Test
    fun oneTapOnTheSamplePhotoGivesTheGoldenMask() {
        val golden = JSONObject(String(testAsset("golden.json"), Charsets.UTF_8))
        assertEquals("golden.json was computed for another encoder file than ModelConstants.kt names; " +
            "run sam-edge app-bundle again", ModelConstants.ENCODER_SHA256, golden.getString("encoder_sha256"))
        assertEquals("golden.json was computed for another decoder file than ModelConstants.kt names; " +
            "run sam-edge app-bundle again", ModelConstants.DECODER_SHA256, golden.getString("decoder_sha256"))
        val w = golden.getInt("width")
        val h = golden.getInt("height")

        val app = instrumentation.targetContext
        val photo = decode(app.assets.open(golden.getString("image")).use { it.readBytes() }, golden.getString("image"))
        assertEquals("sample photo width", w, photo.width)
        assertEquals("sample photo height", h, photo.height)

        val pts = golden.getJSONArray("points")
        val labels = golden.getJSONArray("labels")
        assertEquals("points and labels", pts.length(), labels.length())
        val prompt = (0 until pts.length()).map { i ->
            val label = labels.getInt(i)
            if (label != 0 && label != 1) fail("labels[$i] = $label: this test handles point labels 1 / 0 only")
            val p = pts.getJSONArray(i)
            PointPrompt(p.getDouble(0).toFloat(), p.getDouble(1).toFloat(), foreground = label == 1)
        }

        SamPredictor(app).use { predictor ->
            predictor.setImage(photo)
            val mask = predictor.predictOutputs(prompt, null, listOf(golden.getInt("mask_index"))).single()
            assertEquals(w, mask.width)
            assertEquals(h, mask.height)
            val ours = ImageMath.binaryMask(mask.logits, ModelConstants.MASK_THRESHOLD)

            val png = decode(testAsset(golden.getString("mask_png")), golden.getString("mask_png"))
            assertEquals("golden mask width", w, png.width)
            assertEquals("golden mask height", h, png.height)
            val px = IntArray(w * h)
            png.getPixels(px, 0, w, 0, 0, w, h)
            val expected = BooleanArray(w * h) { (px[it] and 0xFF) >= 128 }  // grey: R = G = B

            val iou = ImageMath.iou(ours, expected)
            val minIou = golden.getDouble("min_iou")
            assertTrue("mask IoU vs the Python runtime's golden mask: %.4f < %.2f (${ours.count { it }} vs ${expected.count { it }} pixels)"
                .format(iou, minIou), iou >= minIou)
        }
    }
}
