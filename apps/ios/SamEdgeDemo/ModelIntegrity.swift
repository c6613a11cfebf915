// The checks made before a model is loaded, free of Core ML and UIKit so that the unit tests
// (SamEdgeDemoTests) compile this file on its own:
//  * the sha256 of an artifact computed exactly as sam_edge.runtime.manifest.sha256_file does, so
//    a bundled .mlpackage can be compared with ModelConstants.encoderSha256 / decoderSha256;
//  * dotted version strings ("17.0") compared with the running OS version.
//
// Not compiled here: the project is developed on Linux without a Swift toolchain.
// tests/test_ios_app.py parses this file with tree-sitter-swift and checks its hashing rule (file
// order, NUL separator) and the test vectors of SamEdgeDemoTests against the Python function.

import CryptoKit
import Foundation

enum ModelIntegrity {
    // MARK: - Versions

    /// "17.0" -> [17, 0]; nil unless every dot-separated part is a run of ASCII digits.
    static func parseVersion(_ text: String) -> [Int]? {
        let parts = text.trimmingCharacters(in: .whitespaces).split(separator: ".", omittingEmptySubsequences: false)
        var out: [Int] = []
        for part in parts {
            guard !part.isEmpty, part.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let v = Int(part) else { return nil }
            out.append(v)
        }
        return out.isEmpty ? nil : out
    }

    /// Component by component, a missing component counting as 0 ("17" == "17.0.0" < "17.0.1").
    static func compareVersions(_ a: [Int], _ b: [Int]) -> ComparisonResult {
        for i in 0..<max(a.count, b.count) {
            let x = i < a.count ? a[i] : 0
            let y = i < b.count ? b[i] : 0
            if x != y { return x < y ? .orderedAscending : .orderedDescending }
        }
        return .orderedSame
    }

    static func versionString(_ v: [Int]) -> String {
        v.map { String($0) }.joined(separator: ".")
    }

    /// The running OS as [major, minor, patch].
    static func osVersion() -> [Int] {
        let v = ProcessInfo.processInfo.operatingSystemVersion
        return [v.majorVersion, v.minorVersion, v.patchVersion]
    }

    /// nil when `current` is at least `minimum`; otherwise the line the app shows.
    static func runtimeVersionError(current: [Int], minimum: String, system: String = "iOS") -> String? {
        guard let min = parseVersion(minimum) else {
            return "ModelConstants.minRuntimeVersion \"\(minimum)\" is not a version (digits and dots, e.g. 17.0): "
                + "regenerate ModelConstants.swift with `sam-edge app-bundle`"
        }
        guard compareVersions(current, min) == .orderedAscending else { return nil }
        return "\(system) \(versionString(current)) is older than \(minimum), the minimum the bundled Core ML models "
            + "need (ModelConstants.minRuntimeVersion): update the device, or export for an older deployment target"
    }

    // MARK: - sha256, as sam_edge.runtime.manifest.sha256_file

    /// The order of a directory artifact's files: Python's `sorted()` of pathlib paths, which
    /// compares the paths component by component (a shorter path first when it is a prefix),
    /// each component by code point, i.e. by its UTF-8 bytes. This is NOT the order of the
    /// joined strings: "a/b" < "a-b/c" < "a.b" here, while as strings "a-b/c" < "a.b" < "a/b".
    static func precedes(_ a: String, _ b: String) -> Bool {
        let ca = a.split(separator: "/").map { Array($0.utf8) }
        let cb = b.split(separator: "/").map { Array($0.utf8) }
        for (x, y) in zip(ca, cb) where x != y {
            return x.lexicographicallyPrecedes(y)
        }
        return ca.count < cb.count
    }

    /// The relative POSIX paths ("/"-separated) of the files a directory artifact's hash covers, in
    /// hash order: every regular file below `root`, hidden ones included, and every symbolic link
    /// to a regular file (pathlib's `is_file()` follows links); a directory reached through a link
    /// is not entered (neither is it by pathlib's `rglob`).
    static func hashedFiles(in root: URL) throws -> [String] {
        let fm = FileManager.default
        guard let walker = fm.enumerator(atPath: root.path) else { throw IntegrityError.unreadable(root.path) }
        var files: [String] = []
        while let rel = walker.nextObject() as? String {
            let type = walker.fileAttributes?[.type] as? FileAttributeType
            if type == .typeRegular {
                files.append(rel)
            } else if type == .typeSymbolicLink {
                var isDirectory: ObjCBool = false
                if fm.fileExists(atPath: root.appendingPathComponent(rel).path, isDirectory: &isDirectory),
                   !isDirectory.boolValue {
                    files.append(rel)
                }
            }
        }
        return files.sorted(by: precedes)
    }

    /// Lowercase hex sha256 of a file (its bytes), or of a directory artifact such as an
    /// .mlpackage: for each file in `precedes` order, its relative POSIX path's UTF-8 bytes, one
    /// NUL byte (0x00), then the file's bytes.
    static func sha256(of url: URL) throws -> String {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw IntegrityError.missing(url.path)
        }
        var hasher = SHA256()
        if isDirectory.boolValue {
            for rel in try hashedFiles(in: url) {
                hasher.update(data: Data(rel.utf8))
                hasher.update(data: Data([0x00]))
                try feed(&hasher, file: url.appendingPathComponent(rel))
            }
        } else {
            try feed(&hasher, file: url)
        }
        return hex(hasher.finalize())
    }

    static let chunkSize = 1 << 20

    private static func feed(_ hasher: inout SHA256, file: URL) throws {
        let handle: FileHandle
        do { handle = try FileHandle(forReadingFrom: file) } catch { throw IntegrityError.unreadable(file.path) }
        defer { try? handle.close() }
        while let chunk = try handle.read(upToCount: chunkSize), !chunk.isEmpty {
            hasher.update(data: chunk)
        }
    }

    static func hex<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
        bytes.map { String(format: "%02x", $0) }.joined()
    }

    /// nil when `actual` is `expected` (hex, any case); otherwise the line the app shows.
    static func checksumError(name: String, actual: String, expected: String) -> String? {
        if actual.lowercased() == expected.lowercased() { return nil }
        return "\(name): sha256 \(actual.prefix(12))... differs from the exported \(expected.prefix(12))... "
            + "(ModelConstants): the bundled model comes from another export; run "
            + "`sam-edge app-bundle --artifacts <export dir>` and build again"
    }

    enum IntegrityError: LocalizedError, Equatable {
        case missing(String)
        case unreadable(String)

        var errorDescription: String? {
            switch self {
            case .missing(let path): return "\(path) does not exist"
            case .unreadable(let path): return "\(path) could not be read"
            }
        }
    }
}
