"""The sam-edge command line, end to end on the shipped photo."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam_edge.cli import main

ASSET = Path(__file__).resolve().parents[1] / "sam_edge" / "assets" / "astronaut.jpg"


def test_console_script_help():
    exe = shutil.which("sam-edge") or str(Path(sys.executable).with_name("sam-edge"))
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("models", "segment", "everything"):
        assert cmd in out


def test_models_lists_official_variants(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("sam_vit_h", "sam_vit_l", "sam_vit_b", "mobilesam_tinyvit", "sam_test_tiny"):
        assert name in out


def test_segment_writes_masks_overlay_and_json(tmp_path, capsys):
    rc = main(["segment", str(ASSET), "--model", "sam_test_tiny", "--point", "190,120",
               "--point", "60,330,0", "--box", "100,50,300,380", "--multimask", "--out", str(tmp_path)])
    assert rc == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["random_weights"] is True and "RANDOM weights" in capsys.readouterr().err
    assert [m["file"] for m in result["masks"]] == ["mask_0.png", "mask_1.png", "mask_2.png"]
    scores = [m["score"] for m in result["masks"]]
    assert scores == sorted(scores, reverse=True)
    for m in result["masks"]:
        arr = np.asarray(Image.open(tmp_path / m["file"]))
        assert arr.shape == (384, 384) and set(np.unique(arr)) <= {0, 255}
        assert int((arr > 0).sum()) == m["area"]
    overlay = np.asarray(Image.open(tmp_path / "overlay.png"))
    assert overlay.shape == (384, 384, 3)
    assert result["prompts"]["labels"] == [1, 0]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--point", "500,10"], "outside the image"),
        (["--box", "300,10,100,200"], "x0 <= x1"),
        (["--point", "nan,10"], None),  # rejected by argparse (exit 2)
        (["--point", "10,10,2"], None),
        ([], "at least one --point"),
    ],
)
def test_segment_bad_prompts(tmp_path, capsys, extra, message):
    argv = ["segment", str(ASSET), "--model", "sam_test_tiny", "--out", str(tmp_path), *extra]
    if message is None:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert "--point" in capsys.readouterr().err
    else:
        assert main(argv) == 2
        assert message in capsys.readouterr().err


def test_segment_missing_image_and_unknown_model(tmp_path, capsys):
    assert main(["segment", str(tmp_path / "none.jpg"), "--model", "sam_test_tiny", "--point", "1,1", "--out", str(tmp_path)]) == 2
    assert "image file not found" in capsys.readouterr().err
    assert main(["segment", str(ASSET), "--model", "sam_vit_q", "--point", "1,1", "--out", str(tmp_path)]) == 2
    assert "unknown model 'sam_vit_q'" in capsys.readouterr().err


def test_everything_writes_coco_rle_and_overlay(tmp_path):
    from pycocotools import mask as mask_utils

    out = tmp_path / "masks.json"
    rc = main(["everything", str(ASSET), "--model", "sam_test_tiny", "--points-per-side", "8",
               "--pred-iou-thresh", "-100", "--stability-score-thresh", "0", "--out", str(out)])
    assert rc == 0
    anns = json.loads(out.read_text())
    assert isinstance(anns, list) and len(anns) > 0
    for a in anns:
        m = mask_utils.decode(a["segmentation"])
        assert m.shape == (384, 384) and int(m.sum()) == a["area"]
        assert set(a) >= {"segmentation", "area", "bbox", "predicted_iou", "stability_score", "point_coords", "crop_box"}
    assert np.asarray(Image.open(tmp_path / "masks.png")).shape == (384, 384, 3)
