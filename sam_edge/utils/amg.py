"""Helpers for "segment everything" (automatic mask generation).

Behaviourally identical to ``segment_anything.utils.amg`` (and to the ``torchvision.ops`` box
functions the reference generator uses), but with no torchvision and no OpenCV dependency:

* ``nms`` / ``batched_nms`` / ``box_area`` / ``box_iou`` follow torchvision's semantics (a box is
  suppressed when its IoU with a higher-scored *kept* box is strictly greater than the threshold,
  IoU computed in the boxes' float precision like torchvision's CPU kernel, boxes with different
  ``idxs`` never suppress each other, kept indices returned by decreasing score, ties in score
  broken by original index via a stable sort).
* ``remove_small_regions`` uses ``scipy.ndimage.label`` with 8-connectivity instead of
  ``cv2.connectedComponentsWithStats``.

Deliberate differences from the reference (all on inputs where the reference is inconsistent):

* ``batched_mask_to_box`` returns int64 boxes for empty input too (the reference returns float32
  zeros there, which silently turns every later concatenated box into float32).
* The remaining small deviations are documented on the functions concerned.
"""
from __future__ import annotations

import math
from copy import deepcopy
from itertools import product
from typing import Any, Dict, Generator, ItemsView, List, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = [
    "MaskData",
    "area_from_rle",
    "batch_iterator",
    "batched_mask_to_box",
    "batched_nms",
    "box_area",
    "box_iou",
    "box_xyxy_to_xywh",
    "build_all_layer_point_grids",
    "build_point_grid",
    "calculate_stability_score",
    "coco_counts",
    "coco_decode_rle",
    "coco_encode_rle",
    "generate_crop_boxes",
    "is_box_near_crop_edge",
    "mask_to_rle",
    "mask_to_rle_pytorch",
    "nms",
    "remove_small_regions",
    "rle_to_mask",
    "uncrop_boxes_xyxy",
    "uncrop_masks",
    "uncrop_points",
]

_SUPPORTED = (list, np.ndarray, torch.Tensor)


# --------------------------------------------------------------------------------------------
# MaskData
# --------------------------------------------------------------------------------------------
class MaskData:
    """Column store for masks and their per-mask data (lists, numpy arrays or torch tensors,
    all indexed by mask along their first axis). Supports filtering and concatenation."""

    def __init__(self, **kwargs: Any) -> None:
        for k, v in kwargs.items():
            _check_item(k, v)
        self._stats: Dict[str, Any] = dict(**kwargs)

    def __setitem__(self, key: str, item: Any) -> None:
        _check_item(key, item)
        self._stats[key] = item

    def __delitem__(self, key: str) -> None:
        del self._stats[key]

    def __getitem__(self, key: str) -> Any:
        return self._stats[key]

    def __contains__(self, key: str) -> bool:
        return key in self._stats

    def __len__(self) -> int:
        """Number of stored fields (not of masks), as a dict would report."""
        return len(self._stats)

    def keys(self):
        return self._stats.keys()

    def items(self) -> ItemsView[str, Any]:
        return self._stats.items()

    def filter(self, keep: Any) -> None:
        """Keep the entries selected by ``keep``: a boolean mask or a sequence of indices (in the
        order given). Accepts torch tensors, numpy arrays and lists."""
        keep_t = keep if isinstance(keep, torch.Tensor) else torch.as_tensor(np.asarray(keep))
        keep_t = keep_t.detach()
        keep_np: Optional[np.ndarray] = None
        keep_list: Optional[List[Any]] = None
        for k, v in self._stats.items():
            if v is None:
                self._stats[k] = None
            elif isinstance(v, torch.Tensor):
                self._stats[k] = v[keep_t.to(v.device)]
            elif isinstance(v, np.ndarray):
                if keep_np is None:
                    keep_np = keep_t.cpu().numpy()
                self._stats[k] = v[keep_np]
            elif isinstance(v, list):
                if keep_list is None:
                    keep_list = keep_t.cpu().tolist()
                if keep_t.dtype == torch.bool:
                    self._stats[k] = [a for a, flag in zip(v, keep_list) if flag]
                else:
                    self._stats[k] = [v[i] for i in keep_list]
            else:
                raise TypeError(f"MaskData key {k} has an unsupported type {type(v)}.")

    def cat(self, new_stats: "MaskData", copy: bool = True) -> None:
        """Append the entries of ``new_stats`` (key by key) after this one's. With
        ``copy=False`` lists and first-seen fields are not deep-copied (for a ``new_stats``
        that is discarded afterwards)."""
        for k, v in new_stats.items():
            if k not in self._stats or self._stats[k] is None:
                self._stats[k] = deepcopy(v) if copy else v
            elif isinstance(v, torch.Tensor):
                self._stats[k] = torch.cat([self._stats[k], v], dim=0)
            elif isinstance(v, np.ndarray):
                self._stats[k] = np.concatenate([self._stats[k], v], axis=0)
            elif isinstance(v, list):
                self._stats[k] = self._stats[k] + (deepcopy(v) if copy else v)
            else:
                raise TypeError(f"MaskData key {k} has an unsupported type {type(v)}.")

    def to_numpy(self) -> None:
        """Convert every torch tensor field to a numpy array (on the CPU)."""
        for k, v in self._stats.items():
            if isinstance(v, torch.Tensor):
                self._stats[k] = v.detach().cpu().numpy()


