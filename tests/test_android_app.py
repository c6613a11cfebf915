"""The Android sample app (apps/android), checked as far as a machine without the Android SDK can:
the Gradle wrapper really is one (run end to end on a local distribution), the version catalog pins
runtimes at least as new as the exporter's, the build files use only catalog entries that exist,
every Kotlin source parses with a real Kotlin grammar (tree-sitter-kotlin), the manifest / layout /
Kotlin resource references resolve, and the instrumented test's golden files agree with the app's
generated constants. Compiling the app and running it need the SDK and are not done here (README).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ANDROID = ROOT / "apps" / "android"
APP = ANDROID / "app"
MAIN = APP / "src" / "main"
KOTLIN = MAIN / "java" / "com" / "samedge" / "demo"
RES = MAIN / "res"
CATALOG = ANDROID / "gradle" / "libs.versions.toml"
WRAPPER = ANDROID / "gradle" / "wrapper"

# Gradle 8.10.2's wrapper jar, as shipped in @react-native-community/template@0.76.9 (npm),
# template/android/gradle/wrapper/gradle-wrapper.jar (README: "Gradle wrapper").
WRAPPER_JAR_SHA256 = "2db75c40782f5e8ba1fc278a5574bab070adccb2d21ca5a6e5ed840888448046"
GRADLE_VERSION = "8.14.3"
# the published sha256 of gradle-8.14.3-bin.zip
GRADLE_DIST_SHA256 = "bd71102213493060956ec229d946beee57158dbd89d0e62b91bca0fa2c5f3531"
# Android Gradle plugin minor -> minimum Gradle (the AGP release notes' compatibility tables)
AGP_MIN_GRADLE = {"8.8": "8.10.2", "8.9": "8.11.1", "8.10": "8.11.1", "8.11": "8.13", "8.12": "8.13",
                  "8.13": "8.13"}


def _vt(v: str) -> tuple[int, ...]:
    """"1.5.1" -> (1, 5, 1); a suffix ends the number (as ModelCheck.versionParts)."""
    m = re.match(r"\d+(?:\.\d+)*", str(v).strip())
    assert m, f"not a version number: {v!r}"
    return tuple(int(p) for p in m.group(0).split("."))


def _at_least(have: str, need: str) -> bool:
    a, b = _vt(have), _vt(need)
    n = max(len(a), len(b))
    return a + (0,) * (n - len(a)) >= b + (0,) * (n - len(b))


def _properties(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip().replace("\\:", ":")
    return out


def _catalog() -> dict:
    return tomllib.loads(CATALOG.read_text())


def _kotlin_constants() -> dict[str, str]:
    text = (KOTLIN / "ModelConstants.kt").read_text()
    return dict(re.findall(r'const val (\w+) = "([^"]*)"', text))


# -- Gradle wrapper ----------------------------------------------------------------------------------

def test_wrapper_files():
    for name in ("gradlew", "gradlew.bat", "gradle/wrapper/gradle-wrapper.jar", "gradle/wrapper/gradle-wrapper.properties"):
        assert (ANDROID / name).is_file(), f"apps/android/{name} missing"
    assert os.access(ANDROID / "gradlew", os.X_OK), "gradlew must be executable (git update-index --chmod=+x)"
    assert "org.gradle.wrapper.GradleWrapperMain" in (ANDROID / "gradlew").read_text()
    jar = WRAPPER / "gradle-wrapper.jar"
    assert hashlib.sha256(jar.read_bytes()).hexdigest() == WRAPPER_JAR_SHA256
    with zipfile.ZipFile(jar) as z:
        assert "org/gradle/wrapper/GradleWrapperMain.class" in z.namelist()
    props = _properties(WRAPPER / "gradle-wrapper.properties")
    assert props["distributionUrl"] == f"https://services.gradle.org/distributions/gradle-{GRADLE_VERSION}-bin.zip"
    assert props["distributionSha256Sum"] == GRADLE_DIST_SHA256


def test_gradle_version_fits_the_plugins():
    versions = _catalog()["versions"]
    agp_minor = ".".join(versions["agp"].split(".")[:2])
    assert agp_minor in AGP_MIN_GRADLE, f"AGP {versions['agp']}: add its minimum Gradle to AGP_MIN_GRADLE"
    assert _at_least(GRADLE_VERSION, AGP_MIN_GRADLE[agp_minor])
    # Kotlin Gradle plugin 2.3.20-2.3.21: Gradle 7.6.3-9.3.0, AGP 8.2.2-9.0.0; Kotlin 2.3 classes need R8 of AGP >= 8.13.2
    assert _vt(versions["kotlin"])[:2] == (2, 3), "re-check the KGP / AGP / Gradle compatibility for a new Kotlin"
    assert _at_least(GRADLE_VERSION, "7.6.3") and _at_least("9.3.0", GRADLE_VERSION)
    assert _at_least(versions["agp"], "8.13.2") and _at_least("9.0.0", versions["agp"])


def _java_tools():
    java, javac, jar = shutil.which("java"), shutil.which("javac"), shutil.which("jar")
    if not (java and javac and jar):
        pytest.skip("needs a JDK (java, javac, jar)")
    return java, javac, jar


def _fake_distribution(tmp_path: Path) -> Path:
    """A zip laid out as a Gradle distribution whose launcher just prints its arguments."""
    _, javac, jar = _java_tools()
    src = tmp_path / "src" / "org" / "gradle" / "launcher" / "GradleMain.java"
    src.parent.mkdir(parents=True)
    src.write_text("package org.gradle.launcher;\npublic class GradleMain { public static void main(String[] a) "
                   "{ System.out.println(\"FAKE-GRADLE \" + String.join(\" \", a)); } }\n")
    subprocess.run([javac, "-d", str(tmp_path / "classes"), str(src)], check=True, capture_output=True)
    launcher = tmp_path / "gradle-launcher-0.jar"
    subprocess.run([jar, "cf", str(launcher), "-C", str(tmp_path / "classes"), "."], check=True, capture_output=True)
    dist = tmp_path / "fake-gradle-bin.zip"
    with zipfile.ZipFile(dist, "w") as z:  # with directory entries, as Gradle's own zips
        z.writestr("gradle-fake/", "")
        z.writestr("gradle-fake/lib/", "")
        z.write(launcher, "gradle-fake/lib/gradle-launcher-0.jar")
    return dist


def _run_wrapper(tmp_path: Path, dist: Path, sha256: str) -> subprocess.CompletedProcess:
    java, _, _ = _java_tools()
    proj = tmp_path / "proj"
    (proj / "gradle" / "wrapper").mkdir(parents=True, exist_ok=True)
    shutil.copy(WRAPPER / "gradle-wrapper.jar", proj / "gradle" / "wrapper" / "gradle-wrapper.jar")
    props = _properties(WRAPPER / "gradle-wrapper.properties")
    props.update(distributionUrl=dist.as_uri(), distributionSha256Sum=sha256)
    (proj / "gradle" / "wrapper" / "gradle-wrapper.properties").write_text(
        "".join(f"{k}={v.replace(':', chr(92) + ':')}\n" for k, v in props.items()))
    env = {**os.environ, "GRADLE_USER_HOME": str(tmp_path / "home")}
    env.pop("JAVA_TOOL_OPTIONS", None)
    return subprocess.run([java, "-cp", str(proj / "gradle" / "wrapper" / "gradle-wrapper.jar"),
                           "org.gradle.wrapper.GradleWrapperMain", "tasks", "--offline"],
                          cwd=proj, env=env, capture_output=True, text=True, timeout=120)


def test_wrapper_jar_fetches_verifies_and_starts_a_distribution(tmp_path):
    """The committed jar is a working wrapper: offline, on a local distribution (a zip with a stub
    launcher), it downloads it, checks distributionSha256Sum, unpacks it and starts its launcher with
    our arguments, and refuses a distribution whose checksum differs."""
    dist = _fake_distribution(tmp_path)
    good = hashlib.sha256(dist.read_bytes()).hexdigest()
    r = _run_wrapper(tmp_path / "ok", dist, good)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "FAKE-GRADLE tasks --offline" in r.stdout
    r = _run_wrapper(tmp_path / "bad", dist, "0" * 64)
    assert r.returncode != 0 and "Verification of Gradle distribution failed" in r.stdout + r.stderr


# -- version catalog vs the exporter -----------------------------------------------------------------

def _exporter_pins() -> dict[str, str]:
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["export"]
    return dict(re.match(r"([A-Za-z0-9_.-]+)==(\S+)", d).groups() for d in extra if "==" in d)


def test_runtime_versions_not_older_than_the_exporter():
    versions = _catalog()["versions"]
    pins = _exporter_pins()
    # a .pte loads on an ExecuTorch runtime at least as new as the executorch that wrote it
    assert _at_least(versions["executorch"], pins["executorch"]), (versions["executorch"], pins["executorch"])
    # a .tflite on the LiteRT that verified it (ai-edge-litert, same release line as the Maven AAR) or newer
    assert _at_least(versions["litert"], pins["ai-edge-litert"]), (versions["litert"], pins["ai-edge-litert"])
    manifest = json.loads((ROOT / "apps" / "model_manifest.json").read_text())
    for art in manifest["artifacts"]:
        bv = art.get("backend_versions") or {}
        if art["format"] == "executorch" and bv.get("executorch"):
            assert _at_least(versions["executorch"], bv["executorch"]), (art["file"], bv["executorch"])
        if art["format"] == "tflite" and bv.get("ai-edge-litert"):
            assert _at_least(versions["litert"], bv["ai-edge-litert"]), (art["file"], bv["ai-edge-litert"])


def test_runtime_version_covers_the_generated_constants():
    c = _kotlin_constants()
    for key in ("RUNTIME", "EXPORTER_VERSION", "MIN_RUNTIME_VERSION", "ENCODER_SHA256", "DECODER_SHA256"):
        assert key in c, f"ModelConstants.kt lacks {key}: regenerate it (sam-edge app-bundle)"
    catalog_key = {"executorch": "executorch", "litert": "litert"}.get(c["RUNTIME"])
    assert catalog_key, f"ModelConstants.RUNTIME {c['RUNTIME']!r}: the Android app bundles executorch and litert"
    have = _catalog()["versions"][catalog_key]
    assert _at_least(have, c["MIN_RUNTIME_VERSION"]), (
        f"gradle/libs.versions.toml {catalog_key} = {have} < ModelConstants.MIN_RUNTIME_VERSION {c['MIN_RUNTIME_VERSION']}")
    ext = {"executorch": ".pte", "litert": ".tflite"}[c["RUNTIME"]]
    assert c["ENCODER_FILE"].endswith(ext) and c["DECODER_FILE"].endswith(ext)
    for key in ("ENCODER_SHA256", "DECODER_SHA256"):
        assert re.fullmatch(r"[0-9a-f]{64}", c[key]), key


def test_app_checks_models_at_load():
    """SamPredictor refuses before loading: runtime version and sha256 checks wired to the constants
    and to the BuildConfig fields the build writes from the catalog."""
    pred = (KOTLIN / "SamPredictor.kt").read_text()
    build = (APP / "build.gradle.kts").read_text()
    for field, entry in (("EXECUTORCH_VERSION", "executorch"), ("LITERT_VERSION", "litert")):
        assert f'buildConfigField("String", "{field}", "\\"${{libs.versions.{entry}.get()}}\\"")' in build
        assert f"BuildConfig.{field}" in pred
    for used in ("ModelConstants.MIN_RUNTIME_VERSION", "ModelConstants.ENCODER_SHA256", "ModelConstants.DECODER_SHA256",
                 "ModelCheck.runtimeProblem", "ModelCheck.sha256Problem", "ModelFiles.checkRuntime(ModelConstants.ENCODER_FILE)"):
        assert used in pred, used
    main = (KOTLIN / "MainActivity.kt").read_text()
    assert "catch (e: ModelCheckException)" in main and "showError(" in main


# -- build files vs the catalog ----------------------------------------------------------------------

def _accessor(alias: str) -> str:
    return re.sub(r"[-_.]", ".", alias)


def test_build_files_use_existing_catalog_entries():
    cat = _catalog()
    for section in ("libraries", "plugins"):
        for alias, spec in cat[section].items():
            ref = spec.get("version.ref") if isinstance(spec, dict) else None
            ref = ref or (spec.get("version", {}).get("ref") if isinstance(spec, dict) and isinstance(spec.get("version"), dict) else None)
            assert ref is None or ref in cat["versions"], f"[{section}] {alias}: version.ref {ref!r} is not in [versions]"
    known = {"libs." + _accessor(a) for a in cat["libraries"]}
    known |= {"libs.plugins." + _accessor(a) for a in cat["plugins"]}
    known |= {"libs.versions." + _accessor(a) for a in cat["versions"]}
    used = set()
    for kts in ANDROID.rglob("*.gradle.kts"):
        code = re.sub(r"//[^\n]*", "", kts.read_text())  # comments mention gradle/libs.versions.toml
        for ref in re.findall(r"\blibs\.[A-Za-z0-9_.]+", code):
            ref = re.sub(r"\.get$", "", ref)
            assert ref in known, f"{kts.relative_to(ROOT)}: {ref} is not in gradle/libs.versions.toml"
            used.add(ref)
    unused = {k for k in known if not k.startswith("libs.versions.")} - used
    assert not unused, f"catalog entries no build file uses: {sorted(unused)}"
    # no hard-coded coordinates or plugin versions outside the catalog
    for kts in ANDROID.rglob("*.gradle.kts"):
        text = kts.read_text()
        assert not re.search(r'(implementation|Implementation)\("[\w.-]+:[\w.-]+:', text), kts
        assert not re.search(r'id\("[\w.]+"\)\s+version', text), kts


# -- Kotlin sources parse ----------------------------------------------------------------------------

def _kotlin_parser():
    ts = pytest.importorskip("tree_sitter")
    tsk = pytest.importorskip("tree_sitter_kotlin")
    return ts.Parser(ts.Language(tsk.language()))


def _errors(node, out):
    if node.type == "ERROR" or node.is_missing:
        out.append((node.type, node.start_point.row + 1, node.start_point.column + 1))
    for child in node.children:
        _errors(child, out)
    return out


def test_kotlin_sources_parse():
    parser = _kotlin_parser()
    # the app and its build scripts; typecheck/'s declarations are compiled by kotlinc in
    # test_app_kotlin_type_checks (tree-sitter-kotlin 1.1 misreads `suspend T.() -> R` there)
    files = [f for f in sorted(ANDROID.rglob("*.kt")) + sorted(ANDROID.rglob("*.kts"))
             if (ANDROID / "typecheck") not in f.parents]
    names = {f.name for f in files}
    assert {"MainActivity.kt", "SamPredictor.kt", "ModelCheck.kt", "ImageMath.kt", "GoldenMaskTest.kt",
            "ModelCheckTest.kt", "build.gradle.kts", "settings.gradle.kts"} <= names
    bad = {}
    for f in files:
        errs = _errors(parser.parse(f.read_bytes()).root_node, [])
        if errs:
            bad[str(f.relative_to(ROOT))] = errs[:5]
    assert not bad, bad
    # the check has teeth: a broken file is reported
    assert _errors(parser.parse(b"fun main( {\n  val x = \n}\n").root_node, [])


# -- resources ---------------------------------------------------------------------------------------

def _res_names() -> dict[str, set[str]]:
    import xml.etree.ElementTree as ET

    names: dict[str, set[str]] = {"string": set(), "color": set(), "style": set(), "dimen": set(), "id": set()}
    for xml in RES.glob("values*/*.xml"):
        for el in ET.parse(xml).getroot():
            if el.tag in names:
                names[el.tag].add(el.get("name"))
    for kind in ("layout", "drawable", "mipmap"):
        names[kind] = {p.stem for d in RES.glob(f"{kind}*") for p in d.iterdir()}
    for layout in RES.glob("layout*/*.xml"):
        names["id"] |= set(re.findall(r'@\+id/(\w+)', layout.read_text()))
    return names


# styles that come from AppCompat / the platform, not this app's res/
LIBRARY_STYLE_PREFIXES = ("Theme.AppCompat", "TextAppearance.AppCompat", "Widget.AppCompat")


def test_manifest_and_layout_references_resolve():
    names = _res_names()
    for path in [MAIN / "AndroidManifest.xml", *RES.rglob("*.xml")]:
        for kind, name in re.findall(r'"@(string|color|style|drawable|mipmap|layout|dimen|id)/([\w.]+)"', path.read_text()):
            if kind == "style" and name.startswith(LIBRARY_STYLE_PREFIXES):
                continue
            assert name in names[kind], f"{path.relative_to(ROOT)}: @{kind}/{name} is not defined in res/"
    manifest = (MAIN / "AndroidManifest.xml").read_text()
    for attr in ("android:icon", "android:roundIcon", "android:label", "android:theme"):
        assert f'{attr}="@' in manifest, f"AndroidManifest.xml: {attr} should name a resource"
    # AppCompatActivity needs an AppCompat theme
    themes = (RES / "values" / "themes.xml").read_text()
    assert re.search(r'<style name="Theme\.SamEdge" parent="Theme\.AppCompat\.', themes)
    for icon in ("ic_launcher", "ic_launcher_round"):
        assert icon in names["mipmap"]


# AppCompat's styles and attributes that res/ uses: declared for aapt2 so that it can link res/
# against the platform alone (AppCompat's own resources are not on this machine)
APPCOMPAT_STAND_INS = """<resources>
  <attr name="colorPrimary" format="color"/><attr name="colorPrimaryDark" format="color"/>
  <attr name="colorAccent" format="color"/>
  <style name="Theme"/><style name="Theme.AppCompat"/><style name="Theme.AppCompat.DayNight"/>
  <style name="Theme.AppCompat.DayNight.NoActionBar"/>
  <style name="TextAppearance"/><style name="TextAppearance.AppCompat"/><style name="TextAppearance.AppCompat.Title"/>
