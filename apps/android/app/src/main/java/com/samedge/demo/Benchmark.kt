package com.samedge.demo

import android.content.Context
import android.content.Intent
import android.os.Build
import java.io.File
import java.text.SimpleDateFormat
import java.util.Date
import java.util.Locale
import java.util.TimeZone
import org.json.JSONArray
import org.json.JSONObject

/**
 * Benchmark mode, the Android twin of apps/ios/SamEdgeDemo/Benchmark.swift: for every
 * encoder_* / decoder_* .pte / .tflite in assets, time the load, run `warmup` untimed and `runs`
 * timed inferences and write one JSON file in the shape of benchmarks/devices/ingest.py's iOS
 * app format, with "app": "sam-edge-android":
 *
 *   {"app": "sam-edge-android", "app_version": "1.0",
 *    "device": {"model": "Pixel 8", "manufacturer": "Google", "os": "Android 14 (API 34)", "abi": "arm64-v8a"},
 *    "model_name": "repvit_demo_student", "warmup": 10, "created": "2026-12-01T10:00:00Z",
 *    "runtime_versions": {"executorch": "1.5.1", "litert": "2.3.0"},
 *    "results": [{"file": "encoder_fp32.pte", "role": "encoder", "format": "executorch",
 *                 "precision": "fp32", "compute_units": "cpu", "threads": 4,
 *                 "latency_ms": {"min", "p50", "p90", "mean", "std", "n"},
 *                 "load_s": 0.12, "peak_rss_mb": 180.2, "error": null, "inputs": "synthetic image"}]}
 *
 * Keys set to JSONObject.NULL are written as null; a model that fails gets "error" set and null
 * timings. `sam-edge bench --ingest FILE` reads this file (benchmarks/devices/ingest.py;
 * tests/test_bench_devices.py ingests a file of exactly this shape).
 *
 * Written to getExternalFilesDir(null) (`adb pull /sdcard/Android/data/com.samedge.demo/files/...`).
 * Start it with `adb shell am start -n com.samedge.demo/.MainActivity --ez benchmark true
 * --ei warmup 10 --ei runs 50 --ei threads 4`.
 */
data class BenchmarkConfig(val warmup: Int = 10, val runs: Int = 50, val threads: Int = 4) {
    init {
        require(warmup >= 0) { "warmup $warmup: must be 0 or more" }
        require(runs >= 1) { "runs $runs: must be 1 or more (latency statistics need a timed run)" }
        require(threads >= 1) { "threads $threads: must be 1 or more" }
    }

    companion object {
        fun fromIntent(intent: Intent) = BenchmarkConfig(
            warmup = intent.getIntExtra("warmup", 10),
            runs = intent.getIntExtra("runs", 50),
            threads = intent.getIntExtra("threads", 4),
        )
    }
}

object Benchmark {
    const val APP_NAME = "sam-edge-android"

    fun run(context: Context, config: BenchmarkConfig, progress: (String) -> Unit = {}): File {
        val results = JSONArray()
        for (name in ModelFiles.bundled(context).ifEmpty { listOf(ModelConstants.ENCODER_FILE, ModelConstants.DECODER_FILE) }) {
            progress("benchmark: $name")
            results.put(benchmarkOne(context, name, config))
        }
        val version = context.packageManager.getPackageInfo(context.packageName, 0).versionName ?: "1.0"
        val doc = JSONObject()
            .put("app", APP_NAME)
            .put("app_version", version)
            .put("device", JSONObject()
                .put("model", Build.MODEL)
                .put("manufacturer", Build.MANUFACTURER)
                .put("os", "Android ${Build.VERSION.RELEASE} (API ${Build.VERSION.SDK_INT})")
                .put("abi", Build.SUPPORTED_ABIS.firstOrNull() ?: JSONObject.NULL))
            .put("model_name", ModelConstants.MODEL_NAME)
            .put("warmup", config.warmup)
            .put("runtime_versions", JSONObject(ModelFiles.bundledRuntimes as Map<*, *>))
            .put("created", iso(Date()))
            .put("results", results)
        val stamp = iso(Date()).replace(":", "-")
        val dir = context.getExternalFilesDir(null) ?: context.filesDir
        val out = File(dir, "sam-edge-android-bench-$stamp.json")
        val tmp = File(dir, out.name + ".part")
        tmp.writeText(doc.toString(2))
        check(tmp.renameTo(out)) { "could not write ${out.absolutePath}" }
        return out
    }

