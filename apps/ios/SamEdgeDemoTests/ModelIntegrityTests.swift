// Unit tests of the pure logic (ModelIntegrity.swift, MaskMath.swift), compiled into this test
// bundle directly (no host app, no models needed): `xcodebuild test -scheme SamEdgeDemo ...` or
// Product > Test in Xcode.
//
// Not run here: the project is developed on Linux without Xcode. tests/test_ios_app.py checks
// the vectors below against sam_edge.runtime.manifest.sha256_file (it rebuilds the same trees
// from this file's literals), so change them only together with that test.

import XCTest

final class ModelIntegrityTests: XCTestCase {
    // A directory artifact whose file order differs between a component-wise sort (pathlib's,
    // the rule) and a sort of the joined strings ("a/b" vs "a-b/c" vs "a.b").
    static let treeFiles: [(path: String, content: String)] = [
        ("Manifest.json", "{}"),
        ("Data/com.apple.CoreML/model.mlmodel", "model bytes"),
        ("Data/com.apple.CoreML/weights/weight.bin", "weights"),
        ("a.b", "dot"),
        ("a/b", "slash"),
        ("a-b/c", "dash"),
        (".hidden", "hidden files count"),
        ("empty.bin", ""),
    ]
    static let treeOrder = [
        ".hidden",
        "Data/com.apple.CoreML/model.mlmodel",
        "Data/com.apple.CoreML/weights/weight.bin",
        "Manifest.json",
        "a/b",
        "a-b/c",
        "a.b",
        "empty.bin",
    ]
    static let treeSha256 = "757163f2c8bc5d19d50a3be70a7f9ce4b26b5e20977806ddd2a618ba35c8f0d2"
    // The same tree plus symbolic links: link.json -> Manifest.json is hashed as a file (its own
    // path, the target's bytes); linkdir -> Data is not entered.
    static let treeLinks: [(path: String, target: String)] = [
        ("link.json", "Manifest.json"),
        ("linkdir", "Data"),
    ]
    static let linkedTreeSha256 = "b94e67371754ee74ff4987d3723c6a38746a7fd776bd0edcd52d2f1ac219de00"
    static let emptyDirectorySha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    static let abcFileSha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

    private var tmp: URL!

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent("ModelIntegrityTests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: tmp)
    }

    private func makeTree(_ name: String) throws -> URL {
        let root = tmp.appendingPathComponent(name, isDirectory: true)
        for (path, content) in Self.treeFiles {
            let url = root.appendingPathComponent(path)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data(content.utf8).write(to: url)
        }
        return root
    }

    func testDirectoryHashIsThePythonOne() throws {
        let root = try makeTree("model.mlpackage")
        XCTAssertEqual(try ModelIntegrity.hashedFiles(in: root), Self.treeOrder)
        XCTAssertEqual(try ModelIntegrity.sha256(of: root), Self.treeSha256)
    }

    func testSymbolicLinks() throws {
        let root = try makeTree("linked.mlpackage")
        for (path, target) in Self.treeLinks {
            try FileManager.default.createSymbolicLink(atPath: root.appendingPathComponent(path).path,
                                                       withDestinationPath: target)
        }
        XCTAssertEqual(try ModelIntegrity.hashedFiles(in: root), Self.treeOrder + ["link.json"])
        XCTAssertEqual(try ModelIntegrity.sha256(of: root), Self.linkedTreeSha256)
    }

    func testFileAndEmptyDirectory() throws {
        let file = tmp.appendingPathComponent("abc.bin")
        try Data("abc".utf8).write(to: file)
        XCTAssertEqual(try ModelIntegrity.sha256(of: file), Self.abcFileSha256)
        let empty = tmp.appendingPathComponent("empty.mlpackage", isDirectory: true)
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        XCTAssertEqual(try ModelIntegrity.sha256(of: empty), Self.emptyDirectorySha256)
    }

    func testOneChangedByteChangesTheHash() throws {
        let root = try makeTree("changed.mlpackage")
        try Data("weightz".utf8).write(to: root.appendingPathComponent("Data/com.apple.CoreML/weights/weight.bin"))
        XCTAssertNotEqual(try ModelIntegrity.sha256(of: root), Self.treeSha256)
    }

