"""`sam-edge app-bundle` (export/app_bundle.py) and the apps' committed generated files.

* the committed files agree with each other: ModelConstants.swift / .kt, apps/model_manifest.json,
  the Android test's golden (golden.json + golden_mask.png) and the sample photo copies; each
  manifest entry's runtime requirement is what the constants tell the apps to check. A stale
  bundle (models in the app folders that differ from the constants) fails here;
* bundle() on a synthetic export: models copied, earlier ones removed, constants regenerated from
  the new export, sample photo copied, tampered input refused; golden() on a tiny real export is
  the Python runtime's multimask prediction with the highest predicted IoU.
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam_edge.export import app_bundle as ab
from sam_edge.export import app_constants as ac
from sam_edge.runtime.manifest import ManifestError, runtime_requirement, sha256_file, version_at_least

REPO = Path(__file__).resolve().parents[1]
APPS = REPO / "apps"
PATHS = ab.app_paths(APPS)


def _swift(key: str, text: str) -> str:
    return re.search(rf'static let {key} = "([^"]*)"', text).group(1)


def _kt(key: str, text: str) -> str:
    return re.search(rf'const val {key} = "([^"]*)"', text).group(1)


def _committed():
    manifest = json.loads(PATHS["manifest_copy"].read_text())
    by_file = {a["file"]: a for a in manifest["artifacts"]}
    return manifest, by_file, PATHS["swift"].read_text(), PATHS["kotlin"].read_text()


def test_committed_constants_carry_the_manifests_files_hashes_and_runtime():
    manifest, by_file, swift, kt = _committed()
    for text, get, keys in ((swift, _swift, ("encoderFile", "encoderSha256", "decoderFile", "decoderSha256")),
                            (kt, _kt, ("ENCODER_FILE", "ENCODER_SHA256", "DECODER_FILE", "DECODER_SHA256"))):
        enc, dec = by_file[get(keys[0], text)], by_file[get(keys[2], text)]
        assert get(keys[1], text) == enc["sha256"] and get(keys[3], text) == dec["sha256"]
        assert re.fullmatch(r"[0-9a-f]{64}", enc["sha256"])
    # the runtime each app checks at load = the manifest entries' requirement
    ios = [by_file[_swift(k, swift)] for k in ("encoderFile", "decoderFile")]
    android = [by_file[_kt(k, kt)] for k in ("ENCODER_FILE", "DECODER_FILE")]
    for arts, runtime, minimum, exporter in ((ios, _swift("runtime", swift), _swift("minRuntimeVersion", swift),
                                             _swift("exporterVersion", swift)),
                                            (android, _kt("RUNTIME", kt), _kt("MIN_RUNTIME_VERSION", kt),
                                             _kt("EXPORTER_VERSION", kt))):
        reqs = [a.get("runtime") or runtime_requirement(a) for a in arts]
        assert {r["runtime"] for r in reqs} == {runtime}
        assert all(version_at_least(minimum, r["min_version"]) for r in reqs)
        assert exporter == reqs[0]["exporter_version"]
    assert _swift("runtime", swift) == "coreml" and _swift("minRuntimeVersion", swift) == "17.0"
    assert _kt("RUNTIME", kt) == "executorch"
    # ExecuTorch runs a .pte only on a runtime at least as new as the exporter
    assert _kt("MIN_RUNTIME_VERSION", kt) == android[0]["backend_versions"]["executorch"]


def test_committed_golden_and_sample_photos_agree_with_the_constants():
    _, by_file, _, kt = _committed()
    gdir = PATHS["android_golden"]
    info = json.loads((gdir / "golden.json").read_text())
    assert info["encoder_file"] == _kt("ENCODER_FILE", kt) and info["decoder_file"] == _kt("DECODER_FILE", kt)
    assert info["encoder_sha256"] == _kt("ENCODER_SHA256", kt), "stale golden: run sam-edge app-bundle"
    assert info["decoder_sha256"] == _kt("DECODER_SHA256", kt), "stale golden: run sam-edge app-bundle"
    mask = np.array(Image.open(gdir / info["mask_png"]))
    assert mask.shape == (info["height"], info["width"]) and set(np.unique(mask)) <= {0, 255}
    assert int((mask > 0).sum()) == info["mask_pixels"] > 0
    assert info["mask_index"] in {int(v) for v in re.search(r"MULTIMASK_INDICES = intArrayOf\(([^)]*)\)",
                                                             kt).group(1).split(",")}
    assert 0 < info["min_iou"] <= 1 and info["labels"] == [1] and len(info["points"]) == 1
    sample = ab.SAMPLE_PHOTO.read_bytes()
    for key in ("android_sample", "ios_sample"):
        assert PATHS[key].read_bytes() == sample, f"{PATHS[key]}: not the sample photo"
    with Image.open(PATHS["android_sample"]) as im:
        assert im.size == (info["width"], info["height"])


def test_bundled_models_match_the_constants():
    """Models copied into the apps (never committed; present after `sam-edge app-bundle`) must be
    the ones the constants name, byte for byte: a stale bundle fails here, as the apps would refuse
    it at load."""
    _, _, swift, kt = _committed()
    want = {PATHS["android_models"] / _kt("ENCODER_FILE", kt): _kt("ENCODER_SHA256", kt),
            PATHS["android_models"] / _kt("DECODER_FILE", kt): _kt("DECODER_SHA256", kt),
            PATHS["ios_models"] / _swift("encoderFile", swift): _swift("encoderSha256", swift),
            PATHS["ios_models"] / _swift("decoderFile", swift): _swift("decoderSha256", swift)}
    present = {p: h for p, h in want.items() if p.exists()}
    for folder in (PATHS["android_models"], PATHS["ios_models"]):
        if folder.is_dir():
            extra = [p.name for p in folder.iterdir() if p.suffix in ab.MODEL_SUFFIXES and p not in want]
            assert not extra, f"{folder}: models the constants do not name: {extra} (run sam-edge app-bundle)"
    if not present:
        pytest.skip("no models bundled into apps/ here (sam-edge app-bundle --artifacts EXPORT_DIR)")
    for path, digest in present.items():
        assert sha256_file(path) == digest, f"{path}: differs from the constants (run sam-edge app-bundle)"


# -- bundle() on a synthetic export ---------------------------------------------------------------

def _fake_export(tmp: Path, tag: bytes) -> Path:
    """The committed manifest's four artifacts, as files of made-up bytes with their true hashes."""
    manifest = copy.deepcopy(json.loads(PATHS["manifest_copy"].read_text()))
    manifest.pop("app_constants", None)
    out = tmp / f"export_{tag.decode()}"
    out.mkdir()
    for art in manifest["artifacts"]:
        path = out / art["file"]
        if art["file"].endswith(".mlpackage"):
            (path / "Data").mkdir(parents=True)
            (path / "Data" / "model.mil").write_bytes(tag + art["file"].encode())
            (path / "Manifest.json").write_text("{}")
        else:
            path.write_bytes(tag + art["file"].encode())
        art["sha256"] = sha256_file(path)
        art["size_bytes"] = sum(f.stat().st_size for f in ([path] if path.is_file() else path.rglob("*")) if f.is_file())
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def _apps_skeleton(tmp: Path) -> Path:
    apps = tmp / "apps"
    for key in ("android_models", "kotlin", "ios_models", "swift"):
        target = apps / ab.app_paths(APPS)[key].relative_to(APPS)
        (target if key.endswith("models") else target.parent).mkdir(parents=True, exist_ok=True)
    return apps


