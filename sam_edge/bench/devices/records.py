"""What every device path shares: :class:`DeviceError`, the artifact-name parser and the
per-artifact latency record of ``timings.json``."""

from __future__ import annotations

from sam_edge.errors import UserError

import re
from typing import Any, Iterable, Optional



class DeviceError(UserError, RuntimeError):
    """A device could not be reached or could not run the benchmark."""


LATENCY_KEYS = ("min", "p50", "p90", "mean", "std", "n")
_EXT_FORMAT = {".onnx": "onnx", ".pte": "executorch", ".tflite": "tflite", ".mlpackage": "coreml",
               ".mlmodel": "coreml", ".mlmodelc": "coreml"}
_NAME_RE = re.compile(r"^(?P<role>encoder|decoder)_(?P<precision>[A-Za-z0-9_]+?)(?P<ext>\.[A-Za-z]+)$")


def parse_artifact_name(name: str) -> dict[str, Optional[str]]:
    """``encoder_fp16.pte`` -> {role: encoder, precision: fp16, format: executorch}; fields it
    cannot tell are None (a name not of the ``sam-edge export`` form)."""
    name = name.rstrip("/").rsplit("/", 1)[-1]
    m = _NAME_RE.match(name)
    if not m:
        ext = "." + name.rsplit(".", 1)[-1] if "." in name else ""
        return {"role": None, "precision": None, "format": _EXT_FORMAT.get(ext.lower())}
    return {"role": m["role"], "precision": m["precision"], "format": _EXT_FORMAT.get(m["ext"].lower())}


def latency_stats(values_ms: Iterable[float]) -> dict[str, Any]:
    """{min, p50, p90, mean, std (population), n} of per-run latencies in ms (same definitions as
    :func:`sam_edge.bench.runner.stats_ms`: p50 the median, p90 the nearest-rank element)."""
    from sam_edge.bench.runner import stats_of_ms

    ms = list(values_ms)
    return stats_of_ms(ms) if ms else empty_latency()


def empty_latency() -> dict[str, Any]:
    return {k: None for k in LATENCY_KEYS}


def artifact_record(file: str, role: Optional[str] = None, format: Optional[str] = None,
                    precision: Optional[str] = None, *, load_s: Optional[float] = None,
                    latency_ms: Optional[dict] = None, threads: Optional[int] = None,
                    peak_rss_mb: Optional[float] = None, error: Optional[str] = None,
                    **extra: Any) -> dict[str, Any]:
    """One per-artifact record of the ``timings.json`` shape; missing latency keys are None and
    extra keys (``device``, ``inputs``, ``tool``, ``note`` ...) are kept."""
    guessed = parse_artifact_name(file)
    lat = empty_latency()
    lat.update({k: v for k, v in (latency_ms or {}).items() if k in LATENCY_KEYS})
    rec = {"file": file, "role": role or guessed["role"], "format": format or guessed["format"],
           "precision": precision or guessed["precision"], "load_s": load_s, "latency_ms": lat,
           "threads": threads, "peak_rss_mb": peak_rss_mb, "error": error}
    rec.update(extra)
    return rec
