"""Pieces every format module shares: the export directory's manifest (merged across formats and
runs), calibration / verification images, staging a file into place, recording and verifying
an artifact.

A format module (``sam_edge.formats.onnx``, ``.executorch``, ``.tflite``, ``.coreml``)
exports its graphs into a temporary file, then calls :meth:`ExportDir.add` which moves it into
place atomically, computes sha256 / size, verifies it against eager PyTorch (raising
:class:`export.verify.VerificationError` on a miss unless a reason is given) and rewrites
``manifest.json`` after every artifact, so an interrupted export keeps what it finished.
"""
from __future__ import annotations

from sam_edge.errors import UserError

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from sam_edge.image import load_image
from sam_edge.modeling.sam import Sam

# manifest.py imports nothing from this module (path_size lives there): no import loop
from sam_edge.export.manifest import (  # noqa: F401 (path_size re-exported)
    MANIFEST_NAME,
    add_artifact,
    artifact_entry,
    new_manifest,
    path_size,
    write_manifest,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ExportError(UserError, RuntimeError):
    """An export that failed; names the format and, where known, the operator."""


def op_from_message(msg: str, patterns: Sequence[str]) -> Optional[str]:
    """The first operator name one of ``patterns`` (regexes, group 1) finds in an error message."""
    import re

    for pat in patterns:
        m = re.search(pat, msg)
        if m:
            return m.group(1).rstrip(".")
    return None


def format_error(fmt: str, action: str, what: str, exc: BaseException, patterns: Sequence[str],
                 op: Optional[str] = None) -> ExportError:
    """``"<what>: <action> failed on operator 'op' (not supported by format '<fmt>'): <Type>: <first
    line of the message>"`` (without the operator part when none is named)."""
    msg = str(exc).strip()
    op = op or op_from_message(msg, patterns)
    head = f"{what}: {action} failed" + (f" on operator {op!r} (not supported by format '{fmt}')" if op
                                          else f" (format '{fmt}')")
    first = next((line.strip() for line in msg.splitlines() if line.strip()), "")
    return ExportError(f"{head}: {type(exc).__name__}: {first}")


# scikit-image's sample photos (RGB, in its wheel): real images for calibration and checks
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket",
                  "hubble_deep_field", "immunohistochemistry", "retina", "colorwheel", "logo")


def skimage_photos(limit: Optional[int] = None) -> list[np.ndarray]:
    try:
        from skimage import data
    except ImportError as exc:
        raise ImportError("calibration source 'skimage' needs scikit-image: pip install scikit-image") from exc
    out = []
    for name in SKIMAGE_PHOTOS[:limit]:
        img = np.asarray(getattr(data, name)())
        if img.ndim == 3 and img.shape[-1] == 4:
            img = img[..., :3]
        if img.ndim == 3 and img.shape[-1] == 3 and img.dtype == np.uint8:
            out.append(np.ascontiguousarray(img))
    return out


def load_images(source: Any, limit: Optional[int] = None) -> list[np.ndarray]:
    """A folder of images (sorted), ``"skimage"`` (scikit-image's sample photos), a list of paths
    or a list of H x W x 3 uint8 arrays."""
    if source is None:
        return []
    if isinstance(source, str) and source == "skimage":
        return skimage_photos(limit)
    if isinstance(source, (str, Path)):
        folder = Path(source)
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder {folder} does not exist")
        source = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not source:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    images = [item if isinstance(item, np.ndarray) else load_image(item) for item in source]
    return images[:limit] if limit else images


def expand_precisions(precisions: Sequence[str], fmt: str) -> list[str]:
    """User precisions (e.g. 'int8') -> format ``fmt``'s precision names, in order, deduplicated
    (:func:`sam_edge.formats.precisions_for`). One the format does not take raises, naming the
    format and what it supports."""
    from sam_edge.formats import get_format

    return get_format(fmt).expand(list(precisions))


