"""`sam-edge export` / `sam-edge segment --artifacts` end to end, and export failures that must
name the operator and the format."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("onnxruntime")

from sam_edge.cli import main  # noqa: E402


def test_cli_export_then_segment_with_artifacts(tmp_path, capsys):
    out = tmp_path / "exp"
    rc = main(["export", "--model", "sam_test_tiny", "--formats", "onnx", "--precision", "fp32", "--out", str(out)])
    assert rc == 0
    man = json.loads((out / "manifest.json").read_text())
    assert {a["file"] for a in man["artifacts"]} == {"encoder_fp32.onnx", "decoder_fp32.onnx"}
    assert all(a["verification"]["passed"] for a in man["artifacts"])  # verified on the bundled photos
    assert man["artifacts"][0]["verification"]["metrics"]["num_images"] == 2
    assert "encoder_fp32.onnx" in capsys.readouterr().out
    seg = tmp_path / "seg"
    rc = main(["segment", "sam_edge/assets/astronaut.jpg", "--artifacts", str(out), "--point", "190,120",
               "--out", str(seg)])
    assert rc == 0
    res = json.loads((seg / "result.json").read_text())
    assert res["format"] == "onnx" and res["precision"] == "fp32" and res["model"] == "sam_test_tiny"
    assert (seg / "mask_0.png").is_file()


def test_cli_export_bad_arguments(tmp_path, capsys):
    assert main(["export", "--model", "sam_test_tiny", "--formats", "onnx", "--precision", "int9",
                 "--out", str(tmp_path)]) == 2
    assert "--precision" in capsys.readouterr().err
    assert main(["export", "--model", "sam_test_tiny", "--formats", "pdf", "--out", str(tmp_path)]) == 2
    assert "--formats" in capsys.readouterr().err
    # int8 static needs real calibration images, never random tensors
    assert main(["export", "--model", "sam_test_tiny", "--formats", "onnx", "--precision", "int8_static",
                 "--out", str(tmp_path)]) == 2
    assert "calibration images" in capsys.readouterr().err


def test_onnx_export_of_unsupported_op_names_op_and_format(tmp_path):
    # in a fresh process: a failed dynamo export can poison later exports in the same process
    code = textwrap.dedent(f"""
        import torch, sam_edge
        from sam_edge.formats.onnx import export_onnx, ExportError
        torch.manual_seed(0)
        model = sam_edge.create_model("sam_test_tiny")
        enc = model.image_encoder
        class WithQR(torch.nn.Module):
            def __init__(self):
                super().__init__(); self.enc = enc
            def forward(self, x):
                y = self.enc(x)
                return y + 0.0 * torch.linalg.qr(y)[0]
        model.image_encoder = WithQR()
        try:
            export_onnx(model, r"{tmp_path}", precisions=["fp32"])
        except ExportError as e:
            print("EXPORT_ERROR", e)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("EXPORT_ERROR")), None)
    assert line is not None, out.stdout + out.stderr
    assert "aten::linalg_qr" in line and "format 'onnx'" in line and "encoder_fp32.onnx" in line
    assert not (tmp_path / "encoder_fp32.onnx").exists()
