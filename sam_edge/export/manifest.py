"""Writing ``manifest.json`` for an export directory (schema: :mod:`sam_edge.runtime.manifest`)."""
from __future__ import annotations

import dataclasses
import json
import platform
from pathlib import Path
from typing import Any, Iterable, Optional

from sam_edge.modeling.sam import Sam
from sam_edge.runtime.manifest import (  # noqa: F401  (re-exported)
    MANIFEST_NAME,
    SCHEMA_VERSION,
    ManifestError,
    load_manifest,
    runtime_requirement,
    select_artifacts,
    sha256_file,
)
from sam_edge.utils.io import write_json_atomic


def _model_config(model: Sam) -> tuple[str, dict[str, Any]]:
    cfg = getattr(model, "config", None)
    if cfg is None:
        return "unknown", {}
    data = dataclasses.asdict(cfg)
    return cfg.name, json.loads(json.dumps(data))  # tuples -> lists at every depth (the nested encoder config)


def library_versions(extra: Iterable[str] = ()) -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("sam-edge", "torch", *extra):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def path_size(path: str | Path) -> int:
    """Bytes on disk of a file or a directory (an .mlpackage is a directory)."""
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


def new_manifest(model: Sam, *, normalize_inside: bool, mask_outputs: str) -> dict[str, Any]:
    name, config = _model_config(model)
    grid = model.image_size // 16
    return {
        "schema_version": SCHEMA_VERSION,
        "model": {"name": name, "config": config},
        "image_size": int(model.image_size),
        "embedding_size": grid,
        "embed_dim": int(model.prompt_encoder.embed_dim),
        "mask_input_size": 4 * grid,
        "pixel_mean": [float(v) for v in model.pixel_mean.flatten()],
        "pixel_std": [float(v) for v in model.pixel_std.flatten()],
        "normalize_inside": bool(normalize_inside),
        "pad_value": "pixel_mean" if normalize_inside else "zero_after_normalize",
        "mask_outputs": mask_outputs,
        "num_multimask_outputs": int(model.mask_decoder.num_multimask_outputs),
        "created_by": library_versions(),
        "artifacts": [],
    }


def artifact_entry(
    export_dir: str | Path,
    file: str,
    *,
    role: str,
    fmt: str,
    precision: str,
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    dynamic_axes: Optional[dict[str, dict[int, str]]] = None,
    quantization: Optional[dict[str, Any]] = None,
    exporter: Optional[str] = None,
    opset: Optional[int] = None,
    backend_versions: Optional[dict[str, str]] = None,
    verification: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """One artifact record; sha256 and size are computed from the file now."""
    path = Path(export_dir) / file
    entry = {
        "role": role,
        "format": fmt,
        "precision": precision,
        "file": file,
        "sha256": sha256_file(path),
        "size_bytes": path_size(path),
        "inputs": inputs,
        "outputs": outputs,
        "dynamic_axes": {k: {str(a): n for a, n in v.items()} for k, v in (dynamic_axes or {}).items()},
        "exporter": exporter,
        "opset": opset,
        "quantization": quantization,
        "backend_versions": backend_versions or {},
        "verification": verification,
    }
    entry["runtime"] = runtime_requirement(entry)
    return entry


def add_artifact(manifest: dict[str, Any], entry: dict[str, Any]) -> None:
    """Add or replace (same role + format + precision) an artifact record."""
    key = (entry["role"], entry["format"], entry["precision"])
    manifest["artifacts"] = [
        a for a in manifest["artifacts"] if (a["role"], a["format"], a["precision"]) != key
    ] + [entry]


def write_manifest(export_dir: str | Path, manifest: dict[str, Any]) -> Path:
    path = Path(export_dir) / MANIFEST_NAME
    write_json_atomic(path, manifest)
    return path
