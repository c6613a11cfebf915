"""Teacher-embedding cache: run the teacher's image encoder once per image, store the embeddings
in shards, read them back by image id.

Encoder distillation compares a student's image embedding with the teacher's for the same
image, many epochs over. The teacher (ViT-H) costs far more than the student, so its embeddings
are computed once with :func:`cache_teacher` (CLI: ``sam-edge cache-teacher``) and read with
:class:`TeacherCache`.

Preprocessing is exactly the inference path (:meth:`sam_edge.SamPredictor.set_image`): the
image is read as RGB uint8 (:func:`distill.data.read_rgb`, i.e. :func:`sam_edge.image.load_image`),
resized with :class:`sam_edge.transforms.ResizeLongestSide` ``(model.image_size)`` (PIL
bilinear; :func:`distill.data.sa1b.resize_image`, used by the training datasets, gives the same
pixels), then :meth:`Sam.preprocess` (normalise, zero-pad bottom-right) and
``model.image_encoder``. Up to ``batch_size`` images of one shard are encoded per forward, under
``torch.inference_mode()``; on CUDA the forward runs under bf16 autocast when the storage dtype
is fp16/bf16 (``amp``), optionally channels-last.

Disk cost, per image = C*h*w * bytes per element (embedding C x h x w):

- SAM ViT-B/L/H at 1024 px, 256x64x64, fp16 or bf16: 256*64*64*2 B = 2 MiB per image,
  2.0 GiB per 1k images; fp32: 4 MiB per image, 4.0 GiB per 1k images.
- ``sam_demo_teacher`` at 256 px, 128x16x16, fp16 or bf16: 128*16*16*2 B = 64 KiB per image,
  62.5 MiB per 1k images (fp32: 128 KiB per image).

(:func:`embedding_nbytes` computes it.) SA-1B's 11M images at ViT-H fp16 would need ~21 TiB:
cache the subset you train on (``--limit`` takes the first N ids in sorted order).

Layout of ``CACHE``::

    meta.json               teacher, checkpoint {path, sha256} or null, model config, image_size,
                            embedding_shape, dtype, autocast, data_root, shard_size, num_keys,
                            num_shards, format_version
    shards/000000.bin       the shard's embeddings, raw and concatenated (C-order, little-endian;
                            bf16 stored as its 16-bit pattern)
    shards/000000.json      {"shard", "keys", "entries": [{id, offset, nbytes, dtype, shape,
                            sha256, orig_size [h, w], input_size [h, w]}], "skipped":
                            [{id, reason, detail}], "nbytes"}
    index.json              written once every shard is done: {"entries": {id: {shard, offset,
                            nbytes, dtype, shape, sha256, orig_size, input_size}}, "skipped":
                            {id: reason}, ...}

Keys are the image ids of :class:`distill.data.ImageFolderDataset` (POSIX paths relative to the
data folder, e.g. ``sa_1.jpg``), sorted; shard ``k`` holds ``keys[k*S:(k+1)*S]``. Under
``torchrun`` (env ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``, device ``cuda:LOCAL_RANK``) rank
``r`` computes the shards with ``k % WORLD_SIZE == r``; no process group is needed. Images are
batched only within a shard, so the bytes of a shard do not depend on the world size or on
interruptions.

Crash safety: a shard's ``.bin`` is written to a temporary file, fsynced and renamed, then its
``.json`` the same way. A shard is done when its ``.json`` exists, lists exactly the keys the
shard should hold and its ``.bin`` has the recorded size; anything else (temporary files, a
``.bin`` without ``.json``) is ignored and redone, so a killed run leaves no corrupt shard and a
rerun continues where it stopped. Unreadable images are recorded in their shard's ``skipped``
list (reason from :class:`distill.data.SkipReport`) and not retried. Rerunning against a
``meta.json`` written for another teacher, checkpoint, model config, image size, dtype,
autocast or shard size raises :class:`CacheMismatchError` naming the field.

Test hook: the environment variable ``SAM_EDGE_CACHE_SLEEP_AFTER_SHARD`` (seconds, float) makes
:func:`cache_teacher` sleep after writing each shard, so tests can kill a run between shards.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.utils.data

from sam_edge.transforms import ResizeLongestSide
from sam_edge.utils.device import AMP_CHOICES, autocast_for, resolve_amp, resolve_device
from sam_edge.utils.io import atomic_path, dumps_json, write_bytes_atomic, write_json_atomic

from sam_edge.data import ImageFolderDataset, SampleError, SkipReport, read_rgb

# the format and the reader (re-exported: the cache's public names live here)
from sam_edge.distillation.teacher_cache import (DTYPES, DTYPES_NAME, FORMAT, FORMAT_VERSION, CacheCorruptError,
                                                CacheMismatchError, TeacherCache, _check_dtype, _jsonable,
                                                _load_done_shard, _read_json, _sha256_file, _shard_name,
                                                _tensor_bytes, embedding_nbytes, shard_keys)

log = logging.getLogger("sam_edge.distillation.cache")

#: meta.json fields that must match for a rerun to continue an existing cache
IDENTITY_FIELDS = ("format_version", "teacher", "checkpoint", "dtype", "image_size", "embedding_shape",
                   "autocast", "shard_size", "model_config")
SLEEP_ENV = "SAM_EDGE_CACHE_SLEEP_AFTER_SHARD"

__all__ = [
    "AMP_CHOICES",
    "DTYPES",
    "CacheCorruptError",
    "CacheMismatchError",
    "TeacherCache",
    "cache_teacher",
    "embedding_nbytes",
    "shard_keys",
]


# --------------------------------------------------------------------------------- writing
def _dist_env(rank: Optional[int], world_size: Optional[int]) -> tuple[int, int, int]:
    rank = int(os.environ.get("RANK", 0)) if rank is None else int(rank)
    world = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else int(world_size)
    local_rank = int(os.environ.get("LOCAL_RANK", rank if world > 1 else 0))
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"invalid rank {rank} for world size {world}")
    return rank, world, local_rank


def _resolve_amp(amp: str, dtype: str, device: torch.device, existing: Optional[dict[str, Any]]) -> str:
    """Autocast dtype for the forward: 'bf16', 'fp16' or 'off'. 'auto' continues an existing
    cache's choice, else bf16 on CUDA when the storage dtype is fp16/bf16, else off (the
    cache's own ``auto``; the other values as :func:`sam_edge.utils.device.resolve_amp`)."""
    if amp != "auto":
        return resolve_amp(device, amp)
    if existing is not None and existing.get("autocast") in ("bf16", "fp16", "off"):
        return existing["autocast"]
    return "bf16" if device.type == "cuda" and dtype in ("fp16", "bf16") else "off"