def _check_item(key: str, item: Any) -> None:
    if not isinstance(item, _SUPPORTED):
        raise TypeError(
            f"MaskData only supports list, numpy arrays and torch tensors; got {type(item)} for {key!r}."
        )


# --------------------------------------------------------------------------------------------
# Boxes, crops and points
# --------------------------------------------------------------------------------------------
def is_box_near_crop_edge(
    boxes: torch.Tensor, crop_box: Sequence[int], orig_box: Sequence[int], atol: float = 20.0
) -> torch.Tensor:
    """True for (crop-frame XYXY) boxes lying within ``atol`` of an edge of the crop that is not
    also an edge of the original image."""
    crop_box_t = torch.as_tensor(crop_box, dtype=torch.float, device=boxes.device)
    orig_box_t = torch.as_tensor(orig_box, dtype=torch.float, device=boxes.device)
    boxes = uncrop_boxes_xyxy(boxes, crop_box).float()
    near_crop_edge = torch.isclose(boxes, crop_box_t[None, :], atol=atol, rtol=0)
    near_image_edge = torch.isclose(boxes, orig_box_t[None, :], atol=atol, rtol=0)
    near_crop_edge = torch.logical_and(near_crop_edge, ~near_image_edge)
    return torch.any(near_crop_edge, dim=1)


def box_xyxy_to_xywh(box_xyxy: Any) -> Any:
    """XYXY -> XYWH for one box (tensor, numpy array or list); returns a new object."""
    box_xywh = deepcopy(box_xyxy)
    box_xywh[2] = box_xywh[2] - box_xywh[0]
    box_xywh[3] = box_xywh[3] - box_xywh[1]
    return box_xywh


