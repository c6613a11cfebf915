"""Prompt simulation for SAM-style interactive training.

All functions work on batches of binary masks B x H x W (torch, bool) in the model's input frame
and take an explicit ``torch.Generator`` so runs are reproducible and resumable. They run on the
masks' device and never wait for it (no ``.item()``, no host copies, no data-dependent Python
branches): training passes a generator on the same device (its state is checkpointed);
evaluation may pass a CPU generator for device masks (the draws are then made on the CPU and
moved, so a CPU and a GPU evaluation see the same prompts).
"""
from __future__ import annotations

import numpy as np
import torch


def _rand(shape: tuple[int, ...], g: torch.Generator, device: torch.device, normal: bool = False) -> torch.Tensor:
    """Uniform [0, 1) (or standard normal) draws from ``g`` on its own device, returned on ``device``."""
    fn = torch.randn if normal else torch.rand
    return fn(shape, generator=g, device=g.device).to(device)


def _sample_from(region: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One uniformly random pixel of each B x H x W region -> (B x 2 (x, y) coords, B valid).
    An empty region yields a random pixel of the image and valid=False."""
    b, h, w = region.shape
    flat = region.reshape(b, -1).float()
    counts = flat.sum(1)
    valid = counts > 0
    # uniform over the region: the arg-max of i.i.d. uniform keys restricted to it (an empty
    # region falls back to the whole image); much cheaper than multinomial on B x H*W weights
    keys = _rand(flat.shape, g, region.device)
    keys = torch.where(valid[:, None] & (flat == 0), -1.0, keys)
    idx = keys.argmax(dim=1)
    ys = torch.div(idx, w, rounding_mode="floor")
    xs = idx % w
    coords = torch.stack([xs, ys], dim=1).float()
    return coords, valid


def sample_points_in_masks(masks: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A point drawn uniformly inside each ground-truth mask: B x 1 x 2 coords, B x 1 labels (1)."""
    coords, _ = _sample_from(masks, g)
    return coords[:, None], torch.ones(masks.shape[0], 1, dtype=torch.int64, device=masks.device)


def center_points(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The standard interactive-segmentation first click (RITM / SAM's point evaluation): the
    pixel of each mask farthest from its boundary (maximum of the Euclidean distance transform;
    the image border counts as boundary; on a ridge of equal distances, the ridge pixel nearest
    the ridge's mean, first in raster order).
    Deterministic. B x 1 x 2 coords (x, y), B x 1 labels (1). An empty mask gives the image centre."""
    from scipy.ndimage import distance_transform_edt

    out = []
    for m in masks.cpu().numpy().astype(bool):
        d = distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
        ys, xs = np.nonzero(d == d.max())  # often a ridge of equal distances: take its middle
        i = int(((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2).argmin())
        out.append((xs[i], ys[i]))
    coords = torch.tensor(out, dtype=torch.float32).reshape(-1, 1, 2)
    return coords, torch.ones(masks.shape[0], 1, dtype=torch.int64)


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes of B x H x W masks (pixel edges: x1 = last column + 1)."""
    b, h, w = masks.shape
    rows = masks.any(dim=2)
    cols = masks.any(dim=1)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    y0 = torch.where(rows, ar_h, h).min(1).values
    y1 = torch.where(rows, ar_h, -1).max(1).values + 1
    x0 = torch.where(cols, ar_w, w).min(1).values
    x1 = torch.where(cols, ar_w, -1).max(1).values + 1
    return torch.stack([x0, y0, x1, y1], dim=1).float()


def noisy_boxes(
    masks: torch.Tensor, g: torch.Generator, noise_frac: float = 0.1, max_noise: float = 20.0
) -> torch.Tensor:
    """Ground-truth boxes with each coordinate jittered by N(0, noise_frac * side), clipped to
    +-max_noise pixels and to the image (SAM's box augmentation). B x 4."""
    boxes = masks_to_boxes(masks)
    h, w = masks.shape[-2:]
    side = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, dim=1)
    noise = _rand(tuple(boxes.shape), g, boxes.device, normal=True) * noise_frac * side
    boxes = boxes + noise.clamp(-max_noise, max_noise)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    x0, x1 = torch.minimum(boxes[:, 0], boxes[:, 2]), torch.maximum(boxes[:, 0], boxes[:, 2])
    y0, y1 = torch.minimum(boxes[:, 1], boxes[:, 3]), torch.maximum(boxes[:, 1], boxes[:, 3])
    return torch.stack([x0, y0, x1, y1], dim=1)


def error_region_points(
    pred: torch.Tensor, gt: torch.Tensor, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A corrective click per mask, drawn uniformly from the error region: a false-negative pixel
    (in gt, not predicted) gives a positive point, a false-positive pixel a negative one.
    Where the prediction is perfect, the point is a positive point inside gt.
    Returns B x 1 x 2 coords and B x 1 labels. One draw per call, no host synchronisation: the
    region sampled is the error region, or gt where there is no error."""
    fn = gt & ~pred
    err = fn | (pred & ~gt)
    has_err = err.flatten(1).any(1)
    region = torch.where(has_err[:, None, None], err, gt)
    coords, _ = _sample_from(region, g)
    b = gt.shape[0]
    xs, ys = coords[:, 0].long(), coords[:, 1].long()
    label = torch.where(has_err, fn[torch.arange(b, device=gt.device), ys, xs].long(), 1)
    return coords[:, None], label[:, None]