def _check_meta(existing: dict[str, Any], meta: dict[str, Any], meta_path: Path) -> None:
    if existing.get("format") != FORMAT:
        raise CacheMismatchError(f"{meta_path} is not a sam-edge teacher cache (format "
                                 f"{existing.get('format')!r}); use another --out", "format")
    for field in IDENTITY_FIELDS:
        old, new = existing.get(field), meta[field]
        if field == "checkpoint" and old and new and old.get("sha256") and new.get("sha256"):
            same = old["sha256"] == new["sha256"]  # the same weights may have moved
        else:
            same = old == new
        if not same:
            if field == "model_config" and isinstance(old, dict) and isinstance(new, dict):
                diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                detail = f"differs in {diff}"
            else:
                detail = f"is {old!r} in the existing cache but {new!r} now"
            raise CacheMismatchError(
                f"{meta_path}: {field} {detail}; the cache was written with other settings: use "
                "another --out, delete the cache, or rerun with the original settings", field)
    if existing.get("data_root") != meta["data_root"]:
        log.warning("%s: data root was %s, now %s (shards whose ids changed are redone)",
                    meta_path, existing.get("data_root"), meta["data_root"])


# --------------------------------------------------------------------------------- loading
class _KeyImages(torch.utils.data.Dataset):
    """Map-style dataset over cache keys: item ``i`` is ``(key, resized image or None,
    orig_size, reason, detail, notes)``; unreadable images come back with a reason instead of
    raising (worker processes cannot update the parent's SkipReport)."""

    def __init__(self, root: Path, keys: Sequence[str], image_size: int, image_format: str) -> None:
        self.root, self.keys = root, list(keys)
        self.transform = ResizeLongestSide(image_size)
        self.image_format = image_format

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int):
        key = self.keys[i]
        path = self.root / key
        local = SkipReport()
        try:
            image = read_rgb(path, local)
            if self.image_format != "RGB":
                image = image[..., ::-1]
            # exactly SamPredictor.set_image: ResizeLongestSide(model.image_size).apply_image
            resized = self.transform.apply_image(np.ascontiguousarray(image))
        except SampleError as exc:
            return key, None, None, exc.reason, exc.detail, dict(local.notes)
        except Exception as exc:  # noqa: BLE001 - any other failure is this image's, named
            return key, None, None, "load error", repr(exc), dict(local.notes)
        return key, resized, tuple(int(v) for v in image.shape[:2]), "", "", dict(local.notes)