def batch_iterator(batch_size: int, *args: Any) -> Generator[List[Any], None, None]:
    """Yield lists of consecutive ``batch_size`` slices of each of ``args`` (same lengths)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if len(args) == 0 or any(len(a) != len(args[0]) for a in args):
        raise ValueError("Batched iteration must have inputs of all the same size.")
    n = len(args[0])
    n_batches = n // batch_size + int(n % batch_size != 0)
    for b in range(n_batches):
        yield [arg[b * batch_size : (b + 1) * batch_size] for arg in args]


def build_point_grid(n_per_side: int) -> np.ndarray:
    """``n_per_side**2`` x 2 grid of (x, y) points evenly spaced in [0,1]x[0,1] (cell centres),
    x varying fastest."""
    if n_per_side < 1:
        raise ValueError(f"n_per_side must be >= 1, got {n_per_side}.")
    offset = 1 / (2 * n_per_side)
    points_one_side = np.linspace(offset, 1 - offset, n_per_side)
    points_x = np.tile(points_one_side[None, :], (n_per_side, 1))
    points_y = np.tile(points_one_side[:, None], (1, n_per_side))
    return np.stack([points_x, points_y], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> List[np.ndarray]:
    """Point grids for crop layers 0..n_layers; layer i has ``int(n_per_side / scale**i)`` points
    per side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def generate_crop_boxes(
    im_size: Tuple[int, ...], n_layers: int, overlap_ratio: float
) -> Tuple[List[List[int]], List[int]]:
    """Crop boxes (XYXY ints) and their layer indices: the whole image (layer 0), then for layer
    i >= 1 a (2**i) x (2**i) grid of overlapping crops (x-major order, as the reference)."""
    crop_boxes, layer_idxs = [], []
    im_h, im_w = im_size
    short_side = min(im_h, im_w)

    crop_boxes.append([0, 0, im_w, im_h])
    layer_idxs.append(0)

    def crop_len(orig_len: int, n_crops: int, overlap: int) -> int:
        return int(math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops))

    for i_layer in range(n_layers):
        n_crops_per_side = 2 ** (i_layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / n_crops_per_side))

        crop_w = crop_len(im_w, n_crops_per_side, overlap)
        crop_h = crop_len(im_h, n_crops_per_side, overlap)

        crop_box_x0 = [int((crop_w - overlap) * i) for i in range(n_crops_per_side)]
        crop_box_y0 = [int((crop_h - overlap) * i) for i in range(n_crops_per_side)]

        for x0, y0 in product(crop_box_x0, crop_box_y0):
            crop_boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layer_idxs.append(i_layer + 1)

    return crop_boxes, layer_idxs


def uncrop_boxes_xyxy(boxes: torch.Tensor, crop_box: Sequence[int]) -> torch.Tensor:
    """Shift crop-frame XYXY boxes (... x 4, optionally with a channel dim) to the image frame."""
    x0, y0 = int(crop_box[0]), int(crop_box[1])
    offset = torch.tensor([[x0, y0, x0, y0]], device=boxes.device)
    if boxes.dim() == 3:
        offset = offset.unsqueeze(1)
    return boxes + offset


def uncrop_points(points: torch.Tensor, crop_box: Sequence[int]) -> torch.Tensor:
    """Shift crop-frame (x, y) points to the image frame."""
    x0, y0 = int(crop_box[0]), int(crop_box[1])
    offset = torch.tensor([[x0, y0]], device=points.device)
    if points.dim() == 3:
        offset = offset.unsqueeze(1)
    return points + offset


def uncrop_masks(masks: torch.Tensor, crop_box: Sequence[int], orig_h: int, orig_w: int) -> torch.Tensor:
    """Zero-pad crop-sized masks (... x h x w) to the original image size."""
    x0, y0, x1, y1 = (int(c) for c in crop_box)
    if x0 == 0 and y0 == 0 and x1 == orig_w and y1 == orig_h:
        return masks
    pad_x, pad_y = orig_w - (x1 - x0), orig_h - (y1 - y0)
    pad = (x0, pad_x - x0, y0, pad_y - y0)
    return torch.nn.functional.pad(masks, pad, value=0)


def batched_mask_to_box(masks: torch.Tensor) -> torch.Tensor:
    """XYXY boxes (inclusive max coordinates) around boolean masks C1 x ... x H x W ->
    C1 x ... x 4, int64. An empty mask gives [0, 0, 0, 0]."""
    if torch.numel(masks) == 0:
        # The reference returns float32 here; int64 keeps the dtype the same as for non-empty
        # input, so concatenating per-batch boxes never changes their dtype.
        return torch.zeros(*masks.shape[:-2], 4, dtype=torch.int64, device=masks.device)

    shape = masks.shape
    h, w = shape[-2:]
    masks = masks.flatten(0, -3) if len(shape) > 2 else masks.unsqueeze(0)
    if masks.dtype != torch.bool:
        masks = masks != 0

    in_height = torch.any(masks, dim=-1)  # C x H
    in_height_coords = in_height * torch.arange(h, device=masks.device)[None, :]
    bottom_edges = torch.amax(in_height_coords, dim=-1)
    top_edges = torch.amin(in_height_coords + h * (~in_height), dim=-1)

    in_width = torch.any(masks, dim=-2)  # C x W
    in_width_coords = in_width * torch.arange(w, device=masks.device)[None, :]
    right_edges = torch.amax(in_width_coords, dim=-1)
    left_edges = torch.amin(in_width_coords + w * (~in_width), dim=-1)

    empty = (right_edges < left_edges) | (bottom_edges < top_edges)
    out = torch.stack([left_edges, top_edges, right_edges, bottom_edges], dim=-1)
    out = out * (~empty).unsqueeze(-1)
    return out.reshape(*shape[:-2], 4) if len(shape) > 2 else out[0]


