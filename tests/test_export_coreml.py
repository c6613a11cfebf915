"""Core ML export: packages + manifest, spec check (prediction needs macOS), compression, errors."""
from __future__ import annotations

import copy
import shutil
import sys

import pytest
import torch

ct = pytest.importorskip("coremltools")

from sam_edge import create_model  # noqa: E402
from sam_edge.runtime import BackendUnavailable, ManifestError, get_backend, load_manifest, sha256_file  # noqa: E402

from sam_edge.export.common import ExportError, path_size  # noqa: E402
from sam_edge.formats.coreml import MAX_POINTS, PREDICTION_NOT_RUN, export_coreml, spec_check  # noqa: E402
from sam_edge.export.verify import VerificationError  # noqa: E402

ON_MAC = sys.platform == "darwin"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("sam_test_tiny")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, model):
    out = tmp_path_factory.mktemp("coreml_export")
    export_coreml(model, out, precisions=("fp16", "fp32", "int8", "palettize4"))
    return out


def _arts(export_dir):
    return {(a["role"], a["precision"]): a for a in load_manifest(export_dir)["artifacts"]}


def test_manifest_entries(export_dir):
    arts = _arts(export_dir)
    assert set(arts) == {(r, p) for r in ("encoder", "decoder") for p in ("fp16", "fp32", "int8_weights", "palettize4")}
    for (role, prec), a in arts.items():
        path = export_dir / a["file"]
        assert a["file"] == f"{role}_{prec}.mlpackage" and a["format"] == "coreml" and path.is_dir()
        assert a["sha256"] == sha256_file(path) and len(a["sha256"]) == 64
        assert a["size_bytes"] == path_size(path) > 0
        assert a["backend_versions"]["coremltools"] == ct.__version__
        v = a["verification"]
        if not ON_MAC:
            assert v["passed"] is None and v["prediction"] == PREDICTION_NOT_RUN
            sc = v["spec_check"]
            assert sc["passed"] is True and sc["failures"] == []
            assert sc["model_type"] == "mlProgram" and sc["specification_version"] >= 8
            assert "CoreML7" in sc["mil_opsets"] and sc["deployment_target"] == "iOS17"
        names_in = [i["name"] for i in a["inputs"]]
        names_out = [o["name"] for o in a["outputs"]]
        assert all(f["dtype"] == "float32" for f in a["inputs"] + a["outputs"])
        if role == "encoder":
            assert names_in == ["image"] and names_out == ["image_embeddings"]
            assert a["inputs"][0]["shape"] == [1, 3, 256, 256] and a["outputs"][0]["shape"] == [1, 64, 16, 16]
        else:
            assert names_in == ["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input"]
            assert names_out == ["low_res_masks", "iou_predictions"]
            shapes = {f["name"]: f for f in a["inputs"] + a["outputs"]}
            assert shapes["point_coords"]["shape"] == [1, f"1..{MAX_POINTS}", 2]
            assert shapes["point_coords"]["shape_range"][1] == [1, 64]
            assert shapes["point_labels"]["shape_range"] == [[1, 1], [1, 64]]
            assert shapes["mask_input"]["shape"] == [1, 1, 64, 64]
            assert shapes["low_res_masks"]["shape"] == [1, 4, 64, 64] and shapes["iou_predictions"]["shape"] == [1, 4]
            assert a["dynamic_axes"]["point_coords"] == {"1": "num_points"}


def test_compressed_smaller_with_constexpr_weights(export_dir):
    arts = _arts(export_dir)
    for role in ("encoder", "decoder"):
        fp16 = arts[(role, "fp16")]["size_bytes"]
        assert fp16 < arts[(role, "fp32")]["size_bytes"]
        for prec, op in (("int8_weights", "constexpr_affine_dequantize"), ("palettize4", "constexpr_lut_to_dense")):
            a = arts[(role, prec)]
            assert a["size_bytes"] < fp16
            assert a["quantization"]["base"] == "fp16"
            if not ON_MAC:
                sc = a["verification"]["spec_check"]
                assert sc["constexpr_ops"].get(op, 0) > 0 and sc["size_ratio_vs_fp16"] < 1
                we = a["verification"]["weight_error"]
                assert we["tensors_compared"] == we["tensors_compressed"] > 0
                assert we["rel_l2_error_max"] < (0.01 if prec == "int8_weights" else 0.15)


def test_spec_check_rejects_wrong_role(export_dir):
    path = export_dir / "decoder_fp16.mlpackage"
    bad = spec_check(path, "encoder", "fp16", image_size=256, embed_dim=64, num_outputs=4)
    assert bad["passed"] is False and any("input names" in f for f in bad["failures"])
    # a float package claiming to be compressed fails: no constexpr ops
    bad = spec_check(path, "decoder", "int8_weights", image_size=256, embed_dim=64, num_outputs=4)
    assert any("no compressed weights" in f for f in bad["failures"])


def test_tampered_package_is_refused(export_dir, tmp_path):
    copy_dir = tmp_path / "copy"
    shutil.copytree(export_dir, copy_dir)
    weights = next((copy_dir / "encoder_fp16.mlpackage").rglob("weight.bin"))
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match=r"encoder_fp16\.mlpackage: sha256 mismatch"):
        load_manifest(copy_dir)


@pytest.mark.skipif(ON_MAC, reason="on macOS Core ML prediction is available")
def test_backend_unavailable_off_macos(export_dir):
    backend = get_backend("coreml")
    assert backend.name == "coreml" and backend.versions()["coremltools"] == ct.__version__
    with pytest.raises(BackendUnavailable, match="Core ML prediction needs macOS; on Linux use the onnx"):
        backend.load(export_dir / "encoder_fp16.mlpackage")


class _ErfinvEncoder(torch.nn.Module):
    """The encoder followed by erfinv, which coremltools 9 cannot convert."""

    def __init__(self, encoder):
        super().__init__()
        self.inner = encoder

    def forward(self, x):
        return torch.erfinv(torch.tanh(self.inner(x)) * 0.5)


def test_unsupported_op_raises_export_error(model, tmp_path):
    bad = copy.deepcopy(model)
    bad.image_encoder = _ErfinvEncoder(bad.image_encoder)
    with pytest.raises(ExportError, match=r"operator 'erfinv' \(not supported by format 'coreml'\)"):
        export_coreml(bad, tmp_path, precisions=("fp16",))


def test_unknown_precision_names_format(model, tmp_path):
    with pytest.raises(ValueError, match="format 'coreml'"):
        export_coreml(model, tmp_path, precisions=("int8_static",))


def test_failed_spec_check_raises(export_dir):
    from sam_edge.formats.coreml import linux_verify

    verify = linux_verify(lambda e: export_dir / e["file"], "decoder", "fp16", image_size=256, embed_dim=64,
                          num_outputs=3)  # the package has 4 mask outputs
    with pytest.raises(VerificationError, match=r"decoder_fp16\.mlpackage.*spec check.*low_res_masks axis 1"):
        verify({"file": "decoder_fp16.mlpackage"})
