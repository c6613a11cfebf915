"""`sam-edge quantize`: torchao int8 (save / load round trip) and QAT of the encoder for
ExecuTorch int8 (observers frozen after calibration: at learning rate 0 QAT equals PTQ)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("torchao")
skdata = pytest.importorskip("skimage.data")

import sam_edge  # noqa: E402
from sam_edge.cli import main  # noqa: E402

pytestmark = pytest.mark.slow


def test_torchao_int8_roundtrip(tmp_path, capsys):
    from sam_edge.export.quantize import load_torchao, torchao_quantize

    torch.manual_seed(0)
    fp32 = sam_edge.create_model("sam_test_tiny").eval()
    model_file = sam_edge.save_model(fp32, tmp_path / "tiny.safetensors")
    out = tmp_path / "q.pt"
    assert main(["quantize", "--model", str(model_file), "--torchao", "int8_dynamic", "--repeats", "2",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "nn.Linear quantised" in printed and "embedding cosine" in printed
    loaded = load_torchao(out)
    q, details = torchao_quantize(fp32, "int8_dynamic")
    assert details["num_linear"] > 0
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        a, b, ref = loaded.image_encoder(x), q.image_encoder(x), fp32.image_encoder(x)
    assert torch.allclose(a, b, atol=1e-5)                       # the file holds the quantised model
    cos = torch.nn.functional.cosine_similarity(a.flatten(), ref.flatten(), dim=0)
    assert 0.95 < cos < 1.0 - 1e-7                              # quantised: close to fp32, not equal
    assert main(["quantize", "--model", "sam_test_tiny", "--torchao", "int8_dynamic",
                 "--out", str(tmp_path / "q.bin")]) == 2
    assert ".pt" in capsys.readouterr().err


def test_qat_writes_verified_pte_and_equals_ptq_at_lr0(tmp_path):
    pytest.importorskip("executorch")
    from PIL import Image

    data = tmp_path / "photos"
    data.mkdir()
    for i, name in enumerate(("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")):
        img = np.asarray(getattr(skdata, name)())[..., :3]
        Image.fromarray(img[::2, ::2].copy()).save(data / f"img_{i}.jpg")
    out = tmp_path / "exp"
    rc = main(["quantize", "--model", "repvit_demo_student", "--qat", "--data", str(data), "--images", "4",
               "--calib-images", "4", "--eval-images", "2", "--steps", "2", "--batch-size", "2", "--lr", "0",
               "--out", str(out)])
    assert rc == 0
    man = json.loads((out / "manifest.json").read_text())
    (entry,) = man["artifacts"]
    assert entry["file"] == "encoder_int8_qat.pte" and entry["precision"] == "int8_qat"
    assert entry["verification"]["passed"] is True
    q = entry["quantization"]["qat"]
    assert q["steps"] == 2 and q["target"] == "student"
    # frozen quantisation parameters + no weight change: QAT int8 is PTQ int8
    assert abs(q["qat"]["cosine_min_vs_fp32"] - q["ptq"]["cosine_min_vs_fp32"]) < 2e-3
    assert q["ptq"]["cosine_min_vs_fp32"] > 0.98
    assert main(["quantize", "--model", "repvit_demo_student", "--qat", "--out", str(out)]) == 2