</resources>
"""
FRAMEWORK_RES = Path("/usr/share/android-framework-res/framework-res.apk")  # Debian: android-framework-res


def test_resources_compile_and_link_with_aapt2(tmp_path):
    """aapt2 compiles every file in res/ and links them with the manifest against the platform's
    framework resources (Debian's aapt + android-framework-res, API 29), AppCompat's names stood in
    by APPCOMPAT_STAND_INS: XML, vector / adaptive icon, layout attributes, string formats and every
    @-reference are checked. Skipped without aapt2."""
    aapt2 = shutil.which("aapt2")
    if not aapt2 or not FRAMEWORK_RES.is_file():
        pytest.skip("needs aapt2 and framework-res.apk (Debian packages aapt, android-framework-res)")
    stub = tmp_path / "stub" / "values"
    stub.mkdir(parents=True)
    (stub / "appcompat.xml").write_text(APPCOMPAT_STAND_INS)
    for src, out in ((RES, "res.zip"), (stub.parent, "stub.zip")):
        r = subprocess.run([aapt2, "compile", "--dir", str(src), "-o", str(tmp_path / out)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    manifest = (MAIN / "AndroidManifest.xml").read_text().replace(
        "<manifest ", '<manifest package="com.samedge.demo" ', 1)  # AGP takes the package from `namespace`
    (tmp_path / "AndroidManifest.xml").write_text(manifest)
    r = subprocess.run([aapt2, "link", "-o", str(tmp_path / "app.apk"), "-I", str(FRAMEWORK_RES),
                        "--manifest", str(tmp_path / "AndroidManifest.xml"), "--min-sdk-version", "28",
                        "--target-sdk-version", "29", "--auto-add-overlay", "--java", str(tmp_path / "gen"),
                        "-R", str(tmp_path / "stub.zip"), str(tmp_path / "res.zip")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r_java = (tmp_path / "gen" / "com" / "samedge" / "demo" / "R.java").read_text()
    kotlin = (KOTLIN / "MainActivity.kt").read_text()
    for kind, name in set(re.findall(r"\bR\.(string|id|layout)\.(\w+)", kotlin)):
        assert re.search(rf"class {kind} \{{[^}}]*int {name}=", r_java), f"R.{kind}.{name} not generated"


def _call_args(text: str, start: int) -> list[str]:
    """Top-level comma-separated arguments of the call whose '(' is at text[start]."""
    depth, args, cur, i = 0, [], "", start
    while True:
        ch = text[i]
        if ch in "([{":
            depth += 1
            if depth == 1:
                i += 1
                continue
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                args.append(cur.strip())
                return args
        elif ch == '"':
            j = text.index('"', i + 1)
            while text[j - 1] == "\\":
                j = text.index('"', j + 1)
            cur += text[i:j + 1]
            i = j + 1
            continue
        if ch == "," and depth == 1:
            args.append(cur.strip())
            cur = ""
        else:
            cur += ch
        i += 1


def test_kotlin_resource_references_resolve_and_format_arguments_match():
    import xml.etree.ElementTree as ET

    names = _res_names()
    strings = {el.get("name"): el.text or "" for el in ET.parse(RES / "values" / "strings.xml").getroot()}
    text = (KOTLIN / "MainActivity.kt").read_text()
    refs = re.findall(r"\bR\.(string|id|layout|drawable|mipmap|color)\.(\w+)", text)
    assert refs
    for kind, name in refs:
        assert name in names[kind], f"MainActivity.kt: R.{kind}.{name} is not defined in res/"
    calls = 0
    for m in re.finditer(r"getString\(", text):
        args = _call_args(text, m.end() - 1)
        key = re.fullmatch(r"R\.string\.(\w+)", args[0]).group(1)
        placeholders = {int(n) for n in re.findall(r"%(\d+)\$", strings[key])}
        assert placeholders == set(range(1, len(args))), f"getString(R.string.{key}, ...): {len(args) - 1} argument(s) " \
            f"for placeholders {sorted(placeholders)}"
        calls += 1
    assert calls >= 10


# -- sample photo and the instrumented test's golden -------------------------------------------------

def test_sample_photo_is_the_package_asset():
    sample = MAIN / "assets" / "sample.jpg"
    assert sample.is_file(), "apps/android/app/src/main/assets/sample.jpg missing (sam-edge app-bundle copies it)"
    assert sample.read_bytes() == (ROOT / "sam_edge" / "assets" / "astronaut.jpg").read_bytes()
    assert "SAMPLE_ASSET = \"sample.jpg\"" in (KOTLIN / "MainActivity.kt").read_text()


GOLDEN_DIR = APP / "src" / "androidTest" / "assets"


def test_instrumented_test_exists():
    test = (APP / "src" / "androidTest" / "java" / "com" / "samedge" / "demo" / "GoldenMaskTest.kt").read_text()
    assert "@RunWith(AndroidJUnit4::class)" in test and "golden.json" in test and 'getDouble("min_iou")' in test
    assert 'testInstrumentationRunner = "androidx.test.runner.AndroidJUnitRunner"' in (APP / "build.gradle.kts").read_text()


def test_golden_files_are_consistent():
    gj = GOLDEN_DIR / "golden.json"
    if not gj.is_file():
        pytest.skip("no apps/android/app/src/androidTest/assets/golden.json yet (sam-edge app-bundle writes it)")
    from PIL import Image

    g = json.loads(gj.read_text())
    for key in ("image", "width", "height", "points", "labels", "mask_index", "mask_png", "min_iou",
                "encoder_sha256", "decoder_sha256"):
        assert key in g, f"golden.json lacks {key}"
    c = _kotlin_constants()
    assert g["encoder_sha256"] == c["ENCODER_SHA256"], "golden.json is for another encoder than ModelConstants.kt"
    assert g["decoder_sha256"] == c["DECODER_SHA256"], "golden.json is for another decoder than ModelConstants.kt"
    assert g["min_iou"] >= 0.95
    num_outputs = int(re.search(r"const val NUM_MASK_OUTPUTS = (\d+)", (KOTLIN / "ModelConstants.kt").read_text()).group(1))
    assert 0 <= g["mask_index"] < num_outputs
    with Image.open(MAIN / "assets" / g["image"]) as im:
        assert im.size == (g["width"], g["height"])
    assert len(g["points"]) == len(g["labels"]) >= 1 and set(g["labels"]) <= {0, 1}
    for x, y in g["points"]:
        assert 0 <= x < g["width"] and 0 <= y < g["height"]
    with Image.open(GOLDEN_DIR / g["mask_png"]) as mask:
        assert mask.mode == "L" and mask.size == (g["width"], g["height"])
        values = set(mask.getdata())
    assert values <= {0, 255} and 255 in values, f"golden mask values {sorted(values)[:5]}"


# -- JVM unit tests (only where a Kotlin compiler is at hand) ----------------------------------------

@pytest.mark.slow
def test_jvm_unit_tests_with_kotlinc(tmp_path):
    """Compile the Android-free Kotlin files with their src/test JUnit tests and run them, and check
    ImageMath.encoderInput on a real photo equals sam_edge.runtime.predictor.encoder_input value for
    value (both normalisation modes). Needs
    `kotlinc` (on PATH or $KOTLINC; e.g. the npm package kotlin-compiler) and a JUnit 4 jar
    ($JUNIT_JAR, or Debian's junit4 in /usr/share/java). Skipped when either is missing."""
    kotlinc, junit = _kotlinc_or_skip()
    hamcrest = "/usr/share/java/hamcrest-core.jar"
    sources = [KOTLIN / n for n in ("ModelCheck.kt", "ImageMath.kt", "MaskMath.kt")]
    tests = sorted((APP / "src" / "test").rglob("*.kt"))
    # and the encoder input of a real photo against sam_edge.runtime.predictor.encoder_input
    import numpy as np
    from PIL import Image

    from sam_edge.runtime.predictor import encoder_input

    photo = np.array(Image.open(ROOT / "sam_edge" / "assets" / "coffee.jpg").convert("RGB"))
    (tmp_path / "photo.rgb").write_bytes(photo.tobytes())
    mean, std = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
    for inside in (True, False):
        x, _ = encoder_input(photo, 256, mean, std, inside)
        (tmp_path / f"ref_{int(inside)}.f32").write_bytes(np.ascontiguousarray(x, "<f4").tobytes())
    cross = tmp_path / "CrossCheck.kt"
    cross.write_text(f"""
import com.samedge.demo.ImageMath
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
fun main() {{
    val (w, h) = {photo.shape[1]} to {photo.shape[0]}
    val b = File("{tmp_path / 'photo.rgb'}").readBytes()
    val px = IntArray(w * h) {{ i -> ((b[3 * i].toInt() and 0xFF) shl 16) or ((b[3 * i + 1].toInt() and 0xFF) shl 8) or (b[3 * i + 2].toInt() and 0xFF) }}
    val mean = floatArrayOf(123.675f, 116.28f, 103.53f)
    val std = floatArrayOf(58.395f, 57.12f, 57.375f)
    for (inside in listOf(true, false)) {{
        val x = ImageMath.encoderInput(px, w, h, 256, mean, std, inside)
        val ref = ByteBuffer.wrap(File("{tmp_path}/ref_${{if (inside) 1 else 0}}.f32").readBytes()).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer()
        var differ = 0
        for (i in x.data.indices) if (x.data[i] != ref.get(i)) differ++
        println("normalizeInside=$inside differing=$differ of ${{x.data.size}}")
    }}
}}
""")
    out = tmp_path / "classes"
    r = subprocess.run([kotlinc, "-jvm-target", "17", "-cp", junit, *map(str, sources + tests + [cross]), "-d", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    stdlib = Path(kotlinc).resolve().parents[1] / "lib" / "kotlin-stdlib.jar"
    cp = os.pathsep.join(str(p) for p in (out, stdlib, junit, hamcrest) if Path(p).exists())
    r = subprocess.run(["java", "-cp", cp, "CrossCheckKt"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() and all(line.endswith(f"differing=0 of {3 * 256 * 256}") for line in r.stdout.strip().splitlines()), r.stdout
    classes = [f"com.samedge.demo.{t.stem}" for t in tests]
    r = subprocess.run(["java", "-cp", cp, "org.junit.runner.JUnitCore", *classes], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "OK (" in r.stdout, r.stdout[-3000:]


def _kotlinc_or_skip() -> tuple[str, str]:
    kotlinc = os.environ.get("KOTLINC") or shutil.which("kotlinc")
    junit = os.environ.get("JUNIT_JAR") or "/usr/share/java/junit4.jar"
    if not kotlinc or not Path(junit).is_file():
        pytest.skip("needs kotlinc ($KOTLINC or PATH) and a JUnit 4 jar ($JUNIT_JAR or Debian's junit4)")
    _java_tools()
    return kotlinc, junit


def _write_r_and_build_config(out: Path) -> None:
    """R.java (every resource name in res/, ids numbered in order) and BuildConfig.java (the runtime
    versions from the catalog, as app/build.gradle.kts writes them)."""
    names = _res_names()
    pkg = out / "com" / "samedge" / "demo"
    pkg.mkdir(parents=True)
    n = 0x7F000000
    classes = []
    for kind in ("string", "id", "layout", "drawable", "mipmap", "color", "style"):
        fields = []
        for name in sorted(names[kind]):
            n += 1
            fields.append(f"    public static final int {name.replace('.', '_')} = {n};")
        classes.append(f"  public static final class {kind} {{\n" + "\n".join(fields) + "\n  }")
    (pkg / "R.java").write_text("package com.samedge.demo;\npublic final class R {\n" + "\n".join(classes) + "\n}\n")
    v = _catalog()["versions"]
    (pkg / "BuildConfig.java").write_text(
        "package com.samedge.demo;\npublic final class BuildConfig {\n"
        f'  public static final String EXECUTORCH_VERSION = "{v["executorch"]}";\n'
        f'  public static final String LITERT_VERSION = "{v["litert"]}";\n}}\n')


@pytest.mark.slow
def test_app_kotlin_type_checks(tmp_path):
    """Every Kotlin file of app/src/main and app/src/androidTest compiles with kotlinc against the
    declared API surface in apps/android/typecheck (see its README): the app's Kotlin is type-checked
    although the Android SDK is not here."""
    kotlinc, junit = _kotlinc_or_skip()
    javac = shutil.which("javac")
    decl = ANDROID / "typecheck"
    _write_r_and_build_config(tmp_path / "gen")
    java_sources = sorted(map(str, (decl / "java").rglob("*.java"))) + sorted(map(str, (tmp_path / "gen").rglob("*.java")))
    r = subprocess.run([javac, "-d", str(tmp_path / "decl"), "-cp", junit, *java_sources], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    kotlin_sources = sorted((decl / "kotlin").glob("*.kt")) + sorted((MAIN / "java").rglob("*.kt")) \
        + sorted((APP / "src" / "androidTest").rglob("*.kt"))
    r = subprocess.run([kotlinc, "-jvm-target", "17", "-Werror", "-cp", os.pathsep.join([str(tmp_path / "decl"), junit]),
                        *map(str, kotlin_sources), "-d", str(tmp_path / "out")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    assert (tmp_path / "out" / "com" / "samedge" / "demo" / "MainActivity.class").is_file()
