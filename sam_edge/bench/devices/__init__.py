"""Benchmarks on other machines than this one.

* ``ssh://user@host[:port]`` -- :func:`sam_edge.bench.devices.ssh.run_ssh` copies the export directory,
  the inputs and the pure-Python ``benchmarks`` + ``sam_edge`` packages to a temporary directory on
  the host, runs ``python -m sam_edge.bench.runner`` there and copies its output directory back.
* ``adb://SERIAL`` -- :func:`sam_edge.bench.devices.adb.run_adb` pushes the ``.pte`` / ``.tflite``
  artifacts to an Android device and times them with ExecuTorch's ``executor_runner`` and
  TFLite's ``benchmark_model`` (both pushed to the device beforehand).
* iOS -- the app's benchmark mode (or an Xcode Core ML performance report) writes a file on the
  Mac side; :func:`sam_edge.bench.devices.ingest.ingest` converts it.

Every path returns the ``timings.json`` shape of :mod:`sam_edge.bench.runner` (``env``,
``artifacts`` with one record per artifact, ``pipelines``) plus ``"device": spec``.
Device problems (unreachable host, refused key, no runner binary, runner failure) raise
:class:`DeviceError` with the host / serial and the tool's own message.
"""
from __future__ import annotations

from typing import Any, Optional

from sam_edge.bench.devices.records import (  # noqa: F401 (the package's public names)
    LATENCY_KEYS, DeviceError, artifact_record, empty_latency, latency_stats, parse_artifact_name)

__all__ = ["DeviceError", "artifact_record", "latency_stats", "parse_artifact_name", "run_device"]


def run_device(spec: str, artifact_dir, out_dir, *, inputs_npz=None, runs: int = 20, warmup: int = 3,
               threads: Optional[int] = None, **kwargs: Any) -> dict[str, Any]:
    """Dispatch on the spec's scheme: ``ssh://`` (needs ``inputs_npz``) or ``adb://``."""
    if spec.startswith("ssh://"):
        from sam_edge.bench.devices.ssh import run_ssh

        if inputs_npz is None:
            raise ValueError("ssh:// devices run sam_edge.bench.runner, which needs an inputs .npz")
        return run_ssh(spec, artifact_dir, inputs_npz, out_dir, runs, warmup, threads, **kwargs)
    if spec.startswith("adb://"):
        from sam_edge.bench.devices.adb import run_adb

        return run_adb(spec, artifact_dir, out_dir, runs, warmup, threads, **kwargs)
    raise ValueError(f"unknown device spec {spec!r}: expected ssh://user@host[:port] or adb://SERIAL")
