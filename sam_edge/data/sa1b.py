"""SA-1B reader, and the skip/report machinery shared by the dataset readers.

A folder of ``sa_<N>.jpg`` + ``sa_<N>.json`` (the SA-1B layout: ``{"image": {"image_id",
"width", "height", "file_name"}, "annotations": [{"id", "segmentation": {"size": [h, w],
"counts": "<COCO RLE>"}, "bbox": [x, y, w, h], "area", "point_coords": [[x, y]],
"predicted_iou", "stability_score", "crop_box"}]}``).

Bad samples never stop a run: :meth:`SA1BDataset.scan` checks every pair once (JSON parsed,
image header read, the image decoded at 1/8 scale to catch truncation, RLE sizes against the
image) and keeps the valid ids; every skipped sample is logged on the ``distill.data`` logger
with its reason and counted in a :class:`SkipReport`. A sample that still fails when loaded
raises :class:`SampleError`; :func:`iter_valid` (or the :class:`SkipErrors` wrapper +
:func:`collate_valid` for a torch ``DataLoader``) skips it, records it in the same report and
goes on.
"""
from __future__ import annotations

import json
import logging
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from sam_edge.utils.amg import coco_counts, coco_decode_rle as decode_rle

log = logging.getLogger("sam_edge.data")

# Reasons a sample is skipped (the keys of SkipReport.counts).
MISSING_IMAGE = "missing image"
MISSING_JSON = "missing json"
INVALID_JSON = "invalid json"
INVALID_ANNOTATION = "invalid annotation"
UNREADABLE_IMAGE = "unreadable image"
TRUNCATED_IMAGE = "truncated image"
IMAGE_SIZE_MISMATCH = "image size mismatch"
RLE_SIZE_MISMATCH = "rle size mismatch"
NO_ANNOTATIONS = "no annotations"
NO_USABLE_MASKS = "no usable masks"
LOAD_ERROR = "load error"
# Reasons an annotation is dropped from an otherwise usable sample (SkipReport.dropped).
EMPTY_MASK = "empty mask"
BELOW_MIN_AREA = "below min_area"

_SA_NAME = re.compile(r"^(sa_(\d+))\.(jpg|json)$")

__all__ = [
    "SA1BDataset",
    "SampleError",
    "SkipErrors",
    "SkipReport",
    "collate_valid",
    "iter_valid",
    "read_rgb",
]


class SampleError(RuntimeError):
    """A sample that cannot be used: ``path``, ``reason`` (one of the reason constants) and a
    ``detail`` string."""

    def __init__(self, path: str | Path, reason: str, detail: str = "") -> None:
        self.path, self.reason, self.detail = str(path), reason, detail
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


@dataclass
class SkipReport:
    """What a reader skipped. ``total`` samples were looked at; ``skipped`` lists
    ``(path, reason)`` once per sample; ``counts`` counts samples per reason; ``dropped`` counts
    annotations removed from otherwise used samples; ``notes`` counts conversions made (e.g.
    ``"grayscale -> RGB"``)."""

    total: int = 0
    counts: Counter = field(default_factory=Counter)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    _seen: set = field(default_factory=set, repr=False)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    @property
    def used(self) -> int:
        return self.total - len(self.skipped)

    def skip(self, path: str | Path, reason: str, detail: str = "") -> None:
        """Record (and log, once per sample) that ``path`` is skipped for ``reason``."""
        key = str(path)
        if key in self._seen:
            return
        self._seen.add(key)
        self.skipped.append((key, reason))
        self.counts[reason] += 1
        log.warning("skipped %s: %s%s", key, reason, f" ({detail})" if detail else "")

    def is_skipped(self, path: str | Path) -> bool:
        return str(path) in self._seen

    def summary(self) -> str:
        """E.g. ``"1000 samples: 997 used, 3 skipped (truncated image: 1, no annotations: 2)"``."""
        text = f"{self.total} samples: {self.used} used, {self.num_skipped} skipped"
        if self.counts:
            text += " (" + ", ".join(f"{k}: {v}" for k, v in self.counts.items()) + ")"
        if self.dropped:
            n = sum(self.dropped.values())
            text += f"; {n} annotation{'s' if n != 1 else ''} dropped (" + ", ".join(
                f"{k}: {v}" for k, v in self.dropped.items()) + ")"
        if self.notes:
            text += "; converted: " + ", ".join(f"{k}: {v}" for k, v in self.notes.items())
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "used": self.used, "skipped": self.num_skipped,
                "counts": dict(self.counts), "dropped": dict(self.dropped), "notes": dict(self.notes),
                "skipped_samples": [{"path": p, "reason": r} for p, r in self.skipped]}


