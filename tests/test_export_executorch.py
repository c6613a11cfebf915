"""ExecuTorch export (XNNPACK): export + manifest + verification, runtime predictor, dynamic number
of points, int8 (calibration required, smaller file), lowering errors naming the operator.

Slow-ish: lowering to XNNPACK takes ~15-40 s per graph on a 2-core CPU, and the module fixture
lowers four graphs (fp32 + int8, encoder + decoder) once for the whole file."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow  # ~2.5 min on a 2-core CPU, almost all of it XNNPACK lowering

pytest.importorskip("executorch")
skdata = pytest.importorskip("skimage.data")

from sam_edge import SamPredictor  # noqa: E402
from sam_edge.runtime import get_backend, load_manifest, load_predictor  # noqa: E402

from tests.export_helpers import INT8_REASON, calibration_photos, held_out_photo, mask_iou, tiny  # noqa: E402
from sam_edge.export.common import ExportError  # noqa: E402
from sam_edge.formats.executorch import MAX_POINTS, export_executorch  # noqa: E402
from sam_edge.export.wrappers import DECODER_INPUT_NAMES, DecoderWrapper  # noqa: E402

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
    out = tmp_path_factory.mktemp("executorch_export")
    export_executorch(model, out, precisions=("fp32", "int8"), calib_images=photos, verify_images=[test_photo],
                      accept_failures={"int8_static": INT8_REASON})
    return out


@pytest.fixture(scope="module")
def eager_predictor(model, test_photo):
    p = SamPredictor(model)
    p.set_image(test_photo)
    return p


def test_int8_needs_calibration_images(model, tmp_path):
    with pytest.raises(ValueError, match="calibration images"):
        export_executorch(model, tmp_path, precisions=("int8",))
    with pytest.raises(ValueError, match="'executorch'"):
        export_executorch(model, tmp_path, precisions=("fp16",))
    assert not (tmp_path / "manifest.json").exists()


def test_manifest_entries_and_verification(export_dir):
    man = load_manifest(export_dir)  # checks every sha256
    arts = {(a["role"], a["precision"]): a for a in man["artifacts"]}
    assert set(arts) == {(r, p) for r in ("encoder", "decoder") for p in ("fp32", "int8_static")}
    for (role, prec), a in arts.items():
        assert a["format"] == "executorch" and a["file"] == f"{role}_{prec}.pte"
        assert a["size_bytes"] == (export_dir / a["file"]).stat().st_size and len(a["sha256"]) == 64
        assert {"executorch", "torch", "torchao"} <= set(a["backend_versions"])
        assert any(n.startswith("delegation:") for n in a["exporter_notes"])
        names = [i["name"] for i in a["inputs"]]
        assert names == (["image"] if role == "encoder" else list(DECODER_INPUT_NAMES))
        v = a["verification"]
        if prec == "fp32":
            assert v["passed"] is True, v
            if role == "encoder":
                assert v["metrics"]["cosine_min"] >= 0.9999
            else:
                assert v["metrics"]["mask_iou_mean"] >= 0.99
                # float graphs: every norm is XNNPACK ops (export.norms), no-op copies dropped
                note = next(n for n in a["exporter_notes"] if n.startswith("delegation:"))
                assert "native_layer_norm" not in note and "mean_dim" not in note, note
        else:
            assert v["passed"] or v["reason"] == INT8_REASON
            q = a["quantization"]
            assert "pt2e" in q["method"] and "XNNPACKQuantizer" in q["method"]
            assert q["per_channel"] is True and q["calibration_images"] == 3
            assert q["delegation"]["num_delegated_nodes"] > 0
        if role == "decoder":
            assert a["dynamic_axes"]["point_coords"] == {"1": "num_points"}
            shape = {i["name"]: i["shape"] for i in a["inputs"]}["point_coords"]
            assert shape == [1, "num_points", 2]


def test_int8_files_smaller(export_dir):
    size = {(a["role"], a["precision"]): a["size_bytes"] for a in load_manifest(export_dir)["artifacts"]}
    for role in ("encoder", "decoder"):
        assert size[(role, "int8_static")] < size[(role, "fp32")]


def test_runtime_predictor_matches_sam_predictor(export_dir, eager_predictor, test_photo):
    pred = load_predictor(export_dir, fmt="executorch")
    assert pred.format == "executorch" and pred.precision == "fp32"
    pred.set_image(test_photo)
    assert np.abs(pred.get_image_embedding() - eager_predictor.features.numpy()).max() < 1e-3
    h, w = test_photo.shape[:2]
    prompts = [
        dict(point_coords=np.array([[w * 0.5, h * 0.45]]), point_labels=np.array([1])),
        dict(point_coords=np.array([[w * 0.5, h * 0.45], [w * 0.1, h * 0.9], [w * 0.7, h * 0.3]]),
             point_labels=np.array([1, 0, 1])),
        dict(box=np.array([w * 0.3, h * 0.1, w * 0.7, h * 0.95])),
    ]
    for kw in prompts:
        for multimask in (True, False):
            m_ref, iou_ref, _ = eager_predictor.predict(multimask_output=multimask, **kw)
            m, iou, _ = pred.predict(multimask_output=multimask, **kw)
            assert m.shape == m_ref.shape and m.dtype == bool
            assert all(mask_iou(a, b) >= 0.99 for a, b in zip(m, m_ref))
            assert np.abs(iou - iou_ref).max() < 1e-3
    # int8 runs through the same predictor
    pred8 = load_predictor(export_dir, precision="int8_static", fmt="executorch")
    pred8.set_image(test_photo)
    masks, _, low = pred8.predict(**prompts[0])
    assert masks.shape == (3, h, w) and low.shape == (3, 64, 64)


@torch.no_grad()
def test_dynamic_number_of_points(export_dir, model, eager_predictor):
    sess = get_backend("executorch").load(export_dir / "decoder_fp32.pte")
    assert sess.input_names == list(DECODER_INPUT_NAMES)
    assert sess.output_names == ["low_res_masks", "iou_predictions"]
    dec = DecoderWrapper(model, mask_outputs="all").eval()
    emb = eager_predictor.features.numpy()
    rng = np.random.default_rng(0)
    for n in (1, 3, 6, MAX_POINTS):
        coords = (rng.random((1, n, 2)) * 256).astype(np.float32)
        labels = rng.choice([-1.0, 0.0, 1.0], size=(1, n)).astype(np.float32)
        for has in (0.0, 1.0):
            feed = {"image_embeddings": emb, "point_coords": coords, "point_labels": labels,
                    "mask_input": rng.standard_normal((1, 1, 64, 64)).astype(np.float32),
                    "has_mask_input": np.array([has], np.float32)}
            out = sess.run(feed)
            ref_m, ref_s = dec(*(torch.from_numpy(feed[k]) for k in DECODER_INPUT_NAMES))
            assert out["low_res_masks"].shape == (1, 4, 64, 64)
            assert np.abs(out["low_res_masks"] - ref_m.numpy()).max() < 1e-3, n
            assert np.abs(out["iou_predictions"] - ref_s.numpy()).max() < 1e-4, n


class _CumprodEncoder(torch.nn.Module):
    """aten.cumprod is not in the Core ATen opset: ExecuTorch's edge lowering refuses it."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, x):
        return self.encoder(x).cumprod(dim=1)


