"""TFLite export (litert-torch -> ai-edge-litert): manifest, verification, runtime predictor,
fixed point slots, int8 sizes, conversion errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")
skdata = pytest.importorskip("skimage.data")

from sam_edge import SamPredictor  # noqa: E402
from sam_edge.runtime import get_backend, load_manifest, load_predictor  # noqa: E402

from tests.export_helpers import INT8_REASON, held_out_photo, mask_iou, tiny  # noqa: E402
from sam_edge.export.common import ExportError  # noqa: E402
from sam_edge.formats.tflite import export_tflite  # noqa: E402

MAX_POINTS = 6


@pytest.fixture(scope="module")
def photos():
    return [skdata.astronaut()[::4, ::4].copy(), skdata.coffee()[::2, ::2].copy()]


@pytest.fixture(scope="module")
def test_photo():
    return held_out_photo()


@pytest.fixture(scope="module")
def model():
    return tiny()


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, model, photos, test_photo):
    out = tmp_path_factory.mktemp("tflite_export")
    export_tflite(model, out, precisions=("fp32", "fp16", "int8"), calib_images=photos, verify_images=[test_photo],
                  accept_failures={"int8_dynamic": INT8_REASON, "int8_static": INT8_REASON}, max_points=MAX_POINTS)
    return out


@pytest.fixture(scope="module")
def eager_predictor(model, test_photo):
    p = SamPredictor(model)
    p.set_image(test_photo)
    return p


def test_manifest_and_fp32_verification(export_dir):
    man = load_manifest(export_dir)
    arts = {(a["role"], a["precision"]): a for a in man["artifacts"]}
    precs = ("fp32", "fp16", "int8_dynamic", "int8_static")
    assert set(arts) == {(r, p) for r in ("encoder", "decoder") for p in precs}
    for (role, prec), a in arts.items():
        assert a["format"] == "tflite" and a["file"] == f"{role}_{prec}.tflite"
        assert a["size_bytes"] == (export_dir / a["file"]).stat().st_size and len(a["sha256"]) == 64
        assert {"litert-torch", "ai-edge-litert", "ai-edge-quantizer"} <= set(a["backend_versions"])
        v = a["verification"]
        assert v["metrics"]
        if prec in ("fp32", "fp16"):
            assert v["passed"] is True, v
        else:
            assert v["passed"] or v["reason"] == INT8_REASON
            assert a["quantization"]["weight_type"] == "int8"
        if role == "decoder":
            assert a["max_points"] == MAX_POINTS
            assert [i["name"] for i in a["inputs"]] == ["image_embeddings", "point_coords", "point_labels",
                                                        "mask_input", "has_mask_input"]
            assert [i["signature_name"] for i in a["inputs"]] == [f"args_{i}" for i in range(5)]
            assert a["inputs"][1]["shape"] == [1, MAX_POINTS, 2] and a["inputs"][2]["shape"] == [1, MAX_POINTS]
            assert [o["name"] for o in a["outputs"]] == ["low_res_masks", "iou_predictions"]
            assert a["outputs"][0]["shape"] == [1, 4, 64, 64]
        else:
            assert [i["name"] for i in a["inputs"]] == ["image"] and a["inputs"][0]["shape"] == [1, 3, 256, 256]
            assert [o["name"] for o in a["outputs"]] == ["image_embeddings"]
    enc, dec = arts[("encoder", "fp32")]["verification"], arts[("decoder", "fp32")]["verification"]
    assert enc["metrics"]["cosine_min"] >= 0.9999
    assert dec["metrics"]["mask_iou_mean"] >= 0.99
    static = arts[("encoder", "int8_static")]["quantization"]
    assert static["num_calibration_samples"] == 2 and static["calibration_images"] == 2
    assert arts[("decoder", "int8_static")]["quantization"]["ops"] == ["FULLY_CONNECTED", "CONV_2D"]


def test_int8_files_smaller(export_dir):
    size = {(a["role"], a["precision"]): a["size_bytes"] for a in load_manifest(export_dir)["artifacts"]}
    for role in ("encoder", "decoder"):
        assert size[(role, "fp16")] < size[(role, "fp32")]
        for prec in ("int8_dynamic", "int8_static"):
            assert size[(role, prec)] < size[(role, "fp16")]


def test_runtime_predictor_matches_sam_predictor(export_dir, eager_predictor, test_photo):
    pred = load_predictor(export_dir, fmt="tflite")
    assert pred.format == "tflite" and pred.precision == "fp32"
    pred.set_image(test_photo)
    assert np.abs(pred.get_image_embedding() - eager_predictor.features.numpy()).max() < 1e-3
    h, w = test_photo.shape[:2]
    box = np.array([w * 0.3, h * 0.1, w * 0.7, h * 0.95])
    rng = np.random.default_rng(0)
    prompts = [dict(box=box)]
    # 1 .. MAX_POINTS - 1 points + the padding point, and up to MAX_POINTS - 2 points + a box: every slot count
    for n in range(1, MAX_POINTS):
        prompts.append(dict(point_coords=rng.uniform([0, 0], [w, h], (n, 2)), point_labels=rng.integers(0, 2, n)))
    prompts.append(dict(point_coords=rng.uniform([0, 0], [w, h], (MAX_POINTS - 2, 2)),
                        point_labels=np.ones(MAX_POINTS - 2, int), box=box))
    for kw in prompts:
        for multimask in (True, False):
            m_ref, iou_ref, low_ref = eager_predictor.predict(multimask_output=multimask, **kw)
            m, iou, low = pred.predict(multimask_output=multimask, **kw)
            assert m.shape == m_ref.shape and low.shape == low_ref.shape and m.dtype == bool
            assert np.abs(low - low_ref).max() < 1e-3
            assert np.abs(iou - iou_ref).max() < 1e-3
            assert all(mask_iou(a, b) >= 0.99 for a, b in zip(m, m_ref))
    # too many points: a clear error naming the input and the maximum
    with pytest.raises(ValueError, match=rf"point_coords.*max_points={MAX_POINTS}"):
        pred.predict(point_coords=rng.uniform(0, 100, (MAX_POINTS, 2)), point_labels=np.ones(MAX_POINTS, int))


def test_int8_runtime_runs(export_dir, test_photo):
    for prec in ("int8_dynamic", "int8_static"):
        pred = load_predictor(export_dir, precision=prec, fmt="tflite")
        pred.set_image(test_photo)
        masks, iou, low = pred.predict(point_coords=np.array([[100, 100]]), point_labels=np.array([1]))
        assert masks.shape == (3, *test_photo.shape[:2]) and np.isfinite(low).all()


def test_graphs_hold_no_int8_division_hazard(export_dir):
    """A full-integer DIV aborts at run time when its divisor rounds to the zero point (seen on
    a real photo with a RepViT encoder: "div.cc data[i] != zero_point"); LayerNorm2d multiplies
    by RSQRT instead, so neither graph divides, and the full-integer encoder holds no float op."""
    from ai_edge_litert.interpreter import Interpreter

    man = load_manifest(export_dir)
    for role in ("encoder", "decoder"):
        for prec in ("fp32", "int8_static"):
            ops = [o["op_name"] for o in Interpreter(model_path=str(export_dir / f"{role}_{prec}.tflite"))._get_ops_details()]
            assert "DIV" not in ops and "RSQRT" in ops, (role, prec, sorted(set(ops)))
    enc = next(a for a in man["artifacts"] if a["role"] == "encoder" and a["precision"] == "int8_static")
    assert enc["quantization"]["full_integer"], enc["quantization"]


def test_session_names_and_threads(export_dir):
    from sam_edge.formats.tflite import LiteRTBackend

    enc = get_backend("tflite").load(export_dir / "encoder_fp32.tflite")
    assert enc.input_names == ["image"] and enc.output_names == ["image_embeddings"]
    dec = LiteRTBackend(num_threads=1).load(export_dir / "decoder_fp16.tflite")
    assert dec.output_names == ["low_res_masks", "iou_predictions"] and dec.max_points == MAX_POINTS
    assert "ai-edge-litert" in LiteRTBackend().versions()


class _Cumprod(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.cumprod(-1))


def test_unsupported_op_names_operator_and_format(tmp_path):
    model = tiny()
    model.image_encoder = _Cumprod(model.image_encoder)  # aten.cumprod has no litert-torch lowering
    with pytest.raises(ExportError, match=r"aten\.cumprod.*'tflite'"):
        export_tflite(model, tmp_path, precisions=("fp32",))
