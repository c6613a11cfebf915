"""The iOS sample app (apps/ios): everything that can be checked without macOS.

No Xcode, XcodeGen or Swift toolchain runs here, so nothing is compiled. What is checked:

* project.yml (XcodeGen) parses, uses only keys the XcodeGen 2.45 project spec documents, and
  every path it names exists (sources, the Models folder reference, Info.plist, test sources);
  its deployment target is ModelConstants.minRuntimeVersion;
* Info.plist parses and carries the keys the app needs (photo-library usage strings, launch
  screen, file sharing for benchmark mode); the asset catalog's Contents.json files are valid
  and the app icon is a 1024x1024 RGB PNG; the bundled sample photo is sam_edge's astronaut.jpg;
* every Swift file parses with a real Swift grammar (tree-sitter-swift, skipped when missing);
* the Swift model check hashes a Core ML package exactly as sam_edge.runtime.manifest.sha256_file:
  a Python transcription of the Swift rule matches sha256_file, the Swift unit tests' vectors are
  sha256_file's values (the trees are rebuilt here from the Swift literals), and the Swift source
  still has the rule's parts (component-wise order, NUL separator);
* models copied in by `sam-edge app-bundle` (when present) have the sha256 the constants expect.
"""
from __future__ import annotations

import hashlib
import json
import os
import plistlib
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from sam_edge.runtime.manifest import sha256_file

REPO = Path(__file__).resolve().parents[1]
IOS = REPO / "apps" / "ios"
APP = IOS / "SamEdgeDemo"
TESTS = IOS / "SamEdgeDemoTests"
SPEC = IOS / "project.yml"
CONSTANTS = APP / "ModelConstants.swift"
INTEGRITY = APP / "ModelIntegrity.swift"
SWIFT_TESTS = TESTS / "ModelIntegrityTests.swift"

# Keys documented by XcodeGen's Docs/ProjectSpec.md (2.45.4), per level of the spec.
PROJECT_KEYS = {"attributes", "breakpoints", "configFiles", "configs", "fileGroups", "include", "name", "options",
                "packages", "projectReferences", "schemeTemplates", "schemes", "settingGroups", "settings",
                "targetTemplates", "targets"}
OPTION_KEYS = {"bundleIdPrefix", "carthageBuildPath", "carthageExecutablePath", "createIntermediateGroups",
               "defaultConfig", "defaultSourceDirectoryType", "deploymentTarget", "developmentLanguage",
               "disabledValidations", "fileTypes", "findCarthageFrameworks", "generateEmptyDirectories",
               "groupOrdering", "groupSortPosition", "indentWidth", "localPackagesGroup", "minimumXcodeGenVersion",
               "postGenCommand", "preGenCommand", "projectFormat", "schemePathPrefix", "settingPresets", "tabWidth",
               "transitivelyLinkDependencies", "useBaseInternationalization", "usesTabs", "xcodeVersion"}
TARGET_KEYS = {"attributes", "buildRules", "buildToolPlugins", "configFiles", "dependencies", "deploymentTarget",
               "directlyEmbedCarthageDependencies", "entitlements", "info", "legacy", "onlyCopyFilesOnInstall",
               "platform", "postBuildScripts", "postCompileScripts", "preBuildScripts",
               "putResourcesBeforeSourcesBuildPhase", "requiresObjCLinking", "scheme", "settings", "sources",
               "supportedDestinations", "templateAttributes", "templates", "transitivelyLinkDependencies", "type"}
SOURCE_KEYS = {"attributes", "buildPhase", "compilerFlags", "createIntermediateGroups", "destinationFilters",
               "excludes", "explicitFolders", "group", "headerVisibility", "includes",
               "inferDestinationFiltersByPath", "name", "optional", "path", "resourceTags", "type"}
