"""Time ExecuTorch (``.pte``) and TFLite (``.tflite``) artifacts on an Android device over adb
(``adb://SERIAL``, SERIAL as listed by ``adb devices``).

The device needs the two native benchmark tools pushed beforehand (built for its ABI):

* ExecuTorch ``executor_runner`` (``examples/portable/executor_runner``, built with the
  backends the .pte files were lowered to, e.g. XNNPACK), default
  ``/data/local/tmp/executor_runner``; run as
  ``executor_runner --model_path=M --num_executions=RUNS+WARMUP [--cpu_threads=T]``;
* TFLite ``benchmark_model`` (``tensorflow/lite/tools/benchmark``), default
  ``/data/local/tmp/benchmark_model``; run as
  ``benchmark_model --graph=M --num_runs=RUNS --warmup_runs=WARMUP --min_secs=0
  --warmup_min_secs=0 [--num_threads=T]``.

Neither tool takes our INPUTS.npz: ``benchmark_model`` feeds random inputs, ``executor_runner``
feeds ones (and, for dynamic shapes, every input at its upper bound), so every record says
``"inputs": "runner-generated"`` and there are no outputs to compare (no ``pipelines``).

Output parsing (formats taken from the tools' sources):

* ``executor_runner`` logs (``I 00:00:00.123 executorch:executor_runner.cpp:NN] ...``):
  ``Model loaded in %f ms.`` -> ``load_s``; ``Iteration %u of %u: %f ms`` (recent versions, one
  per execution) -> full latency stats after dropping the first WARMUP iterations; otherwise
  ``Model executed successfully %u time(s) in %f ms.`` -> ``mean`` only (warm-up included, said
  in ``note``).
* ``benchmark_model``: ``Initialized session in %fms.`` -> ``load_s``; the last
  ``count=N first=F curr=C min=A max=B avg=M std=S`` line (microseconds; the regular runs, the
  one before it is the warm-up) -> min / mean / std / n (``count=N curr=C(all same)`` when all runs
  were equal); ``Inference timings in us: Init: ..., First inference: ..., Warmup (avg): ...,
  Inference (avg): ...`` -> ``mean`` if no stats line, and ``first_inference_ms``;
  ``Overall peak memory footprint (MB) via periodic monitoring: X`` -> ``peak_rss_mb``.
  p50 / p90 are not printed by either tool and stay None.

Core ML artifacts are skipped (Apple devices only: use the iOS app and
:mod:`sam_edge.bench.devices.ingest`), ONNX ones too (use an ``ssh://`` device); both are listed in
``skipped``. ``out_dir`` gets ``timings.json`` and ``logs/<artifact>.log`` (the raw tool output).
"""
from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any, Optional, Sequence

from sam_edge.bench.devices.records import DeviceError, artifact_record, latency_stats
from sam_edge.utils.io import write_json_atomic

DEVICE_TOOLS = {"executorch": "executor_runner", "tflite": "benchmark_model"}
SKIP_NOTES = {
    "coreml": "Core ML runs on Apple devices only: benchmark it with the iOS app and sam_edge.bench.devices.ingest",
    "onnx": "no ONNX Runtime benchmark tool on adb devices: use an ssh:// device",
}

_FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf"
_ET_LOADED = re.compile(rf"Model loaded in ({_FLOAT}) ms")
_ET_ITER = re.compile(rf"Iteration (\d+) of (\d+): ({_FLOAT}) ms")
_ET_TOTAL = re.compile(rf"Model executed successfully (\d+) time\(s\) in ({_FLOAT}) ms")
_ET_OK = re.compile(r"Model executed successfully")
_TF_INIT = re.compile(rf"Initialized session in ({_FLOAT}) ?ms")
_TF_STAT = re.compile(r"\bcount=(\d+)(?P<rest>[^\n]*)")
_TF_KV = re.compile(rf"\b(first|curr|min|max|avg|std)=({_FLOAT})")
_TF_TIMINGS = re.compile(r"Inference timings in us:(?P<rest>[^\n]*)")
_TF_PEAK = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: ({_FLOAT})")
_ERROR_LINE = re.compile(r"^(?:E |ERROR|F |Error|error:|Aborted|.*\b(?:failed|Failed|not found)\b).*$", re.M)


