"""Format ``coreml``: its spec, its exporter (encoder_<precision>.mlpackage +
decoder_<precision>.mlpackage + manifest.json) and its runtime backend (coremltools'
``MLModel.predict``: macOS only; elsewhere :meth:`CoreMLBackend.load` raises BackendUnavailable).

ML program (``mlprogram``) packages for ``minimum_deployment_target=iOS17`` (macOS 14), converted
by coremltools from ``torch.export`` (``torch.export.export(...).run_decompositions({})``; the
training dialect is rejected by coremltools). Inputs and outputs are float32 (fp16 packages
cast inside the graph) and carry the canonical names of :mod:`export.wrappers`. The decoder takes
a variable number of points: ``point_coords`` 1 x N x 2 and ``point_labels`` 1 x N with N a shape
range 1..64 (``MAX_POINTS``).

Precisions: ``fp16`` (compute precision float16, the usual choice for the Neural Engine),
``fp32``; ``int8_weights`` (alias ``int8``: ``linear_quantize_weights``, int8 symmetric per output
channel, applied to the fp16 package: weights stored as int8 and dequantised on load,
activations stay fp16); ``palettize4`` / ``palettize6`` (``palettize_weights``, k-means
look-up table of 16 / 64 fp16 values per tensor).

Verification: Core ML prediction needs macOS. On macOS (``sys.platform == "darwin"``) every
artifact is run through :class:`CoreMLBackend` (below) and checked against
eager PyTorch (:func:`export.verify.verify_artifact`). On Linux the saved package's *spec* is
checked instead (:func:`spec_check`: names, shapes, the points shape range, dtypes, mlprogram /
iOS17, compressed weights really present) and, for compressed precisions, the weight
reconstruction error against the fp16 package; the record says ``"passed": None`` and that
prediction did not run.
"""
from __future__ import annotations

import contextlib
import io
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np
import torch

from sam_edge.export.common import ExportDir, ExportError, format_error, load_images, path_size
from sam_edge.export.manifest import library_versions
from sam_edge.export.verify import VerificationError
from sam_edge.export.wrappers import (
    DECODER_INPUT_NAMES,
    DECODER_OUTPUT_NAMES,
    ENCODER_INPUT_NAMES,
    ENCODER_OUTPUT_NAMES,
    DecoderWrapper,
    EncoderWrapper,
)
from sam_edge.formats import POINTS_AXES, FormatSpec
from sam_edge.runtime.backends import BackendUnavailable

FORMAT = "coreml"
SPEC = FormatSpec(
    name=FORMAT, suffix=".mlpackage",
    precisions=("fp16", "fp32", "int8_weights", "palettize4", "palettize6"),
    aliases={"int8": ("int8_weights",), "palettize": ("palettize4", "palettize6")},
    toolchain=("coremltools",), runtime_packages=("coremltools",),
    decoder_dynamic_axes=POINTS_AXES,
    convert=f"{__name__}:export_coreml", backend=f"{__name__}:CoreMLBackend",
    platforms=("darwin",),
    description="Core ML mlprogram (runs on macOS only; spec-checked elsewhere)",
)
PRECISIONS = SPEC.precisions
ALIASES = SPEC.aliases
COMPRESSED = ("int8_weights", "palettize4", "palettize6")
MAX_POINTS = SPEC.max_points  # the prompt rule's limit (sam_edge.predictor.MAX_POINTS)
DECODER_DYNAMIC_AXES = SPEC.decoder_dynamic_axes
# iOS17 ML programs: Core ML specification version 8, MIL opset "CoreML7"
SPEC_VERSION = 8
MIL_OPSET = "CoreML7"
PREDICTION_NOT_RUN = "not run: Core ML prediction needs macOS"
# constexpr ops holding compressed weights (iOS16/17 and iOS18 spellings)
_CONSTEXPR = {
    "int8_weights": ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale"),
    "palettize4": ("constexpr_lut_to_dense",),
    "palettize6": ("constexpr_lut_to_dense",),
}
_DTYPES = {65568: "float32", 65552: "float16", 131104: "int32", 65600: "float64"}  # ArrayDataType enum values


def expand_precisions(precisions: Iterable[str]) -> list[str]:
    return SPEC.expand(list(precisions))


