"""ExecuTorch runtime backend (format ``executorch``): a ``.pte`` program (XNNPACK delegate) run
through ``executorch.runtime``. ``executorch`` is imported in :meth:`ExecuTorchBackend.load`
only, never at import time.

A ``.pte`` program has positional inputs / outputs; their names are the canonical ones of the
export wrappers (``export/wrappers.py``), chosen by arity: 1 input is the image encoder, 5 inputs
the prompt encoder + mask decoder. (Copied here: ``sam_edge`` never imports ``export``.)

Threads: XNNPACK runs on ExecuTorch's process-wide threadpool. ``threads`` (or the
``SAM_EDGE_THREADS`` environment variable) sets its size; by default min(4, available cores).
The pool is shared by every loaded program, so the last ``load`` with a different count wins.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from .backends import BackendUnavailable

ENCODER_INPUT_NAMES = ("image",)
ENCODER_OUTPUT_NAMES = ("image_embeddings",)
DECODER_INPUT_NAMES = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input")
DECODER_OUTPUT_NAMES = ("low_res_masks", "iou_predictions")
_NAMES_BY_ARITY = {
    1: (ENCODER_INPUT_NAMES, ENCODER_OUTPUT_NAMES),
    5: (DECODER_INPUT_NAMES, DECODER_OUTPUT_NAMES),
}
_PIP_HINT = "format 'executorch' needs the ExecuTorch runtime: pip install executorch"


def default_threads() -> int:
    env = os.environ.get("SAM_EDGE_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def set_threads(threads: int) -> int:
    """Resize ExecuTorch's threadpool (used by XNNPACK) if needed; returns the thread count."""
    from executorch.extension.pybindings import portable_lib

    get = getattr(portable_lib, "_threadpool_get_thread_count", None)
    reset = getattr(portable_lib, "_unsafe_reset_threadpool", None)
    if reset is None:
        return get() if get else threads
    if get is None or get() != threads:
        reset(int(threads))
    return get() if get else threads


class ExecuTorchSession:
    """``run(dict of numpy) -> dict of numpy`` over the ``forward`` method of a .pte program."""

    def __init__(self, path: Path, threads: Optional[int] = None, method: str = "forward") -> None:
        import torch
        from executorch.runtime import Runtime

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ExecuTorch program {self.path} does not exist")
        self.threads = set_threads(threads or default_threads())
        self._torch = torch
        program = Runtime.get().load_program(self.path)
        self._method = program.load_method(method)
        if self._method is None:
            raise RuntimeError(f"{self.path}: no method {method!r} (has {sorted(program.method_names)})")
        meta = self._method.metadata
        n_in, n_out = meta.num_inputs(), meta.num_outputs()
        if n_in not in _NAMES_BY_ARITY:
            raise RuntimeError(
                f"{self.path}: {n_in} inputs; expected 1 (image encoder) or 5 (mask decoder)")
        ins, outs = _NAMES_BY_ARITY[n_in]
        if n_out != len(outs):
            raise RuntimeError(f"{self.path}: {n_out} outputs; expected {len(outs)} ({', '.join(outs)})")
        self.input_names = list(ins)
        self.output_names = list(outs)
        self._input_dtypes = [self._numpy_dtype(meta.input_tensor_meta(i).dtype()) for i in range(n_in)]

    @staticmethod
    def _numpy_dtype(et_dtype) -> np.dtype:
        name = str(et_dtype).rsplit(".", 1)[-1].lower()
        table = {"float": np.float32, "float32": np.float32, "half": np.float16, "float16": np.float16,
                 "long": np.int64, "int64": np.int64, "int": np.int32, "int32": np.int32, "bool": np.bool_}
        return np.dtype(table.get(name, np.float32))

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [k for k in self.input_names if k not in inputs]
        if missing:
            raise KeyError(f"{self.path.name}: missing inputs {missing} (expects {self.input_names})")
        args = [
            self._torch.from_numpy(np.ascontiguousarray(np.asarray(inputs[k], dtype=dt)))
            for k, dt in zip(self.input_names, self._input_dtypes)
        ]
        outs = self._method.execute(args)
        # copy: output tensors may be backed by the program's planned memory, reused on the next run
        return {k: np.array(o.detach().numpy() if hasattr(o, "detach") else o, copy=True)
                for k, o in zip(self.output_names, outs)}


class ExecuTorchBackend:
    name = "executorch"

    def __init__(self, threads: Optional[int] = None) -> None:
        self.threads = threads

    def load(self, path: Path) -> ExecuTorchSession:
        try:
            import executorch.runtime  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailable(_PIP_HINT) from exc
        return ExecuTorchSession(Path(path), self.threads)

    def versions(self) -> dict[str, str]:
        import importlib.metadata as md

        try:
            return {"executorch": md.version("executorch")}
        except md.PackageNotFoundError as exc:
            raise BackendUnavailable(_PIP_HINT) from exc
