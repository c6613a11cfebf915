"""Runtime backend for ``format: "tflite"`` artifacts: the ai-edge-litert ``Interpreter``.

A ``.tflite`` file written by ``export.tflite_export`` (litert-torch) has one signature,
``serving_default``, whose inputs are ``args_0 ..`` and outputs ``output_0 ..`` in the order of
the wrapper's ``forward``. The session exposes the canonical names instead (chosen by the number
of inputs: 1 -> encoder, 5 -> decoder), so it is interchangeable with the onnxruntime session.

The decoder graph has a *fixed* number of points N (litert-torch could not convert a dynamic
one): the session fills the unused slots up to N with point (0, 0) and label ``PAD_LABEL`` (-2),
which the graph masks out of attention (exactly the unpadded result), and refuses more than N
points with a ``ValueError``. Quantised inputs / outputs (a full-integer int8 graph) are
quantised / dequantised here with the tensor's scale and zero point, so callers always pass and
get float32.

``ai_edge_litert`` is imported inside :meth:`LiteRTBackend.load`, never at import time.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from .backends import BackendUnavailable

# Canonical names (the same tuples as export.wrappers; sam_edge never imports ``export``).
ENCODER_INPUT_NAMES = ("image",)
ENCODER_OUTPUT_NAMES = ("image_embeddings",)
DECODER_INPUT_NAMES = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input")
DECODER_OUTPUT_NAMES = ("low_res_masks", "iou_predictions")
SIGNATURE_KEY = "serving_default"
# Label of an unused point slot: the exported decoder masks these tokens out of attention, so a
# padded prompt gives exactly the unpadded result (label -1 is SAM's "not a point" token, which
# the model does see).
PAD_LABEL = -2.0


def _index(name: str) -> int:
    m = re.search(r"(\d+)$", name)
    return int(m.group(1)) if m else 0


def canonical_names(num_inputs: int, num_outputs: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Canonical (input names, output names) of a graph by its arity."""
    if (num_inputs, num_outputs) == (1, 1):
        return ENCODER_INPUT_NAMES, ENCODER_OUTPUT_NAMES
    if (num_inputs, num_outputs) == (5, 2):
        return DECODER_INPUT_NAMES, DECODER_OUTPUT_NAMES
    raise ValueError(
        f"a tflite graph with {num_inputs} inputs / {num_outputs} outputs is neither a SAM encoder (1 / 1) "
        "nor a SAM decoder (5 / 2)"
    )


def pad_points(coords: np.ndarray, labels: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """1 x n x 2 coords, 1 x n labels -> 1 x max_points x 2, 1 x max_points float32, padded with
    (0, 0) / label :data:`PAD_LABEL`. More than ``max_points`` points raise a ``ValueError``."""
    coords = np.asarray(coords, np.float32)
    labels = np.asarray(labels, np.float32)
    if coords.ndim != 3 or coords.shape[0] != 1 or coords.shape[2] != 2:
        raise ValueError(f"point_coords: expected shape 1 x N x 2, got {coords.shape}")
    labels = labels.reshape(1, -1)
    n = coords.shape[1]
    if labels.shape[1] != n:
        raise ValueError(f"point_labels: expected {n} labels (one per point), got {labels.shape[1]}")
    if n > max_points:
        raise ValueError(
            f"point_coords / point_labels: {n} points given (a box counts as 2, and a prompt without a box "
            f"carries 1 padding point), but this tflite decoder takes at most max_points={max_points}; "
            "re-export with a larger max_points"
        )
    if n == max_points:
        return coords, labels
    pc = np.zeros((1, max_points, 2), np.float32)
    pl = np.full((1, max_points), PAD_LABEL, np.float32)
    pc[:, :n] = coords
    pl[:, :n] = labels
    return pc, pl


def _quant(detail: dict[str, Any]) -> Optional[tuple[float, int]]:
    scale, zero = detail.get("quantization", (0.0, 0))
    if np.dtype(detail["dtype"]).kind in "iu" and scale:
        return float(scale), int(zero)
    return None


class LiteRTSession:
    """One ``.tflite`` graph behind the canonical input / output names."""

    def __init__(self, path: Path, num_threads: Optional[int] = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        kwargs: dict[str, Any] = {"model_path": str(self.path)}
        if num_threads:
            kwargs["num_threads"] = int(num_threads)
        self._interpreter = Interpreter(**kwargs)
        signatures = self._interpreter.get_signature_list()
        key = SIGNATURE_KEY if SIGNATURE_KEY in signatures else next(iter(signatures), None)
        if key is None:
            raise ValueError(f"{self.path}: the tflite model has no signature")
        self._runner = self._interpreter.get_signature_runner(key)
        in_det = self._runner.get_input_details()
        out_det = self._runner.get_output_details()
        self._in_keys = sorted(in_det, key=_index)
        self._out_keys = sorted(out_det, key=_index)
        ins, outs = canonical_names(len(self._in_keys), len(self._out_keys))
        self.input_names = list(ins)
        self.output_names = list(outs)
        self._in = {name: in_det[k] for name, k in zip(ins, self._in_keys)}
        self._out = {name: out_det[k] for name, k in zip(outs, self._out_keys)}
        self.max_points: Optional[int] = None
        if "point_coords" in self._in:
            sig = self._in["point_coords"].get("shape_signature", self._in["point_coords"]["shape"])
            n = int(sig[1])
            self.max_points = n if n > 0 else None  # -1: a dynamic number of points

    def input_details(self) -> dict[str, dict[str, Any]]:
        """Canonical name -> the interpreter's detail dict (shape, dtype, quantization)."""
        return dict(self._in)

    def output_details(self) -> dict[str, dict[str, Any]]:
        return dict(self._out)

    def _prepare(self, name: str, value: np.ndarray) -> np.ndarray:
        det = self._in[name]
        q = _quant(det)
        x = np.asarray(value, np.float32)
        if q is not None:
            info = np.iinfo(det["dtype"])
            x = np.clip(np.round(x / q[0] + q[1]), info.min, info.max)
        return np.ascontiguousarray(x.astype(det["dtype"]))

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise KeyError(f"{self.path.name}: missing inputs {missing}; expected {self.input_names}")
        values = {n: inputs[n] for n in self.input_names}
        if self.max_points is not None:
            values["point_coords"], values["point_labels"] = pad_points(
                values["point_coords"], values["point_labels"], self.max_points
            )
        feed = {k: self._prepare(n, values[n]) for n, k in zip(self.input_names, self._in_keys)}
        raw = self._runner(**feed)
        out = {}
        for name, k in zip(self.output_names, self._out_keys):
            y = raw[k]
            q = _quant(self._out[name])
            out[name] = ((y.astype(np.float32) - q[1]) * q[0]) if q is not None else np.asarray(y, np.float32)
        return out


class LiteRTBackend:
    """``format: "tflite"``: ai-edge-litert's Interpreter (XNNPACK on CPU)."""

    name = "ai-edge-litert"

    def __init__(self, num_threads: Optional[int] = None) -> None:
        self.num_threads = num_threads

    def load(self, path: Path) -> LiteRTSession:
        try:
            import ai_edge_litert.interpreter  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailable(
                "format 'tflite' needs ai-edge-litert: pip install 'sam-edge[export]' (or ai-edge-litert)"
            ) from exc
        return LiteRTSession(Path(path), self.num_threads)

    def versions(self) -> dict[str, str]:
        import importlib.metadata as md

        try:
            return {"ai-edge-litert": md.version("ai-edge-litert")}
        except md.PackageNotFoundError:
            return {}