def parse_spec(spec: str) -> str:
    if not isinstance(spec, str) or not spec.startswith("adb://") or not spec[len("adb://"):].strip("/"):
        raise ValueError(f"malformed adb device spec {spec!r}: expected adb://SERIAL (a serial listed by `adb devices`)")
    serial = spec[len("adb://"):].strip("/")
    if any(c.isspace() for c in serial) or "/" in serial:
        raise ValueError(f"malformed adb device spec {spec!r}: the serial has spaces or slashes")
    return serial


def _error_summary(text: str, rc: Optional[int]) -> str:
    errs = [m.group(0).strip() for m in _ERROR_LINE.finditer(text)]
    errs = [e for e in errs if e]
    tail = errs[-3:] if errs else [ln for ln in text.strip().splitlines()[-3:]]
    return (f"exit {rc}: " if rc else "") + (" | ".join(tail) or "no output")


def parse_executor_runner(text: str, warmup: int = 0, rc: Optional[int] = 0) -> dict[str, Any]:
    """Fields of a record (``load_s``, ``latency_ms``, ``error``, ``note``) from
    ``executor_runner`` output."""
    out: dict[str, Any] = {"load_s": None, "latency_ms": None, "error": None, "note": None}
    m = _ET_LOADED.search(text)
    if m:
        out["load_s"] = float(m.group(1)) / 1e3
    iters = [(int(i), float(v)) for i, _, v in _ET_ITER.findall(text)]
    total = _ET_TOTAL.search(text)
    if iters:
        kept = [v for i, v in iters if i > warmup] or [v for _, v in iters]
        out["latency_ms"] = latency_stats(kept)
        if len(kept) == len(iters) and warmup:
            out["note"] = f"fewer than {warmup + 1} iterations: warm-up runs not dropped"
    elif total:
        n, ms = int(total.group(1)), float(total.group(2))
        out["latency_ms"] = {"mean": ms / max(n, 1), "n": n}
        out["note"] = (f"executor_runner printed only the total ({ms:.3f} ms for {n} executions, "
                       f"warm-up included): mean only")
    if rc or not _ET_OK.search(text):
        out["error"] = "executor_runner failed: " + _error_summary(text, rc)
    elif out["latency_ms"] is None:
        out["error"] = "executor_runner printed no timing (too old? needs 'Model executed successfully N time(s) in X ms.')"
    return out


def parse_benchmark_model(text: str, rc: Optional[int] = 0) -> dict[str, Any]:
    """Fields of a record from TFLite ``benchmark_model`` output (microseconds -> ms)."""
    out: dict[str, Any] = {"load_s": None, "latency_ms": None, "error": None, "peak_rss_mb": None,
                           "first_inference_ms": None}
    m = _TF_INIT.search(text)
    if m:
        out["load_s"] = float(m.group(1)) / 1e3
    stats = list(_TF_STAT.finditer(text))
    timings = _TF_TIMINGS.search(text)
    if timings:
        kv = dict(re.findall(rf"(Init|First inference|Warmup \(avg\)|Inference \(avg\)): ({_FLOAT})", timings["rest"]))
        if "First inference" in kv:
            out["first_inference_ms"] = float(kv["First inference"]) / 1e3
        if out["load_s"] is None and "Init" in kv:
            out["load_s"] = float(kv["Init"]) / 1e6
    if stats:
        last = stats[-1]
        kv = {k: float(v) / 1e3 for k, v in _TF_KV.findall(last["rest"])}
        n = int(last.group(1))
        if "min" in kv:
            lat = {"min": kv["min"], "mean": kv.get("avg"), "std": kv.get("std"), "n": n, "max": kv.get("max")}
        else:  # count=N curr=C(all same)
            c = kv.get("curr")
            lat = {"min": c, "p50": c, "p90": c, "mean": c, "std": 0.0, "n": n, "max": c}
        out["latency_ms"] = lat
    elif timings:
        avg = re.search(rf"Inference \(avg\): ({_FLOAT})", timings["rest"])
        if avg:
            out["latency_ms"] = {"mean": float(avg.group(1)) / 1e3}
    m = _TF_PEAK.search(text)
    if m and float(m.group(1)) > 0:
        out["peak_rss_mb"] = float(m.group(1))
    if rc or not timings:
        out["error"] = "benchmark_model failed: " + _error_summary(text, rc)
    return out


