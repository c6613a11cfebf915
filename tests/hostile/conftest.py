"""Shared helpers of the hostile-input tests: tiny inputs built once, a simulated read-only or
full file system below one folder, and the checks every refused command must pass."""
from __future__ import annotations

import builtins
import errno
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture(scope="session")
def inputs(tmp_path_factory):
    """A small photo, a 3-image synthetic SA-1B set, a tiny model file, an iOS bench JSON."""
    from PIL import Image

    import sam_edge
    from sam_edge.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("hostile_inputs")
    rng = np.random.RandomState(0)
    Image.fromarray((rng.rand(48, 64, 3) * 255).astype(np.uint8)).save(root / "photo.png")
    generate_dataset(root / "data", num_images=3, image_size=64, seed=3)
    torch.manual_seed(0)
    sam_edge.save_model(sam_edge.create_model("sam_test_tiny"), root / "tiny.safetensors")
    doc = {"app": "sam-edge-ios", "app_version": "1.0", "created": "2026-11-21T23:00:00Z",
           "device": {"model": "iPhone15,2", "os": "iOS 17.4"}, "model_name": "sam_test_tiny", "warmup": 1,
           "results": [{"file": "encoder_fp16.mlpackage", "role": "encoder", "format": "coreml",
                        "precision": "fp16", "compute_units": "all", "inputs": "synthetic image", "load_s": 0.4,
                        "peak_rss_mb": 120.5, "error": None,
                        "latency_ms": {"min": 3.1, "p50": 3.4, "p90": 3.9, "mean": 3.5, "std": 0.2, "n": 50}}]}
    (root / "ios.json").write_text(json.dumps(doc))
    return root


def _under(path, root: Path) -> bool:
    try:
        p = os.path.abspath(os.fsdecode(path))
    except TypeError:  # a file descriptor
        return False
    return p == str(root) or p.startswith(str(root) + os.sep)


class _FullFile:
    """A file opened for writing on a full disk: the first write stores a little, then ENOSPC."""

    def __init__(self, fh) -> None:
        self._fh = fh

    def write(self, data):
        if len(data) > 0:
            self._fh.write(data[: max(1, len(data) // 2)])  # a partial file is left behind
            self._fh.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()

    def __iter__(self):
        return iter(self._fh)


@pytest.fixture
def fs_fault(monkeypatch):
    """``fs_fault(root, errno.EROFS)``: below ``root`` nothing can be created, written, renamed or
    removed (a read-only mount; root ignores chmod, so permissions cannot simulate it).
    ``fs_fault(root, errno.ENOSPC)``: below ``root`` every write stores a few bytes then fails and
    fsync fails (a full disk); folders can still be made, files opened and renamed."""

    def install(root: Path, code: int) -> None:
        root = Path(os.path.abspath(root))
        real_open, real_os_open = builtins.open, os.open
        real = {n: getattr(os, n) for n in ("mkdir", "replace", "rename", "unlink", "remove", "rmdir", "fsync")}
        fail = lambda path=None: OSError(code, os.strerror(code), *( (os.fsdecode(path),) if path is not None else ()))  # noqa: E731

        def fake_open(file, mode="r", *a, **k):
            writing = any(c in mode for c in "wax+")
            if writing and _under(file, root):
                if code == errno.EROFS:
                    raise fail(file)
                return _FullFile(real_open(file, mode, *a, **k))
            return real_open(file, mode, *a, **k)

        def fake_os_open(path, flags, *a, **k):
            if code == errno.EROFS and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and _under(path, root):
                raise fail(path)
            return real_os_open(path, flags, *a, **k)

        def ro(name):
            def f(*args, **kw):
                if code == errno.EROFS and any(_under(x, root) for x in args[:2] if isinstance(x, (str, bytes, os.PathLike))):
                    if name == "mkdir" and os.path.exists(args[0]):
                        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fsdecode(args[0]))
                    if name in ("unlink", "remove", "rmdir") and not os.path.lexists(args[0]):
                        return real[name](*args, **kw)
                    raise fail(args[0])
                return real[name](*args, **kw)
            return f

        def fake_fsync(fd):
            if code == errno.ENOSPC:
                try:
                    target = os.readlink(f"/proc/self/fd/{fd}")
                except OSError:
                    target = None
                if target is not None and _under(target, root):
                    raise fail()
            return real["fsync"](fd)

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_open)
        monkeypatch.setattr(os, "open", fake_os_open)
        for n in ("mkdir", "replace", "rename", "unlink", "remove", "rmdir"):
            monkeypatch.setattr(os, n, ro(n))
        monkeypatch.setattr(os, "fsync", fake_fsync)

    return install


def snapshot(path: Path) -> dict[str, bytes] | bytes | None:
    """The bytes of a file, or of every file below a folder (relative path -> bytes)."""
    if path.is_file():
        return path.read_bytes()
    if path.is_dir():
        return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    return None


def _strict(text: str):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def assert_refused(rc: int, err: str, command: str, names: str | list[str]) -> str:
    """rc 2, one error line ``sam-edge COMMAND: error: ...`` naming ``names``, no traceback, nothing
    else on stderr (but the random-weights warning a tiny test model without weights prints)."""
    lines = [ln for ln in err.splitlines() if ln.startswith("sam-edge ")]
    assert rc == 2, err
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith(f"sam-edge {command}: error: "), err
    assert err.rstrip("\n").splitlines()[-1] == lines[0], err  # the last thing said
    for n in names if isinstance(names, (list, tuple)) else [names]:
        assert str(n) in lines[0], (n, lines[0])
    other = [ln for ln in err.splitlines() if not ln.startswith(("sam-edge ", "warning: no --checkpoint given"))]
    assert not other, err  # nothing else: the random-weights warning of the tiny test models at most
    return lines[0]


def assert_clean(root: Path) -> None:
    """No temporary / staging leftovers below ``root`` and every JSON there is whole and strict."""
    left = [str(p.relative_to(root)) for p in root.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert not left, left
    for p in root.rglob("*.json"):
        if p.is_file():
            _strict(p.read_text())


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory) -> Path:
    """A tiny ONNX export (sam_test_tiny, fp32), shared by the prompt and manifest cases."""
    pytest.importorskip("onnxruntime")
    import torch

    from sam_edge.formats.onnx import export_onnx
    from sam_edge import create_model

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny_onnx")
    export_onnx(create_model("sam_test_tiny"), out, ["fp32"], exporter="torchscript")
    return out