def _identity(item):
    return item


def _iter_images(dataset: _KeyImages, workers: int) -> Iterator[tuple]:
    if workers <= 0:
        for i in range(len(dataset)):
            yield dataset[i]
        return
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                                         collate_fn=_identity, prefetch_factor=4)
    yield from loader


# --------------------------------------------------------------------------------- writing
def _write_shard(shards_dir: Path, k: int, keys: Sequence[str], records: list[dict[str, Any]],
                 tensors: list[torch.Tensor], skipped: list[dict[str, str]]) -> int:
    """Write shard ``k``: ``.bin`` first (atomic), then ``.json`` (atomic). Returns bytes."""
    json_path = shards_dir / _shard_name(k, "json")
    json_path.unlink(missing_ok=True)  # an older, now wrong, JSON must never describe the new .bin
    entries, offset = [], 0
    with atomic_path(shards_dir / _shard_name(k, "bin")) as tmp, open(tmp, "wb") as fh:
        for rec, t in zip(records, tensors):
            buf = _tensor_bytes(t)
            fh.write(buf)
            entries.append({"id": rec["id"], "offset": offset, "nbytes": len(buf),
                            "dtype": DTYPES_NAME[t.dtype], "shape": list(t.shape),
                            "sha256": hashlib.sha256(buf).hexdigest(),
                            "orig_size": list(rec["orig_size"]), "input_size": list(rec["input_size"])})
            offset += len(buf)
    write_json_atomic(json_path, {"format_version": FORMAT_VERSION, "shard": k, "keys": list(keys),
                                  "nbytes": offset, "entries": entries, "skipped": skipped})
    return offset


def _build_index(shards: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    entries: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for data in shards:
        for e in data["entries"]:
            entries[e["id"]] = {"shard": data["shard"], **{k: v for k, v in e.items() if k != "id"}}
        for s in data["skipped"]:
            skipped[s["id"]] = s["reason"]
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "dtype": meta["dtype"],
            "embedding_shape": meta["embedding_shape"], "shard_size": meta["shard_size"],
            "num_shards": len(shards), "num_images": len(entries), "num_skipped": len(skipped),
            "entries": dict(sorted(entries.items())), "skipped": dict(sorted(skipped.items()))}


def _remove_stale_tmp(shards_dir: Path, rank: int, world: int) -> None:
    """Temporary files a killed run of this rank left (``.000003.bin.<random>.tmp``)."""
    for p in shards_dir.glob(".*.tmp"):
        head = p.name[1:].split(".", 1)[0]
        if head.isdigit() and int(head) % world == rank:
            p.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------ main