def test_bundle_copies_models_regenerates_constants_and_removes_stale(tmp_path):
    apps = _apps_skeleton(tmp_path)
    paths = ab.app_paths(apps)
    stale = paths["android_models"] / "encoder_int8_static.pte"
    stale.write_bytes(b"old bundle")
    keep = paths["android_models"] / "notes.txt"
    keep.write_text("not a model")
    done = ab.bundle(_fake_export(tmp_path, b"A"), apps, with_golden=False)
    kt, swift = paths["kotlin"].read_text(), paths["swift"].read_text()
    for folder, text, get, keys in ((paths["android_models"], kt, _kt, ("ENCODER_FILE", "ENCODER_SHA256")),
                                    (paths["ios_models"], swift, _swift, ("encoderFile", "encoderSha256"))):
        assert sha256_file(folder / get(keys[0], text)) == get(keys[1], text)
    assert not stale.exists() and keep.exists() and str(stale) in done["removed"]
    assert paths["android_sample"].read_bytes() == ab.SAMPLE_PHOTO.read_bytes() == paths["ios_sample"].read_bytes()
    first = _kt("ENCODER_SHA256", kt)
    # a second export replaces the models (the .mlpackage directory too) and the constants
    ab.bundle(_fake_export(tmp_path, b"B"), apps, with_golden=False)
    kt2 = paths["kotlin"].read_text()
    assert _kt("ENCODER_SHA256", kt2) != first
    assert sha256_file(paths["android_models"] / _kt("ENCODER_FILE", kt2)) == _kt("ENCODER_SHA256", kt2)
    swift2 = paths["swift"].read_text()
    assert sha256_file(paths["ios_models"] / _swift("decoderFile", swift2)) == _swift("decoderSha256", swift2)
    assert not [p for p in paths["ios_models"].iterdir() if p.name.startswith(".")]  # no temporaries left


