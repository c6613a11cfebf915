"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename.

JSON written by sam-edge is always valid JSON: non-finite floats (NaN, inf; Python or numpy)
become ``null`` (:func:`json_safe`), and ``allow_nan=False`` guards every writer. An ``OSError``
raised while writing (a full disk, a read-only folder) names the file it was writing.
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (``float('nan')``, ``np.inf``, ...) replaced by None,
    numpy scalars and arrays turned into Python numbers and lists, tuples into lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    tolist = getattr(obj, "tolist", None)  # numpy scalars and arrays (without importing numpy)
    if callable(tolist) and type(obj).__module__ == "numpy":
        return json_safe(tolist())
    return obj


def dumps_json(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`json_safe` (obj), refusing NaN / inf (``allow_nan=False``)."""
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)


def describe_os_error(exc: OSError) -> str:
    """``PATH: what went wrong`` for an error of the file system, naming the path involved; a
    path under a file names the file."""
    path = exc.filename if exc.filename is not None else ""
    what = exc.strerror or str(exc)
    if path != "":
        p = Path(os.fsdecode(path))
        if exc.errno == errno.EEXIST and p.exists() and not p.is_dir():
            what = "exists and is not a folder"
        elif exc.errno == errno.ENOTDIR:
            blocker = next((a for a in [p, *p.parents] if a.exists() and not a.is_dir()), None)
            if blocker is not None and blocker != p:
                what = f"{what} ({blocker} is a file, not a folder)"
            elif blocker == p:
                what = "is a file, not a folder"
        return f"{os.fsdecode(path)}: {what}"
    return what


def _raise_naming(exc: OSError, path: Path) -> None:
    """Raise ``exc`` naming ``path`` when it named no file or the temporary of ``path``; else as
    it is (a folder above ``path`` that could not be made names that folder)."""
    name = Path(os.fsdecode(exc.filename)).name if exc.filename is not None else None
    if name is None or (name.startswith(f".{path.name}.") and name.endswith(".tmp")):
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    raise exc


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically, on
    error it is removed and ``path`` is left as it was. An ``OSError`` without a file name (a
    write on a full disk) is raised again naming ``path``."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder, expected a file path", str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # a read-only folder: name the file asked for, not our temporary
        _raise_naming(exc, path)
    os.close(fd)
    # mkstemp creates 0600; give the result the permissions a plain open() would
    umask = os.umask(0)
    os.umask(umask)
    mode = 0o666 & ~umask
    os.chmod(tmp, mode)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # again after writing: a writer that replaces the file (safetensors does) brings its own mode
        os.chmod(tmp_path, mode)
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except OSError as exc:
        _raise_naming(exc, path)
    finally:
        with contextlib.suppress(OSError):  # never hide the error that brought us here
            tmp_path.unlink(missing_ok=True)


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Remove the temporary files that :func:`atomic_path` left in ``folder`` when its writer was
    killed before the rename (``.<name>.<random>.tmp``; SIGKILL skips the cleanup). Returns them.
    Call it where one writer owns the folder (a job starting), never while another process may be
    writing there."""
    folder = Path(folder)
    stale = sorted(p for p in folder.glob(".*.tmp") if p.is_file()) if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """``obj`` as indented JSON; NaN / inf written as ``null`` (see :func:`json_safe`)."""
    write_bytes_atomic(path, (dumps_json(obj, indent=2, sort_keys=False) + "\n").encode())