# -- conversion ---------------------------------------------------------------------------------
_OP_PATTERNS = (
    r"convert function for op '([\w.:]+)' not implemented",
    r"[Uu]nsupported fx node ([\w.:]+)",
    r"Torch `([\w.:]+)` op",
    r"converting '([\w.:]+)' op",
    r"(aten[:.]{1,2}[A-Za-z_0-9.]+)",
    r"op '([\w.:]+)'",
)


def _export_error(what: str, exc: BaseException, stage: str = "Core ML conversion") -> ExportError:
    return format_error("coreml", stage, what, exc, _OP_PATTERNS)


def convert_module(
    module: torch.nn.Module,
    args: tuple,
    input_names: Sequence[str],
    output_names: Sequence[str],
    precision: str = "fp16",
    dynamic_shapes: Any = None,
    what: str = "model",
):
    """``module(*args)`` -> in-memory ``ct.models.MLModel`` (mlprogram, iOS17) with float32 inputs
    and outputs named ``input_names`` / ``output_names``. Failures raise :class:`ExportError`
    naming format 'coreml' and the operator where the error names one."""
    import coremltools as ct

    module = module.eval()
    try:
        with torch.no_grad():
            ep = torch.export.export(module, args, dynamic_shapes=dynamic_shapes).run_decompositions({})
    except Exception as exc:  # noqa: BLE001
        raise _export_error(what, exc, "torch.export (before Core ML conversion)") from exc
    cp = {"fp16": ct.precision.FLOAT16, "fp32": ct.precision.FLOAT32}[precision]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            mlm = ct.convert(
                ep,
                convert_to="mlprogram",
                minimum_deployment_target=ct.target.iOS17,
                compute_precision=cp,
                outputs=[ct.TensorType(name=n, dtype=np.float32) for n in output_names],
            )
    except Exception as exc:  # noqa: BLE001
        raise _export_error(what, exc) from exc
    return _rename_io(mlm, input_names, output_names)


def _rename_io(mlm, input_names: Sequence[str], output_names: Sequence[str]):
    """Canonical feature names (ct.convert takes input names from forward()'s arguments; make sure)."""
    import coremltools as ct

    spec = mlm.get_spec()
    have_in = [i.name for i in spec.description.input]
    have_out = [o.name for o in spec.description.output]
    if have_in == list(input_names) and have_out == list(output_names):
        return mlm
    if len(have_in) != len(input_names) or len(have_out) != len(output_names):
        raise ExportError(f"Core ML model has inputs {have_in} / outputs {have_out}; expected "
                          f"{list(input_names)} / {list(output_names)} (format 'coreml')")
    for old, new in list(zip(have_in, input_names)) + list(zip(have_out, output_names)):
        if old != new:
            ct.utils.rename_feature(spec, old, new)
    return ct.models.MLModel(spec, weights_dir=mlm.weights_dir, skip_model_load=True)


def compress(mlm, precision: str):
    """fp16 ``mlm`` -> weight-compressed model (int8_weights / palettize4 / palettize6);
    returns (model, quantization record)."""
    import coremltools.optimize.coreml as cto

    if precision == "int8_weights":
        op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                         weight_threshold=2048)
        out = cto.linear_quantize_weights(mlm, config=cto.OptimizationConfig(global_config=op))
        return out, {"method": "coremltools.optimize.coreml.linear_quantize_weights", "weight_dtype": "int8",
                     "mode": "linear_symmetric", "granularity": "per_channel", "weight_threshold": 2048,
                     "activations": "fp16 (weights dequantised on load)", "base": "fp16"}
    nbits = {"palettize4": 4, "palettize6": 6}[precision]
    op = cto.OpPalettizerConfig(mode="kmeans", nbits=nbits, granularity="per_tensor", weight_threshold=2048)
    out = cto.palettize_weights(mlm, config=cto.OptimizationConfig(global_config=op))
    return out, {"method": "coremltools.optimize.coreml.palettize_weights", "mode": "kmeans", "nbits": nbits,
                 "granularity": "per_tensor", "weight_threshold": 2048, "lut_dtype": "fp16", "base": "fp16"}


# -- describing / checking a saved package ------------------------------------------------------
def _feature(f) -> dict[str, Any]:
    t = f.type.multiArrayType
    shape: list[Any] = [int(d) for d in t.shape]
    ranges = [(int(r.lowerBound), int(r.upperBound)) for r in t.shapeRange.sizeRanges]
    out: dict[str, Any] = {"name": f.name, "shape": shape, "dtype": _DTYPES.get(int(t.dataType), str(t.dataType))}
    if ranges:
        out["shape"] = [d if lo == hi else f"{lo}..{hi}" for d, (lo, hi) in zip(shape, ranges)]
        out["shape_range"] = [list(r) for r in ranges]
    return out


