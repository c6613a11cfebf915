"""Synthetic data in the SA-1B layout: scenes worth segmenting, written as ``sa_<N>.jpg`` +
``sa_<N>.json`` (COCO RLE masks) plus an ``index.json``, so every training path can be exercised
without the real SA-1B.

A scene has a textured or gradient background (smooth gradients, stripes, checkers, value-noise
textures; sometimes split by a wavy horizon into two annotated "stuff" regions), then 4-12
objects of varied shape (ellipses, rounded/rotated rectangles, polygons, stars, blobs, rings)
with their own colour, gradient, rim shading and pattern. Later objects occlude earlier ones; the
ground-truth masks are the *visible* parts. One or two objects are nested: a ``whole`` (body)
containing a ``part`` (panel) containing one or two ``subpart`` (buttons), each annotated as its
own mask (the whole includes its panel and buttons, the panel its buttons), so one point on a
button is genuinely ambiguous, the case SAM's three-mask output exists for. Colours are chosen
with a minimum contrast to what lies underneath (background or container); per-object texture
and pixel noise keep a flat-colour shortcut from working.

Determinism: each image is drawn from ``numpy.random.SeedSequence([seed, N])``, so image ``N``
is the same whatever ``num_images`` or ``workers`` are; JPEG settings are fixed and nothing
records a time, so the same seed gives byte-identical files. Files are written atomically and a
rerun skips images whose ``.jpg`` and ``.json`` are already complete (resume).
"""
from __future__ import annotations

import io
import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

# the scene renderer; re-exported here, where the generator's public names always lived
from sam_edge.data.scenes import LEVELS, MIN_AREA_FRACTION, Scene, SceneMask, _rng_for, _size_hw, render_scene

GENERATOR_VERSION = "1.0"
JPEG_QUALITY = 92

log = logging.getLogger("sam_edge.data.synth")

__all__ = [
    "GENERATOR_VERSION",
    "MIN_AREA_FRACTION",
    "Scene",
    "SceneMask",
    "generate_dataset",
    "generate_image",
    "render_scene",
    "scene_to_sa1b",
]


