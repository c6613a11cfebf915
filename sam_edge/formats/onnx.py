"""Format ``onnx``: its spec, its exporter (encoder_<precision>.onnx + decoder_<precision>.onnx +
manifest.json) and its runtime backend (onnxruntime, CPU or the given execution providers).

Precisions: ``fp32``; ``fp16`` (onnxruntime's float16 converter, inputs / outputs kept float32);
``int8_dynamic`` (``quantize_dynamic``, int8 weights, activations quantised at run time);
``int8_static`` (QDQ, int8 weights per channel + uint8 activations calibrated on real images
after ``quant_pre_process``); ``int8`` means both int8 variants.

Exporter: the dynamo exporter (``torch.onnx.export(..., dynamo=True)``) with SDPA forced to the
math kernel; if it raises, the TorchScript exporter. Note: after a failed dynamo export, later
exports in the same process have been seen to fail too; when that happens, export each graph in
a fresh process (``export_model(..., isolate=True)`` runs each format in its own process; or one
``sam-edge export`` per precision) -- every artifact is independent and ``export_onnx`` merges
into an existing manifest.
"""
from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
import torch

from sam_edge.export.calibration import decoder_calibration_feeds, encoder_calibration_feeds
from sam_edge.export.common import ExportDir, ExportError, format_error, load_images
from sam_edge.export.manifest import library_versions
from sam_edge.export.wrappers import (
    DECODER_INPUT_NAMES,
    DECODER_OUTPUT_NAMES,
    ENCODER_INPUT_NAMES,
    ENCODER_OUTPUT_NAMES,
    DecoderWrapper,
    EncoderWrapper,
    MathAttention,
)
from sam_edge.formats import POINTS_AXES, FormatSpec
from sam_edge.runtime.backends import BackendUnavailable

FORMAT = "onnx"
SPEC = FormatSpec(
    name=FORMAT, suffix=".onnx",
    precisions=("fp32", "fp16", "int8_dynamic", "int8_static"),
    aliases={"int8": ("int8_dynamic", "int8_static")},
    toolchain=("onnx", "onnxruntime", "onnxscript"), runtime_packages=("onnxruntime",),
    decoder_dynamic_axes=POINTS_AXES,
    convert=f"{__name__}:export_onnx", backend=f"{__name__}:OnnxRuntimeBackend",
    description="onnxruntime (QDQ int8_static)",
)
PRECISIONS = SPEC.precisions
MAX_POINTS = SPEC.max_points
DECODER_DYNAMIC_AXES = SPEC.decoder_dynamic_axes
DEFAULT_OPSET = 20  # 20: Gelu is one op (at 18 it is Div+Erf+Mul+Add, and ORT ran the student encoder 2x slower)
# Weight-carrying ops only: quantising LayerNorm / Softmax / residual Adds as well costs accuracy
# (measured on sam_test_tiny: encoder cosine 0.972 vs 0.978) for little size gain.
STATIC_QUANT_OPS = ("Conv", "MatMul", "Gemm")


def expand_precisions(precisions: Iterable[str]) -> list[str]:
    return SPEC.expand(list(precisions))


# -- graph export -------------------------------------------------------------------------------
_OP_PATTERNS = (
    r"(aten[:.]{1,2}[A-Za-z_0-9.]+)",
    r"implementation for (\w+)\(",
    r"[Uu]nsupported (?:ONNX )?op(?:erator)?[^A-Za-z]*['\"]?([\w:.]+)",
)


def _export_error(what: str, exc: BaseException) -> ExportError:
    return format_error("onnx", "ONNX export", what, exc, _OP_PATTERNS)