    private fun iso(d: Date): String =
        SimpleDateFormat("yyyy-MM-dd'T'HH:mm:ss'Z'", Locale.US).apply { timeZone = TimeZone.getTimeZone("UTC") }.format(d)

    fun benchmarkOne(context: Context, name: String, config: BenchmarkConfig): JSONObject {
        val role = if (name.startsWith("encoder_")) "encoder" else "decoder"
        val format = if (name.endsWith(".pte")) "executorch" else "tflite"
        val precision = name.removePrefix("${role}_").substringBeforeLast(".")
        val rec = JSONObject()
            .put("file", name).put("role", role).put("format", format).put("precision", precision)
            .put("compute_units", "cpu")
            // both runtimes take the thread count (Interpreter.Options.setNumThreads, Module.load numThreads)
            .put("threads", config.threads)
            .put("latency_ms", JSONObject.NULL).put("load_s", JSONObject.NULL)
            .put("peak_rss_mb", JSONObject.NULL).put("error", JSONObject.NULL)
            .put("inputs", if (role == "encoder") "synthetic image" else "1 foreground point + padding point, no mask")
        try {
            val file = ModelFiles.prepare(context, name)  // checks and copy, not timed
            val t0 = System.nanoTime()
            ModelFiles.open(file, config.threads).use { graph ->
                rec.put("load_s", (System.nanoTime() - t0) / 1e9)
                val feed = if (role == "encoder") encoderFeed() else decoderFeed()
                repeat(config.warmup) { graph.run(feed) }
                val times = ArrayList<Double>(config.runs)
                repeat(config.runs) {
                    val t = System.nanoTime()
                    graph.run(feed)
                    times += (System.nanoTime() - t) / 1e6
                }
                MaskMath.latencyStats(times)?.let { rec.put("latency_ms", JSONObject(it as Map<*, *>)) }
            }
            peakRssMb()?.let { rec.put("peak_rss_mb", it) }
        } catch (e: Throwable) {
            rec.put("error", "${e.javaClass.simpleName}: ${e.message}")
        }
        return rec
    }

    /** Deterministic pseudo-random floats in [lo, hi) (latency does not depend on the values). */
    private fun pseudoRandom(count: Int, lo: Float, hi: Float, seed: Long): FloatArray {
        var state = seed
        return FloatArray(count) {
            state = state * 6364136223846793005L + 1442695040888963407L
            lo + (hi - lo) * ((state ushr 40).toFloat() / (1 shl 24))
        }
    }

    private fun count(shape: LongArray) = shape.fold(1L) { a, b -> a * b }.toInt()

    fun encoderFeed(): List<Pair<FloatArray, LongArray>> {
        val shape = ModelConstants.ENCODER_INPUTS[0].shape
        return listOf(pseudoRandom(count(shape), 0f, 255f, 1) to shape)
    }

    /** One click: a foreground point + the padding point (LiteRtGraph pads fixed point slots). */
    fun decoderFeed(): List<Pair<FloatArray, LongArray>> {
        val s = ModelConstants.IMAGE_SIZE.toFloat()
        val coords = floatArrayOf(0.5f * s, 0.45f * s, 0f, 0f)
        val labels = floatArrayOf(ModelConstants.LABEL_FOREGROUND, ModelConstants.LABEL_NOT_A_POINT)
        val n = labels.size.toLong()
        val m = ModelConstants.MASK_INPUT_SIZE.toLong()
        val emb = ModelConstants.DECODER_INPUTS[0].shape
        return listOf(
            pseudoRandom(count(emb), -1f, 1f, 2) to emb,
            coords to longArrayOf(1, n, 2),
            labels to longArrayOf(1, n),
            FloatArray((m * m).toInt()) to longArrayOf(1, 1, m, m),
            floatArrayOf(0f) to longArrayOf(1),
        )
    }

    /** VmHWM (peak resident set) of this process, in MB. */
    private fun peakRssMb(): Double? = try {
        File("/proc/self/status").readLines().firstOrNull { it.startsWith("VmHWM:") }
            ?.split(Regex("\\s+"))?.getOrNull(1)?.toDouble()?.div(1024.0)
    } catch (e: Exception) {
        null
    }
}