TARGET_SCHEME_KEYS = {"buildImplicitDependencies", "commandLineArguments", "configVariants", "coverageTargets",
                      "disableMainThreadChecker", "disableThreadPerformanceChecker", "environmentVariables",
                      "gatherCoverageData", "language", "management", "postActions", "preActions", "region",
                      "stopOnEveryMainThreadCheckerIssue", "storeKitConfiguration", "testPlans", "testTargets"}
SOURCE_TYPES = {"file", "group", "folder", "syncedFolder"}
PROJECT_FORMATS = {"xcode14_0", "xcode15_0", "xcode15_3", "xcode16_0", "xcode16_3"}


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load(SPEC.read_text())


def _constants() -> dict[str, str]:
    return dict(re.findall(r'static let (\w+)(?:: \w+)? = "([^"]*)"', CONSTANTS.read_text()))


def _sources(target: dict) -> list[dict]:
    raw = target.get("sources", [])
    raw = [raw] if isinstance(raw, str) else raw
    return [{"path": s} if isinstance(s, str) else s for s in raw]


def _excluded(rel: str, patterns: list[str]) -> bool:
    """XcodeGen's excludes: a pattern matching a directory excludes everything below it."""
    from fnmatch import fnmatchcase

    parts = rel.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(fnmatchcase(p, pat) or fnmatchcase(rel, pat) for pat in patterns for p in prefixes)


# -- project.yml -------------------------------------------------------------------------------------

def test_project_spec_uses_documented_keys(spec):
    assert spec["name"] == "SamEdgeDemo"
    assert set(spec) <= PROJECT_KEYS, set(spec) - PROJECT_KEYS
    assert set(spec["options"]) <= OPTION_KEYS, set(spec["options"]) - OPTION_KEYS
    assert spec["options"]["projectFormat"] in PROJECT_FORMATS
    assert set(spec["targets"]) == {"SamEdgeDemo", "SamEdgeDemoTests"}
    for name, target in spec["targets"].items():
        assert set(target) <= TARGET_KEYS, (name, set(target) - TARGET_KEYS)
        assert target["platform"] == "iOS"
        for source in _sources(target):
            assert set(source) <= SOURCE_KEYS, (name, set(source) - SOURCE_KEYS)
            assert source.get("type", "group") in SOURCE_TYPES
        for value in target.get("settings", {}).get("base", {}).values():
            assert isinstance(value, str), f"{name}: quote build setting values ({value!r}: YAML would make it a bool)"
    app, tests = spec["targets"]["SamEdgeDemo"], spec["targets"]["SamEdgeDemoTests"]
    assert app["type"] == "application" and tests["type"] == "bundle.unit-test"
    assert set(app["scheme"]) <= TARGET_SCHEME_KEYS
    assert app["scheme"]["testTargets"] == ["SamEdgeDemoTests"]


def test_project_spec_paths_exist(spec):
    app, tests = spec["targets"]["SamEdgeDemo"], spec["targets"]["SamEdgeDemoTests"]
    for target in (app, tests):
        for source in _sources(target):
            path = IOS / source["path"]
            assert path.exists(), f"project.yml names {source['path']}, which does not exist"
            if source.get("type") == "folder":
                assert path.is_dir()
    settings = app["settings"]["base"]
    assert (IOS / settings["INFOPLIST_FILE"]).is_file() and settings["GENERATE_INFOPLIST_FILE"] == "NO"
    assert settings["PRODUCT_BUNDLE_IDENTIFIER"] == "com.samedge.demo"

    # the Models folder is a folder reference (copied byte for byte, so its sha256 can be
    # checked), and the group source does not also pick the packages up (Xcode would compile them)
    main, *rest = _sources(app)
    assert main["path"] == "SamEdgeDemo" and _excluded("Models/encoder_fp16.mlpackage/Manifest.json", main["excludes"])
    assert {"path": "SamEdgeDemo/Models", "type": "folder"} in rest
    # every Swift file is compiled into the app; the pure ones also into the test bundle
    swift = sorted(p.relative_to(APP).as_posix() for p in APP.rglob("*.swift"))
    assert not [f for f in swift if _excluded(f, main["excludes"])]
    test_paths = {s["path"] for s in _sources(tests)}
    assert {"SamEdgeDemoTests", "SamEdgeDemo/ModelIntegrity.swift", "SamEdgeDemo/MaskMath.swift"} == test_paths
    # the files compiled into the test bundle use no app-only type (they must build on their own)
    for name in ("ModelIntegrity.swift", "MaskMath.swift"):
        code = re.sub(r'//[^\n]*|"(?:[^"\\\n]|\\.)*"', "", (APP / name).read_text())  # drop comments, strings
        assert not re.search(r"\b(ModelConstants|SamPredictor|ModelStore|DemoModel|PointPrompt)\b", code), name
        assert set(re.findall(r"^import (\w+)$", code, re.M)) <= {"Foundation", "CryptoKit"}, name


