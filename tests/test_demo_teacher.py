"""The bundled demo teacher (``sam_demo_teacher``): its weights load, and on real photos (from
scikit-image, never seen in training: it was trained on synthetic scenes only) it segments an
object whose true mask we know, far better than the same architecture with random weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import sam_edge

skdata = pytest.importorskip("skimage.data")


def _resize(a: np.ndarray, w: int, h: int) -> np.ndarray:
    return np.array(Image.fromarray(a).resize((w, h), Image.BILINEAR))


def _composites() -> list[tuple[np.ndarray, np.ndarray]]:
    """Real photo backgrounds with an ellipse cut from another real photo pasted on: the pasted
    region is an exact ground-truth mask."""
    out = []
    yy, xx = np.mgrid[0:200, 0:300]
    for bg, fg, (cx, cy, rx, ry) in [
        (skdata.coffee(), skdata.chelsea(), (90, 110, 55, 40)),
        (skdata.astronaut(), skdata.rocket(), (200, 80, 45, 60)),
        (skdata.chelsea(), skdata.coffee(), (150, 120, 70, 45)),
    ]:
        img = _resize(bg, 300, 200)
        tex = _resize(fg, 300, 200)
        gt = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        img[gt] = tex[gt]
        out.append((img, gt))
    return out


def _box_iou(model) -> float:
    pred = sam_edge.SamPredictor(model)
    ious = []
    for img, gt in _composites():
        pred.set_image(img)
        ys, xs = np.nonzero(gt)
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=float)
        masks, scores, _ = pred.predict(box=box, multimask_output=False)
        ious.append((masks[0] & gt).sum() / (masks[0] | gt).sum())
    return float(np.mean(ious))


def test_bundled_teacher_loads_and_segments_real_photos():
    model = sam_edge.create_model("sam_demo_teacher")  # bundled fp16 weights, upcast to fp32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    trained = _box_iou(model)
    torch.manual_seed(0)
    random = _box_iou(sam_edge.create_model("sam_demo_teacher", pretrained=False))
    assert trained >= 0.6, trained
    assert trained > random + 0.3, (trained, random)
