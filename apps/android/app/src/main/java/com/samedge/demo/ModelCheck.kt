package com.samedge.demo

import java.io.File
import java.io.InputStream
import java.io.OutputStream
import java.security.MessageDigest

/** A model the app refuses to load; [message] is shown on screen as it is (file, expected, found). */
class ModelCheckException(message: String) : Exception(message)

/**
 * What the app checks before it loads a model, kept free of Android classes so the JVM unit tests
 * (src/test/.../ModelCheckTest.kt) cover it: the model file's sha256 against the one
 * ModelConstants.kt was generated for, and the runtime library bundled in this APK against
 * ModelConstants.MIN_RUNTIME_VERSION (a .pte loads on an ExecuTorch runtime at least as new as the
 * executorch that wrote it, not on an older one; a .tflite on the LiteRT that verified it or newer).
 */
object ModelCheck {
    /** ModelConstants.RUNTIME values, with the catalog entry (gradle/libs.versions.toml) that pins each. */
    val RUNTIME_NAMES = mapOf("executorch" to "ExecuTorch", "litert" to "LiteRT")
    private val CATALOG_KEYS = mapOf("executorch" to "executorch", "litert" to "litert")

    /**
     * "1.5.1" -> [1, 5, 1]; a pre-release or local suffix ends the number ("2.13.0+cpu" -> [2, 13, 0],
     * "1.5.1-rc1" -> [1, 5, 1]), as sam_edge.runtime.manifest.version_tuple.
     */
    fun versionParts(version: String): List<Long> {
        val m = Regex("^\\d+(?:\\.\\d+)*").find(version.trim())
            ?: throw IllegalArgumentException("not a version number: \"$version\"")
        return m.value.split('.').map { it.toLong() }
    }

    /** Dotted-number comparison, missing parts read as 0 ("1.5" >= "1.5.0"). */
    fun versionAtLeast(have: String, need: String): Boolean {
        val a = versionParts(have)
        val b = versionParts(need)
        for (i in 0 until maxOf(a.size, b.size)) {
            val x = a.getOrElse(i) { 0L }
            val y = b.getOrElse(i) { 0L }
            if (x != y) return x > y
        }
        return true
    }

    /** Lower-case hex sha256 of everything [input] yields; the bytes are also written to [copyTo]. */
    fun sha256Hex(input: InputStream, copyTo: OutputStream? = null): String {
        val digest = MessageDigest.getInstance("SHA-256")
        val buf = ByteArray(1 shl 16)
        while (true) {
            val n = input.read(buf)
            if (n < 0) break
            digest.update(buf, 0, n)
            copyTo?.write(buf, 0, n)
        }
        return digest.digest().joinToString("") { "%02x".format(it.toInt() and 0xFF) }
    }

    fun sha256Hex(file: File): String = file.inputStream().use { sha256Hex(it) }

    /** The runtime a model file needs, from its extension; null for anything else. */
    fun runtimeOf(file: String): String? = when {
        file.endsWith(".pte") -> "executorch"
        file.endsWith(".tflite") -> "litert"
        else -> null
    }

    /** null when [found] is [expected]; else the on-screen error naming the file and both digests. */
    fun sha256Problem(file: String, expected: String, found: String): String? {
        if (found.equals(expected, ignoreCase = true)) return null
        return "$file is not the model this app was built for.\n" +
            "  expected sha256 $expected (ModelConstants.kt)\n" +
            "  found    sha256 $found (app assets)\n" +
            "Bundle the export ModelConstants.kt was generated from: sam-edge app-bundle --artifacts DIR"
    }

    fun missingAsset(file: String): String =
        "$file is not in the app's assets (app/src/main/assets).\n" +
            "Copy the models in: sam-edge app-bundle --artifacts DIR, then rebuild the app."

    /**
     * null when [file] can run on the runtimes this APK bundles ([bundled]: ModelConstants.RUNTIME
     * value -> version, from BuildConfig); else the on-screen error: which file, which runtime, the
     * version it needs (written by [exporter] [exporterVersion]) and the version found.
     */
    fun runtimeProblem(
        file: String, runtime: String, minVersion: String, exporter: String, exporterVersion: String,
        bundled: Map<String, String>,
    ): String? {
        val name = RUNTIME_NAMES[runtime]
            ?: return "$file: ModelConstants.RUNTIME is \"$runtime\"; this app bundles " +
                RUNTIME_NAMES.keys.joinToString(" and ") + " only"
        val needed = runtimeOf(file)
        if (needed != runtime) {
            return "$file: ModelConstants.RUNTIME is \"$runtime\" but the file is for " +
                (needed?.let { RUNTIME_NAMES[it] } ?: "neither ExecuTorch (.pte) nor LiteRT (.tflite)") +
                "; regenerate ModelConstants.kt: sam-edge app-bundle --artifacts DIR"
        }
        val have = bundled[runtime] ?: return "$file needs $name, which this APK does not bundle"
        val ok = try {
            versionAtLeast(have, minVersion)
        } catch (e: IllegalArgumentException) {
            return "$file: cannot compare $name versions (${e.message})"
        }
        if (ok) return null
        val writer = if (exporterVersion.isNotEmpty()) " (written by $exporter $exporterVersion)" else ""
        return "$file needs the $name runtime $minVersion or newer$writer.\n" +
            "  expected $name >= $minVersion (ModelConstants.MIN_RUNTIME_VERSION)\n" +
            "  found    $name $have (bundled in this app)\n" +
            "Raise ${CATALOG_KEYS[runtime]} in gradle/libs.versions.toml to $minVersion or newer."
    }
}
