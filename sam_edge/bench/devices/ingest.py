"""Convert benchmark results measured elsewhere (the iOS and Android sample apps, Xcode) to the
``timings.json`` shape of :mod:`sam_edge.bench.runner`.

``ingest(path)`` recognises two kinds of file:

(a) **sam-edge sample app, benchmark mode** (JSON, written by the app and copied off the device):
    the iOS app (``apps/ios/SamEdgeDemo/Benchmark.swift``, ``"app": "sam-edge-ios"``) and the
    Android app (``apps/android/.../Benchmark.kt``, ``"app": "sam-edge-android"``) write one schema::

    {
      "app": "sam-edge-ios",                      # or "sam-edge-android"
      "app_version": "1.0",                       # optional
      "device": {"model": "iPhone15,2", "os": "iOS 17.4"},
                                                  # Android adds "manufacturer" and "abi"
      "model_name": "repvit_demo_student",        # optional: the SAM model the app was built for
      "warmup": 10, "created": "2026-12-01T10:00:00Z",           # optional
      "runtime_versions": {"executorch": "1.5.1", "litert": "2.3.0"},  # optional (Android)
      "results": [
        {"file": "encoder_fp16.mlpackage", "role": "encoder", "format": "coreml",
         "precision": "fp16", "compute_units": "all",       # iOS: all | cpuAndGPU | cpuAndNeuralEngine | cpuOnly
                                                            # Android: "cpu"
         "threads": 4,                            # optional (Android: the runtime's thread count)
         "latency_ms": {"min": .., "p50": .., "p90": .., "mean": .., "std": .., "n": ..},
         "load_s": 0.84,
         "peak_rss_mb": 310.5,                    # optional
         "inputs": "synthetic image",             # optional
         "error": null}                           # optional: a string when the model failed
      ]
    }

    Required: ``app`` (one of the two), ``device.model``, ``results`` (a list), and per result
    ``file``, ``latency_ms`` (a mapping; at least one of min/p50/p90/mean numeric unless
    ``error`` is set; null when ``error`` is set). ``role`` / ``format`` / ``precision`` default
    to what the file name says. The device is named ``ios:<model>`` / ``android:<model>``.

(b) **Xcode Core ML performance report** (Xcode 14+: open the model, Performance tab, "+").
    Xcode documents no machine-readable export of this report: it shows median load,
    compilation and prediction times and the compute unit of each operation, and the full
    data is only reachable through the Instruments trace ("Open in Instruments"). So the
    accepted file is the summary *transcribed* from the report, as CSV or JSON:

    CSV, one row per model and setting (header required; ``device``/``os``/``compute_units``/
    ``load_median_ms``/``compilation_median_ms`` optional)::

        model,device,os,compute_units,prediction_median_ms,load_median_ms,compilation_median_ms
        encoder_fp16.mlpackage,iPhone 15 Pro,iOS 17.4,all,12.4,410.0,2300.0

    JSON::

        {"source": "xcode-performance-report",
         "device": {"model": "iPhone 15 Pro", "os": "iOS 17.4"},
         "models": [{"model": "encoder_fp16.mlpackage", "compute_units": "all",
                     "prediction_median_ms": 12.4, "load_median_ms": 410.0,
                     "compilation_median_ms": 2300.0}]}

    The median prediction time becomes ``latency_ms.p50`` (the other stats stay None: Xcode
    does not show them, nor the number of predictions), ``load_median_ms`` becomes ``load_s``.

Result: ``{"env": {"device": {...}, "source": "ios-app" | "android-app" | "xcode-performance-report",
"file": path, "model": model_name, ...}, "artifacts": [records], "pipelines": [],
"device": "ios:<model>" | "android:<model>"}``, each record with the runner's keys plus ``device``
and ``compute_units`` (and ``inputs`` where the app wrote it). Anything else raises
:class:`IngestError` (a ValueError) naming the file and what was expected.
"""
from __future__ import annotations

from sam_edge.errors import UserError

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Mapping, Optional

from sam_edge.bench.devices.records import LATENCY_KEYS, artifact_record