def test_deployment_target_is_the_models_minimum(spec):
    c = _constants()
    assert c["runtime"] == "coreml", "ModelConstants.swift must be generated for the Core ML export"
    assert re.fullmatch(r"\d+(\.\d+)*", c["minRuntimeVersion"]) and c["exporterVersion"]
    targets = {spec["options"]["deploymentTarget"]["iOS"]} | {t["deploymentTarget"] for t in spec["targets"].values()}
    assert targets == {c["minRuntimeVersion"]}, (
        f"project.yml deployment targets {sorted(targets)} != ModelConstants.minRuntimeVersion "
        f"{c['minRuntimeVersion']}: update project.yml after regenerating the constants")


# -- Info.plist, asset catalog, sample photo --------------------------------------------------------

def test_info_plist():
    info = plistlib.loads((APP / "Info.plist").read_bytes())
    assert info["CFBundleIdentifier"] == "$(PRODUCT_BUNDLE_IDENTIFIER)"
    assert info["CFBundleExecutable"] == "$(EXECUTABLE_NAME)"
    assert info["CFBundlePackageType"] == "$(PRODUCT_BUNDLE_PACKAGE_TYPE)"
    # the share sheet's "Save Image" writes to the photo library: without this string iOS kills the app
    for key in ("NSPhotoLibraryUsageDescription", "NSPhotoLibraryAddUsageDescription"):
        assert isinstance(info[key], str) and len(info[key]) > 10, key
    assert info["UILaunchScreen"] == {} and info["LSRequiresIPhoneOS"] is True
    # benchmark mode writes into Documents; these make it visible in Files / Finder
    assert info["UIFileSharingEnabled"] is True and info["LSSupportsOpeningDocumentsInPlace"] is True


def test_asset_catalog(spec):
    from PIL import Image

    catalog = APP / "Assets.xcassets"
    contents = sorted(catalog.rglob("Contents.json"))
    assert len(contents) == 3
    for path in contents:
        json.loads(path.read_text())
    settings = spec["targets"]["SamEdgeDemo"]["settings"]["base"]
    icon_set = catalog / f"{settings['ASSETCATALOG_COMPILER_APPICON_NAME']}.appiconset"
    color = catalog / f"{settings['ASSETCATALOG_COMPILER_GLOBAL_ACCENT_COLOR_NAME']}.colorset"
    assert json.loads((color / "Contents.json").read_text())["colors"]
    images = json.loads((icon_set / "Contents.json").read_text())["images"]
    assert [(i["idiom"], i["platform"], i["size"]) for i in images] == [("universal", "ios", "1024x1024")]
    with Image.open(icon_set / images[0]["filename"]) as icon:
        assert icon.format == "PNG" and icon.size == (1024, 1024) and icon.mode == "RGB"  # no alpha in app icons


def test_sample_photo_is_the_packaged_one():
    from PIL import Image

    sample = APP / "Resources" / "sample.jpg"
    assert sample.read_bytes() == (REPO / "sam_edge" / "assets" / "astronaut.jpg").read_bytes()
    with Image.open(sample) as im:
        assert im.format == "JPEG" and min(im.size) > 0
    assert '"sample"' in (APP / "ContentView.swift").read_text() and 'withExtension: "jpg"' in (
        APP / "ContentView.swift").read_text()