# --------------------------------------------------------------------------------------------
# Mask quality
# --------------------------------------------------------------------------------------------
def calculate_stability_score(masks: torch.Tensor, mask_threshold: float, threshold_offset: float) -> torch.Tensor:
    """IoU between the masks binarised at ``mask_threshold + offset`` and ``- offset`` (the
    first is always contained in the second), for logits ... x H x W."""
    intersections = (masks > (mask_threshold + threshold_offset)).sum(dim=(-1, -2), dtype=torch.int32)
    unions = (masks > (mask_threshold - threshold_offset)).sum(dim=(-1, -2), dtype=torch.int32)
    return intersections / unions


# --------------------------------------------------------------------------------------------
# RLE
# --------------------------------------------------------------------------------------------
def mask_to_rle(masks: torch.Tensor) -> List[Dict[str, Any]]:
    """Encode B x H x W masks as uncompressed, column-major (pycocotools) RLEs:
    ``{"size": [H, W], "counts": [n_false, n_true, n_false, ...]}`` (counts start with a run of
    zeros, possibly empty)."""
    if masks.dim() != 3:
        raise ValueError(f"masks must be B x H x W, got shape {tuple(masks.shape)}.")
    b, h, w = masks.shape
    if b == 0:
        return []
    if masks.dtype != torch.bool:
        masks = masks != 0
    flat = masks.permute(0, 2, 1).flatten(1)  # Fortran order
    first = flat[:, 0].cpu().tolist()
    change = (flat[:, 1:] ^ flat[:, :-1]).nonzero()  # row-major: rows then positions ascending
    per_row = torch.bincount(change[:, 0], minlength=b).cpu().tolist() if change.numel() else [0] * b
    positions = (change[:, 1] + 1).cpu().numpy()
    out = []
    start = 0
    total = h * w
    for i in range(b):
        stop = start + per_row[i]
        idxs = np.concatenate(([0], positions[start:stop], [total]))
        counts = [] if not first[i] else [0]
        counts.extend(np.diff(idxs).tolist())
        out.append({"size": [h, w], "counts": counts})
        start = stop
    return out


# The reference's name for the same function.
mask_to_rle_pytorch = mask_to_rle


def rle_to_mask(rle: Dict[str, Any]) -> np.ndarray:
    """Decode an uncompressed RLE to an H x W bool array (a transposed, Fortran-ordered view, like
    the reference)."""
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    if flat.size != h * w:
        raise ValueError(f"RLE counts sum to {flat.size}, expected {h * w} for size {[h, w]}.")
    return flat.reshape(w, h).transpose()


def area_from_rle(rle: Dict[str, Any]) -> int:
    """Number of foreground pixels of an uncompressed RLE."""
    return sum(rle["counts"][1::2])


def coco_encode_rle(uncompressed_rle: Dict[str, Any]) -> Dict[str, Any]:
    """Uncompressed RLE -> COCO compressed RLE with a ``str`` counts field (JSON-serialisable)."""
    from pycocotools import mask as mask_utils  # type: ignore

    h, w = uncompressed_rle["size"]
    rle = mask_utils.frPyObjects(uncompressed_rle, h, w)
    rle["counts"] = rle["counts"].decode("utf-8")
    return rle


