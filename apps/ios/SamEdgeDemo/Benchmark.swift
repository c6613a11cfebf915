// Benchmark mode: for every encoder_* / decoder_* package in the app bundle's Models folder and
// every compute-unit setting, load the model (timed), run `warmup` untimed and `runs` timed
// predictions, and write one JSON file in the schema `sam-edge bench --ingest` reads
// (benchmarks/devices/ingest.py, kind (a) "sam-edge iOS app, benchmark mode"):
//
//   {"app": "sam-edge-ios", "app_version": "1.0",
//    "device": {"model": "iPhone15,2", "os": "iOS 17.4"},
//    "results": [{"file": "encoder_fp16.mlpackage", "role": "encoder", "format": "coreml",
//                 "precision": "fp16", "compute_units": "all",
//                 "latency_ms": {"min", "p50", "p90", "mean", "std", "n"},
//                 "load_s": 0.84, "peak_rss_mb": 310.5, "error": null}]}
//
// The file lands in the app's Documents folder (Files app / Finder file sharing, or
// `xcrun devicectl device copy from ...`), named sam-edge-ios-bench-<timestamp>.json.

import CoreML
import Foundation

struct BenchmarkConfig {
    var warmup = 10
    var runs = 50
    /// ingest.py's names: all | cpuAndGPU | cpuAndNeuralEngine | cpuOnly
    var computeUnits = ["all", "cpuAndGPU", "cpuAndNeuralEngine", "cpuOnly"]
    /// Package names ("encoder_fp16.mlpackage"); nil: every encoder_* / decoder_* package in the
    /// bundle's Models folder (`sam-edge app-bundle` copies the selected ones; add more by hand).
    var models: [String]?

    static var requestedAtLaunch: Bool { UserDefaults.standard.bool(forKey: "SamEdgeBenchmark") }

    /// -SamEdgeBenchmarkWarmup N -SamEdgeBenchmarkRuns N -SamEdgeBenchmarkUnits all,cpuOnly
    static func fromLaunchArguments() -> BenchmarkConfig {
        var c = BenchmarkConfig()
        let d = UserDefaults.standard
        if d.integer(forKey: "SamEdgeBenchmarkWarmup") > 0 { c.warmup = d.integer(forKey: "SamEdgeBenchmarkWarmup") }
        if d.integer(forKey: "SamEdgeBenchmarkRuns") > 0 { c.runs = d.integer(forKey: "SamEdgeBenchmarkRuns") }
        if let units = d.string(forKey: "SamEdgeBenchmarkUnits") {
            c.computeUnits = units.split(separator: ",").map { String($0) }
        }
        return c
    }

    static func mlComputeUnits(_ name: String) -> MLComputeUnits? {
        switch name {
        case "all": return .all
        case "cpuAndGPU": return .cpuAndGPU
        case "cpuAndNeuralEngine": return .cpuAndNeuralEngine
        case "cpuOnly": return .cpuOnly
        default: return nil
        }
    }
}

@MainActor
final class BenchmarkRunner: ObservableObject {
    static let shared = BenchmarkRunner()
    @Published private(set) var running = false
    @Published private(set) var status: String?

    func run(_ config: BenchmarkConfig) async {
        guard !running else { return }
        running = true
        defer { running = false }
        status = "benchmark running..."
        do {
            let url = try await Task.detached(priority: .userInitiated) {
                try await Benchmark.run(config) { line in Task { @MainActor in self.status = line } }
            }.value
            status = "benchmark written: Documents/\(url.lastPathComponent)"
        } catch {
            status = "benchmark failed: \(error.localizedDescription)"
        }
    }
}

enum Benchmark {
    static let appName = "sam-edge-ios"

    static func bundledModels() -> [String] {
        let names = ModelStore.bundledPackages()
        // none at all: the records then carry ModelStore's "not in the app bundle" error
        return names.isEmpty ? [ModelConstants.encoderFile, ModelConstants.decoderFile] : names
    }

    /// The sha256 the export recorded for `file`, for the two packages ModelConstants describes
    /// (the other packages benchmark mode times are not checked).
    static func expectedSha256(_ file: String) -> String? {
        switch file {
        case ModelConstants.encoderFile: return ModelConstants.encoderSha256
        case ModelConstants.decoderFile: return ModelConstants.decoderSha256
        default: return nil
        }
    }

    /// Runs everything and writes the JSON; returns its URL.
    static func run(_ config: BenchmarkConfig, progress: (String) -> Void = { _ in }) async throws -> URL {
        var results: [[String: Any]] = []
        let models = config.models ?? bundledModels()
        for file in models {
            // sha256 check (the selected pair) and the one-off compilation (cached): once per
            // package, not part of load_s
            progress("\(file): checking, compiling")
            let prepared: Result<PreparedModel, Error>
            do {
                prepared = .success(try await ModelStore.prepare(file, expectedSha256: expectedSha256(file)))
            } catch {
                prepared = .failure(error)
            }
            for unitName in config.computeUnits {
                progress("\(file) [\(unitName)]")
                results.append(benchmarkOne(file, prepared: prepared, unitName: unitName, config: config))
            }
        }
        let doc: [String: Any] = [
            "app": appName,
            "app_version": Bundle.main.object(forInfoDictionaryKey: "CFBundleShortVersionString") as? String ?? "1.0",
            "device": ["model": deviceModel(), "os": osString()],
            "model_name": ModelConstants.modelName,
            "warmup": config.warmup,
            "created": ISO8601DateFormatter().string(from: Date()),
            "results": results,
        ]
        let data = try JSONSerialization.data(withJSONObject: doc, options: [.prettyPrinted, .sortedKeys])
        let stamp = ISO8601DateFormatter().string(from: Date()).replacingOccurrences(of: ":", with: "-")
        let dir = try FileManager.default.url(for: .documentDirectory, in: .userDomainMask, appropriateFor: nil, create: true)
        let url = dir.appendingPathComponent("sam-edge-ios-bench-\(stamp).json")
        try data.write(to: url, options: .atomic)
        return url
    }