def export_graph(
    module: torch.nn.Module,
    args: tuple,
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Optional[Mapping[str, Mapping[int, str]]] = None,
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
    fallback_notes: Optional[list] = None,
) -> str:
    """Export ``module(*args)`` to ``path`` (single file, weights inside). ``exporter``: 'dynamo',
    'torchscript' or 'auto' (dynamo, then TorchScript). Returns the exporter used; the errors of exporters that were
    tried first are appended to ``fallback_notes``."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    errors: list[tuple[str, BaseException]] = []
    fallback_notes = fallback_notes if fallback_notes is not None else []
    order = ["dynamo", "torchscript"] if exporter == "auto" else [exporter]
    module = module.eval()
    for name in order:
        try:
            with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), MathAttention(), contextlib.redirect_stdout(None):
                if name == "dynamo":
                    dyn = None
                    if dynamic_axes:
                        dims: dict[str, Any] = {}
                        dyn = {}
                        for inp in input_names:
                            axes = dynamic_axes.get(inp)
                            dyn[inp] = ({a: dims.setdefault(lbl, torch.export.Dim(lbl, min=1, max=MAX_POINTS))
                                         for a, lbl in axes.items()} if axes else None)
                    prog = torch.onnx.export(
                        module, args, dynamo=True, input_names=list(input_names), output_names=list(output_names),
                        dynamic_shapes=dyn, opset_version=opset, external_data=False, verbose=False,
                        report=False, optimize=True,
                    )
                    prog.save(str(path), external_data=False)
                    _strip_value_info(path)
                else:
                    torch.onnx.export(
                        module, args, str(path), dynamo=False, input_names=list(input_names),
                        output_names=list(output_names), dynamic_axes=dict(dynamic_axes or {}),
                        opset_version=min(opset, 17), do_constant_folding=True,
                    )
            if errors:
                fallback_notes.extend(f"{n} exporter failed: {_export_error(path.name, e)}" for n, e in errors)
            return name
        except Exception as exc:  # noqa: BLE001 - try the next exporter, report all
            errors.append((name, exc))
            if path.exists():
                path.unlink()
    name, exc = errors[-1]
    raise _export_error(f"{path.name} ({', '.join(n for n, _ in errors)} exporter)", exc) from exc


def _strip_value_info(path: Path) -> None:
    """Drop intermediate shape annotations: the dynamo exporter can leave some that onnx shape
    inference (run by onnxruntime.quantization) then contradicts."""
    import onnx

    model = onnx.load(str(path))
    del model.graph.value_info[:]
    onnx.save(model, str(path))


def _check_loads(path: Path) -> None:
    """Open the file in onnxruntime; an operator it cannot run is an export error naming it."""
    import onnxruntime as ort

    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        raise _export_error(f"{path.name} (onnxruntime load)", exc) from exc


_ONNX_DTYPES = {1: "float32", 10: "float16", 7: "int64", 6: "int32", 9: "bool", 3: "int8", 2: "uint8"}


def describe_io(path: Path) -> tuple[list[dict], list[dict]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph

    def desc(values):
        out = []
        for v in values:
            t = v.type.tensor_type
            shape = [d.dim_param if d.dim_param else int(d.dim_value) for d in t.shape.dim]
            out.append({"name": v.name, "shape": shape, "dtype": _ONNX_DTYPES.get(t.elem_type, str(t.elem_type))})
        return out

    return desc(graph.input), desc(graph.output)


# -- precision conversion -----------------------------------------------------------------------
def convert_fp16(src: Path, dst: Path) -> dict[str, Any]:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    model16 = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    onnx.save(model16, str(dst))
    return {"method": "onnxruntime.transformers.float16", "keep_io_types": True}


class _ListReader:
    """onnxruntime CalibrationDataReader over a precomputed list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds = feeds
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._feeds)


def quantize_int8_dynamic(src: Path, dst: Path) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    return {"method": "onnxruntime.quantization.quantize_dynamic", "weight_type": "int8",
            "activations": "dynamic (uint8, per call)"}


# Kept in float by the static quantizer (name scopes recorded by the dynamo exporter): the IoU
# head is tiny, and uint8 activations there cost most of the IoU-score accuracy.
STATIC_FLOAT_SCOPES = ("iou_prediction_head",)