IOS_APP = "sam-edge-ios"
ANDROID_APP = "sam-edge-android"  # the Android sample app writes the same schema
APPS = {IOS_APP: ("ios", "ios-app"), ANDROID_APP: ("android", "android-app")}  # app -> (device prefix, source)
XCODE_SOURCE = "xcode-performance-report"
XCODE_CSV_REQUIRED = ("model", "prediction_median_ms")


class IngestError(UserError, ValueError):
    """A results file that is neither of the formats :func:`ingest` reads, or malformed."""


def _num(value: Any, where: str, path: Path, required: bool = False) -> Optional[float]:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise IngestError(f"{path}: {where} is missing (expected a number)")
        return None
    if isinstance(value, bool):
        raise IngestError(f"{path}: {where} is {value!r} (expected a number)")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise IngestError(f"{path}: {where} is {value!r} (expected a number)") from None
    if math.isnan(v) or v < 0:
        raise IngestError(f"{path}: {where} is {value!r} (expected a non-negative number)")
    return v


def _device_str(model: Optional[str], prefix: str = "ios") -> str:
    return f"{prefix}:{model}" if model else prefix


def _threads(value: Any, where: str, path: Path) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
        raise IngestError(f"{path}: {where} is {value!r} (expected a positive whole number or null)")
    return int(value)


def _app(data: Mapping, path: Path) -> dict[str, Any]:
    """Kind (a): the benchmark JSON of the iOS or the Android sample app."""
    app = data["app"]
    prefix, source = APPS[app]
    example = ('{"model": "Pixel 8", "manufacturer": "Google", "os": "Android 15 (API 35)", "abi": "arm64-v8a"}'
               if app == ANDROID_APP else '{"model": "iPhone15,2", "os": "iOS 17.4"}')
    dev = data.get("device")
    if not isinstance(dev, Mapping) or not dev.get("model"):
        raise IngestError(f"{path}: 'device' must be an object with 'model' (and 'os'), e.g. {example}")
    results = data.get("results")
    if not isinstance(results, list):
        raise IngestError(f"{path}: 'results' must be a list of per-model results")
    device = _device_str(dev["model"], prefix)
    records = []
    for i, r in enumerate(results):
        where = f"results[{i}]"
        if not isinstance(r, Mapping) or not isinstance(r.get("file"), str) or not r["file"]:
            raise IngestError(f"{path}: {where} must be an object with 'file' (e.g. 'encoder_fp32.pte')")
        lat_in = r.get("latency_ms")
        error = r.get("error")
        if lat_in is None and error:
            lat_in = {}
        if not isinstance(lat_in, Mapping):
            raise IngestError(f"{path}: {where}.latency_ms must be an object with min/p50/p90/mean/std/n")
        lat = {k: _num(lat_in.get(k), f"{where}.latency_ms.{k}", path) for k in LATENCY_KEYS}
        if lat["n"] is not None:
            lat["n"] = int(lat["n"])
        if not error and all(lat[k] is None for k in ("min", "p50", "p90", "mean")):
            raise IngestError(f"{path}: {where}.latency_ms has none of min/p50/p90/mean")
        extra = {"inputs": r["inputs"]} if isinstance(r.get("inputs"), str) else {}
        records.append(artifact_record(
            r["file"], r.get("role"), r.get("format"),
            r.get("precision"), load_s=_num(r.get("load_s"), f"{where}.load_s", path), latency_ms=lat,
            threads=_threads(r.get("threads"), f"{where}.threads", path),
            peak_rss_mb=_num(r.get("peak_rss_mb"), f"{where}.peak_rss_mb", path),
            error=str(error) if error else None, device=device, compute_units=r.get("compute_units"), **extra))
    env = {"device": dict(dev), "source": source, "app": app, "app_version": data.get("app_version"),
           "model": data.get("model_name"), "warmup": data.get("warmup"), "created": data.get("created"),
           "file": str(path)}
    if isinstance(data.get("runtime_versions"), Mapping):
        env["runtime_versions"] = dict(data["runtime_versions"])
    return {"env": env, "artifacts": records, "pipelines": [], "device": device}