    static func benchmarkOne(_ file: String, prepared: Result<PreparedModel, Error>, unitName: String,
                             config: BenchmarkConfig) -> [String: Any] {
        let role = file.hasPrefix("encoder_") ? "encoder" : "decoder"
        let stem = (file as NSString).deletingPathExtension
        let precision = String(stem.dropFirst(role.count + 1))
        var record: [String: Any] = [
            // the export directory's artifact name, so records join the host's tables
            "file": file, "role": role, "format": "coreml", "precision": precision,
            "compute_units": unitName, "latency_ms": NSNull(), "load_s": NSNull(),
            "peak_rss_mb": NSNull(), "error": NSNull(),
            "inputs": role == "encoder" ? "synthetic image" : "1 foreground point + padding point, no mask",
        ]
        do {
            guard let units = BenchmarkConfig.mlComputeUnits(unitName) else {
                throw SamError.unexpectedIO("unknown compute units \(unitName)")
            }
            let package = try prepared.get()
            record["sha256"] = package.sha256
            let t0 = DispatchTime.now()
            let model = try ModelStore.load(package, computeUnits: units)
            record["load_s"] = SamPredictor.seconds(since: t0)
            let feed = try role == "encoder" ? encoderFeed() : decoderFeed()
            var peak = residentMB()
            for _ in 0..<config.warmup { _ = try model.prediction(from: feed) }
            var times: [Double] = []
            times.reserveCapacity(config.runs)
            for _ in 0..<config.runs {
                let t = DispatchTime.now()
                _ = try model.prediction(from: feed)
                times.append(SamPredictor.seconds(since: t) * 1000)
                peak = max(peak, residentMB())
            }
            if let s = MaskMath.latencyStats(times) {
                let latency: [String: Any] = ["min": s.min, "p50": s.p50, "p90": s.p90, "mean": s.mean,
                                              "std": s.std, "n": s.n]
                record["latency_ms"] = latency
            }
            record["peak_rss_mb"] = peak
        } catch {
            record["error"] = "\(error.localizedDescription)"
        }
        return record
    }

    /// Deterministic pseudo-random floats in [lo, hi) (latency does not depend on the values).
    static func pseudoRandom(count: Int, lo: Float, hi: Float, seed: UInt64) -> [Float] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return lo + (hi - lo) * Float(state >> 40) / Float(1 << 24)
        }
    }

    static func encoderFeed() throws -> MLFeatureProvider {
        let spec = ModelConstants.encoderInputs[0]
        let count = spec.shape.reduce(1, *)
        let image = try SamPredictor.floatArray(pseudoRandom(count: count, lo: 0, hi: 255, seed: 1), shape: spec.shape)
        return try MLDictionaryFeatureProvider(dictionary: [spec.name: MLFeatureValue(multiArray: image)])
    }

    static func decoderFeed() throws -> MLFeatureProvider {
        let specs = ModelConstants.decoderInputs
        let emb = specs[0].shape
        let s = Float(ModelConstants.imageSize)
        var coords: [Float] = [0.5 * s, 0.45 * s, 0, 0]
        var labels: [Float] = [ModelConstants.labelForeground, ModelConstants.labelNotAPoint]
        if let slots = ModelConstants.fixedPointSlots {
            while labels.count < slots { coords += [0, 0]; labels.append(ModelConstants.padLabel) }
        }
        let m = ModelConstants.maskInputSize
        let n = labels.count
        return try MLDictionaryFeatureProvider(dictionary: [
            specs[0].name: MLFeatureValue(multiArray: try SamPredictor.floatArray(
                pseudoRandom(count: emb.reduce(1, *), lo: -1, hi: 1, seed: 2), shape: emb)),
            specs[1].name: MLFeatureValue(multiArray: try SamPredictor.floatArray(coords, shape: [1, n, 2])),
            specs[2].name: MLFeatureValue(multiArray: try SamPredictor.floatArray(labels, shape: [1, n])),
            specs[3].name: MLFeatureValue(multiArray: try SamPredictor.floatArray(
                [Float](repeating: 0, count: m * m), shape: [1, 1, m, m])),
            specs[4].name: MLFeatureValue(multiArray: try SamPredictor.floatArray([0], shape: [1])),
        ])
    }

    /// The process's physical footprint in MB (what Xcode's memory gauge shows).
    static func residentMB() -> Double {
        var info = task_vm_info_data_t()
        var count = mach_msg_type_number_t(MemoryLayout<task_vm_info_data_t>.size / MemoryLayout<natural_t>.size)
        let kr = withUnsafeMutablePointer(to: &info) {
            $0.withMemoryRebound(to: integer_t.self, capacity: Int(count)) {
                task_info(mach_task_self_, task_flavor_t(TASK_VM_INFO), $0, &count)
            }
        }
        return kr == KERN_SUCCESS ? Double(info.phys_footprint) / 1_048_576 : 0
    }

    /// "iPhone15,2" (the simulator reports its simulated model).
    static func deviceModel() -> String {
        if let sim = ProcessInfo.processInfo.environment["SIMULATOR_MODEL_IDENTIFIER"] { return sim }
        var sys = utsname()
        uname(&sys)
        return withUnsafeBytes(of: &sys.machine) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
    }

    static func osString() -> String {
        let v = ProcessInfo.processInfo.operatingSystemVersion
        let base = "iOS \(v.majorVersion).\(v.minorVersion)"
        return v.patchVersion > 0 ? "\(base).\(v.patchVersion)" : base
    }
}
