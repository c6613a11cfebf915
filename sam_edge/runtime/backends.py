"""Registry of artifact runtimes, keyed by the manifest's ``format`` field.

A backend turns a file into a :class:`Session` whose ``run(inputs)`` maps a dict of named numpy
arrays to a dict of named numpy outputs. ``onnx`` (onnxruntime) lives here; ``executorch``
(ExecuTorch Python runtime), ``tflite`` (ai-edge-litert Interpreter) and ``coreml`` (coremltools,
prediction on macOS only) live in their own modules, named here as ``"module:Class"`` and
imported when first asked for. Their runtime libraries are imported inside ``load``, never at
import time. More formats plug in with :func:`register_backend`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Protocol

import numpy as np


class BackendUnavailable(RuntimeError):
    """The runtime library for an artifact format is not installed, or the format is unknown."""


class Session(Protocol):
    input_names: list[str]
    output_names: list[str]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class Backend(Protocol):
    name: str

    def load(self, path: Path) -> Session: ...

    def versions(self) -> dict[str, str]: ...


class _OrtSession:
    def __init__(self, path: Path, providers: list[str] | None = None, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        self._sess = ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])
        self.input_names = [i.name for i in self._sess.get_inputs()]
        self.output_names = [o.name for o in self._sess.get_outputs()]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {k: np.ascontiguousarray(inputs[k]) for k in self.input_names}
        outs = self._sess.run(self.output_names, feed)
        return dict(zip(self.output_names, outs))


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, providers: list[str] | None = None, threads: int | None = None) -> None:
        self.providers = providers
        self.threads = threads

    def load(self, path: Path) -> _OrtSession:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailable(
                "format 'onnx' needs onnxruntime: pip install 'sam-edge[export]' (or onnxruntime)"
            ) from exc
        return _OrtSession(Path(path), self.providers, self.threads)

    def versions(self) -> dict[str, str]:
        import onnxruntime

        return {"onnxruntime": onnxruntime.__version__}


# format -> factory returning a backend instance, or "module:Class" imported on first use
BACKENDS: dict[str, Callable[[], Backend] | str] = {
    "onnx": OnnxRuntimeBackend,
    "executorch": "sam_edge.runtime.backend_executorch:ExecuTorchBackend",
    "tflite": "sam_edge.runtime.backend_tflite:LiteRTBackend",
    "coreml": "sam_edge.runtime.backend_coreml:CoreMLBackend",
}


def register_backend(fmt: str, factory: Callable[[], Backend] | str) -> None:
    """Register (or replace) the backend for artifact format ``fmt``."""
    BACKENDS[fmt] = factory


def get_backend(fmt: str) -> Backend:
    if fmt not in BACKENDS:
        raise BackendUnavailable(
            f"no runtime backend registered for artifact format {fmt!r}; known: {sorted(BACKENDS)}"
        )
    factory = BACKENDS[fmt]
    if isinstance(factory, str):
        import importlib

        module, _, cls = factory.partition(":")
        factory = BACKENDS[fmt] = getattr(importlib.import_module(module), cls)
    return factory()