    func testMissingPathThrows() {
        XCTAssertThrowsError(try ModelIntegrity.sha256(of: tmp.appendingPathComponent("missing.mlpackage")))
    }

    func testOrderIsComponentWise() {
        XCTAssertTrue(ModelIntegrity.precedes("a/b", "a-b/c"))
        XCTAssertTrue(ModelIntegrity.precedes("a-b/c", "a.b"))
        XCTAssertFalse(ModelIntegrity.precedes("a.b", "a/b"))
        XCTAssertTrue(ModelIntegrity.precedes("a", "a/b"))
        XCTAssertTrue(ModelIntegrity.precedes("B", "a"))  // code point order: upper case first
        XCTAssertFalse(ModelIntegrity.precedes("a/b", "a/b"))
    }

    func testChecksumError() {
        XCTAssertNil(ModelIntegrity.checksumError(name: "x", actual: Self.abcFileSha256, expected: Self.abcFileSha256.uppercased()))
        let line = ModelIntegrity.checksumError(name: "Models/encoder_fp16.mlpackage", actual: Self.abcFileSha256,
                                                expected: Self.emptyDirectorySha256)
        XCTAssertNotNil(line)
        XCTAssertTrue(line?.contains("Models/encoder_fp16.mlpackage") == true)
        XCTAssertTrue(line?.contains("sam-edge app-bundle") == true)
    }

    // MARK: - versions

    func testParseVersion() {
        XCTAssertEqual(ModelIntegrity.parseVersion("17.0"), [17, 0])
        XCTAssertEqual(ModelIntegrity.parseVersion(" 18 "), [18])
        XCTAssertEqual(ModelIntegrity.parseVersion("17.4.1"), [17, 4, 1])
        for bad in ["", "17.x", "17..0", "-1", "17.0-beta", ".17", "17."] {
            XCTAssertNil(ModelIntegrity.parseVersion(bad), bad)
        }
    }

    func testCompareVersions() {
        XCTAssertEqual(ModelIntegrity.compareVersions([17], [17, 0, 0]), .orderedSame)
        XCTAssertEqual(ModelIntegrity.compareVersions([16, 7, 2], [17, 0]), .orderedAscending)
        XCTAssertEqual(ModelIntegrity.compareVersions([17, 0, 1], [17]), .orderedDescending)
        XCTAssertEqual(ModelIntegrity.compareVersions([17, 10], [17, 9]), .orderedDescending)  // not string order
    }

    func testRuntimeVersionError() {
        XCTAssertNil(ModelIntegrity.runtimeVersionError(current: [17, 0, 0], minimum: "17.0"))
        XCTAssertNil(ModelIntegrity.runtimeVersionError(current: [18, 1, 0], minimum: "17.0"))
        let old = ModelIntegrity.runtimeVersionError(current: [16, 7, 2], minimum: "17.0")
        XCTAssertTrue(old?.contains("iOS 16.7.2 is older than 17.0") == true, old ?? "nil")
        let bad = ModelIntegrity.runtimeVersionError(current: [17, 0, 0], minimum: "seventeen")
        XCTAssertTrue(bad?.contains("is not a version") == true, bad ?? "nil")
    }

    func testRunningOSIsAtLeastTheDeploymentTarget() {
        XCTAssertNotEqual(ModelIntegrity.compareVersions(ModelIntegrity.osVersion(), [17, 0]), .orderedAscending)
    }
}

final class MaskMathTests: XCTestCase {
    func testBinaryMask() {
        XCTAssertEqual(MaskMath.binaryMask([-1, 0, 0.5, 3], threshold: 0), [0, 0, 255, 255])
    }

    func testPreprocessShape() {
        let square = MaskMath.preprocessShape(height: 384, width: 384, longSide: 256)
        XCTAssertEqual([square.height, square.width], [256, 256])
        let wide = MaskMath.preprocessShape(height: 480, width: 640, longSide: 256)
        XCTAssertEqual([wide.height, wide.width], [192, 256])
    }

    func testLatencyStatsUseTheHostDefinitions() {
        let s = MaskMath.latencyStats([1, 2, 3, 4, 5, 6])
        XCTAssertEqual(s?.p50, 3.5)
        XCTAssertEqual(s?.p90, 5.0)  // nearest rank, index round-half-even(4.5) = 4
        XCTAssertEqual(s?.n, 6)
    }
}