class _Adb:
    def __init__(self, adb: str, serial: str, timeout: float):
        self.adb, self.serial, self.timeout = adb, serial, timeout

    def __call__(self, *args: str, timeout: Optional[float] = None, device: bool = True) -> subprocess.CompletedProcess:
        argv = [self.adb, *(["-s", self.serial] if device else []), *args]
        try:
            p = subprocess.run(argv, capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL,
                               timeout=timeout or self.timeout)
        except FileNotFoundError:
            raise DeviceError(f"cannot run {self.adb!r}: adb is not installed or not on PATH "
                              "(Android SDK platform-tools; Debian: apt-get install adb)") from None
        except subprocess.TimeoutExpired:
            raise DeviceError(f"adb device {self.serial}: `adb {' '.join(args)}` timed out after "
                              f"{timeout or self.timeout:.0f} s") from None
        return p

    def shell(self, cmd: str, timeout: Optional[float] = None) -> subprocess.CompletedProcess:
        return self("shell", cmd, timeout=timeout)


def _check_listed(adb: _Adb) -> None:
    p = adb("devices", device=False)
    if p.returncode != 0:
        raise DeviceError(f"`{adb.adb} devices` failed (exit {p.returncode}): {(p.stderr or p.stdout).strip()}")
    states = {}
    for line in p.stdout.splitlines():
        if "\t" in line and not line.startswith(("List of devices", "*")):
            s, state = line.split("\t", 1)
            states[s.strip()] = state.strip()
    if adb.serial not in states:
        listed = ", ".join(f"{s} ({st})" for s, st in states.items()) or "none"
        raise DeviceError(f"adb device {adb.serial} is not listed by `adb devices` (listed: {listed}); "
                          "check the cable / `adb connect HOST:PORT` and the serial")
    if states[adb.serial] != "device":
        hint = {"unauthorized": ": accept the USB debugging prompt on the device",
                "offline": ": reconnect it or restart adb (`adb kill-server`)"}.get(states[adb.serial], "")
        raise DeviceError(f"adb device {adb.serial} is {states[adb.serial]}, not ready{hint}")


def _check_tool(adb: _Adb, fmt: str, path: str) -> None:
    p = adb.shell(f"ls {shlex.quote(path)}")
    text = p.stdout + p.stderr
    if p.returncode != 0 or "No such file" in text or path not in text:
        name = DEVICE_TOOLS[fmt]
        what = "ExecuTorch executor_runner" if fmt == "executorch" else "TFLite benchmark_model"
        raise DeviceError(f"device {adb.serial} has no {what} at {path}: push it with "
                          f"`adb -s {adb.serial} push {name} {path} && adb -s {adb.serial} shell chmod +x {path}` "
                          f"(built for the device's ABI) or pass its path")


def _getprop(adb: _Adb, prop: str) -> Optional[str]:
    p = adb.shell(f"getprop {prop}", timeout=30)
    return p.stdout.strip() or None if p.returncode == 0 else None


def _artifacts(artifact_dir: Path) -> list[dict]:
    from sam_edge.runtime.manifest import load_manifest

    return list(load_manifest(artifact_dir)["artifacts"])


