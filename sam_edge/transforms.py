"""Resize-longest-side, normalise and pad, in numpy and torch (same maths as
``segment_anything.utils.transforms.ResizeLongestSide``, without torchvision)."""
from __future__ import annotations

from copy import deepcopy
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def get_preprocess_shape(old_h: int, old_w: int, long_side_length: int) -> tuple[int, int]:
    """(h, w) after scaling so that the longer side equals ``long_side_length`` (rounded)."""
    scale = long_side_length * 1.0 / max(old_h, old_w)
    return int(old_h * scale + 0.5), int(old_w * scale + 0.5)


class ResizeLongestSide:
    """Resizes images to a longest side of ``target_length`` and maps coordinates/boxes along.
    Coordinates are (x, y) pixels, boxes (x0, y0, x1, y1)."""

    def __init__(self, target_length: int) -> None:
        self.target_length = target_length

    # numpy ---------------------------------------------------------------------------------
    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 -> hxwx3 uint8 (PIL bilinear, as the reference)."""
        h, w = get_preprocess_shape(image.shape[0], image.shape[1], self.target_length)
        return np.array(Image.fromarray(image).resize((w, h), Image.BILINEAR))

    def apply_coords(self, coords: np.ndarray, original_size: Sequence[int]) -> np.ndarray:
        """... x 2 coordinates in the original (H, W) image -> the resized frame."""
        old_h, old_w = original_size
        new_h, new_w = get_preprocess_shape(old_h, old_w, self.target_length)
        coords = deepcopy(coords).astype(float)
        coords[..., 0] = coords[..., 0] * (new_w / old_w)
        coords[..., 1] = coords[..., 1] * (new_h / old_h)
        return coords

    def apply_boxes(self, boxes: np.ndarray, original_size: Sequence[int]) -> np.ndarray:
        """B x 4 boxes -> B x 4 in the resized frame."""
        return self.apply_coords(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)

    # torch ---------------------------------------------------------------------------------
    def apply_image_torch(self, image: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W float -> B x 3 x h x w (bilinear, antialiased)."""
        size = get_preprocess_shape(image.shape[2], image.shape[3], self.target_length)
        return F.interpolate(image, size, mode="bilinear", align_corners=False, antialias=True)

    def apply_coords_torch(self, coords: torch.Tensor, original_size: Sequence[int]) -> torch.Tensor:
        old_h, old_w = original_size
        new_h, new_w = get_preprocess_shape(old_h, old_w, self.target_length)
        coords = coords.clone().to(torch.float)
        coords[..., 0] = coords[..., 0] * (new_w / old_w)
        coords[..., 1] = coords[..., 1] * (new_h / old_h)
        return coords

    def apply_boxes_torch(self, boxes: torch.Tensor, original_size: Sequence[int]) -> torch.Tensor:
        return self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)


def normalize_pad(
    image: np.ndarray, image_size: int, pixel_mean: Sequence[float], pixel_std: Sequence[float]
) -> np.ndarray:
    """Resized hxwx3 uint8 image -> 1 x 3 x S x S float32, normalised and zero-padded
    bottom-right (numpy twin of :meth:`Sam.preprocess`, for exported runtimes)."""
    x = (image.astype(np.float32) - np.asarray(pixel_mean, np.float32)) / np.asarray(pixel_std, np.float32)
    h, w = x.shape[:2]
    out = np.zeros((image_size, image_size, 3), np.float32)
    out[:h, :w] = x
    return out.transpose(2, 0, 1)[None].copy()


def normalize_pad_torch(
    image: torch.Tensor, image_size: int, pixel_mean: Sequence[float], pixel_std: Sequence[float]
) -> torch.Tensor:
    """B x 3 x h x w float (0..255) -> B x 3 x S x S, normalised and zero-padded bottom-right."""
    mean = torch.as_tensor(pixel_mean, dtype=image.dtype, device=image.device).view(-1, 1, 1)
    std = torch.as_tensor(pixel_std, dtype=image.dtype, device=image.device).view(-1, 1, 1)
    x = (image - mean) / std
    h, w = x.shape[-2:]
    return F.pad(x, (0, image_size - w, 0, image_size - h))