# --------------------------------------------------------------------------------------------
# Image helpers (shared with the folder reader)
# --------------------------------------------------------------------------------------------
def check_image_file(path: Path, verify: bool = True) -> tuple[tuple[int, int] | None, str, str]:
    """((width, height), "", "") for a readable image, else (None, reason, detail). With
    ``verify`` the image is decoded (JPEG at 1/8 scale, which still reads every byte) so a
    truncated file is caught."""
    from sam_edge.image import ImageError, open_image

    try:
        with open_image(path) as im:  # the pixel limit, from the header
            size = im.size
            if not verify:
                return size, "", ""
            if im.format == "JPEG":
                im.draft(im.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
            try:
                im.load()
            except OSError as exc:
                reason = TRUNCATED_IMAGE if "truncated" in str(exc).lower() else UNREADABLE_IMAGE
                return None, reason, str(exc)
    except ImageError as exc:
        return None, UNREADABLE_IMAGE, str(exc)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return None, UNREADABLE_IMAGE, str(exc) or type(exc).__name__
    if size[0] < 1 or size[1] < 1:
        return None, UNREADABLE_IMAGE, f"empty image {size}"
    return size, "", ""


def read_rgb(path: str | Path, report: SkipReport | None = None) -> np.ndarray:
    """H x W x 3 uint8 RGB with :func:`sam_edge.image.load_image` semantics (grayscale, palette,
    RGBA and 16-bit converted). Conversions are counted in ``report.notes`` and logged at debug
    level rather than warned per image. Raises :class:`SampleError`."""
    from sam_edge.image import ImageError, load_image

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            image = load_image(path)
        except ImageError as exc:
            msg = str(exc)
            if "not found" in msg:
                raise SampleError(path, MISSING_IMAGE, msg) from exc
            reason = TRUNCATED_IMAGE if "truncated" in msg.lower() else UNREADABLE_IMAGE
            raise SampleError(path, reason, msg) from exc
    for w in caught:
        msg = str(w.message)
        log.debug("%s", msg)
        if report is not None and ": converted " in msg:
            report.notes[msg.split(": converted ", 1)[1]] += 1
    return image


def resize_shape(h: int, w: int, image_size: int | None) -> tuple[int, int]:
    """Longest side to ``image_size`` (SAM's ResizeLongestSide rounding); unchanged if None."""
    if image_size is None:
        return h, w
    from sam_edge.transforms import get_preprocess_shape

    return get_preprocess_shape(h, w, image_size)


def resize_image(image: np.ndarray, image_size: int | None) -> np.ndarray:
    h, w = image.shape[:2]
    nh, nw = resize_shape(h, w, image_size)
    if (nh, nw) == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))


def _nearest_index(old: int, new: int) -> np.ndarray:
    return np.minimum(((np.arange(new) + 0.5) * (old / new)).astype(np.int64), old - 1)


# --------------------------------------------------------------------------------------------
# SA-1B
# --------------------------------------------------------------------------------------------
def _natural_key(stem: str) -> tuple:
    m = re.match(r"^sa_(\d+)$", stem)
    return (0, int(m.group(1)), stem) if m else (1, 0, stem)


def _stem(sample_id: int | str) -> str:
    if isinstance(sample_id, (int, np.integer)):
        return f"sa_{int(sample_id)}"
    s = str(sample_id)
    for suffix in (".jpg", ".json"):
        if s.endswith(suffix):
            s = s[: -len(suffix)]
    return s if s.startswith("sa_") else f"sa_{s}"