def float_kept_nodes(path: Path) -> list[str]:
    """Nodes the static quantizer leaves in float: MatMul nodes with no constant operand
    (attention's q @ k^T and attn @ v; uint8 attention logits / probabilities cost most of the
    accuracy: sam_demo_teacher decoder mask IoU 0.83 with them quantised, 0.94 without), MatMul
    nodes with a rank-3 constant (the factorised attention's per-head weights) and nodes under
    ``STATIC_FLOAT_SCOPES``."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    rank = {i.name: len(i.dims) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant":
            t = next((a.t for a in n.attribute if a.name == "value"), None)
            rank.update({o: len(t.dims) if t is not None else 0 for o in n.output})
    keep = []
    for n in graph.node:
        scopes = " ".join(p.value for p in n.metadata_props if p.key.endswith("name_scopes"))
        # MatMul with no constant operand, or with a per-head (rank >= 3) weight of the factorised
        # attention, which onnxruntime's per-channel QLinearMatMul does not take
        if (n.op_type == "MatMul" and (not any(i in rank for i in n.input) or any(rank.get(i, 0) >= 3 for i in n.input))) \
                or any(s in scopes or s in n.name for s in STATIC_FLOAT_SCOPES):
            keep.append(n.name)
    return keep


def quantize_int8_static(src: Path, dst: Path, feeds: list[dict]) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not feeds:
        raise ValueError("int8_static needs calibration images (calib_images): never random tensors")
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        exclude = sorted(set(float_kept_nodes(src)) | set(float_kept_nodes(pre)))  # pre-processing drops name scopes
        quantize_static(
            str(pre), str(dst), _ListReader(feeds), quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
            calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=list(STATIC_QUANT_OPS),
            nodes_to_exclude=exclude,
        )
    return {"method": "onnxruntime.quantization.quantize_static", "format": "QDQ", "weight_type": "int8",
            "per_channel": True, "activation_type": "uint8", "calibration": "MinMax",
            "preprocess": "quant_pre_process", "num_calibration_samples": len(feeds),
            "op_types": list(STATIC_QUANT_OPS), "float_nodes": len(exclude),
            "float_scopes": list(STATIC_FLOAT_SCOPES) + ["activation x activation MatMul"]}


# -- the whole export ---------------------------------------------------------------------------
def export_onnx(
    model,
    out_dir: str | Path,
    precisions: Sequence[str] = ("fp32", "fp16", "int8"),
    calib_images: Any = None,
    opset: int = DEFAULT_OPSET,
    *,
    verify_images: Any = None,
    normalize_inside: bool = True,
    mask_outputs: str = "all",
    exporter: str = "auto",
    accept_failures: Optional[Mapping[str, str]] = None,
) -> dict[str, Any]:
    """Export ``model`` to ONNX in ``out_dir`` for every precision; write ``manifest.json``.

    ``calib_images``: folder / paths / uint8 arrays of real images for int8_static calibration.
    ``verify_images``: real images for verification against eager PyTorch (default: the
    calibration images); with neither, artifacts are recorded as unverified.
    ``accept_failures``: precision (or 'onnx:precision') -> reason; a verification miss at that
    precision is recorded with the reason instead of raising
    :class:`export.verify.VerificationError`. Returns the manifest."""
    precisions = expand_precisions(precisions)
    calib = load_images(calib_images)
    xd = ExportDir(out_dir, model, normalize_inside=normalize_inside, mask_outputs=mask_outputs,
                   verify_images=verify_images if verify_images is not None else calib,
                   accept_failures=accept_failures)
    model = xd.model
    versions = library_versions(("onnx", "onnxruntime", "onnxscript"))

    enc = EncoderWrapper(model, normalize_inside=normalize_inside).eval()
    dec = DecoderWrapper(model, mask_outputs=mask_outputs).eval()
    with xd.scratch("onnx") as tmp:
        tmp = Path(tmp)
        fp32 = {"encoder": tmp / "encoder_fp32.onnx", "decoder": tmp / "decoder_fp32.onnx"}
        notes: dict[str, list] = {"encoder": [], "decoder": []}
        used = {
            "encoder": export_graph(enc, enc.example_inputs(), fp32["encoder"], ENCODER_INPUT_NAMES,
                                    ENCODER_OUTPUT_NAMES, None, opset, exporter, notes["encoder"]),
            "decoder": export_graph(dec, dec.example_inputs(), fp32["decoder"], DECODER_INPUT_NAMES,
                                    DECODER_OUTPUT_NAMES, DECODER_DYNAMIC_AXES, opset, exporter, notes["decoder"]),
        }
        feeds: dict[str, list] = {}
        for prec in precisions:
            for role in ("encoder", "decoder"):
                file = f"{role}_{prec}.onnx"
                staged = tmp / f"staged_{file}"
                quant = None
                if prec == "fp32":
                    shutil.copyfile(fp32[role], staged)
                elif prec == "fp16":
                    quant = convert_fp16(fp32[role], staged)
                elif prec == "int8_dynamic":
                    quant = quantize_int8_dynamic(fp32[role], staged)
                else:
                    if role not in feeds:
                        feeds[role] = (encoder_calibration_feeds(model, calib, normalize_inside) if role == "encoder"
                                       else decoder_calibration_feeds(model, calib))
                    quant = quantize_int8_static(fp32[role], staged, feeds[role])
                    quant["calibration_images"] = len(calib)
                _check_loads(staged)
                inputs, outputs = describe_io(staged)
                xd.add(staged, file, role=role, fmt="onnx", precision=prec, inputs=inputs, outputs=outputs,
                       dynamic_axes=DECODER_DYNAMIC_AXES if role == "decoder" else {}, quantization=quant,
                       exporter=f"torch.onnx ({used[role]})", opset=opset, backend_versions=versions,
                       notes=notes[role])
    return xd.manifest


# -- runtime --------------------------------------------------------------------------------------
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