def test_bundle_refuses_tampered_export_and_bad_selection(tmp_path):
    apps = _apps_skeleton(tmp_path)
    export = _fake_export(tmp_path, b"A")
    with pytest.raises(ManifestError, match="--android"):
        ab.bundle(export, apps, android="onnx:fp32", with_golden=False)
    with pytest.raises(ManifestError, match="--ios"):
        ab.bundle(export, apps, ios="executorch", with_golden=False)
    next(export.glob("*.pte")).write_bytes(b"tampered")
    with pytest.raises(ManifestError, match="sha256"):
        ab.bundle(export, apps, with_golden=False)
    assert not list((ab.app_paths(apps)["android_models"]).glob("*.pte"))  # nothing copied


def test_cli_errors_are_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "sam_edge.cli", "app-bundle", "--artifacts", str(tmp_path / "nope")],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(tmp_path / "nope") in lines[0] and "Traceback" not in r.stderr


def test_golden_is_the_runtimes_best_multimask_prediction(tmp_path):
    pytest.importorskip("onnxruntime")
    import torch

    from sam_edge.formats.onnx import export_onnx
    from sam_edge import create_model
    from sam_edge.image import load_image
    from sam_edge.runtime.manifest import load_manifest
    from sam_edge.runtime.predictor import ArtifactPredictor

    torch.manual_seed(0)
    export_onnx(create_model("sam_test_tiny"), tmp_path, ["fp32"])
    manifest = load_manifest(tmp_path)
    info, mask = ab.golden(tmp_path, manifest, "onnx", "fp32")
    image = load_image(ab.SAMPLE_PHOTO)
    assert mask.shape == image.shape[:2] == (info["height"], info["width"])
    pred = ArtifactPredictor(tmp_path, precision="fp32", fmt="onnx")
    pred.set_image(image)
    masks, ious, _ = pred.predict(point_coords=np.array([ab.GOLDEN_POINT], np.float32),
                                  point_labels=np.array([1], np.float32), multimask_output=True)
    k = int(np.argmax(ious))
    assert np.array_equal(mask, masks[k]) and info["mask_pixels"] == int(masks[k].sum())
    assert info["mask_index"] == ac.app_constants(manifest, "onnx", "fp32")["multimask_indices"][k]
    assert info["encoder_sha256"] == hashlib.sha256((tmp_path / info["encoder_file"]).read_bytes()).hexdigest()
