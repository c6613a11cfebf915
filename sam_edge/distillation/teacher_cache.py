"""Reading side of the teacher-embedding cache: the format (constants, shard naming, done-shard
check), its errors and :class:`TeacherCache`. The writer and the layout's description are in
:mod:`sam_edge.distillation.cache` (which re-exports everything here)."""
from __future__ import annotations

from sam_edge.errors import UserError

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import torch

FORMAT = "sam-edge-teacher-cache"
FORMAT_VERSION = 1
#: dtype flag -> (torch dtype, name stored in the entries, bytes per element)
DTYPES: dict[str, tuple[torch.dtype, str, int]] = {
    "fp16": (torch.float16, "float16", 2),
    "bf16": (torch.bfloat16, "bfloat16", 2),
    "fp32": (torch.float32, "float32", 4),
}
_STORED = {name: dt for dt, name, _ in DTYPES.values()}
DTYPES_NAME = {dt: name for dt, name, _ in DTYPES.values()}

__all__ = [
    "DTYPES",
    "FORMAT",
    "FORMAT_VERSION",
    "CacheCorruptError",
    "CacheMismatchError",
    "TeacherCache",
    "embedding_nbytes",
    "shard_keys",
]


class CacheMismatchError(UserError, ValueError):
    """An existing cache was written with other settings (``field`` names the first that
    differs)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class CacheCorruptError(UserError, ValueError):
    """Stored bytes that do not match their recorded size or sha256."""


# --------------------------------------------------------------------------------- helpers
def embedding_nbytes(shape: Sequence[int], dtype: str = "fp16") -> int:
    """Bytes one embedding of ``shape`` (C, h, w) takes in the cache, e.g.
    ``embedding_nbytes((256, 64, 64), "fp16") == 2 MiB``."""
    return int(math.prod(shape)) * DTYPES[_check_dtype(dtype)][2]


def _check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return dtype


def shard_keys(keys: Sequence[str], shard_size: int) -> list[list[str]]:
    """Deterministic sharding: shard ``k`` holds ``sorted(keys)[k*S:(k+1)*S]``."""
    keys = sorted(keys)
    return [keys[i:i + shard_size] for i in range(0, len(keys), shard_size)]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _tensor_bytes(t: torch.Tensor) -> bytes:
    """C-order bytes of a CPU tensor; bf16 (which numpy lacks) as its raw 16-bit pattern."""
    t = t.detach().to("cpu").contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def _tensor_from_bytes(buf: bytes, dtype_name: str, shape: Sequence[int]) -> torch.Tensor:
    dtype = _STORED[dtype_name]
    if not buf:
        return torch.empty(tuple(shape), dtype=dtype)
    return torch.frombuffer(bytearray(buf), dtype=dtype).reshape(tuple(shape))


def _jsonable(obj: Any) -> Any:
    """What ``obj`` looks like after a JSON round trip (tuples -> lists)."""
    return json.loads(json.dumps(obj))


def _shard_name(k: int, ext: str) -> str:
    return f"{k:06d}.{ext}"


def _read_json(path: Path) -> Optional[dict[str, Any]]:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _load_done_shard(shards_dir: Path, k: int, expected_keys: Optional[Sequence[str]] = None
                     ) -> Optional[dict[str, Any]]:
    """The shard's JSON if shard ``k`` is complete (JSON readable, same format version, the
    expected keys when given, ``.bin`` of the recorded size), else None."""
    data = _read_json(shards_dir / _shard_name(k, "json"))
    if data is None or data.get("format_version") != FORMAT_VERSION or data.get("shard") != k:
        return None
    if expected_keys is not None and data.get("keys") != list(expected_keys):
        return None
    try:
        size = (shards_dir / _shard_name(k, "bin")).stat().st_size
    except OSError:
        return None
    if size != data.get("nbytes"):
        return None
    return data


# ------------------------------------------------------------------------------------ read
class TeacherCache:
    """Read a cache written by :func:`cache_teacher`.

    ``cache.get(id)`` returns the stored embedding (stored dtype, C x h x w) for an image id
    (``"sa_1.jpg"``); ``get_batch(ids)`` stacks B of them. Entries come from ``index.json`` when
    the cache is complete, else from the shards that are done (a partial cache is readable).
    With ``verify=True`` every read checks the bytes' sha256 (:class:`CacheCorruptError`);
    :meth:`verify` checks them all and returns the bad ids.
    """

    def __init__(self, root: str | Path, verify: bool = False) -> None:
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"no teacher cache at {self.root} (meta.json missing)")
        meta = _read_json(meta_path)
        if meta is None or meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path}: not a sam-edge teacher cache")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: format version {meta.get('format_version')}, this reader "
                             f"reads {FORMAT_VERSION}")
        self.meta: dict[str, Any] = meta
        self.verify_reads = bool(verify)
        self._shards_dir = self.root / "shards"
        self._entries: dict[str, dict[str, Any]] = {}
        self.skipped: dict[str, str] = {}
        index = _read_json(self.root / "index.json")
        self.complete = index is not None and index.get("format_version") == FORMAT_VERSION
        if self.complete:
            self._entries = index["entries"]
            self.skipped = index["skipped"]
        else:
            for k in range(int(meta.get("num_shards", 0))):
                data = _load_done_shard(self._shards_dir, k)
                if data is None:
                    continue
                for e in data["entries"]:
                    self._entries[e["id"]] = {"shard": k, **{f: v for f, v in e.items() if f != "id"}}
                for s in data["skipped"]:
                    self.skipped[s["id"]] = s["reason"]
        self.ids: list[str] = sorted(self._entries)

    # -- lookup -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.meta["dtype"]][0]

    @property
    def embedding_shape(self) -> tuple[int, ...]:
        return tuple(self.meta["embedding_shape"])

    def entry(self, image_id: str) -> dict[str, Any]:
        """The index record of ``image_id`` (shard, offset, nbytes, dtype, shape, sha256, sizes)."""
        try:
            return self._entries[image_id]
        except KeyError:
            msg = f"image id {image_id!r} is not in the teacher cache {self.root} ({len(self)} images"
            if image_id in self.skipped:
                msg += f"; it was skipped when caching: {self.skipped[image_id]}"
            if not self.complete:
                msg += "; the cache is incomplete"
            raise KeyError(msg + ")") from None

    def input_size(self, image_id: str) -> tuple[int, int]:
        """(h, w) of the resized image inside the padded input (the valid embedding region is
        the top-left ceil(h/16) x ceil(w/16))."""
        return tuple(self.entry(image_id)["input_size"])  # type: ignore[return-value]

    def orig_size(self, image_id: str) -> tuple[int, int]:
        return tuple(self.entry(image_id)["orig_size"])  # type: ignore[return-value]

    # -- reading ------------------------------------------------------------------------------
    def _read(self, image_id: str) -> tuple[dict[str, Any], bytes]:
        e = self.entry(image_id)
        path = self._shards_dir / _shard_name(int(e["shard"]), "bin")
        with open(path, "rb") as fh:
            fh.seek(int(e["offset"]))
            buf = fh.read(int(e["nbytes"]))
        if len(buf) != int(e["nbytes"]):
            raise CacheCorruptError(f"{path}: {image_id!r} needs {e['nbytes']} bytes at offset "
                                    f"{e['offset']}, got {len(buf)} (truncated shard)")
        return e, buf

    def get(self, image_id: str) -> torch.Tensor:
        """The embedding of ``image_id`` (C x h x w, stored dtype)."""
        e, buf = self._read(image_id)
        if self.verify_reads and hashlib.sha256(buf).hexdigest() != e["sha256"]:
            raise CacheCorruptError(f"{self.root}: sha256 mismatch for {image_id!r} "
                                    f"(shard {_shard_name(int(e['shard']), 'bin')}, offset {e['offset']})")
        return _tensor_from_bytes(buf, e["dtype"], e["shape"])

    def get_batch(self, image_ids: Iterable[str]) -> torch.Tensor:
        """B x C x h x w."""
        tensors = [self.get(i) for i in image_ids]
        if not tensors:
            return torch.empty((0, *self.embedding_shape), dtype=self.dtype)
        return torch.stack(tensors)

    def verify(self) -> list[str]:
        """Ids whose bytes are missing, truncated or do not match their sha256."""
        bad = []
        for image_id in self.ids:
            try:
                e, buf = self._read(image_id)
            except (OSError, CacheCorruptError):
                bad.append(image_id)
                continue
            if hashlib.sha256(buf).hexdigest() != e["sha256"]:
                bad.append(image_id)
        return bad

    def __repr__(self) -> str:
        state = "complete" if self.complete else "partial"
        return (f"TeacherCache({str(self.root)!r}, {len(self)} images, {len(self.skipped)} skipped, "
                f"{self.meta.get('teacher')} {self.meta.get('dtype')} {tuple(self.embedding_shape)}, {state})")