def _xcode_rows(rows: list[Mapping], device: Mapping, path: Path, kind: str) -> dict[str, Any]:
    if not rows:
        raise IngestError(f"{path}: {kind} has no model rows")
    records, models = [], set()
    for i, r in enumerate(rows):
        where = f"row {i + 1}" if kind == "CSV" else f"models[{i}]"
        name = (r.get("model") or "").strip() if isinstance(r.get("model"), str) else None
        if not name:
            raise IngestError(f"{path}: {where} has no 'model' (the model file name, e.g. encoder_fp16.mlpackage)")
        dev_model = (r.get("device") or device.get("model") or None)
        dev_os = (r.get("os") or device.get("os") or None)
        models.add(dev_model)
        p50 = _num(r.get("prediction_median_ms"), f"{where}.prediction_median_ms", path, required=True)
        load = _num(r.get("load_median_ms"), f"{where}.load_median_ms", path)
        comp = _num(r.get("compilation_median_ms"), f"{where}.compilation_median_ms", path)
        rec = artifact_record(name, format="coreml", load_s=None if load is None else load / 1e3,
                              latency_ms={"p50": p50}, device=_device_str(dev_model),
                              device_os=dev_os, compute_units=(r.get("compute_units") or None),
                              compilation_s=None if comp is None else comp / 1e3,
                              note="Xcode Core ML performance report: median prediction only")
        records.append(rec)
    models.discard(None)
    dev = dict(device) if device else {}
    if not dev.get("model") and len(models) == 1:
        dev["model"] = next(iter(models))
    env = {"device": dev, "source": XCODE_SOURCE, "file": str(path)}
    return {"env": env, "artifacts": records, "pipelines": [],
            "device": _device_str(dev.get("model")) if len(models) <= 1 else "ios:" + ",".join(sorted(models))}


def _xcode_csv(text: str, path: Path) -> dict[str, Any]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in XCODE_CSV_REQUIRED if c not in header]
    if missing:
        raise IngestError(f"{path}: CSV header {header or '(empty)'} lacks {missing}; expected an Xcode Core ML "
                          "performance-report summary with columns model, prediction_median_ms "
                          "[, device, os, compute_units, load_median_ms, compilation_median_ms]")
    rows = [{(k or "").strip(): (v.strip() if isinstance(v, str) else v) for k, v in row.items()} for row in reader]
    return _xcode_rows(rows, {}, path, "CSV")


def ingest(path) -> dict[str, Any]:
    """Read the iOS or Android app's benchmark JSON or an Xcode Core ML performance-report summary
    (CSV / JSON) and return it in the ``timings.json`` shape (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise IngestError(f"{path}: not a text file (expected the iOS / Android app's benchmark JSON or an "
                          "Xcode performance-report CSV/JSON)") from None
    if path.suffix.lower() == ".csv":
        return _xcode_csv(text, path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        first = text.strip().splitlines()[0] if text.strip() else ""
        if path.suffix.lower() != ".json" and first.startswith("model,"):
            return _xcode_csv(text, path)
        raise IngestError(f"{path}: not valid JSON ({exc}); expected the iOS / Android app's benchmark JSON "
                          f"(app: {IOS_APP!r} or {ANDROID_APP!r}) or an Xcode performance-report summary "
                          f"(.csv or JSON with source: {XCODE_SOURCE!r})") from None
    if isinstance(data, Mapping) and data.get("app") in APPS:
        return _app(data, path)
    if isinstance(data, Mapping) and (data.get("source") == XCODE_SOURCE or "models" in data):
        models = data.get("models")
        if not isinstance(models, list) or not all(isinstance(m, Mapping) for m in models):
            raise IngestError(f"{path}: 'models' must be a list of objects with model, prediction_median_ms")
        dev = data.get("device") or {}
        if isinstance(dev, str):
            dev = {"model": dev}
        if not isinstance(dev, Mapping):
            raise IngestError(f"{path}: 'device' must be an object with model / os")
        return _xcode_rows(models, dev, path, "JSON")
    keys = sorted(data)[:8] if isinstance(data, Mapping) else type(data).__name__
    raise IngestError(f"{path}: unknown results file (top level: {keys}); expected the iOS / Android app's "
                      f"benchmark JSON with app: {IOS_APP!r} or {ANDROID_APP!r}, device and results, or an Xcode "
                      f"Core ML performance-report summary (source: {XCODE_SOURCE!r} with models, or a CSV with "
                      "columns model, prediction_median_ms)")
