"""Reading ``manifest.json`` of an export directory (writing lives in ``export.manifest``).

Schema (``schema_version`` 1)::

    {
      "schema_version": 1,
      "model": {"name": str, "config": {...ModelConfig fields...}},
      "image_size": S, "embedding_size": S/16, "embed_dim": C, "mask_input_size": 4*S/16,
      "pixel_mean": [3], "pixel_std": [3],
      "normalize_inside": bool,          # encoder takes raw 0..255 pixels padded with the mean
      "pad_value": "pixel_mean" | "zero_after_normalize",
      "mask_outputs": "all" | "multimask" | "single",
      "num_multimask_outputs": 3,
      "created_by": {"sam_edge": ver, "torch": ver, ...},
      "artifacts": [
        {"role": "encoder" | "decoder", "format": "onnx", "precision": "fp32" | "fp16" |
         "int8_dynamic" | "int8_static", "file": str, "sha256": hex, "size_bytes": int,
         "inputs": [{"name", "shape", "dtype"}], "outputs": [...], "dynamic_axes": {name: {axis: label}},
         "exporter": str, "opset": int, "quantization": {...} | null,
         "verification": {"passed": bool, "metrics": {...}, "tolerances": {...}, "reason": str | null},
         "backend_versions": {...}}
      ]
    }
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1


class ManifestError(RuntimeError):
    """A missing, malformed or tampered export directory."""


def sha256_file(path: str | Path) -> str:
    """sha256 of a file; of a directory artifact (a Core ML ``.mlpackage``), the sha256 over its
    files in sorted relative-path order, each contributing its path and its bytes."""
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if not path.is_dir() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if path.is_dir():
            h.update(f.relative_to(path).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def artifact_path(export_dir: str | Path, entry: dict[str, Any] | str) -> Path:
    """The file of a manifest entry (or a relative name), checked to lie inside ``export_dir``:
    an absolute path, ``..`` components, or a symlink whose target leaves the folder (also any
    symlink inside a directory artifact such as an ``.mlpackage``) is a :class:`ManifestError`.
    A manifest is data read from disk: it must not be able to make us read, hash or load a file
    elsewhere. Returns the resolved path."""
    root = Path(export_dir).resolve()
    name = entry.get("file") if isinstance(entry, dict) else entry
    where = f"{Path(export_dir) / MANIFEST_NAME}"
    if not isinstance(name, str) or not name.strip():
        raise ManifestError(f"{where}: artifact entry without a file name: {entry!r}")
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise ManifestError(f"{where}: artifact file {name!r} is not a plain path inside the export directory {root}")
    path = (root / rel).resolve()
    if path != root and root not in path.parents:
        raise ManifestError(f"{where}: artifact file {name!r} leads outside the export directory {root} (to {path})")
    if path.is_dir():
        for f in path.rglob("*"):
            target = f.resolve()
            if root not in target.parents:
                raise ManifestError(f"{where}: {f} inside artifact {name!r} links outside the export directory {root}")
    return path


def load_manifest(export_dir: str | Path, check_hashes: bool = True) -> dict[str, Any]:
    """Read ``export_dir/manifest.json``; with ``check_hashes`` refuse any artifact whose file is
    missing or whose sha256 / size differs from the manifest (naming the file)."""
    export_dir = Path(export_dir)
    path = export_dir / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(
            f"no {MANIFEST_NAME} in export directory {export_dir} (is it an export directory? "
            "create one with `sam-edge export`)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or "artifacts" not in manifest:
        raise ManifestError(f"{path}: missing 'artifacts'")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ManifestError(f"{path}: schema_version {version!r} not supported (expected {SCHEMA_VERSION})")
    if not isinstance(manifest["artifacts"], list) or not all(isinstance(a, dict) for a in manifest["artifacts"]):
        raise ManifestError(f"{path}: 'artifacts' must be a list of objects")
    for i, art in enumerate(manifest["artifacts"]):
        for key in ("file", "role", "format", "precision") + (("sha256",) if check_hashes else ()):
            if not isinstance(art.get(key), str):
                raise ManifestError(f"{path}: artifact {i} ({art.get('file')!r}): missing or non-string {key!r}")
        artifact_path(export_dir, art)  # every entry inside the folder, hashed or not
    if check_hashes:
        for art in manifest["artifacts"]:
            f = artifact_path(export_dir, art)
            if not f.exists():
                raise ManifestError(f"{f}: listed in {path} but missing")
            digest = sha256_file(f)
            if digest != art["sha256"]:
                raise ManifestError(
                    f"{f}: sha256 mismatch (file {digest}, manifest {art['sha256']}); "
                    "the artifact was modified or replaced after export"
                )
    return manifest


def select_artifacts(manifest: dict[str, Any], precision: str | None = None,
                     fmt: str | None = None) -> tuple[dict, dict]:
    """(encoder, decoder) artifact entries of format ``fmt`` (default: the first format listed)
    for ``precision`` (default: fp32 if present, else the first encoder listed). A precision with
    no decoder of its own falls back to the fp32 decoder."""
    arts = manifest["artifacts"]
    formats = list(dict.fromkeys(a["format"] for a in arts))
    if fmt is None and formats:
        fmt = formats[0]
    if fmt not in formats:
        raise ManifestError(f"no artifact of format {fmt!r}; available: {formats}")
    arts = [a for a in arts if a["format"] == fmt]
    encoders = {a["precision"]: a for a in arts if a["role"] == "encoder"}
    decoders = {a["precision"]: a for a in arts if a["role"] == "decoder"}
    if not encoders or not decoders:
        raise ManifestError("manifest lists no encoder or no decoder artifact")
    if precision is None:
        precision = "fp32" if "fp32" in encoders else next(iter(encoders))
    if precision not in encoders:
        raise ManifestError(f"no encoder of precision {precision!r}; available: {sorted(encoders)}")
    dec = decoders.get(precision) or decoders.get("fp32") or next(iter(decoders.values()))
    return encoders[precision], dec
