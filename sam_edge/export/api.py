"""One call for every format: :func:`export_model` (what ``sam-edge export`` runs).

Formats and the precisions each takes (``int8`` expands to the format's int8 variants):

==========  ==================================================  =================================
format      precisions                                          runtime here
==========  ==================================================  =================================
onnx        fp32, fp16, int8_dynamic, int8_static (QDQ)         onnxruntime
executorch  fp32 (XNNPACK), int8_static (PT2E, XNNPACK)         ExecuTorch Python runtime
tflite      fp32, fp16, int8_dynamic, int8_static               ai-edge-litert Interpreter
coreml      fp16, fp32, int8_weights, palettize4, palettize6    macOS only (spec checked on Linux)
==========  ==================================================  =================================

A precision a format does not take is skipped with a note (e.g. ``fp16`` for executorch),
not an error, so ``--precision fp32,fp16,int8`` means "each at every precision it supports".
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

FORMATS: dict[str, tuple[str, str, tuple[str, ...], dict[str, tuple[str, ...]]]] = {
    # format: (module, function, precisions, aliases)
    "onnx": ("sam_edge.export.onnx_export", "export_onnx", ("fp32", "fp16", "int8_dynamic", "int8_static"),
             {"int8": ("int8_dynamic", "int8_static")}),
    "executorch": ("sam_edge.export.executorch_export", "export_executorch", ("fp32", "int8_static"),
                   {"int8": ("int8_static",)}),
    "tflite": ("sam_edge.export.tflite_export", "export_tflite", ("fp32", "fp16", "int8_dynamic", "int8_static"),
               {"int8": ("int8_dynamic", "int8_static")}),
    "coreml": ("sam_edge.export.coreml_export", "export_coreml", ("fp16", "fp32", "int8_weights", "palettize4", "palettize6"),
               {"int8": ("int8_weights",), "palettize": ("palettize4", "palettize6")}),
}
USER_PRECISIONS = ("fp32", "fp16", "int8", "int8_dynamic", "int8_static", "int8_weights",
                   "palettize", "palettize4", "palettize6")


def parse_list(text: str | Sequence[str], what: str, allowed: Sequence[str]) -> list[str]:
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise ValueError(f"{what}: expected a comma-separated list of {list(allowed)}, got {text!r}")
    return list(dict.fromkeys(items))


def precisions_for(fmt: str, requested: Sequence[str]) -> tuple[list[str], list[str]]:
    """(this format's precisions for the requested ones, the requested ones it does not take)."""
    _, _, supported, aliases = FORMATS[fmt]
    out, skipped = [], []
    for p in requested:
        names = [q for q in aliases.get(p, (p,)) if q in supported]
        if not names:
            skipped.append(p)
        out.extend(q for q in names if q not in out)
    return out, skipped


def export_format(model, fmt: str, out_dir: str | Path, precisions: Sequence[str], **kwargs: Any) -> dict:
    """Run one format's exporter (``export.<fmt>_export.export_<fmt>``)."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: expected one of {list(FORMATS)}")
    module, func, _, _ = FORMATS[fmt]
    return getattr(importlib.import_module(module), func)(model, out_dir, precisions, **kwargs)


def export_model(
    model,
    out_dir: str | Path,
    formats: Sequence[str] = tuple(FORMATS),
    precisions: Sequence[str] = ("fp32", "fp16", "int8"),
    calib_images: Any = None,
    *,
    verify_images: Any = None,
    normalize_inside: bool = True,
    mask_outputs: str = "all",
    accept_failures: Optional[Mapping[str, str]] = None,
) -> dict:
    """Export ``model`` to every format in ``formats`` at every requested precision it takes,
    into one directory with one manifest. Returns the manifest."""
    formats = parse_list(formats, "formats", list(FORMATS))
    precisions = parse_list(precisions, "precision", USER_PRECISIONS)
    manifest: dict = {}
    for fmt in formats:
        precs, skipped = precisions_for(fmt, precisions)
        if skipped:
            print(f"{fmt}: skipping precision(s) {', '.join(skipped)} (not supported by this format)")
        if not precs:
            continue
        manifest = export_format(model, fmt, out_dir, precs, calib_images=calib_images,
                                 verify_images=verify_images, normalize_inside=normalize_inside,
                                 mask_outputs=mask_outputs, accept_failures=accept_failures)
    return manifest