# --------------------------------------------------------------------------------------------
# Small regions
# --------------------------------------------------------------------------------------------
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def coco_counts(rle: Dict[str, Any]) -> np.ndarray:
    """The run lengths of a COCO compressed RLE ``{"size": [h, w], "counts": str | bytes}``,
    int64, checked: every character in the alphabet, no value cut short, no negative run, and the
    runs covering exactly ``h * w`` pixels. Raises ``ValueError`` naming what is wrong.

    pycocotools checks none of this: garbage ``counts`` decode to uninitialised memory (or
    overrun the mask), so every reader decodes through :func:`coco_decode_rle`, which calls this.
    The mask area is ``counts[1::2].sum()``."""
    try:
        size = [int(v) for v in rle["size"]]
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"RLE must be {{'size': [h, w], 'counts': str}}, got {rle!r:.80}") from exc
    if len(size) != 2 or size[0] < 0 or size[1] < 0:
        raise ValueError(f"RLE size must be [h, w] with h, w >= 0, got {rle['size']!r}")
    if isinstance(counts, str):
        try:
            counts = counts.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError("RLE counts: not an ASCII string") from None
    if not isinstance(counts, (bytes, bytearray)):
        raise ValueError(f"RLE counts must be a COCO compressed string, got {type(counts).__name__}")
    c = np.frombuffer(bytes(counts), np.uint8).astype(np.int64) - 48
    if c.size and (c.min() < 0 or c.max() > 63):
        bad = bytes(counts)[int(np.flatnonzero((c < 0) | (c > 63))[0]):][:1]
        raise ValueError(f"RLE counts: character {bad!r} is not in the COCO RLE alphabet ('0'..'o')")
    more = (c & 0x20) != 0
    if c.size and more[-1]:
        raise ValueError("RLE counts: the last value is cut short")
    ends = np.flatnonzero(~more)
    starts = np.concatenate([[0], ends[:-1] + 1]) if ends.size else ends
    if ends.size and int((ends - starts).max()) >= 7:  # 7 characters hold 35 bits: no run is that long
        raise ValueError("RLE counts: a value longer than 7 characters")
    group = np.repeat(np.arange(ends.size), ends - starts + 1)
    k = np.arange(c.size) - starts[group]
    x = np.zeros(ends.size, np.int64)
    np.add.at(x, group, (c & 0x1F) << (5 * k))
    neg = (c[ends] & 0x10) != 0
    x[neg] -= np.left_shift(1, 5 * (ends[neg] - starts[neg] + 1))
    runs = x.copy()  # runs after the third are coded as the difference to the run two before
    runs[1::2] = np.cumsum(x[1::2])
    runs[2::2] = np.cumsum(x[2::2])
    if runs.size and runs.min() < 0:
        raise ValueError(f"RLE counts: negative run length {int(runs.min())}")
    total = int(runs.sum())
    if total != size[0] * size[1]:
        raise ValueError(f"RLE counts: runs cover {total} pixels, size {size} has {size[0] * size[1]}")
    return runs


def coco_decode_rle(rles: Dict[str, Any] | List[Dict[str, Any]]) -> np.ndarray:
    """pycocotools ``decode`` of COCO RLE (H x W, or H x W x K for a list), each RLE checked by
    :func:`coco_counts` first (``ValueError`` on garbage), without the DeprecationWarning its
    Cython code raises under numpy 2 on every call."""
    import warnings

    from pycocotools import mask as mask_utils

    for r in rles if isinstance(rles, list) else [rles]:
        coco_counts(r)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept a copy keyword",
                                category=DeprecationWarning)
        return mask_utils.decode(rles)


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> Tuple[np.ndarray, bool]:
    """Fill holes (``mode="holes"``) or drop islands (``mode="islands"``) with fewer than
    ``area_thresh`` pixels, 8-connectivity. Returns the mask and whether it changed. When every
    island is small the largest one is kept (the first such in raster order on ties: labels are
    numbered by first pixel in raster order; OpenCV's block-based labelling may order them
    differently, which only matters for exact ties)."""
    from scipy import ndimage

    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}.")
    correct_holes = mode == "holes"
    working_mask = np.asarray(mask, dtype=bool)
    if correct_holes:
        working_mask = ~working_mask
    regions, n_fg = ndimage.label(working_mask, structure=_EIGHT_CONNECTED)
    n_labels = n_fg + 1
    sizes = np.bincount(regions.ravel(order="K"), minlength=n_labels)[1:]  # label 0: background
    small_regions = np.flatnonzero(sizes < area_thresh) + 1
    if small_regions.size == 0:
        return mask, False
    fill = np.zeros(n_labels, dtype=bool)
    if correct_holes:
        fill[0] = True
        fill[small_regions] = True
    else:
        fill[1:] = True
        fill[small_regions] = False
        if not fill.any():  # every region is below the threshold: keep the largest
            fill[int(np.argmax(sizes)) + 1] = True
    return fill[regions], True