def _rle(segmentation: dict[str, Any]) -> dict[str, Any]:
    """The COCO RLE of an annotation's ``segmentation``, its structure checked; raises
    ValueError / TypeError / KeyError for a polygon or an uncompressed RLE. The ``counts`` are
    checked against the size by :func:`rle_area` (the check every decode makes)."""
    if not isinstance(segmentation, dict):
        raise ValueError(f"segmentation must be a COCO RLE object, got {type(segmentation).__name__} "
                         "(polygons are not supported)")
    counts = segmentation["counts"]
    if isinstance(counts, str):
        counts = counts.encode("ascii", "replace")
    if not isinstance(counts, bytes):
        raise ValueError("segmentation.counts must be a COCO compressed RLE string")
    size = segmentation["size"]
    if not isinstance(size, list) or len(size) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in size):
        raise ValueError(f"segmentation.size must be [h, w], got {size!r:.80}")
    return {"size": list(size), "counts": counts}


def rle_area(rle: dict[str, Any]) -> int:
    """Mask area of a COCO RLE whose ``counts`` decode to exactly ``h * w`` pixels
    (:func:`sam_edge.utils.amg.coco_counts`: the same check :func:`decode_rle` makes before every
    decode); ValueError ("bad RLE: ...") otherwise."""
    try:
        return int(coco_counts(rle)[1::2].sum())
    except ValueError as exc:
        raise ValueError(f"bad RLE: {exc}") from None


def _numbers(value: Any, n: int | None, name: str) -> None:
    """``value`` is a list of ``n`` (any number if None) finite numbers, else ValueError."""
    if not isinstance(value, list) or (n is not None and len(value) != n) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in value):
        raise ValueError(f"{name} must be {n if n is not None else 'a list of'} finite numbers, got {value!r:.80}")


def _check_fields(ann: dict[str, Any]) -> None:
    """The optional fields the loader reads are numbers of the right shape (ValueError)."""
    if "bbox" in ann:
        _numbers(ann["bbox"], 4, "bbox")
    pc = ann.get("point_coords")
    if pc:
        if not isinstance(pc, list):
            raise ValueError(f"point_coords must be [[x, y], ...], got {pc!r:.80}")
        for p in pc:
            _numbers(p, 2, "point_coords")
    for key in ("predicted_iou", "stability_score", "id"):
        if key in ann:
            _numbers([ann[key]], 1, key)


