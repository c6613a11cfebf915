"""Shared by the export tests: the tiny random-weight model, real photos (scikit-image), mask IoU."""
from __future__ import annotations

import torch

INT8_REASON = "sam_test_tiny has random weights; int8 error on meaningless activations is not representative"


def tiny(seed: int = 0):
    """The tiny ViT SAM of the export tests: ``sam_test_tiny`` with 5-token windows, so that its
    windowed blocks pad (16 % 5) as ViT-B's do at 1024 px (64 % 14): the ViT twin in ``TWINS``."""
    return twin("sam_vit_b", seed)


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


# Tiny twins of the 1024-px models users deploy: the same encoder code paths (window padding, global
# attention, squeeze-excite, the SAM decoder) at a size a 2-core CPU exports in seconds. Each twin
# pads its attention windows exactly where the 1024-px model does (ViT-B: 64 % 14; TinyViT: 256 % 7,
# 128 % 7, 64 % 14, 64 % 7), which is what broke MobileSAM's ExecuTorch int8 encoder.
DEC64 = dict(prompt_embed_dim=64, decoder_num_heads=4, decoder_mlp_dim=128, iou_head_hidden_dim=64)
TWINS = {
    "sam_vit_b": ("sam_test_tiny", dict(window_size=5)),
    "mobilesam_tinyvit": ("mobilesam_test_tiny", dict(tiny_window_sizes=(5, 5, 7, 5))),
    "repvit_sam": ("repvit_sam", dict(image_size=256, rep_dims=(16, 32, 48, 64), rep_depths=(1, 1, 2, 1), **DEC64)),
}


def twin(name: str, seed: int = 0):
    from sam_edge import create_model

    base, overrides = TWINS[name]
    torch.manual_seed(seed)
    return create_model(base, **overrides)
