"""Import the reference ``segment_anything`` package in tests without torchvision or OpenCV.

``segment_anything`` imports torchvision at package import (``batched_nms``/``box_area`` in the
mask generator, ``resize``/``to_pil_image`` in ``ResizeLongestSide``) and OpenCV lazily when small
regions are removed. Neither is installable here, so this module provides minimal stand-ins:

* a fake ``torchvision`` tree, installed in ``sys.modules`` only while ``segment_anything`` is
  being imported (its modules bind the names at import), then removed again so that no other
  code can mistake it for the real package;
* a fake ``cv2`` with ``connectedComponentsWithStats``, installed only inside the
  ``fake_cv2()`` context manager (the reference imports cv2 at call time).

The stand-ins are written to be obviously correct rather than fast, and independently of
``sam_edge``'s implementations they are compared against:

* NMS is a plain O(n^2) Python loop over a stable descending sort, with the IoU of each pair
  computed in float32 scalars like torchvision's CPU kernel and compared to the threshold in
  double precision, as that kernel does;
* ``resize`` on a PIL image calls ``PIL.Image.resize((w, h), BILINEAR)``, which is what
  ``torchvision.transforms.functional.resize`` does for PIL input (no-op when the size is
  unchanged);
* connected components use ``skimage.measure.label`` (not scipy.ndimage).
"""
from __future__ import annotations

import contextlib
import importlib
import sys
import types
from typing import Any, Iterator, Optional

import numpy as np
import torch

__all__ = ["reference_segment_anything", "fake_cv2", "simple_nms", "simple_batched_nms"]

_CACHED: Optional[types.ModuleType] = None


# --------------------------------------------------------------------------------------------
# torchvision.ops stand-ins
# --------------------------------------------------------------------------------------------
def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """torchvision.ops.box_area: (x2 - x1) * (y2 - y1), ints upcast to int32/int64, floats to
    float32/float64."""
    if boxes.is_floating_point():
        if boxes.dtype not in (torch.float32, torch.float64):
            boxes = boxes.float()
    elif boxes.dtype not in (torch.int32, torch.int64):
        boxes = boxes.int()
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _pair_iou(a: list, b: list, dtype: type) -> float:
    """IoU of two XYXY boxes with torchvision's CPU-kernel arithmetic, in ``dtype`` scalars."""
    ax1, ay1, ax2, ay2 = (dtype(v) for v in a)
    bx1, by1, bx2, by2 = (dtype(v) for v in b)
    area_a = (ax2 - ax1) * (ay2 - ay1)
    area_b = (bx2 - bx1) * (by2 - by1)
    w = max(dtype(0), min(ax2, bx2) - max(ax1, bx1))
    h = max(dtype(0), min(ay2, by2) - max(ay1, by1))
    inter = w * h
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(inter / (area_a + area_b - inter))


def simple_batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: Optional[torch.Tensor], iou_threshold: float
) -> torch.Tensor:
    """Textbook greedy NMS: visit boxes by decreasing score (stable: ties by index), keep a box
    unless a kept box of the same category overlaps it with IoU > iou_threshold."""
    n = boxes.shape[0]
    dtype = np.float64 if boxes.dtype == torch.float64 else np.float32
    box_list = boxes.detach().cpu().tolist()
    score_list = scores.detach().cpu().tolist()
    cat_list = [0] * n if idxs is None else torch.as_tensor(idxs).detach().cpu().tolist()
    order = sorted(range(n), key=lambda i: -score_list[i])  # sorted() is stable
    keep: list = []
    for i in order:
        if all(
            cat_list[k] != cat_list[i] or not (_pair_iou(box_list[k], box_list[i], dtype) > iou_threshold)
            for k in keep
        ):
            keep.append(i)
    return torch.tensor(keep, dtype=torch.int64, device=boxes.device)


def simple_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    return simple_batched_nms(boxes, scores, None, iou_threshold)


# --------------------------------------------------------------------------------------------
# torchvision.transforms.functional stand-ins
# --------------------------------------------------------------------------------------------
def to_pil_image(pic: Any, mode: Optional[str] = None):
    from PIL import Image

    if isinstance(pic, torch.Tensor):
        raise NotImplementedError("the stand-in to_pil_image only takes numpy arrays")
    arr = np.asarray(pic)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise NotImplementedError("the stand-in to_pil_image only takes H x W x 3 uint8 arrays")
    return Image.fromarray(np.ascontiguousarray(arr))


