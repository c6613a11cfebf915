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
         "backend_versions": {...},
         "runtime": {"runtime", "min_version", "exporter", "exporter_version", "rule"}}  # runtime_requirement()
      ]
    }
"""
from __future__ import annotations

from sam_edge.errors import UserError

import hashlib
import json
import re
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1


class ManifestError(UserError, RuntimeError):
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


# -- what runtime an artifact needs ---------------------------------------------------------------

#: The first onnxruntime release implementing each ONNX opset (onnxruntime docs/Versioning.md,
#: "Version matrix"); a graph stamped with opset N runs on these releases and later ones.
ORT_FIRST_RELEASE_FOR_OPSET = {13: "1.6.0", 14: "1.8.0", 15: "1.9.0", 16: "1.11.0", 17: "1.13.0",
                               18: "1.14.0", 19: "1.15.0", 20: "1.17.0", 21: "1.18.0"}


def runtime_requirement(entry: dict[str, Any]) -> dict[str, Any]:
    """The runtime an artifact needs and its minimum version, from the entry's own record:
    ``{"runtime", "min_version", "exporter", "exporter_version", "rule"}`` (None where the
    record does not say). Written into every manifest entry at export (key ``"runtime"``) and
    into the apps' generated constants, which check it at load.

    * ExecuTorch: a ``.pte`` is promised to load on a runtime at least as new as the
      ``executorch`` that wrote it, not on an older one: the minimum is the exporter's version.
    * TFLite / LiteRT: op versions are stamped by the converter; the runtime that verified the
      file (``ai-edge-litert``) is the version known to run it: the minimum is that version.
    * Core ML: the mlprogram's deployment target (``iOS17`` -> ``17.0``), an OS version.
    * ONNX: the first onnxruntime release implementing the graph's opset (table above); an opset
      past the table: the onnxruntime that verified the file."""
    fmt = entry.get("format")
    vers = entry.get("backend_versions") or {}
    out: dict[str, Any] = {"runtime": None, "min_version": None, "exporter": None, "exporter_version": None,
                           "rule": None}
    if fmt == "executorch":
        v = vers.get("executorch")
        out.update(runtime="executorch", min_version=v, exporter="executorch", exporter_version=v,
                   rule="ExecuTorch runtime >= the executorch that wrote the .pte")
    elif fmt == "tflite":
        v = vers.get("ai-edge-litert")
        out.update(runtime="litert", min_version=v, exporter="litert-torch",
                   exporter_version=vers.get("litert-torch"),
                   rule="LiteRT runtime >= the ai-edge-litert that verified the .tflite")
    elif fmt == "coreml":
        spec = (entry.get("verification") or {}).get("spec_check") or {}
        target = spec.get("deployment_target") if isinstance(spec, dict) else None
        if not target:  # the exporter string names it: "... mlprogram, iOS17)"
            m = re.search(r"iOS(\d+)", str(entry.get("exporter") or ""))
            target = f"iOS{m.group(1)}" if m else None
        num = target[3:] if target and target.startswith("iOS") else None
        out.update(runtime="coreml", min_version=(num + ".0") if num and "." not in num else num,
                   exporter="coremltools", exporter_version=vers.get("coremltools"),
                   rule="iOS >= the mlprogram's deployment target")
    elif fmt == "onnx":
        opset = entry.get("opset")
        v = ORT_FIRST_RELEASE_FOR_OPSET.get(opset) if isinstance(opset, int) else None
        out.update(runtime="onnxruntime", min_version=v or vers.get("onnxruntime"), exporter="torch.onnx",
                   exporter_version=vers.get("torch"),
                   rule=f"onnxruntime implementing opset {opset}" if v else "onnxruntime >= the one that verified it")
    return out


def version_tuple(v: str) -> tuple[int, ...]:
    """``"1.5.1"`` -> (1, 5, 1); a pre-release / local suffix ends the number (``"2.13.0+cpu"`` ->
    (2, 13, 0)). Raises ValueError on a version without a leading number."""
    m = re.match(r"\d+(?:\.\d+)*", str(v).strip())
    if not m:
        raise ValueError(f"not a version number: {v!r}")
    return tuple(int(p) for p in m.group(0).split("."))


def version_at_least(have: str, need: str) -> bool:
    """Dotted-number comparison, missing parts read as 0 (``"1.5"`` >= ``"1.5.0"``)."""
    a, b = version_tuple(have), version_tuple(need)
    n = max(len(a), len(b))
    return a + (0,) * (n - len(a)) >= b + (0,) * (n - len(b))
