// Where the models come from. `sam-edge app-bundle --artifacts DIR` copies the export's Core ML
// packages (encoder_*.mlpackage / decoder_*.mlpackage) into SamEdgeDemo/Models/, which project.yml
// adds as a *folder reference*: Xcode copies the packages into the app bundle byte for byte
// instead of compiling them, so the app can check each package's sha256 against the value the
// exporter wrote into manifest.json (ModelConstants.encoderSha256 / decoderSha256). A package is
// then compiled once on the device with MLModel.compileModel(at:) and the .mlmodelc is cached
// (Caches/CompiledModels/<sha256 prefix>-<name>.mlmodelc): later launches only hash and load.
//
// Not compiled here (no Xcode on the Linux machine this project is developed on).

import CoreML
import Foundation

/// A load-time problem, shown on screen as one line.
struct ModelLoadError: LocalizedError {
    let message: String
    var errorDescription: String? { message }
}

/// A package from the bundle, checked and compiled.
struct PreparedModel {
    let file: String
    let compiledURL: URL
    let sha256: String
    /// nil when the compiled model came from the cache.
    let compileSeconds: Double?
    let hashSeconds: Double
}

enum ModelStore {
    static let folderName = "Models"
    static let cacheFolderName = "CompiledModels"

    /// SamEdgeDemo.app/Models (the folder reference), nil when the build has none.
    static func modelsFolder(bundle: Bundle = .main) -> URL? {
        bundle.url(forResource: folderName, withExtension: nil)
    }

    static func missingMessage(_ file: String) -> String {
        "Models/\(file) is not in the app bundle: run `sam-edge app-bundle --artifacts <export dir>` "
            + "(it copies the Core ML packages into apps/ios/SamEdgeDemo/Models/), then build again"
    }

    /// The package `file` (e.g. "encoder_fp16.mlpackage") inside the bundle's Models folder.
    static func packageURL(_ file: String, bundle: Bundle = .main) throws -> URL {
        guard let folder = modelsFolder(bundle: bundle) else { throw ModelLoadError(message: missingMessage(file)) }
        let url = folder.appendingPathComponent(file)
        guard FileManager.default.fileExists(atPath: url.path) else { throw ModelLoadError(message: missingMessage(file)) }
        return url
    }

    /// Every encoder_* / decoder_* package in the bundle's Models folder, sorted.
    static func bundledPackages(bundle: Bundle = .main) -> [String] {
        guard let folder = modelsFolder(bundle: bundle),
              let names = try? FileManager.default.contentsOfDirectory(atPath: folder.path) else { return [] }
        return names.filter { ($0.hasPrefix("encoder_") || $0.hasPrefix("decoder_")) && $0.hasSuffix(".mlpackage") }
            .sorted()
    }

    /// The checks that do not depend on a model file: the constants were generated for Core ML,
    /// and the OS is at least the models' minimum (ModelConstants.minRuntimeVersion).
    static func checkRuntime() throws {
        guard ModelConstants.runtime == "coreml" else {
            throw ModelLoadError(message: "ModelConstants.swift was generated for the runtime \"\(ModelConstants.runtime)\", "
                + "this app runs Core ML: run `sam-edge app-bundle` on an export with Core ML artifacts")
        }
        if let problem = ModelIntegrity.runtimeVersionError(current: ModelIntegrity.osVersion(),
                                                            minimum: ModelConstants.minRuntimeVersion) {
            throw ModelLoadError(message: problem)
        }
    }

    static func cacheFolder() throws -> URL {
        let caches = try FileManager.default.url(for: .cachesDirectory, in: .userDomainMask, appropriateFor: nil, create: true)
        let folder = caches.appendingPathComponent(cacheFolderName, isDirectory: true)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        return folder
    }

    /// Checks Models/`file` against `expectedSha256` (nil: not checked, e.g. the extra packages
    /// benchmark mode times) and returns its compiled model, compiling it on first use.
    static func prepare(_ file: String, expectedSha256: String?, bundle: Bundle = .main) async throws -> PreparedModel {
        let package = try packageURL(file, bundle: bundle)
        let t0 = DispatchTime.now()
        let sha: String
        do {
            sha = try ModelIntegrity.sha256(of: package)
        } catch {
            throw ModelLoadError(message: "Models/\(file) could not be read: \(error.localizedDescription)")
        }
        let hashSeconds = seconds(since: t0)
        if let expectedSha256,
           let problem = ModelIntegrity.checksumError(name: "Models/\(file)", actual: sha, expected: expectedSha256) {
            throw ModelLoadError(message: problem)
        }

        let stem = (file as NSString).deletingPathExtension
        let folder = try cacheFolder()
        let cached = folder.appendingPathComponent("\(sha.prefix(16))-\(stem).mlmodelc", isDirectory: true)
        // complete when present: it only ever appears by an atomic rename (below)
        if FileManager.default.fileExists(atPath: cached.path) {
            return PreparedModel(file: file, compiledURL: cached, sha256: sha, compileSeconds: nil, hashSeconds: hashSeconds)
        }

        let t1 = DispatchTime.now()
        let compiled: URL
        do {
            compiled = try await MLModel.compileModel(at: package)
        } catch {
            throw ModelLoadError(message: "Models/\(file): Core ML could not compile it: \(error.localizedDescription)")
        }
        let compileSeconds = seconds(since: t1)
        // Move into the cache folder under a temporary name first (compileModel writes to a
        // temporary folder, possibly on another volume), then rename within the folder, so an
        // interrupted launch never leaves a half-copied model under the final name.
        let fm = FileManager.default
        let staging = folder.appendingPathComponent("staging-\(UUID().uuidString).tmp", isDirectory: true)
        try fm.moveItem(at: compiled, to: staging)
        do {
            try fm.moveItem(at: staging, to: cached)
        } catch {
            try? fm.removeItem(at: staging)
            // another task compiled the same package meanwhile: use its copy
            guard fm.fileExists(atPath: cached.path) else { throw error }
        }
        prune(folder, stem: stem, keeping: cached.lastPathComponent)
        return PreparedModel(file: file, compiledURL: cached, sha256: sha, compileSeconds: compileSeconds,
                             hashSeconds: hashSeconds)
    }

    /// Removes the compiled copies of other versions of `stem` (a new export replaced them).
    static func prune(_ folder: URL, stem: String, keeping: String) {
        let fm = FileManager.default
        guard let names = try? fm.contentsOfDirectory(atPath: folder.path) else { return }
        for name in names where name != keeping && name.hasSuffix("-\(stem).mlmodelc") {
            try? fm.removeItem(at: folder.appendingPathComponent(name))
        }
    }

    /// Loads a prepared model with the given compute units.
    static func load(_ prepared: PreparedModel, computeUnits: MLComputeUnits) throws -> MLModel {
        let config = MLModelConfiguration()
        config.computeUnits = computeUnits
        do {
            return try MLModel(contentsOf: prepared.compiledURL, configuration: config)
        } catch {
            throw ModelLoadError(message: "Models/\(prepared.file): Core ML could not load it: \(error.localizedDescription)")
        }
    }

    static func seconds(since t0: DispatchTime) -> Double {
        Double(DispatchTime.now().uptimeNanoseconds - t0.uptimeNanoseconds) / 1e9
    }
}