def resize(img: Any, size: Any, interpolation: Any = None, max_size: Any = None, antialias: Any = None):
    """torchvision's resize for a PIL image and an explicit (h, w) size: PIL bilinear resize
    (PIL always antialiases), returned unchanged when the size already matches."""
    from PIL import Image

    if not isinstance(img, Image.Image):
        raise NotImplementedError("the stand-in resize only takes PIL images")
    if interpolation is not None or max_size is not None:
        raise NotImplementedError("the stand-in resize only supports the defaults")
    if not isinstance(size, (list, tuple)) or len(size) != 2:
        raise NotImplementedError("the stand-in resize only takes an explicit (h, w) size")
    h, w = int(size[0]), int(size[1])
    if (img.height, img.width) == (h, w):
        return img
    return img.resize((w, h), Image.BILINEAR)


def _make_fake_torchvision() -> dict:
    def module(name: str, **attrs: Any) -> types.ModuleType:
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        mod.__dict__["__sam_edge_test_stub__"] = True
        return mod

    boxes = module(
        "torchvision.ops.boxes",
        batched_nms=simple_batched_nms,
        nms=simple_nms,
        box_area=box_area,
    )
    ops = module("torchvision.ops", boxes=boxes, batched_nms=simple_batched_nms, nms=simple_nms, box_area=box_area)
    functional = module("torchvision.transforms.functional", resize=resize, to_pil_image=to_pil_image)
    transforms = module("torchvision.transforms", functional=functional)
    tv = module("torchvision", ops=ops, transforms=transforms, __version__="0.0.0+sam_edge_test_stub")
    for m in (tv, ops, transforms):
        m.__path__ = []  # mark as packages
    return {
        "torchvision": tv,
        "torchvision.ops": ops,
        "torchvision.ops.boxes": boxes,
        "torchvision.transforms": transforms,
        "torchvision.transforms.functional": functional,
    }


@contextlib.contextmanager
def _installed(modules: dict) -> Iterator[None]:
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


def reference_segment_anything() -> types.ModuleType:
    """The reference ``segment_anything`` package, imported against the fake torchvision
    (cached). Its submodules ``modeling``, ``predictor``, ``automatic_mask_generator``,
    ``utils.amg`` and ``utils.transforms`` are loaded."""
    global _CACHED
    if _CACHED is None:
        if "segment_anything" in sys.modules:
            sa = sys.modules["segment_anything"]
        else:
            with _installed(_make_fake_torchvision()):
                sa = importlib.import_module("segment_anything")
                for sub in ("modeling", "predictor", "automatic_mask_generator", "utils.amg", "utils.transforms"):
                    importlib.import_module(f"segment_anything.{sub}")
        _CACHED = sa
    return _CACHED


# --------------------------------------------------------------------------------------------
# cv2 stand-in
# --------------------------------------------------------------------------------------------
def connected_components_with_stats(image: np.ndarray, connectivity: int = 8, *args: Any):
    """cv2.connectedComponentsWithStats for a binary uint8 image: (n_labels, labels int32,
    stats int32 [left, top, width, height, area] per label, centroids float64); label 0 is the
    zero pixels, foreground components are numbered from 1."""
    from skimage.measure import label

    if connectivity not in (4, 8):
        raise ValueError("connectivity must be 4 or 8")
    fg = np.asarray(image) != 0
    labels, n_fg = label(fg, background=0, connectivity=2 if connectivity == 8 else 1, return_num=True)
    labels = labels.astype(np.int32)
    n_labels = n_fg + 1
    stats = np.zeros((n_labels, 5), dtype=np.int32)
    centroids = np.zeros((n_labels, 2), dtype=np.float64)
    for lab in range(n_labels):
        ys, xs = np.nonzero(labels == lab)
        stats[lab, 4] = ys.size
        if ys.size:
            stats[lab, :4] = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            centroids[lab] = [xs.mean(), ys.mean()]
    return n_labels, labels, stats, centroids


@contextlib.contextmanager
def fake_cv2() -> Iterator[types.ModuleType]:
    """Install a fake ``cv2`` (connected components only) while the block runs."""
    cv2 = types.ModuleType("cv2")
    cv2.connectedComponentsWithStats = connected_components_with_stats
    cv2.__sam_edge_test_stub__ = True
    with _installed({"cv2": cv2}):
        yield cv2