def describe_io(path: str | Path) -> tuple[list[dict], list[dict], Any]:
    """(inputs, outputs, spec) of a saved package; a dynamic axis reads 'lo..hi' in ``shape``
    and the ranges are listed in ``shape_range``."""
    import coremltools as ct

    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    return ([_feature(i) for i in spec.description.input], [_feature(o) for o in spec.description.output], spec)


def _op_types(spec) -> dict[str, int]:
    counts: dict[str, int] = {}
    for fn in spec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            for op in block.operations:
                counts[op.type] = counts.get(op.type, 0) + 1
    return counts


def expected_io(role: str, image_size: int, embed_dim: int, num_outputs: int) -> tuple[dict, dict]:
    """name -> expected shape (``None`` for the points axis, checked as a range) of inputs / outputs."""
    g = image_size // 16
    if role == "encoder":
        return {"image": [1, 3, image_size, image_size]}, {"image_embeddings": [1, embed_dim, g, g]}
    return ({"image_embeddings": [1, embed_dim, g, g], "point_coords": [1, None, 2], "point_labels": [1, None],
             "mask_input": [1, 1, 4 * g, 4 * g], "has_mask_input": [1]},
            {"low_res_masks": [1, num_outputs, 4 * g, 4 * g], "iou_predictions": [1, num_outputs]})


def spec_check(path: str | Path, role: str, precision: str, *, image_size: int, embed_dim: int, num_outputs: int,
               reference_size: Optional[int] = None) -> dict[str, Any]:
    """Check a saved .mlpackage without running it: mlprogram, spec version / MIL opset of iOS17,
    canonical input / output names, shapes, float32 dtypes, the decoder's points axis a range
    1..``MAX_POINTS`` (fixed elsewhere), and for compressed precisions the constexpr ops that hold
    compressed weights plus a package smaller than ``reference_size`` (the fp16 package).
    Returns the details with ``passed`` and ``failures``."""
    inputs, outputs, spec = describe_io(path)
    failures: list[str] = []
    kind = spec.WhichOneof("Type")
    if kind != "mlProgram":
        failures.append(f"model type {kind!r}, expected 'mlProgram'")
    if spec.specificationVersion < SPEC_VERSION:
        failures.append(f"specificationVersion {spec.specificationVersion} < {SPEC_VERSION} (iOS17)")
    opsets = sorted({fn.opset for fn in spec.mlProgram.functions.values()})
    if MIL_OPSET not in opsets:
        failures.append(f"MIL opset {opsets}, expected {MIL_OPSET!r} (iOS17)")
    exp_in, exp_out = expected_io(role, image_size, embed_dim, num_outputs)
    for kind_name, got, exp in (("input", inputs, exp_in), ("output", outputs, exp_out)):
        names = [f["name"] for f in got]
        if names != list(exp):
            failures.append(f"{kind_name} names {names}, expected {list(exp)}")
            continue
        for f in got:
            want = exp[f["name"]]
            ranges = f.get("shape_range")
            if f["dtype"] != "float32":
                failures.append(f"{kind_name} {f['name']}: dtype {f['dtype']}, expected float32")
            if len(f["shape"]) != len(want):
                failures.append(f"{kind_name} {f['name']}: rank {len(f['shape'])}, expected {len(want)}")
                continue
            for axis, w in enumerate(want):
                rng = tuple(ranges[axis]) if ranges else None
                if w is None:
                    if rng != (1, MAX_POINTS):
                        failures.append(f"{kind_name} {f['name']} axis {axis}: range {rng}, expected (1, {MAX_POINTS})")
                elif (rng is not None and rng != (w, w)) or (rng is None and f["shape"][axis] != w):
                    failures.append(f"{kind_name} {f['name']} axis {axis}: {f['shape'][axis]}, expected {w}")
    ops = _op_types(spec)
    size = path_size(path)
    details: dict[str, Any] = {
        "model_type": kind, "specification_version": int(spec.specificationVersion), "mil_opsets": opsets,
        "deployment_target": "iOS17" if spec.specificationVersion >= SPEC_VERSION else "older than iOS17",
        "inputs": inputs, "outputs": outputs, "size_bytes": size,
    }
    if precision in COMPRESSED:
        constexpr = {k: v for k, v in ops.items() if k.startswith("constexpr_")}
        details["constexpr_ops"] = constexpr
        if not any(constexpr.get(k) for k in _CONSTEXPR[precision]):
            failures.append(f"no compressed weights: none of {list(_CONSTEXPR[precision])} in the MIL program")
        if reference_size is not None:
            details["fp16_size_bytes"] = reference_size
            details["size_ratio_vs_fp16"] = round(size / reference_size, 4)
            if size >= reference_size:
                failures.append(f"package {size} bytes is not smaller than the fp16 package ({reference_size} bytes)")
    details["passed"] = not failures
    details["failures"] = failures
    return details


