package com.samedge.demo

import java.io.ByteArrayInputStream
import java.io.ByteArrayOutputStream
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Test

/** JVM unit tests of the load-time checks (./gradlew :app:testDebugUnitTest). */
class ModelCheckTest {
    @Test
    fun versionParts() {
        assertEquals(listOf(1L, 5L, 1L), ModelCheck.versionParts("1.5.1"))
        assertEquals(listOf(2L, 13L, 0L), ModelCheck.versionParts("2.13.0+cpu"))
        assertEquals(listOf(1L, 5L, 1L), ModelCheck.versionParts(" 1.5.1-rc1 "))
        assertEquals(listOf(17L), ModelCheck.versionParts("17"))
    }

    @Test(expected = IllegalArgumentException::class)
    fun versionPartsRefusesNonVersions() {
        ModelCheck.versionParts("latest")
    }

    @Test
    fun versionAtLeast() {
        assertTrue(ModelCheck.versionAtLeast("1.5.1", "1.5.1"))
        assertTrue(ModelCheck.versionAtLeast("1.10.0", "1.9.9"))  // numeric, not lexicographic
        assertTrue(ModelCheck.versionAtLeast("1.5", "1.5.0"))
        assertTrue(ModelCheck.versionAtLeast("2.3.0", "2.3"))
        assertFalse(ModelCheck.versionAtLeast("1.0.1", "1.5.1"))
        assertFalse(ModelCheck.versionAtLeast("1.5", "1.5.1"))
        assertFalse(ModelCheck.versionAtLeast("0.9.99", "1.0"))
    }

    @Test
    fun sha256HexOfAStreamAndItsCopy() {
        val empty = ModelCheck.sha256Hex(ByteArrayInputStream(ByteArray(0)))
        assertEquals("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", empty)
        val abc = ModelCheck.sha256Hex(ByteArrayInputStream("abc".toByteArray()))
        assertEquals("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", abc)
        // longer than the 64 KiB read buffer: hashed and copied whole
        val big = ByteArray(200_000) { (it * 31 + 7).toByte() }
        val copy = ByteArrayOutputStream()
        val h = ModelCheck.sha256Hex(ByteArrayInputStream(big), copy)
        assertTrue(big.contentEquals(copy.toByteArray()))
        assertEquals(java.security.MessageDigest.getInstance("SHA-256").digest(big)
            .joinToString("") { "%02x".format(it) }, h)
    }

    @Test
    fun sha256Problem() {
        assertNull(ModelCheck.sha256Problem("encoder_fp32.pte", "ab" + "0".repeat(62), "AB" + "0".repeat(62)))
        val msg = ModelCheck.sha256Problem("encoder_fp32.pte", "aa".repeat(32), "bb".repeat(32))!!
        assertTrue(msg.startsWith("encoder_fp32.pte "))
        assertTrue(msg.contains("expected sha256 " + "aa".repeat(32)))
        assertTrue(msg.contains("found    sha256 " + "bb".repeat(32)))
    }

    private val bundled = mapOf("executorch" to "1.5.1", "litert" to "2.3.0")

    @Test
    fun runtimeProblem() {
        assertNull(ModelCheck.runtimeProblem("encoder_fp32.pte", "executorch", "1.5.1", "executorch", "1.5.1", bundled))
        assertNull(ModelCheck.runtimeProblem("decoder_fp32.tflite", "litert", "2.3.0", "litert-torch", "0.10.0", bundled))
        val old = ModelCheck.runtimeProblem("encoder_fp32.pte", "executorch", "1.6.0", "executorch", "1.6.0", bundled)!!
        assertTrue(old, old.startsWith("encoder_fp32.pte needs the ExecuTorch runtime 1.6.0 or newer (written by executorch 1.6.0)"))
        assertTrue(old, old.contains("expected ExecuTorch >= 1.6.0") && old.contains("found    ExecuTorch 1.5.1"))
        assertTrue(old, old.contains("gradle/libs.versions.toml"))
        val wrongKind = ModelCheck.runtimeProblem("encoder_fp32.tflite", "executorch", "1.5.1", "executorch", "1.5.1", bundled)!!
        assertTrue(wrongKind, wrongKind.contains("the file is for LiteRT"))
        val unknown = ModelCheck.runtimeProblem("encoder.onnx", "onnxruntime", "1.20", "torch.onnx", "", bundled)!!
        assertTrue(unknown, unknown.contains("executorch and litert only"))
    }

    @Test
    fun runtimeOf() {
        assertEquals("executorch", ModelCheck.runtimeOf("decoder_int8_static.pte"))
        assertEquals("litert", ModelCheck.runtimeOf("decoder_int8_dynamic.tflite"))
        assertNull(ModelCheck.runtimeOf("encoder.onnx"))
    }
}
