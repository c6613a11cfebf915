"""ONNX export: wrappers vs eager, export + verification, runtime predictor, int8, manifest."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")
skdata = pytest.importorskip("skimage.data")

from sam_edge import SamPredictor  # noqa: E402
from sam_edge.runtime import ManifestError, load_manifest, load_predictor  # noqa: E402

from tests.export_helpers import INT8_REASON, calibration_photos, held_out_photo, mask_iou, tiny  # noqa: E402
from sam_edge.formats.onnx import ExportError, _export_error, export_onnx  # noqa: E402
from sam_edge.export.verify import VerificationError, verify_artifact  # noqa: E402
from sam_edge.export.wrappers import DecoderWrapper, EncoderWrapper, build_point_inputs, pad_raw_with_mean  # noqa: E402

@pytest.fixture(scope="module")
def photos():
    return calibration_photos()


@pytest.fixture(scope="module")
def test_photo():
    return held_out_photo()


@pytest.fixture(scope="module")
def model():
    return tiny()


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, model, photos, test_photo):
    out = tmp_path_factory.mktemp("onnx_export")
    export_onnx(model, out, precisions=("fp32", "int8"), calib_images=photos,
                verify_images=[test_photo] + photos[:1],
                accept_failures={"int8_dynamic": INT8_REASON, "int8_static": INT8_REASON})
    return out


@pytest.fixture(scope="module")
def eager_predictor(model, test_photo):
    p = SamPredictor(model)
    p.set_image(test_photo)
    return p


def _prompts(img):
    h, w = img.shape[:2]
    return [
        dict(point_coords=np.array([[w * 0.5, h * 0.45]]), point_labels=np.array([1])),
        dict(point_coords=np.array([[w * 0.5, h * 0.45], [w * 0.1, h * 0.9], [w * 0.7, h * 0.3]]),
             point_labels=np.array([1, 0, 1])),
        dict(box=np.array([w * 0.3, h * 0.1, w * 0.7, h * 0.95])),
        dict(point_coords=np.array([[w * 0.5, h * 0.45]]), point_labels=np.array([1]),
             box=np.array([w * 0.3, h * 0.1, w * 0.7, h * 0.95])),
    ]


# -- wrappers vs eager --------------------------------------------------------------------------
def test_encoder_wrapper_matches_eager(model, eager_predictor, test_photo):
    enc = EncoderWrapper(model).eval()
    resized = eager_predictor.transform.apply_image(test_photo)
    x = torch.from_numpy(pad_raw_with_mean(resized, model.image_size, model.pixel_mean.flatten().tolist()))
    with torch.no_grad():
        emb = enc(x)
    assert emb.shape == eager_predictor.features.shape
    assert (emb - eager_predictor.features).abs().max() < 1e-4


@pytest.mark.parametrize("multimask", [True, False])
def test_decoder_wrapper_matches_predictor(model, eager_predictor, test_photo, multimask):
    dec = DecoderWrapper(model, mask_outputs="all").eval()
    p = eager_predictor
    sl = slice(1, None) if multimask else slice(0, 1)
    for kw in _prompts(test_photo):
        _, iou, low = p.predict(multimask_output=multimask, **kw)
        _, iou2, low2 = p.predict(mask_input=low[:1], multimask_output=multimask, **kw)
        c = p.transform.apply_coords(kw["point_coords"], p.original_size) if "point_coords" in kw else None
        b = p.transform.apply_boxes(kw["box"], p.original_size) if "box" in kw else None
        pc, pl = build_point_inputs(c, kw.get("point_labels"), b)
        for mask_in, has, ref_low, ref_iou in (
            (np.zeros((1, 1, 64, 64), np.float32), 0.0, low, iou),
            (low[:1][None], 1.0, low2, iou2),
        ):
            with torch.no_grad():
                got_low, got_iou = dec(p.features, torch.from_numpy(pc), torch.from_numpy(pl),
                                       torch.from_numpy(np.ascontiguousarray(mask_in)), torch.tensor([has]))
            assert np.abs(got_low[0, sl].numpy() - ref_low).max() < 1e-4
            assert np.abs(got_iou[0, sl].numpy() - ref_iou).max() < 1e-5


def test_decoder_wrapper_output_modes(model):
    for mode, m in (("all", 4), ("multimask", 3), ("single", 1)):
        dec = DecoderWrapper(model, mask_outputs=mode).eval()
        with torch.no_grad():
            low, iou = dec(*dec.example_inputs())
        assert low.shape == (1, m, 64, 64) and iou.shape == (1, m)
    with pytest.raises(ValueError, match="mask_outputs"):
        DecoderWrapper(model, mask_outputs="best")


# -- export + manifest + verification -----------------------------------------------------------
def test_manifest_schema_and_fp32_verification(export_dir):
    man = load_manifest(export_dir)
    assert man["model"]["name"] == "sam_test_tiny" and man["image_size"] == 256
    assert man["normalize_inside"] is True and man["pad_value"] == "pixel_mean"
    assert man["mask_outputs"] == "all" and man["mask_input_size"] == 64
    files = {a["file"] for a in man["artifacts"]}
    for prec in ("fp32", "int8_dynamic", "int8_static"):
        assert {f"encoder_{prec}.onnx", f"decoder_{prec}.onnx"} <= files
    for a in man["artifacts"]:
        assert a["size_bytes"] == (export_dir / a["file"]).stat().st_size and len(a["sha256"]) == 64
        assert a["backend_versions"]["onnxruntime"] == ort.__version__
        assert a["verification"]["metrics"]
        if a["precision"] == "fp32":
            v = a["verification"]
            assert v["passed"] is True, v
            if a["role"] == "encoder":
                assert v["metrics"]["cosine_min"] >= 0.9999
            else:
                assert v["metrics"]["mask_iou_mean"] >= 0.99
                assert a["dynamic_axes"]["point_coords"] == {"1": "num_points"}
                shape = {i["name"]: i["shape"] for i in a["inputs"]}["point_coords"]
                assert isinstance(shape[1], str) and shape[0] == 1 and shape[2] == 2
        else:
            assert a["quantization"]["method"].startswith("onnxruntime.quantization")
            v = a["verification"]
            assert v["passed"] or v["reason"] == INT8_REASON


def test_int8_files_smaller(export_dir):
    man = load_manifest(export_dir)
    size = {(a["role"], a["precision"]): a["size_bytes"] for a in man["artifacts"]}
    for role in ("encoder", "decoder"):
        for prec in ("int8_dynamic", "int8_static"):
            assert size[(role, prec)] < size[(role, "fp32")]
    static = next(a for a in man["artifacts"] if a["precision"] == "int8_static" and a["role"] == "encoder")
    assert static["quantization"]["format"] == "QDQ" and static["quantization"]["calibration_images"] == 3


def test_verification_error_names_artifact_and_metric(export_dir, test_photo):
    other = tiny(seed=1)  # different weights: the fp32 artifact no longer matches
    entry = next(a for a in load_manifest(export_dir)["artifacts"] if a["file"] == "encoder_fp32.onnx")
    with pytest.raises(VerificationError, match=r"encoder_fp32\.onnx.*cosine_min=.*tolerance >= 0\.9999"):
        verify_artifact(export_dir, entry, other, [test_photo])
    rec = verify_artifact(export_dir, entry, other, [test_photo], reason="expected mismatch")
    assert rec["passed"] is False and rec["reason"] == "expected mismatch"


def test_export_error_names_operator_and_format():
    err = _export_error("encoder.onnx", RuntimeError("Unsupported: aten::fft_rfft2 cannot be exported"))
    assert isinstance(err, ExportError) and "aten::fft_rfft2" in str(err) and "'onnx'" in str(err)


# -- runtime predictor --------------------------------------------------------------------------
def test_runtime_predictor_matches_sam_predictor(export_dir, eager_predictor, test_photo):
    pred = load_predictor(export_dir)
    assert pred.precision == "fp32"
    pred.set_image(test_photo)
    assert np.abs(pred.get_image_embedding() - eager_predictor.features.numpy()).max() < 1e-3
    for kw in _prompts(test_photo):  # 1 point, 3 points (dynamic N), box, point + box
        for multimask in (True, False):
            m_ref, iou_ref, low_ref = eager_predictor.predict(multimask_output=multimask, **kw)
            m, iou, low = pred.predict(multimask_output=multimask, **kw)
            assert m.shape == m_ref.shape == (3 if multimask else 1, *test_photo.shape[:2]) and m.dtype == bool
            assert low.shape == low_ref.shape and iou.shape == iou_ref.shape
            for a, b in zip(m, m_ref):
                assert mask_iou(a, b) >= 0.99
            assert np.abs(iou - iou_ref).max() < 1e-3
    # mask prompt round trip
    _, _, low_ref = eager_predictor.predict(**_prompts(test_photo)[0])
    m_ref, _, _ = eager_predictor.predict(mask_input=low_ref[:1], **_prompts(test_photo)[0])
    m, _, _ = pred.predict(mask_input=low_ref[:1], **_prompts(test_photo)[0])
    assert all(mask_iou(a, b) >= 0.99 for a, b in zip(m, m_ref))


def test_runtime_predictor_int8_runs(export_dir, test_photo):
    pred = load_predictor(export_dir, precision="int8_static")
    pred.set_image(test_photo)
    masks, iou, low = pred.predict(point_coords=np.array([[100, 100]]), point_labels=np.array([1]))
    assert masks.shape == (3, *test_photo.shape[:2]) and low.shape == (3, 64, 64)
    with pytest.raises(ManifestError, match="fp16"):
        load_predictor(export_dir, precision="fp16")


def test_tampered_file_is_refused(export_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(export_dir, copy)
    path = copy / "decoder_fp32.onnx"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match=r"decoder_fp32\.onnx: sha256 mismatch"):
        load_manifest(copy)
    with pytest.raises(ManifestError, match="sha256"):
        load_predictor(copy)


def test_missing_manifest_is_clear(tmp_path, export_dir):
    shutil.copy(export_dir / "encoder_fp32.onnx", tmp_path)
    with pytest.raises(ManifestError, match=f"no manifest.json in export directory {tmp_path}"):
        load_predictor(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 99, "artifacts": []}))
    with pytest.raises(ManifestError, match="schema_version"):
        load_manifest(tmp_path)


def test_sam_edge_imports_no_backend():
    code = "import sys, sam_edge, sam_edge.runtime; print('onnxruntime' in sys.modules, 'onnx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