class ExportDir:
    """An export directory being written: its manifest (merged with an earlier export of the same
    model setup, dropping entries whose file is gone) and the images used to verify."""

    def __init__(self, out_dir: str | Path, model: Sam, *, normalize_inside: bool = True,
                 mask_outputs: str = "all", verify_images: Any = None,
                 accept_failures: Optional[Mapping[str, str]] = None) -> None:
        self.path = Path(out_dir)
        self.path.mkdir(parents=True, exist_ok=True)
        _remove_stale_scratch(self.path)
        self.model = model.eval()
        self.normalize_inside = normalize_inside
        self.mask_outputs = mask_outputs
        self.verify_images = load_images(verify_images) if verify_images is not None else []
        self.accept = dict(accept_failures or {})
        self.manifest = new_manifest(model, normalize_inside=normalize_inside, mask_outputs=mask_outputs)
        old_path = self.path / MANIFEST_NAME
        if old_path.is_file():
            try:
                old = json.loads(old_path.read_text())
            except json.JSONDecodeError:
                old = {}
            if isinstance(old, dict) and old.get("model") not in (None, self.manifest["model"]):
                theirs = (old.get("model") or {}).get("name") if isinstance(old.get("model"), dict) else old.get("model")
                ours = self.manifest["model"].get("name")
                what = f"model {theirs!r}" if theirs != ours else f"another configuration of {ours!r}"
                raise ExportError(f"{self.path}: holds an export of {what}; exporting {ours!r} there would drop "
                                  f"its artifacts from the manifest. Choose another --out, or pass --overwrite "
                                  f"to replace that export")
            same = all(old.get(k) == self.manifest[k] for k in ("model", "image_size", "normalize_inside", "mask_outputs"))
            if same:
                self.manifest["artifacts"] = [a for a in old.get("artifacts", []) if (self.path / a["file"]).exists()]

    def scratch(self, fmt: str) -> tempfile.TemporaryDirectory:
        """A temporary folder inside the export directory for ``fmt``'s intermediate files, named
        with this process id (``.<fmt>-<pid>-<random>``) so that a later export can tell a killed
        export's leftovers from a running one's."""
        return tempfile.TemporaryDirectory(dir=self.path, prefix=f".{fmt}-{os.getpid()}-")

    def staging(self, name: str) -> Path:
        """A temporary path inside the export directory (same filesystem, so the final move is
        atomic); removed if left behind."""
        tmp = self.path / f".staging-{os.getpid()}-{name}"
        _remove(tmp)
        return tmp

    def add(self, staged: Path, file: str, *, role: str, fmt: str, precision: str,
            inputs: list[dict], outputs: list[dict], dynamic_axes: Optional[dict] = None,
            quantization: Optional[dict] = None, exporter: Optional[str] = None, opset: Optional[int] = None,
            backend_versions: Optional[dict] = None, notes: Optional[list[str]] = None,
            verify: Optional[Callable[[dict], dict]] = None) -> dict[str, Any]:
        """Move ``staged`` to ``file``, record it, verify it, write the manifest; return the entry.

        ``verify``: a function entry -> verification record replacing the default
        (:func:`export.verify.verify_artifact` through the format's runtime backend); Core ML on
        Linux passes its spec check here."""
        from sam_edge.export.verify import verify_artifact

        final = self.path / file
        _remove(final)
        shutil.move(str(staged), str(final))
        entry = artifact_entry(
            self.path, file, role=role, fmt=fmt, precision=precision, inputs=inputs, outputs=outputs,
            dynamic_axes=dynamic_axes, quantization=quantization, exporter=exporter, opset=opset,
            backend_versions=backend_versions,
        )
        if notes:
            entry["exporter_notes"] = list(notes)
        reason = self.accept.get(f"{fmt}:{precision}", self.accept.get(precision))
        if verify is not None:
            entry["verification"] = verify(entry)
        elif self.verify_images:
            entry["verification"] = verify_artifact(
                self.path, entry, self.model, self.verify_images, normalize_inside=self.normalize_inside,
                mask_outputs=self.mask_outputs, reason=reason,
            )
        else:
            entry["verification"] = {"passed": None, "reason": "no verification images given"}
        add_artifact(self.manifest, entry)
        write_manifest(self.path, self.manifest)
        return entry


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove_stale_scratch(folder: Path) -> None:
    """What a killed export left in ``folder``: scratch folders and staged files of processes that
    are gone (``.<fmt>-<pid>-*``, ``.staging-<pid>-*``) and temporary manifests."""
    from sam_edge.utils.io import remove_stale_temps

    for p in folder.glob(".*"):
        m = re.match(r"\.[a-z]+-(\d+)-", p.name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            _remove(p)
    remove_stale_temps(folder)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