def test_models_folder_keeps_models_out_of_git():
    assert (APP / "Models" / ".gitignore").read_text().splitlines()[-2:] == ["*", "!.gitignore"]
    try:
        tracked = subprocess.run(["git", "ls-files", "apps/ios/SamEdgeDemo/Models"], cwd=REPO, capture_output=True,
                                 text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    assert tracked == ["apps/ios/SamEdgeDemo/Models/.gitignore"]


def test_bundled_models_have_the_expected_sha256():
    """After `sam-edge app-bundle`, the packages in Models/ are the ones ModelConstants describes
    (the app refuses them otherwise): a stale bundle fails here before it fails on a phone."""
    c = _constants()
    present = [(c[f"{role}File"], c[f"{role}Sha256"]) for role in ("encoder", "decoder")
               if (APP / "Models" / c[f"{role}File"]).exists()]
    if not present:
        pytest.skip("no models in apps/ios/SamEdgeDemo/Models (run `sam-edge app-bundle --artifacts DIR`)")
    for name, expected in present:
        assert sha256_file(APP / "Models" / name) == expected, f"Models/{name} is not the export ModelConstants.swift describes"


# -- Swift sources -------------------------------------------------------------------------------------

def _swift_errors(parser, source: bytes) -> list[str]:
    out, stack = [], [parser.parse(source).root_node]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            out.append(f"{'missing ' + node.type if node.is_missing else 'ERROR'} at line {node.start_point[0] + 1}")
        stack.extend(node.children)
    return out


def test_swift_sources_parse():
    ts = pytest.importorskip("tree_sitter", reason="pip install tree-sitter tree-sitter-swift")
    tss = pytest.importorskip("tree_sitter_swift", reason="pip install tree-sitter tree-sitter-swift")
    parser = ts.Parser(ts.Language(tss.language()))
    assert _swift_errors(parser, b"let x = [1, 2\nfunc f( {") != []  # the check does see errors
    files = sorted(IOS.rglob("*.swift"))
    assert len(files) >= 9
    for path in files:
        errors = _swift_errors(parser, path.read_bytes())
        assert not errors, f"{path.relative_to(REPO)}: {errors[:5]}"


def test_app_checks_models_at_load_without_crashing():
    predictor = (APP / "SamPredictor.swift").read_text()
    store = (APP / "ModelStore.swift").read_text()
    view = (APP / "ContentView.swift").read_text()
    load = predictor[predictor.index("static func load("):predictor.index("    init(encoder:")]
    assert "ModelStore.checkRuntime()" in load
    assert "expectedSha256: ModelConstants.encoderSha256" in load and "expectedSha256: ModelConstants.decoderSha256" in load
    assert "ModelConstants.minRuntimeVersion" in store and 'ModelConstants.runtime == "coreml"' in store
    assert "ModelIntegrity.sha256(of: package)" in store and "MLModel.compileModel(at: package)" in store
    assert "loadError = error.localizedDescription" in view and "if let error = model.loadError" in view
    for path in sorted(APP.glob("*.swift")):
        text = path.read_text()
        assert "fatalError(" not in text and "try!" not in text, f"{path.name}: a crash path instead of an error"


# -- the sha256 of a directory artifact: Swift rule == sam_edge.runtime.manifest.sha256_file ----------

def _hash_by_rule(root: Path, string_order: bool = False) -> str:
    """Python transcription of ModelIntegrity.sha256(of:) for a directory: regular files and links
    to regular files (links to directories not entered), sorted component-wise by code point,
    each contributing its relative POSIX path, a NUL byte and its bytes."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):  # os.walk does not enter linked directories
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            full = Path(dirpath) / name
            if full.is_file():
                files.append(full.relative_to(root).as_posix())
    files.sort(key=(lambda r: r) if string_order else (lambda r: r.split("/")))
    h = hashlib.sha256()
    for rel in files:
        h.update(rel.encode() + b"\0" + (root / rel).read_bytes())
    return h.hexdigest()


def _swift_vectors() -> dict:
    text = SWIFT_TESTS.read_text()

    def block(name: str) -> str:
        start = text.index(f"static let {name}")
        return text[start:text.index("\n    ]", start)]

    return {
        "files": re.findall(r'\("([^"]*)", "([^"]*)"\)', block("treeFiles")),
        "order": re.findall(r'^\s+"([^"]*)",$', block("treeOrder"), re.M),
        "links": re.findall(r'\("([^"]*)", "([^"]*)"\)', block("treeLinks")),
        **dict(re.findall(r'static let (\w+Sha256) = "([0-9a-f]{64})"', text)),
    }


def _build(root: Path, files) -> Path:
    for rel, content in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def test_swift_unit_test_vectors_are_sha256_file(tmp_path):
    v = _swift_vectors()
    assert len(v["files"]) == 8 and len(v["links"]) == 2
    tree = _build(tmp_path / "model.mlpackage", v["files"])
    assert sha256_file(tree) == v["treeSha256"] == _hash_by_rule(tree)
    listed = sorted((p for p in tree.rglob("*") if p.is_file()))
    assert [p.relative_to(tree).as_posix() for p in listed] == v["order"]
    # the vector tells the rule from a plain string sort (which a port might use by mistake)
    assert _hash_by_rule(tree, string_order=True) != v["treeSha256"]

    linked = _build(tmp_path / "linked.mlpackage", v["files"])
    for rel, target in v["links"]:
        os.symlink(target, linked / rel)
    assert sha256_file(linked) == v["linkedTreeSha256"] == _hash_by_rule(linked)

    (tmp_path / "empty").mkdir()
    (tmp_path / "abc.bin").write_bytes(b"abc")
    assert sha256_file(tmp_path / "empty") == v["emptyDirectorySha256"]
    assert sha256_file(tmp_path / "abc.bin") == v["abcFileSha256"] == hashlib.sha256(b"abc").hexdigest()


def test_rule_matches_sha256_file_on_a_package_like_tree(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    files = [("Manifest.json", b'{"fileFormatVersion": "1.0.0"}'),
             ("Data/com.apple.CoreML/model.mlmodel", rng.bytes(3000)),
             ("Data/com.apple.CoreML/weights/weight.bin", rng.bytes((1 << 20) + 17)),  # > one read chunk
             ("Data/com.apple.CoreML/Z", b""), ("Data/com.apple.CoreML-x/a", b"x"), ("Data.json", b"{}")]
    tree = _build(tmp_path / "encoder_fp16.mlpackage", files)
    assert sha256_file(tree) == _hash_by_rule(tree)


def test_swift_source_has_the_rule():
    text = INTEGRITY.read_text()
    body = text[text.index("static func sha256(of url: URL)"):text.index("static let chunkSize")]
    # path bytes, then one NUL, then the file's bytes, per file in `precedes` order
    i_path, i_nul, i_feed = (body.index(s) for s in ("Data(rel.utf8)", "Data([0x00])", "try feed(&hasher"))
    assert i_path < i_nul < i_feed
    assert "for rel in try hashedFiles(in: url)" in body
    precedes = text[text.index("static func precedes"):text.index("static func hashedFiles")]
    assert 'split(separator: "/")' in precedes and ".utf8" in precedes and "lexicographicallyPrecedes" in precedes
    assert "files.sorted(by: precedes)" in text
    assert "skipsHiddenFiles" not in text  # pathlib's rglob lists hidden files too
    assert "chunkSize = 1 << 20" in text


def test_readme_gives_the_three_commands():
    readme = (IOS / "README.md").read_text()
    for needle in ("sam-edge app-bundle --artifacts runs/demo/export", "xcodegen generate",
                   "open SamEdgeDemo.xcodeproj", "brew install xcodegen", "not compiled"):
        assert needle in readme, needle