class SA1BDataset:
    """SA-1B-format samples under ``root``.

    Args:
        root: folder of ``sa_<N>.jpg`` + ``sa_<N>.json``.
        ids: optional subset (``"sa_12"``, ``12`` or ``"sa_12.jpg"``); default: every pair found.
        image_size: if given, images are resized so their longest side is ``image_size`` (SAM's
            ResizeLongestSide, no padding); masks (nearest), boxes and points follow.
        min_area: annotations with fewer mask pixels (original resolution) are dropped.
        max_masks: keep at most this many annotations per item: the first ones in file order,
            or a random subset drawn from ``(mask_seed, epoch, index)`` if ``mask_seed`` is set
            (see :meth:`set_epoch`).
        verify_images: decode each image during the scan to catch truncation (JPEG at 1/8 scale);
            False reads only the headers.
        report: a :class:`SkipReport` to add to (default: a new one, ``self.report``).

    ``dataset[i]`` returns a dict: ``image`` H x W x 3 uint8 RGB, ``masks`` K x H x W bool,
    ``boxes`` K x 4 float32 XYXY (``x1 = x + w`` of the JSON bbox: with SAM's convention, the
    last mask column/row), ``point_coords`` K x 2 float32 (x, y), ``areas`` K int64 (original
    resolution), ``predicted_iou`` / ``stability_score`` K float32, ``annotation_ids`` K int64,
    ``image_id`` (from the JSON), ``id`` (``"sa_<N>"``), ``path`` (the .jpg) and
    ``original_size`` (H, W). Decoding happens per item.
    """

    def __init__(self, root: str | Path, ids: Iterable[int | str] | None = None, image_size: int | None = None,
                 min_area: int = 0, max_masks: int | None = None, *, verify_images: bool = True,
                 mask_seed: int | None = None, report: SkipReport | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"SA-1B folder not found: {self.root}")
        if image_size is not None and int(image_size) < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        if max_masks is not None and int(max_masks) < 1:
            raise ValueError(f"max_masks must be >= 1, got {max_masks}")
        self.image_size = None if image_size is None else int(image_size)
        self.min_area = int(min_area)
        self.max_masks = None if max_masks is None else int(max_masks)
        self.verify_images = verify_images
        self.mask_seed = mask_seed
        self.epoch = 0
        self.report = report if report is not None else SkipReport()
        self.ids: list[str] = self.scan(ids)

    # ---------------------------------------------------------------------------------- scan
    def candidates(self) -> list[str]:
        """Every ``sa_<N>`` stem with a .jpg or a .json in ``root``, in numeric order."""
        stems = set()
        for entry in self.root.iterdir():
            m = _SA_NAME.match(entry.name)
            if m:
                stems.add(m.group(1))
        return sorted(stems, key=_natural_key)

    def scan(self, ids: Iterable[int | str] | None = None) -> list[str]:
        """Check each candidate; returns the valid ids and records the rest in ``self.report``
        (``report.total`` grows by the number of candidates)."""
        stems = self.candidates() if ids is None else [_stem(i) for i in ids]
        valid = []
        for stem in stems:
            self.report.total += 1
            problem = self._check(stem)
            if problem is None:
                valid.append(stem)
            else:
                path, reason, detail = problem
                self.report.skip(path, reason, detail)
        return valid

    def _paths(self, stem: str) -> tuple[Path, Path]:
        return self.root / f"{stem}.jpg", self.root / f"{stem}.json"

    def _read_json(self, js: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(image info, annotations) with their structure checked; raises SampleError."""
        if not js.is_file():
            raise SampleError(js, MISSING_JSON)
        try:
            data = json.loads(js.read_bytes())
        except (OSError, ValueError) as exc:
            raise SampleError(js, INVALID_JSON, str(exc)) from exc
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
            raise SampleError(js, INVALID_JSON, "expected an object with an 'annotations' list")
        info = data.get("image", {})
        if not isinstance(info, dict):
            raise SampleError(js, INVALID_JSON, "'image' must be an object")
        for key in ("width", "height"):
            if key in info and (not isinstance(info[key], int) or isinstance(info[key], bool) or info[key] < 1):
                raise SampleError(js, INVALID_JSON, f"image.{key} must be a positive integer, got {info[key]!r:.40}")
        anns = data["annotations"]
        for k, ann in enumerate(anns):
            try:
                if not isinstance(ann, dict):
                    raise ValueError(f"expected an object, got {type(ann).__name__}")
                ann["_rle"] = _rle(ann["segmentation"])
                _check_fields(ann)
            except (KeyError, TypeError, ValueError) as exc:
                detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
                raise SampleError(js, INVALID_ANNOTATION, f"annotation {k}: {detail}") from exc
        return info, anns

    def _check_sizes(self, js: Path, info: dict[str, Any], anns: list[dict[str, Any]], w: int, h: int) -> None:
        if "width" in info and "height" in info and (int(info["width"]), int(info["height"])) != (w, h):
            raise SampleError(js, IMAGE_SIZE_MISMATCH,
                              f"JSON says {info['width']}x{info['height']}, image is {w}x{h}")
        for k, ann in enumerate(anns):
            if ann["_rle"]["size"] != [h, w]:
                raise SampleError(js, RLE_SIZE_MISMATCH,
                                  f"annotation {k}: RLE size {ann['_rle']['size']} != image [{h}, {w}]")

    def _select(self, js: Path, anns: list[dict[str, Any]], record: bool) -> list[dict[str, Any]]:
        """Annotations with a non-empty mask of at least ``min_area`` pixels; raises
        SampleError when there are none (or none at all)."""
        if not anns:
            raise SampleError(js, NO_ANNOTATIONS)
        keep = []
        for k, ann in enumerate(anns):
            try:  # garbage counts: the loader's decode would refuse them too
                ann["_area"] = area = rle_area(ann["_rle"])
            except ValueError as exc:
                raise SampleError(js, INVALID_ANNOTATION, f"annotation {k}: {exc}") from exc
            if area <= 0:
                if record:
                    self.report.dropped[EMPTY_MASK] += 1
            elif area < self.min_area:
                if record:
                    self.report.dropped[BELOW_MIN_AREA] += 1
            else:
                keep.append(ann)
        if not keep:
            raise SampleError(js, NO_USABLE_MASKS,
                              f"{len(anns)} annotations, all empty or below min_area={self.min_area}")
        return keep

    def _check(self, stem: str) -> tuple[str, str, str] | None:
        jpg, js = self._paths(stem)
        if not jpg.is_file():
            return str(jpg), MISSING_IMAGE, ""
        try:
            info, anns = self._read_json(js)
            size, reason, detail = check_image_file(jpg, self.verify_images)
            if size is None:
                raise SampleError(jpg, reason, detail)
            self._check_sizes(js, info, anns, *size)
            self._select(js, anns, record=True)
        except SampleError as exc:
            return exc.path, exc.reason, exc.detail
        return None

    # ---------------------------------------------------------------------------------- items
    def __len__(self) -> int:
        return len(self.ids)

    def set_epoch(self, epoch: int) -> None:
        """Changes the random mask subset when ``max_masks`` and ``mask_seed`` are set."""
        self.epoch = int(epoch)

    def path(self, idx: int) -> Path:
        return self._paths(self.ids[idx])[0]

    def annotations(self, idx: int) -> list[dict[str, Any]]:
        """The JSON annotations item ``idx`` uses (filtered, subset to ``max_masks``), without
        decoding any mask. Raises :class:`SampleError`."""
        return self._load_annotations(idx)[1]

    def _load_annotations(self, idx: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        _, js = self._paths(self.ids[idx])
        info, anns = self._read_json(js)
        keep = self._select(js, anns, record=False)
        if self.max_masks is not None and len(keep) > self.max_masks:
            if self.mask_seed is None:
                keep = keep[: self.max_masks]
            else:
                rng = np.random.default_rng([int(self.mask_seed), self.epoch, int(idx)])
                keep = [keep[i] for i in np.sort(rng.choice(len(keep), self.max_masks, replace=False))]
        return info, keep

    def load_image(self, idx: int) -> np.ndarray:
        """H x W x 3 uint8 RGB at the original resolution. Raises :class:`SampleError`."""
        return read_rgb(self.path(idx), self.report)

    def masks_for(self, idx: int, annotations: Sequence[dict[str, Any]] | None = None) -> np.ndarray:
        """K x h x w bool masks of ``annotations`` (default: :meth:`annotations`), resized like
        the image when ``image_size`` is set."""
        anns = self.annotations(idx) if annotations is None else annotations
        rles = [a["_rle"] if "_rle" in a else _rle(a["segmentation"]) for a in anns]
        if not rles:
            return np.zeros((0, 0, 0), bool)
        h, w = rles[0]["size"]
        nh, nw = resize_shape(h, w, self.image_size)
        if (nh, nw) == (h, w):
            return np.ascontiguousarray(decode_rle(rles).transpose(2, 0, 1)).astype(bool)
        yi, xi = _nearest_index(h, nh), _nearest_index(w, nw)
        out = np.empty((len(rles), nh, nw), bool)
        for k, rle in enumerate(rles):  # one at a time: full-size SA-1B masks are large
            out[k] = decode_rle(rle)[yi][:, xi]
        return out

    def __getitem__(self, idx: int) -> dict[str, Any]:
        if idx < 0:
            idx += len(self)
        if not 0 <= idx < len(self):
            raise IndexError(f"index {idx} out of range for {len(self)} samples")
        stem = self.ids[idx]
        jpg, js = self._paths(stem)
        try:
            info, anns = self._load_annotations(idx)
            image = read_rgb(jpg, self.report)
            h, w = image.shape[:2]
            self._check_sizes(js, info, anns, w, h)
            masks = self.masks_for(idx, anns)
        except SampleError:
            raise
        except Exception as exc:  # noqa: BLE001 - any other failure is this sample's, named
            raise SampleError(jpg, LOAD_ERROR, repr(exc)) from exc

        boxes = np.array([a.get("bbox", [np.nan] * 4) for a in anns], np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        points = np.full((len(anns), 2), np.nan, np.float32)
        for k, a in enumerate(anns):
            pc = a.get("point_coords")
            if pc:
                points[k] = np.asarray(pc, np.float32).reshape(-1, 2)[0]
        missing = np.isnan(points).any(1) | np.isnan(boxes).any(1)
        if missing.any():  # fill from the mask at original resolution
            for k in np.flatnonzero(missing):
                m = decode_rle(anns[k]["_rle"]).astype(bool)
                ys, xs = np.nonzero(m)
                if np.isnan(boxes[k]).any():
                    boxes[k] = [xs.min(), ys.min(), xs.max(), ys.max()]
                if np.isnan(points[k]).any():
                    j = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))
                    points[k] = [xs[j], ys[j]]
        nh, nw = masks.shape[1:] if len(anns) else (h, w)
        if (nh, nw) != (h, w):
            image = resize_image(image, self.image_size)
            scale = np.array([nw / w, nh / h], np.float32)
            boxes = (boxes.reshape(-1, 2, 2) * scale).reshape(-1, 4)
            points = points * scale
        return {
            "image": image,
            "masks": masks,
            "boxes": boxes.astype(np.float32),
            "point_coords": points.astype(np.float32),
            "areas": np.array([a["_area"] for a in anns], np.int64),
            "predicted_iou": np.array([a.get("predicted_iou", 1.0) for a in anns], np.float32),
            "stability_score": np.array([a.get("stability_score", 1.0) for a in anns], np.float32),
            "annotation_ids": np.array([a.get("id", -1) for a in anns], np.int64),
            "image_id": info.get("image_id", stem),
            "id": stem,
            "path": str(jpg),
            "original_size": (h, w),
        }

    def __repr__(self) -> str:
        return f"SA1BDataset({str(self.root)!r}, {len(self)} samples; {self.report.summary()})"


# --------------------------------------------------------------------------------------------
# Skipping at load time
# --------------------------------------------------------------------------------------------
def iter_valid(dataset: Any, indices: Iterable[int] | None = None,
               report: SkipReport | None = None) -> Iterator[dict[str, Any]]:
    """Yield ``dataset[i]`` for ``i`` in ``indices`` (default: all), skipping items that raise
    :class:`SampleError`; each is recorded in ``report`` (default: ``dataset.report``)."""
    report = report if report is not None else dataset.report
    for i in range(len(dataset)) if indices is None else indices:
        try:
            item = dataset[i]
        except SampleError as exc:
            report.skip(exc.path, exc.reason, exc.detail)
            continue
        yield item


class SkipErrors:
    """Map-style wrapper for a torch ``DataLoader``: ``wrapper[i]`` is ``dataset[i]`` or None
    when it raises :class:`SampleError` (recorded in ``dataset.report``: in worker processes that
    is the worker's copy, but the skip is still logged). Use with :func:`collate_valid`."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> dict[str, Any] | None:
        try:
            return self.dataset[idx]
        except SampleError as exc:
            self.dataset.report.skip(exc.path, exc.reason, exc.detail)
            return None


def collate_valid(batch: Sequence[dict[str, Any] | None]) -> list[dict[str, Any]]:
    """Collate function that drops the None items :class:`SkipErrors` returns. Items keep their
    own number of masks, so the batch is a list of dicts."""
    return [item for item in batch if item is not None]