def cache_teacher(
    teacher: str,
    data: str | Path,
    out: str | Path,
    *,
    checkpoint: str | Path | None = None,
    dtype: str = "fp16",
    batch_size: int = 8,
    shard_size: int = 64,
    device: str = "auto",
    limit: Optional[int] = None,
    amp: str = "auto",
    channels_last: bool = False,
    workers: Optional[int] = None,
    progress: bool = True,
    model: Optional[torch.nn.Module] = None,
    rank: Optional[int] = None,
    world_size: Optional[int] = None,
) -> dict[str, Any]:
    """Encode every image under ``data`` with ``teacher``'s image encoder into the cache ``out``.

    Args:
        teacher: registered model name (``sam_edge.create_model``), recorded in meta.json.
        data: image folder (or SA-1B folder: its ``.jpg`` files), scanned recursively.
        out: cache folder (created); an existing cache with the same settings is continued.
        checkpoint: weights for ``teacher`` (recorded with its sha256). Without one, the
            registry default (bundled weights or random init) is used and recorded as null.
        dtype: storage dtype, ``fp16`` / ``bf16`` / ``fp32``.
        batch_size: images per forward (within one shard).
        shard_size: images per shard (part of the cache's identity).
        device: ``auto`` / ``cpu`` / ``cuda`` (``cuda:LOCAL_RANK`` under torchrun) / ``cuda:N``.
        limit: cache only the first ``limit`` ids (sorted).
        amp: autocast for the forward: ``auto`` (bf16 on CUDA for fp16/bf16 storage, else off;
            an existing cache keeps its own), ``bf16``, ``fp16``, ``off``.
        channels_last: run the encoder channels-last (CUDA only).
        workers: image-decoding worker processes (default: 4 on CUDA, 0 on CPU).
        progress: tqdm bar (rank 0 only) and the final line on stderr.
        model: a prebuilt model to use instead of ``create_model(teacher, checkpoint)`` (it must
            already hold the weights of ``checkpoint`` when that is given); moved to the device
            and put in eval mode.
        rank, world_size: override the ``RANK`` / ``WORLD_SIZE`` environment.

    Returns a summary dict (``encoded``, ``skipped``, ``seconds``, ``images_per_s``, ...,
    ``complete``: whether every shard, of all ranks, is done and ``index.json`` written).
    """
    from sam_edge.registry import bundled_weights_path, create_model, get_config

    _check_dtype(dtype)
    if int(batch_size) < 1 or int(shard_size) < 1:
        raise ValueError(f"batch_size and shard_size must be >= 1, got {batch_size} and {shard_size}")
    if limit is not None and int(limit) < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    rank, world, local_rank = _dist_env(rank, world_size)
    dev = resolve_device(device, local_rank)
    if workers is None:
        workers = 4 if dev.type == "cuda" else 0
    out = Path(out)
    data_root = Path(data)
    t_setup = time.perf_counter()

    # -- images: the folder reader's ids (relative POSIX paths), sorted -------------------------
    # header check only: every image is decoded below anyway, and a file the scan rejects is
    # read (and fails) once more so that its shard records the reason with its detail
    ds = ImageFolderDataset(data_root, verify_images=False)
    keys = sorted(p.relative_to(ds.root).as_posix() for p in ds.candidates())
    if limit is not None:
        keys = keys[: int(limit)]
    if not keys:
        raise ValueError(f"no images in {data_root} (extensions {', '.join(ds.extensions)})")
    shards = shard_keys(keys, int(shard_size))

    # -- model: its config now, its weights only once there is work (a finished cache reruns fast)
    ckpt_path: Optional[Path] = Path(checkpoint) if checkpoint is not None else None
    if model is None:
        config = get_config(teacher)
        if ckpt_path is None:
            bundled = bundled_weights_path(config)
            ckpt_path = bundled if bundled is not None and bundled.is_file() else None
        image_size = int(config.image_size)
    else:
        model = model.to(dev).eval()
        config = getattr(model, "config", None)
        image_size = int(model.image_size)
    if ckpt_path is not None and not ckpt_path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt_path}")
    if config is not None:
        emb_shape = [int(config.prompt_embed_dim), image_size // 16, image_size // 16]
    else:
        with torch.inference_mode():
            emb_shape = list(model.image_encoder(torch.zeros(1, 3, image_size, image_size, device=dev)).shape[1:])

    meta_path = out / "meta.json"
    existing = _read_json(meta_path) if meta_path.exists() else None
    if meta_path.exists() and existing is None:
        raise CacheMismatchError(f"{meta_path}: unreadable; delete it or use another --out", "meta.json")
    amp = _resolve_amp(amp, dtype, dev, existing)
    meta = _jsonable({
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "teacher": teacher,
        "checkpoint": None if ckpt_path is None else {"path": str(ckpt_path.resolve()),
                                                      "sha256": _sha256_file(ckpt_path)},
        "model_config": config.to_dict() if hasattr(config, "to_dict") else None,
        "image_size": image_size,
        "embedding_shape": emb_shape,
        "dtype": dtype,
        "storage_dtype": DTYPES[dtype][1],
        "byteorder": sys.byteorder,
        "autocast": amp,
        "preprocess": "ResizeLongestSide(image_size) (PIL bilinear) + Sam.preprocess (normalise, zero-pad)",
        "data_root": str(data_root.resolve()),
        "shard_size": int(shard_size),
        "limit": None if limit is None else int(limit),
        "num_keys": len(keys),
        "num_shards": len(shards),
    })
    if existing is not None:
        if hasattr(config, "normalize_dict") and isinstance(existing.get("model_config"), dict):  # maybe an older layout
            existing = {**existing, "model_config": _jsonable(config.normalize_dict(existing["model_config"]))}
        _check_meta(existing, meta, meta_path)
    shards_dir = out / "shards"
    mine = [k for k in range(len(shards)) if k % world == rank]
    todo = [k for k in mine if _load_done_shard(shards_dir, k, shards[k]) is None]
    reused = len(mine) - len(todo)
    if model is None and todo:  # before meta.json is written: a checkpoint that fails to load leaves no trace
        model = create_model(teacher, checkpoint=checkpoint).to(dev).eval()
    shards_dir.mkdir(parents=True, exist_ok=True)
    if existing != meta:
        write_json_atomic(meta_path, meta)
    _remove_stale_tmp(shards_dir, rank, world)
    if todo:
        (out / "index.json").unlink(missing_ok=True)  # stale: the cache is not complete
    log.info("cache-teacher rank %d/%d: %d images in %d shards; %d of this rank's %d shards to do "
             "(%d already done); device %s, dtype %s, autocast %s", rank, world, len(keys), len(shards),
             len(todo), len(mine), reused, dev, dtype, amp)

    # -- encode --------------------------------------------------------------------------------
    store_dtype = DTYPES[dtype][0]
    mem_format = torch.channels_last if channels_last and dev.type == "cuda" else torch.contiguous_format
    if mem_format is torch.channels_last and model is not None:
        model.image_encoder.to(memory_format=torch.channels_last)
    todo_keys = [key for k in todo for key in shards[k]]
    images = _iter_images(_KeyImages(data_root, todo_keys, image_size, getattr(model, "image_format", "RGB")), workers)
    scan_reasons = dict(ds.report.skipped)  # path -> reason, for files the header scan rejected
    sleep_s = float(os.environ.get(SLEEP_ENV, "0") or 0)

    from tqdm import tqdm

    bar = tqdm(total=len(todo_keys), disable=None if (progress and rank == 0) else True, desc="cache-teacher",
               unit="img", dynamic_ncols=True)
    encoded = skipped_n = 0
    bytes_written = 0
    reasons: Counter = Counter()
    encode_s = 0.0
    t0 = time.perf_counter()

    def encode(batch: list[np.ndarray]) -> torch.Tensor:
        nonlocal encode_s
        t = time.perf_counter()
        x = torch.cat([
            model.preprocess(torch.from_numpy(img).to(dev, non_blocking=True).permute(2, 0, 1)[None].float())
            for img in batch
        ]).contiguous(memory_format=mem_format)
        with autocast_for(dev, amp):
            emb = model.image_encoder(x)
        if tuple(emb.shape[1:]) != tuple(emb_shape):
            raise RuntimeError(f"image encoder returned {tuple(emb.shape)}, expected B x {tuple(emb_shape)}")
        emb = emb.to(store_dtype).cpu()
        encode_s += time.perf_counter() - t
        return emb

    try:
        with torch.inference_mode():
            for k in todo:
                records: list[dict[str, Any]] = []
                tensors: list[torch.Tensor] = []
                skipped: list[dict[str, str]] = []
                pending: list[tuple[dict[str, Any], np.ndarray]] = []

                def flush() -> None:
                    if pending:
                        emb = encode([img for _, img in pending])
                        records.extend(rec for rec, _ in pending)
                        tensors.extend(emb.unbind(0))
                        pending.clear()

                for _ in shards[k]:
                    key, img, orig, reason, detail, notes = next(images)
                    ds.report.notes.update(notes)
                    if img is None:
                        reason = scan_reasons.get(str(data_root / key), reason)  # as the scan logged it
                        skipped.append({"id": key, "reason": reason, "detail": detail})
                        reasons[reason] += 1
                        ds.report.skip(data_root / key, reason, detail)  # logs once per image
                    else:
                        pending.append(({"id": key, "orig_size": orig, "input_size": img.shape[:2]}, img))
                        if len(pending) == batch_size:
                            flush()
                    bar.update(1)
                flush()
                bytes_written += _write_shard(shards_dir, k, shards[k], records, tensors, skipped)
                encoded += len(records)
                skipped_n += len(skipped)
                elapsed = time.perf_counter() - t0
                bar.set_postfix(shard=k, img_s=f"{encoded / elapsed:.2f}" if elapsed > 0 else "-")
                if sleep_s > 0:
                    time.sleep(sleep_s)
    finally:
        bar.close()
        images.close()
    seconds = time.perf_counter() - t0

    # -- index (whichever rank finds every shard done writes it; the content is deterministic) -
    complete = False
    all_done = [_load_done_shard(shards_dir, k, shards[k]) for k in range(len(shards))]
    if all(d is not None for d in all_done):
        index = _build_index(all_done, meta)
        write_bytes_atomic(out / "index.json", (dumps_json(index, separators=(",", ":")) + "\n").encode())
        complete = True
    total_skipped_cache = sum(len(d["skipped"]) for d in all_done if d is not None)

    ips = encoded / seconds if encoded and seconds > 0 else 0.0
    line = (f"cache-teacher{f' rank {rank}/{world}' if world > 1 else ''}: {encoded} images encoded, "
            f"{skipped_n} skipped" + (f" ({', '.join(f'{r}: {n}' for r, n in reasons.items())})" if reasons else "")
            + f", {reused} shards already done; {seconds:.1f} s, {ips:.2f} img/s"
            + (f"; cache complete ({len(keys) - total_skipped_cache} images) -> {out}" if complete
               else f"; cache incomplete -> {out}"))
    if progress:
        print(line, file=sys.stderr, flush=True)
    else:
        log.info("%s", line)
    return {
        "out": str(out),
        "rank": rank,
        "world_size": world,
        "device": str(dev),
        "dtype": dtype,
        "autocast": amp,
        "num_keys": len(keys),
        "num_shards": len(shards),
        "shards_written": len(todo),
        "shards_reused": reused,
        "encoded": encoded,
        "skipped": skipped_n,
        "skip_reasons": dict(reasons),
        "bytes_written": bytes_written,
        "seconds": round(seconds, 3),
        "setup_seconds": round(t0 - t_setup, 3),
        "encode_seconds": round(encode_s, 3),
        "images_per_s": round(ips, 3),
        "complete": complete,
        "index": str(out / "index.json") if complete else None,
        "data": ds.report.to_dict(),
        "message": line,
    }
