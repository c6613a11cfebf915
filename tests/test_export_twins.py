"""Every 1024-px architecture users deploy (sam_vit_b, mobilesam_tinyvit, repvit_sam) exports
through every format: its tiny twin (same code paths, window padding where the real one pads) goes
through ONNX, TFLite and Core ML at fp32 and int8 and ExecuTorch at int8, and each artifact is verified
against eager PyTorch (Core ML: spec check, prediction needs macOS). A toolchain regression on one
architecture (as XNNPACK's int8 pad was for TinyViT, TFLite's int8 DIV for RepViT) fails here,
not on a user's machine. The ViT twin is the model of the per-format export test files
(tests/export_helpers.tiny), which export it at every precision; here the other two."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow  # ~1-2 min per architecture on a 2-core CPU (ExecuTorch lowering)

for _mod in ("onnxruntime", "executorch", "ai_edge_litert", "coremltools", "skimage.data"):
    pytest.importorskip(_mod)

from sam_edge import get_config  # noqa: E402
from sam_edge.runtime import load_manifest, load_predictor  # noqa: E402

from tests.export_helpers import INT8_REASON, TWINS, calibration_photos, held_out_photo, tiny, twin  # noqa: E402
from sam_edge.export.api import export_model  # noqa: E402

FORMATS = ("onnx", "executorch", "tflite", "coreml")
# fp32 and the int8 each format takes (int8_static: PT2E / QDQ / full-integer; Core ML: weights)
PRECISIONS = ("fp32", "int8_static", "int8_weights")


def _window_padding(cfg) -> list[bool]:
    """Per attention stage: does the token grid need padding to a multiple of the window?"""
    if cfg.encoder_kind == "vit":
        return [(cfg.image_size // 16) % cfg.window_size != 0]
    if cfg.encoder_kind == "tiny_vit":
        grids = [cfg.image_size // 4 // s for s in (1, 2, 4, 4)]
        return [g % w != 0 for g, w in zip(grids, cfg.tiny_window_sizes)]
    return []


@pytest.mark.parametrize("name", sorted(TWINS))
def test_twin_has_the_deployed_models_structure(name):
    real = get_config(name)
    m = twin(name)
    base, overrides = TWINS[name]
    cfg = get_config(base, **overrides)
    assert cfg.encoder_kind == real.encoder_kind and real.image_size == 1024
    assert _window_padding(cfg) == _window_padding(real)
    if real.encoder_kind == "vit":
        assert len(cfg.global_attn_indexes) > 0
    if real.encoder_kind == "repvit":
        assert cfg.rep_use_se == real.rep_use_se and len(cfg.rep_depths) == len(real.rep_depths)
    assert m.image_encoder.img_size == cfg.image_size


def test_the_per_format_export_tests_use_the_vit_twin():
    a, b = tiny(), twin("sam_vit_b")
    assert a.image_encoder.blocks[0].window_size == 5
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("name", ["mobilesam_tinyvit", "repvit_sam"])
def test_twin_exports_through_every_format(name, tmp_path):
    photos, test_photo = calibration_photos(), held_out_photo()
    kw = dict(calib_images=photos, verify_images=[test_photo], accept_failures={"int8_static": INT8_REASON})
    # ExecuTorch at int8 only: its fp32 lowering of these blocks is exercised by the ViT twin in
    # test_export_executorch.py and the int8 graph is where architectures broke (the pad); each
    # XNNPACK lowering costs ~20 s here, and the suite's budget is ~15 minutes
    export_model(twin(name), tmp_path, formats=("executorch",), precisions=("int8_static",), **kw)
    man = export_model(twin(name), tmp_path, formats=("onnx", "tflite", "coreml"), precisions=PRECISIONS, **kw)
    got = {(a["format"], a["role"], a["precision"]) for a in man["artifacts"]}
    want = {(f, r, p) for f in FORMATS for r in ("encoder", "decoder")
            for p in (("int8_static",) if f == "executorch" else ("fp32", "int8_weights" if f == "coreml" else "int8_static"))}
    assert got == want
    for a in man["artifacts"]:
        v, what = a["verification"], f"{name} {a['format']} {a['role']} {a['precision']}"
        assert (tmp_path / a["file"]).exists(), what
        if a["format"] == "coreml":
            assert v["spec_check"]["passed"], (what, v["spec_check"]["failures"])
        elif a["precision"] == "fp32":
            assert v["passed"], (what, v["failures"])
        else:
            # int8 of random weights may miss the trained-model tolerances (recorded with the
            # reason), but it loaded and ran: verification measured it
            assert v["passed"] or v["reason"] == INT8_REASON, (what, v)
            metric = "cosine_min" if a["role"] == "encoder" else "mask_iou_mean"
            assert v["metrics"][metric] > 0.5, (what, v["metrics"])
    # the runtime picks the exported artifacts up by manifest and segments a real photo
    load_manifest(tmp_path)
    for fmt, prec in (("onnx", "fp32"), ("executorch", "int8_static"), ("tflite", "fp32")):
        p = load_predictor(tmp_path, precision=prec, fmt=fmt)
        p.set_image(test_photo)
        masks, scores, _ = p.predict(point_coords=np.array([[100.0, 80.0]]), point_labels=np.array([1]))
        assert masks.shape[-2:] == test_photo.shape[:2] and scores.shape[-1] == masks.shape[0], fmt
