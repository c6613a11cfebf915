"""Core ML runtime backend (format ``coreml``): ``.mlpackage`` ML programs run through
coremltools' ``MLModel.predict``, which needs macOS (the Core ML framework). On other systems
:meth:`CoreMLBackend.load` raises :class:`BackendUnavailable`; use the onnx / executorch /
tflite artifacts of the same export directory there. coremltools is imported inside ``load``."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Mapping

import numpy as np

from .backends import BackendUnavailable

# Canonical feature names (copies of export.wrappers'; sam_edge never imports ``export``).
ENCODER_INPUT_NAMES = ("image",)
ENCODER_OUTPUT_NAMES = ("image_embeddings",)
DECODER_INPUT_NAMES = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input")
DECODER_OUTPUT_NAMES = ("low_res_masks", "iou_predictions")

MACOS_ONLY = ("Core ML prediction needs macOS; on Linux use the onnx/executorch/tflite artifacts in the "
              "same directory")


class _CoreMLSession:
    def __init__(self, path: Path, compute_units: str = "ALL") -> None:
        import coremltools as ct

        self._model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, compute_units))
        spec = self._model.get_spec()
        self.input_names = [i.name for i in spec.description.input]
        self.output_names = [o.name for o in spec.description.output]
        known = {ENCODER_INPUT_NAMES: ENCODER_OUTPUT_NAMES, DECODER_INPUT_NAMES: DECODER_OUTPUT_NAMES}
        if known.get(tuple(self.input_names)) != tuple(self.output_names):
            raise BackendUnavailable(
                f"{path}: inputs {self.input_names} / outputs {self.output_names} are not the canonical "
                f"encoder {ENCODER_INPUT_NAMES}->{ENCODER_OUTPUT_NAMES} or decoder "
                f"{DECODER_INPUT_NAMES}->{DECODER_OUTPUT_NAMES} features"
            )

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {k: np.ascontiguousarray(inputs[k], dtype=np.float32) for k in self.input_names}
        out = self._model.predict(feed)
        return {k: np.asarray(out[k], dtype=np.float32) for k in self.output_names}


class CoreMLBackend:
    name = "coreml"

    def __init__(self, compute_units: str = "ALL") -> None:
        # coremltools.ComputeUnit name: ALL, CPU_ONLY, CPU_AND_GPU, CPU_AND_NE
        self.compute_units = compute_units

    def load(self, path: Path) -> _CoreMLSession:
        if sys.platform != "darwin":
            raise BackendUnavailable(f"{MACOS_ONLY} (cannot run {Path(path).name} on {sys.platform})")
        try:
            import coremltools  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailable(
                "format 'coreml' needs coremltools: pip install 'sam-edge[export]' (or coremltools)"
            ) from exc
        return _CoreMLSession(Path(path), self.compute_units)

    def versions(self) -> dict[str, str]:
        try:
            import coremltools
        except ImportError:
            return {}
        return {"coremltools": coremltools.__version__}