# --------------------------------------------------------------------------------------------
# SA-1B records
# --------------------------------------------------------------------------------------------
def _interior_point(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) of a pixel deep inside ``mask`` (max of the distance transform on a <= 96 px
    sub-sampling of its bounding box)."""
    from scipy import ndimage

    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = mask[y0:y1, x0:x1]
    step = max(1, int(math.ceil(max(crop.shape) / 96)))
    small = crop[::step, ::step]
    if not small.any():
        iy, ix = np.unravel_index(int(np.argmax(crop)), crop.shape)
        return float(x0 + ix), float(y0 + iy)
    dist = ndimage.distance_transform_edt(np.pad(small, 1))[1:-1, 1:-1]
    iy, ix = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(x0 + ix * step), float(y0 + iy * step)


def _bbox_xywh(mask: np.ndarray) -> list[float]:
    """SAM's convention (``batched_mask_to_box`` then XYWH): x1/y1 are the last mask pixel, so
    ``x + w`` is the right-most column, as in SA-1B."""
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0]), float(rows[-1] - rows[0])]


def scene_to_sa1b(image_id: int, scene: Scene, file_name: str | None = None) -> dict[str, Any]:
    """The SA-1B JSON record of a scene (ground truth: predicted_iou = stability_score = 1).
    Each annotation also carries ``"synth": {"level", "shape", "parent"}`` (``parent``: the
    annotation id of the containing mask or null), which SA-1B readers ignore."""
    from pycocotools import mask as mask_utils

    h, w = scene.image.shape[:2]
    anns = []
    ids = [image_id * 1000 + k for k in range(len(scene.masks))]
    if len(scene.masks) >= 1000:
        raise ValueError("at most 999 masks per image")
    for k, sm in enumerate(scene.masks):
        rle = mask_utils.encode(np.asfortranarray(sm.mask.astype(np.uint8)))
        x, y = _interior_point(sm.mask)
        anns.append({
            "id": ids[k],
            "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")},
            "bbox": _bbox_xywh(sm.mask),
            "area": int(sm.mask.sum()),
            "predicted_iou": 1.0,
            "point_coords": [[x, y]],
            "crop_box": [0.0, 0.0, float(w), float(h)],
            "stability_score": 1.0,
            "synth": {"level": sm.level, "shape": sm.shape,
                      "parent": ids[sm.parent] if sm.parent is not None else None},
        })
    return {
        "image": {"image_id": int(image_id), "width": int(w), "height": int(h),
                  "file_name": file_name or f"sa_{image_id}.jpg"},
        "annotations": anns,
    }


def _encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality, subsampling=0, optimize=False)
    return buf.getvalue()


def _json_bytes(obj: Any) -> bytes:
    from sam_edge.utils.io import dumps_json

    return dumps_json(obj, separators=(",", ":")).encode("utf-8")


def generate_image(index: int, image_size: int | Sequence[int], seed: int,
                   jpeg_quality: int = JPEG_QUALITY) -> tuple[bytes, dict[str, Any]]:
    """Image ``sa_<index>``: (JPEG bytes, SA-1B JSON record). Deterministic in (seed, index)."""
    scene = render_scene(_rng_for(seed, index), image_size)
    return _encode_jpeg(scene.image, jpeg_quality), scene_to_sa1b(index, scene)


# --------------------------------------------------------------------------------------------
# Datasets on disk
# --------------------------------------------------------------------------------------------
def _level_counts(record: dict[str, Any]) -> dict[str, int]:
    counts = dict.fromkeys(LEVELS, 0)
    for ann in record["annotations"]:
        level = ann.get("synth", {}).get("level")
        if level in counts:
            counts[level] += 1
    return counts


def _existing_record(jpg: Path, js: Path, index: int, h: int, w: int) -> dict[str, Any] | None:
    """The JSON record if ``jpg`` + ``js`` are a complete, matching pair, else None."""
    if not (jpg.is_file() and js.is_file()):
        return None
    try:
        record = json.loads(js.read_bytes())
        info = record["image"]
        if (info["image_id"], info["width"], info["height"], info["file_name"]) != (index, w, h, jpg.name):
            return None
        if not isinstance(record["annotations"], list):
            return None
        with Image.open(jpg) as im:
            if im.size != (w, h):
                return None
            im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
            im.load()
    except Exception:  # noqa: BLE001 - anything unreadable is regenerated
        return None
    return record


def _generate_one(job: tuple[str, int, tuple[int, int], int, int]) -> tuple[int, dict[str, int], bool]:
    from sam_edge.utils.io import atomic_path

    out, index, (h, w), seed, quality = job
    out_dir = Path(out)
    jpg, js = out_dir / f"sa_{index}.jpg", out_dir / f"sa_{index}.json"
    record = _existing_record(jpg, js, index, h, w)
    if record is not None:
        return index, _level_counts(record), False
    data, record = generate_image(index, (h, w), seed, quality)
    # The image first, the JSON last: a JSON present means the pair is complete.
    with atomic_path(jpg) as tmp:
        tmp.write_bytes(data)
    with atomic_path(js) as tmp:
        tmp.write_bytes(_json_bytes(record))
    return index, _level_counts(record), True


def generate_dataset(out: str | Path, num_images: int, image_size: int | Sequence[int] = 256,
                     seed: int = 0, workers: int = 1, *, jpeg_quality: int = JPEG_QUALITY,
                     progress: bool = False) -> dict[str, Any]:
    """Write ``sa_1 .. sa_<num_images>`` (``.jpg`` + ``.json``) and ``index.json`` under ``out``.

    Rerunning resumes: complete pairs are kept, anything else is (re)generated; a larger
    ``num_images`` extends the set with the same first images. ``out`` holding a set made with a
    different seed, size or generator version raises ``ValueError``. Returns the index dict
    (also written as ``index.json``; it adds ``generated`` / ``reused`` counts to the returned
    dict only, so the file stays byte-identical across resumed runs)."""
    num_images = int(num_images)
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    h, w = _size_hw(image_size)
    _rng_for(seed, 0)  # validates the seed
    if not 1 <= int(jpeg_quality) <= 100:
        raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
    from sam_edge.utils.io import remove_stale_temps

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)  # a killed run's half-written files
    # "generator" names this generator in index.json; it keeps its first module name ("distill.synth")
    # so that datasets written before the package moved stay valid for resume
    params = {"format": "sa1b", "generator": "distill.synth", "version": GENERATOR_VERSION,
              "seed": int(seed), "image_size": [h, w], "jpeg_quality": int(jpeg_quality)}
    index_path = out / "index.json"
    if index_path.exists():
        try:
            old = json.loads(index_path.read_bytes())
        except ValueError as exc:
            raise ValueError(f"{index_path}: unreadable index ({exc}); remove it or use another --out") from exc
        differing = {k: (old.get(k), v) for k, v in params.items() if old.get(k) != v}
        if differing:
            detail = ", ".join(f"{k}: {a!r} there vs {b!r} now" for k, (a, b) in differing.items())
            raise ValueError(f"{out} holds a synthetic set made with other settings ({detail}); "
                             "use another --out or delete it")
    else:
        from sam_edge.utils.io import write_bytes_atomic

        write_bytes_atomic(index_path, _json_bytes({**params, "complete": False}))

    jobs = [(str(out), i, (h, w), int(seed), int(jpeg_quality)) for i in range(1, num_images + 1)]
    results: list[tuple[int, dict[str, int], bool]] = []
    workers = max(1, int(workers))
    if workers == 1 or num_images == 1:
        for done, job in enumerate(jobs, 1):
            results.append(_generate_one(job))
            if progress and (done % 100 == 0 or done == num_images):
                log.info("%d/%d images", done, num_images)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        method = "fork" if "fork" in mp.get_all_start_methods() else None
        ctx = mp.get_context(method)
        chunk = max(1, min(16, num_images // (workers * 4)))
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for done, res in enumerate(pool.map(_generate_one, jobs, chunksize=chunk), 1):
                results.append(res)
                if progress and (done % 100 == 0 or done == num_images):
                    log.info("%d/%d images", done, num_images)

    levels = dict.fromkeys(LEVELS, 0)
    images = []
    for index, counts, _ in sorted(results, key=lambda r: r[0]):
        for k, v in counts.items():
            levels[k] += v
        images.append({"id": f"sa_{index}", "num_masks": sum(counts.values())})
    index = {**params, "complete": True, "num_images": num_images,
             "num_masks": sum(levels.values()), "masks_per_level": levels,
             "min_area_fraction": MIN_AREA_FRACTION, "images": images}
    from sam_edge.utils.io import write_bytes_atomic

    write_bytes_atomic(index_path, _json_bytes(index))
    generated = sum(1 for r in results if r[2])
    return {**index, "generated": generated, "reused": num_images - generated}