def _const_weights(path: str | Path, decompress: bool = False) -> dict[str, np.ndarray]:
    """name -> value of the >= 2-D float constants of a saved package (compressed weights
    decompressed first when ``decompress``)."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    mlm = ct.models.MLModel(str(path), skip_model_load=True)
    if decompress:
        from coremltools.optimize.coreml import decompress_weights

        mlm = decompress_weights(mlm)
    spec = mlm.get_spec()
    prog = milproto_load(spec, specification_version=spec.specificationVersion, file_weights_dir=mlm.weights_dir)
    out = {}
    for fn in prog.functions.values():
        for op in fn.operations:
            if op.op_type == "const" and op.outputs[0].val is not None:
                v = np.asarray(op.outputs[0].val)
                if v.ndim >= 2 and v.dtype.kind == "f":
                    out[op.name] = v.astype(np.float32)
    return out


def weight_error(compressed: str | Path, reference: str | Path) -> dict[str, Any]:
    """Reconstruction error of the compressed package's weights against the fp16 package's:
    relative L2 error ||w' - w|| / ||w|| per compressed tensor (worst and mean; tensors are
    matched by name, the constexpr op keeps the const's name). Measures the file, not the
    prediction."""
    import coremltools as ct

    spec = ct.models.MLModel(str(compressed), skip_model_load=True).get_spec()
    packed = {o.name for fn in spec.mlProgram.functions.values() for b in fn.block_specializations.values()
              for op in b.operations if op.type.startswith("constexpr_") for o in op.outputs}
    ref = _const_weights(reference)
    got = _const_weights(compressed, decompress=True)
    rel = {}
    for packed_name in packed:
        name = re.sub(r"_(quantized|palettized|dequantized)$", "", packed_name)
        w, v = ref.get(name), got.get(name, got.get(packed_name))
        if w is not None and v is not None and v.shape == w.shape:
            rel[name] = float(np.linalg.norm(v - w) / (np.linalg.norm(w) + 1e-12))
    if not rel:
        return {"tensors_compressed": len(packed), "tensors_compared": 0}
    worst = max(rel, key=rel.get)
    return {"tensors_compressed": len(packed), "tensors_compared": len(rel), "rel_l2_error_max": rel[worst],
            "rel_l2_error_mean": float(np.mean(list(rel.values()))), "worst_tensor": worst}


def linux_verify(path_of: Callable[[dict], Path], role: str, precision: str, *, image_size: int, embed_dim: int,
                 num_outputs: int, reference: Optional[Path] = None) -> Callable[[dict], dict]:
    """The verify callable for :meth:`ExportDir.add` off macOS: spec check (raises
    :class:`VerificationError` on a miss), weight reconstruction error for compressed
    precisions; prediction recorded as not run."""

    def verify(entry: dict) -> dict:
        path = path_of(entry)
        ref_size = path_size(reference) if reference is not None and reference.exists() else None
        details = spec_check(path, role, precision, image_size=image_size, embed_dim=embed_dim,
                             num_outputs=num_outputs, reference_size=ref_size)
        if not details["passed"]:
            raise VerificationError(f"{entry['file']} ({role}, coreml {precision}) failed the spec check: "
                                    + "; ".join(details["failures"]))
        rec: dict[str, Any] = {"passed": None, "prediction": PREDICTION_NOT_RUN, "spec_check": details}
        if precision in COMPRESSED and reference is not None and reference.exists():
            try:
                rec["weight_error"] = weight_error(path, reference)
            except Exception as exc:  # noqa: BLE001 - optional diagnostics
                rec["weight_error"] = {"error": f"{type(exc).__name__}: {exc}"}
        return rec

    return verify


# -- the whole export ---------------------------------------------------------------------------
def export_coreml(
    model,
    out_dir: str | Path,
    precisions: Sequence[str] = ("fp16", "fp32", "int8"),
    calib_images: Any = None,
    *,
    verify_images: Any = None,
    normalize_inside: bool = True,
    mask_outputs: str = "all",
    accept_failures: Optional[Mapping[str, str]] = None,
) -> dict[str, Any]:
    """Export ``model`` to Core ML packages in ``out_dir`` for every precision; write
    ``manifest.json`` (merged with other formats' entries). Returns the manifest.

    ``calib_images``: weight-only compression needs no calibration; the images are used for
    verification when ``verify_images`` is not given. ``verify_images`` (macOS only): real images
    for verification against eager PyTorch. ``accept_failures``: precision (or
    'coreml:precision') -> reason, for verification misses on macOS. On Linux every package is
    spec-checked (see the module docstring)."""
    precisions = expand_precisions(precisions)
    on_mac = sys.platform == "darwin"
    mac_images = verify_images if verify_images is not None else load_images(calib_images)
    xd = ExportDir(out_dir, model, normalize_inside=normalize_inside, mask_outputs=mask_outputs,
                   verify_images=mac_images if on_mac else None,
                   accept_failures=accept_failures)
    model = xd.model
    versions = library_versions(("coremltools",))
    enc = EncoderWrapper(model, normalize_inside=normalize_inside).eval()
    dec = DecoderWrapper(model, mask_outputs=mask_outputs).eval()
    n_pts = torch.export.Dim("num_points", min=1, max=MAX_POINTS)
    graphs = {
        "encoder": (enc, enc.example_inputs(), ENCODER_INPUT_NAMES, ENCODER_OUTPUT_NAMES, None),
        "decoder": (dec, dec.example_inputs(num_points=3), DECODER_INPUT_NAMES, DECODER_OUTPUT_NAMES,
                    ({}, {1: n_pts}, {1: n_pts}, {}, {})),
    }
    dims = dict(image_size=int(model.image_size), embed_dim=int(model.prompt_encoder.embed_dim),
                num_outputs=dec.num_outputs)
    base_needed = {"fp16"} if any(p in COMPRESSED for p in precisions) else set()
    with xd.scratch("coreml") as tmp:
        tmp = Path(tmp)
        for role, (module, args, in_names, out_names, dyn) in graphs.items():
            what = f"{role} ({getattr(getattr(model, 'config', None), 'name', 'model')})"
            fp16_model = None
            fp16_path: Optional[Path] = None
            for prec in precisions:
                file = f"{role}_{prec}.mlpackage"
                staged = xd.staging(file)
                quant = None
                if prec in ("fp16", "fp32"):
                    mlm = convert_module(module, args, in_names, out_names, prec, dyn, f"{what} {prec}")
                    if prec == "fp16":
                        fp16_model = mlm
                    quant = ({"method": "coremltools compute_precision", "compute_precision": "fp16",
                              "io_dtype": "float32"} if prec == "fp16" else None)
                else:
                    if fp16_model is None:
                        fp16_model = convert_module(module, args, in_names, out_names, "fp16", dyn, f"{what} fp16")
                    try:
                        mlm, quant = compress(fp16_model, prec)
                    except Exception as exc:  # noqa: BLE001
                        raise _export_error(f"{what} {prec}", exc, "Core ML weight compression") from exc
                mlm.save(str(staged))
                if prec == "fp16" and base_needed:
                    fp16_path = xd.path / file
                elif fp16_path is None and fp16_model is not None and prec in COMPRESSED:
                    fp16_path = tmp / f"{role}_fp16_reference.mlpackage"  # fp16 not exported: a private copy
                    fp16_model.save(str(fp16_path))
                inputs, outputs, _ = describe_io(staged)
                if on_mac:
                    verify = None  # verify_artifact through CoreMLBackend (needs verify_images)
                else:
                    verify = linux_verify(lambda e: xd.path / e["file"], role, prec, **dims,
                                          reference=fp16_path if prec in COMPRESSED else None)
                xd.add(staged, file, role=role, fmt=FORMAT, precision=prec, inputs=inputs, outputs=outputs,
                       dynamic_axes=DECODER_DYNAMIC_AXES if role == "decoder" else {}, quantization=quant,
                       exporter="coremltools.convert (torch.export, mlprogram, iOS17)", opset=None,
                       backend_versions=versions, verify=verify)
    return xd.manifest


# -- runtime --------------------------------------------------------------------------------------
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