# --------------------------------------------------------------------------------------------
# Box ops and NMS (torchvision semantics)
# --------------------------------------------------------------------------------------------
def _upcast(t: torch.Tensor) -> torch.Tensor:
    if t.is_floating_point():
        return t if t.dtype in (torch.float32, torch.float64) else t.float()
    return t if t.dtype in (torch.int32, torch.int64) else t.int()


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas of XYXY boxes N x 4 (as ``torchvision.ops.box_area``)."""
    boxes = _upcast(boxes)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU N x M of XYXY boxes (as ``torchvision.ops.box_iou``)."""
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    lt = torch.max(boxes1[:, None, :2], boxes2[:, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[:, 2:])
    wh = _upcast(rb - lt).clamp(min=0)
    inter = wh[:, :, 0] * wh[:, :, 1]
    union = area1[:, None] + area2 - inter
    return inter / union


_NMS_BLOCK_ROWS = 256


def _greedy_nms_sorted(boxes: np.ndarray, groups: Optional[np.ndarray], iou_threshold: float) -> List[int]:
    """Greedy NMS over boxes already sorted by decreasing score. Returns kept positions.

    IoUs are computed for blocks of not-yet-suppressed rows against all later boxes, with the
    same float operations (in the boxes' precision) as torchvision's CPU kernel, and compared
    to the threshold in double precision as that kernel does."""
    n = boxes.shape[0]
    x1, y1, x2, y2 = (np.ascontiguousarray(boxes[:, k]) for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    thr = np.float64(iou_threshold)
    zero = boxes.dtype.type(0)
    suppressed = np.zeros(n, dtype=bool)
    keep: List[int] = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for start in range(0, n, _NMS_BLOCK_ROWS):
            rows = np.flatnonzero(~suppressed[start : start + _NMS_BLOCK_ROWS]) + start
            if rows.size == 0:
                continue
            w = np.maximum(zero, np.minimum(x2[rows, None], x2[None, start:]) - np.maximum(x1[rows, None], x1[None, start:]))
            h = np.maximum(zero, np.minimum(y2[rows, None], y2[None, start:]) - np.maximum(y1[rows, None], y1[None, start:]))
            inter = w * h
            over = (inter / (areas[rows, None] + areas[None, start:] - inter)) > thr
            if groups is not None:
                over &= groups[rows, None] == groups[None, start:]
            for r, i in enumerate(rows.tolist()):
                if suppressed[i]:
                    continue
                keep.append(i)
                # Marks on positions <= i are harmless: those were decided already.
                suppressed[start:] |= over[r]
    return keep


def _nms_impl(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: Optional[torch.Tensor], iou_threshold: float
) -> torch.Tensor:
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be N x 4, got shape {tuple(boxes.shape)}.")
    n = boxes.shape[0]
    if scores.dim() != 1 or scores.shape[0] != n:
        raise ValueError(f"scores must have shape ({n},), got {tuple(scores.shape)}.")
    if idxs is not None and (idxs.dim() != 1 or idxs.shape[0] != n):
        raise ValueError(f"idxs must have shape ({n},), got {tuple(idxs.shape)}.")
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores.detach().cpu(), descending=True, stable=True).indices
    np_dtype = np.float64 if boxes.dtype == torch.float64 else np.float32
    sorted_boxes = boxes.detach().cpu()[order].numpy().astype(np_dtype, copy=False)
    groups = None
    if idxs is not None:
        groups = idxs.detach().cpu()[order].numpy()
    keep = _greedy_nms_sorted(sorted_boxes, groups, iou_threshold)
    return order[torch.as_tensor(keep, dtype=torch.int64)].to(boxes.device)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Non-maximum suppression (as ``torchvision.ops.nms``): indices of the kept XYXY boxes, by
    decreasing score (ties: lower index first)."""
    return _nms_impl(boxes, scores, None, iou_threshold)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS within each category of ``idxs`` (as ``torchvision.ops.batched_nms``): boxes of
    different categories never suppress each other. Kept indices by decreasing score."""
    return _nms_impl(boxes, scores, torch.as_tensor(idxs), iou_threshold)
