"""Overlays for masks, points and boxes (PIL + numpy only)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw


def palette(n: int, seed: int = 0) -> np.ndarray:
    """n distinct-ish RGB colours (golden-ratio hues), deterministic."""
    hues = (np.arange(n) * 0.618033988749895 + 0.1 * seed) % 1.0
    h6 = hues * 6
    i = np.floor(h6).astype(int) % 6
    f = h6 - np.floor(h6)
    v, s = 0.95, 0.75
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack([
        np.select([i == k for k in range(6)], [np.full(n, v), q, np.full(n, p), np.full(n, p), t, np.full(n, v)]),
        np.select([i == k for k in range(6)], [t, np.full(n, v), np.full(n, v), q, np.full(n, p), np.full(n, p)]),
        np.select([i == k for k in range(6)], [np.full(n, p), np.full(n, p), t, np.full(n, v), np.full(n, v), q]),
    ], axis=1)
    return (table * 255).astype(np.uint8)


def overlay_masks(
    image: np.ndarray,
    masks: Sequence[np.ndarray],
    alpha: float = 0.5,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
) -> np.ndarray:
    """Blend boolean H x W masks (largest first, so small ones stay visible) onto an RGB image and
    draw points (green foreground, red background) and boxes. Returns H x W x 3 uint8."""
    out = image.astype(np.float32).copy()
    order = sorted(range(len(masks)), key=lambda i: -int(np.asarray(masks[i]).sum()))
    colours = palette(len(masks)).astype(np.float32)
    for rank, i in enumerate(order):
        m = np.asarray(masks[i], dtype=bool)
        out[m] = (1 - alpha) * out[m] + alpha * colours[rank]
    pil = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    r = max(3, min(image.shape[:2]) // 100)
    if points is not None:
        for (x, y), lab in zip(np.asarray(points), np.asarray(labels) if labels is not None else [1] * len(points)):
            fill = (40, 220, 40) if lab == 1 else (230, 40, 40)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=fill, outline=(255, 255, 255))
    if boxes is not None:
        for b in np.asarray(boxes).reshape(-1, 4):
            draw.rectangle([float(v) for v in b], outline=(60, 120, 255), width=max(2, r // 2))
    return np.asarray(pil)
