"""Keyed sample views for the training engine: ``items[(step, index)]`` -> one padded sample,
with every random choice a pure function of (seed, step, index), so DataLoader workers, DDP
ranks and resumed runs all see the same samples; and the collate function that batches them.
Shared by pretraining (:mod:`distill.pretrain`) and distillation (:mod:`distill.distill`)."""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sam_edge.utils.seed import mix_seed

from sam_edge.data import ImageFolderDataset, SA1BDataset, SampleError
from sam_edge.data.sa1b import IMAGE_SIZE_MISMATCH, RLE_SIZE_MISMATCH, resize_image

__all__ = ["FolderItems", "SA1BItems", "collate", "dummy_batch", "id_seed", "image_rel_id", "load_sa1b_sample",
           "mix_seed", "pad_image"]


def id_seed(sample_id: str) -> int:
    return zlib.crc32(str(sample_id).encode("utf-8"))


def image_rel_id(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def pad_image(image: np.ndarray, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Resized H x W x 3 uint8 -> 3 x S x S uint8 (zero-padded bottom-right), (h, w)."""
    img = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1)
    h, w = img.shape[-2:]
    return F.pad(img, (0, size - w, 0, size - h)), (int(h), int(w))


def load_sa1b_sample(ds: SA1BDataset, idx: int, size: int, k: int, g: torch.Generator) -> dict[str, Any]:
    """Image ``idx`` resized to longest side ``size`` and padded, and up to ``k`` of its masks
    (chosen with ``g``; only those are decoded). Raises :class:`SampleError`."""
    anns = ds.annotations(idx)
    if len(anns) > k:
        pick = torch.randperm(len(anns), generator=g)[:k].sort().values.tolist()
        anns = [anns[i] for i in pick]
    path = ds.path(idx)
    try:
        original = ds.load_image(idx)
        h0, w0 = original.shape[:2]
        for a in anns:  # before any decode: an RLE claiming a huge size must not be allocated
            if a["_rle"]["size"] != [h0, w0]:
                raise SampleError(path, RLE_SIZE_MISMATCH, f"RLE size {a['_rle']['size']} != image [{h0}, {w0}]")
        image = resize_image(original, size)
        masks = ds.masks_for(idx, anns)
    except SampleError:
        raise
    except Exception as exc:  # noqa: BLE001 - the sample's failure, named
        raise SampleError(path, "load error", repr(exc)) from exc
    if masks.shape[1:] != image.shape[:2]:
        raise SampleError(path, IMAGE_SIZE_MISMATCH, f"masks {masks.shape[1:]} vs image {image.shape[:2]}")
    img, (h, w) = pad_image(image, size)
    m = torch.from_numpy(np.ascontiguousarray(masks))
    m = F.pad(m, (0, size - w, 0, size - h))
    return {"id": image_rel_id(path, ds.root), "image": img, "input_size": (h, w), "masks": m}


class FolderItems:
    """DataLoader view of an image folder: key ``(step, index)`` -> padded image."""

    def __init__(self, ds: ImageFolderDataset, size: int) -> None:
        self.ds, self.size = ds, size

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        _, idx = key
        try:
            item = self.ds[idx]
        except SampleError as exc:
            return {"skip": (exc.path, exc.reason, exc.detail)}
        img, hw = pad_image(item["image"], self.size)
        return {"id": item["image_id"], "image": img, "input_size": hw}


class SA1BItems:
    """DataLoader view of an SA-1B folder: key ``(step, index)`` -> padded image + ``k`` masks
    chosen by a generator seeded from (seed, step, index): stateless, so workers, ranks and
    resumed runs all draw the same masks."""

    def __init__(self, ds: SA1BDataset, size: int, k: int, seed: int) -> None:
        self.ds, self.size, self.k, self.seed = ds, size, k, seed

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        step, idx = key
        g = torch.Generator().manual_seed(mix_seed(self.seed, 2, step, idx))
        try:
            return load_sa1b_sample(self.ds, idx, self.size, self.k, g)
        except SampleError as exc:
            return {"skip": (exc.path, exc.reason, exc.detail)}


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Samples -> a batch: ``images`` B x 3 x S x S uint8, ``input_sizes`` B x 2, and for SA-1B
    samples ``masks`` P x S x S with ``img_idx`` P (the image of each mask); ``n`` usable
    samples, their ``ids``, and the ``skips`` (path, reason, detail) of the unusable ones."""
    good = [it for it in items if "skip" not in it]
    out: dict[str, Any] = {"skips": [it["skip"] for it in items if "skip" in it], "n": len(good),
                           "ids": [it["id"] for it in good]}
    if good:
        out["images"] = torch.stack([it["image"] for it in good])
        out["input_sizes"] = torch.tensor([it["input_size"] for it in good])
        if "masks" in good[0]:
            out["masks"] = torch.cat([it["masks"] for it in good])
            out["img_idx"] = torch.cat([torch.full((it["masks"].shape[0],), i) for i, it in enumerate(good)])
    return out


def dummy_batch(size: int) -> dict[str, Any]:
    """A zero-weight stand-in for a rank whose micro-batch lost all its samples: every rank must
    still run forward/backward for DDP's collectives."""
    return {"n": 0, "ids": [None], "skips": [], "images": torch.zeros(1, 3, size, size, dtype=torch.uint8),
            "input_sizes": torch.tensor([[size, size]]), "masks": torch.zeros(1, size, size, dtype=torch.bool),
            "img_idx": torch.zeros(1, dtype=torch.long)}