def test_unsupported_op_raises_export_error(tmp_path, test_photo):
    bad = tiny()
    bad.image_encoder = _CumprodEncoder(bad.image_encoder)
    with pytest.raises(ExportError, match=r"encoder_fp32\.pte.*operator 'aten\.cumprod.*'executorch'"):
        export_executorch(bad, tmp_path, precisions=("fp32",), verify_images=[test_photo])
    assert not list(tmp_path.glob("*.pte"))


def test_sam_edge_runtime_imports_no_executorch():
    code = ("import sys, sam_edge, sam_edge.runtime, sam_edge.formats.executorch; "
            "print('executorch' in sys.modules, 'export' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_drop_noop_copies_removes_same_shape_expands_only():
    from executorch.exir import to_edge

    from sam_edge.formats.executorch import drop_noop_copies

    class M(torch.nn.Module):
        def forward(self, a, b, w):
            return torch.matmul(a, b) + torch.matmul(a, w)   # w (1 x 4 x 5) broadcasts: a real expand

    args = (torch.randn(2, 3, 4), torch.randn(2, 4, 5), torch.randn(1, 4, 5))
    gm = to_edge(torch.export.export(M(), args, strict=False)).exported_program().graph_module

    def expands(g):
        return [n for n in g.graph.nodes if "expand_copy" in str(n.target)]

    before = expands(gm)
    assert len(before) >= 2
    res = drop_noop_copies(gm)
    after = expands(res.graph_module)
    assert res.modified and 1 <= len(after) < len(before)
    for n in after:  # the ones kept change the shape
        assert tuple(n.args[0].meta["val"].shape) != tuple(n.meta["val"].shape)
    torch.testing.assert_close(res.graph_module(*args)[0], M()(*args))