def run_adb(spec: str, artifact_dir, out_dir, runs: int = 20, warmup: int = 3, threads: Optional[int] = None,
            adb: str = "adb", executor_runner: str = "/data/local/tmp/executor_runner",
            benchmark_model: str = "/data/local/tmp/benchmark_model", *, remote_dir: str = "/data/local/tmp/sam-edge-bench",
            formats: Optional[Sequence[str]] = None, timeout: float = 1800.0, cleanup: bool = True) -> dict[str, Any]:
    """Push the ``.pte`` / ``.tflite`` artifacts of the export directory ``artifact_dir`` to
    ``adb://SERIAL``, time each with its tool, write ``out_dir/timings.json`` and return it
    (plus ``"device": spec``). ``timeout``: seconds per tool run. A tool run that fails gives a
    record with ``error``; a missing / unready device or a missing tool raises
    :class:`DeviceError`; a missing or tampered manifest raises
    :class:`sam_edge.runtime.ManifestError`."""
    serial = parse_spec(spec)
    artifact_dir, out_dir = Path(artifact_dir), Path(out_dir)
    arts = _artifacts(artifact_dir)
    tools = {"executorch": executor_runner, "tflite": benchmark_model}
    todo, skipped = [], []
    for a in arts:
        if formats and a["format"] not in formats:
            continue
        if a["format"] in tools:
            todo.append(a)
        else:
            skipped.append({"file": a["file"], "format": a["format"], "note": SKIP_NOTES.get(a["format"], "no adb tool for this format")})
    call = _Adb(adb, serial, timeout)
    _check_listed(call)
    for fmt in sorted({a["format"] for a in todo}):
        _check_tool(call, fmt, tools[fmt])

    env = {"transport": "adb", "serial": serial, "model": _getprop(call, "ro.product.model"),
           "os": None, "abi": _getprop(call, "ro.product.cpu.abi"), "runs": runs, "warmup": warmup,
           "threads": threads}
    release = _getprop(call, "ro.build.version.release")
    env["os"] = f"Android {release}" if release else None
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    records = []
    if todo:
        p = call.shell(f"mkdir -p {shlex.quote(remote_dir)}")
        if p.returncode != 0:
            raise DeviceError(f"device {serial}: cannot create {remote_dir}: {(p.stderr or p.stdout).strip()}")
    for a in todo:
        fmt, name = a["format"], a["file"]
        remote = f"{remote_dir}/{name}"
        base = dict(role=a.get("role"), format=fmt, precision=a.get("precision"), threads=threads, device=spec,
                    inputs="runner-generated", tool=DEVICE_TOOLS[fmt])
        p = call("push", str(artifact_dir / name), remote)
        if p.returncode != 0:
            records.append(artifact_record(name, **base, error=f"adb push failed: {(p.stderr or p.stdout).strip()}"))
            continue
        q = shlex.quote(remote)
        if fmt == "executorch":
            cmd = f"{shlex.quote(executor_runner)} --model_path={q} --num_executions={int(runs) + int(warmup)}"
            if threads is not None:
                cmd += f" --cpu_threads={int(threads)}"
        else:
            cmd = (f"{shlex.quote(benchmark_model)} --graph={q} --num_runs={int(runs)} --warmup_runs={int(warmup)}"
                   " --min_secs=0 --warmup_min_secs=0")
            if threads is not None:
                cmd += f" --num_threads={int(threads)}"
        p = call.shell(cmd)
        text = (p.stdout or "") + ("\n" + p.stderr if p.stderr else "")
        (logs / f"{name}.log").write_text(f"$ {cmd}\n{text}")
        parsed = (parse_executor_runner(text, warmup, p.returncode) if fmt == "executorch"
                  else parse_benchmark_model(text, p.returncode))
        rec = artifact_record(name, **base, **parsed, command=cmd)
        records.append(rec)
        if cleanup:
            call.shell(f"rm -f {q}")
    result = {"env": env, "artifacts": records, "pipelines": [], "skipped": skipped, "device": spec}
    write_json_atomic(out_dir / "timings.json", result)
    return result
