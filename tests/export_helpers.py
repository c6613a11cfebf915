"""Shared by the export tests: the tiny random-weight model, real photos (scikit-image), mask IoU."""
from __future__ import annotations

import torch

INT8_REASON = "sam_test_tiny has random weights; int8 error on meaningless activations is not representative"


def tiny(seed: int = 0):
    from sam_edge import create_model

    torch.manual_seed(seed)
    return create_model("sam_test_tiny")


def mask_iou(a, b) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def calibration_photos():
    """Real photos, made small so the suites stay fast."""
    from skimage import data

    return [data.astronaut()[::4, ::4].copy(), data.chelsea()[::2, ::2].copy(), data.coffee()[::2, ::2].copy()]


def held_out_photo():
    from skimage import data

    return data.rocket()[::2, ::2].copy()  # 214 x 320, not used for calibration
