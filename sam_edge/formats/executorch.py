"""Format ``executorch``: its spec, its exporter (XNNPACK delegate: encoder_<precision>.pte +
decoder_<precision>.pte + manifest.json) and its runtime backend (``executorch.runtime``).

Precisions: ``fp32`` (XNNPACK fp32) and ``int8_static`` (alias ``int8``): PT2E static
quantisation with ``XNNPACKQuantizer`` (int8 weights per output channel, symmetric; int8
activations calibrated on real images through :mod:`export.calibration`, never random tensors).
Only weight-carrying ops (``conv``, ``linear``; ``QUANT_PATTERNS``) are annotated: quantising the
residual adds / muls / cats as well costs accuracy for no size gain, and XNNPACKQuantizer never
quantises activation x activation matmuls (attention's q @ k^T, attn @ v), so those stay float
in both graphs. The decoder's IoU head (``DECODER_FLOAT_MODULES``) is kept float too, as in the
ONNX static export.

Measured (repvit_demo_student, trained; calibrated on 8 synth256 images + 2 photos, verified on
6 others): encoder int8 cosine_min 0.9987, median 2.4 ms vs 3.8 ms fp32 (2 threads), 1.2 MB vs
4.3 MB; decoder int8 mask IoU mean 0.95 (min 0.08 on one prompt), IoU-score error 0.047 --
within the int8 tolerances but the weakest artifact; prefer the fp32 decoder where accuracy matters
(the predictor falls back to it when no int8 decoder is listed).

Graphs: attention runs as explicit matmul + softmax (``export.wrappers.MathAttention``): SDPA's
decomposition leaves ``any`` / ``where`` / ``logical_not`` nodes XNNPACK cannot take, which
splits the graph into more partitions. ``torch.export`` -> (PT2E for int8) -> ``to_edge_transform_and_lower`` with the
``XnnpackPartitioner`` -> ``to_executorch``. The decoder takes a dynamic number of points
(``torch.export.Dim`` on axis 1 of ``point_coords`` / ``point_labels``, 1..``MAX_POINTS``). Every
file is loaded back into the ExecuTorch runtime and run once before it is recorded; an
operator without a kernel in the runtime is an :class:`export.common.ExportError` naming it.

Trap (seen in the prototype): constant buffers with non-contiguous (channels-last) strides
lowered to silently wrong numbers, so every buffer / parameter is made contiguous first.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
import torch

from sam_edge.export.calibration import decoder_calibration_feeds, encoder_calibration_feeds
from sam_edge.export.common import ExportDir, ExportError, format_error, load_images
from sam_edge.export.manifest import library_versions
from sam_edge.export.norms import with_product_norms
from sam_edge.export.wrappers import (  # MathAttention: SDPA as matmul + softmax, fewer partitions
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
from sam_edge.runtime.feeds import canonical_names

FORMAT = "executorch"
SPEC = FormatSpec(
    name=FORMAT, suffix=".pte", precisions=("fp32", "int8_static"), aliases={"int8": ("int8_static",)},
    toolchain=("executorch", "torchao"), runtime_packages=("executorch",),
    decoder_dynamic_axes=POINTS_AXES,
    convert=f"{__name__}:export_executorch", backend=f"{__name__}:ExecuTorchBackend",
    description="ExecuTorch XNNPACK (PT2E int8_static)",
)
PRECISIONS = SPEC.precisions
ALIASES = SPEC.aliases
MAX_POINTS = SPEC.max_points  # the prompt rule's limit (sam_edge.predictor.MAX_POINTS)
DECODER_DYNAMIC_AXES = SPEC.decoder_dynamic_axes
# XNNPACKQuantizer patterns kept (see module docstring); ops of other patterns stay float.
QUANT_PATTERNS = ("conv", "linear")
DECODER_FLOAT_MODULES = ("mask_decoder.iou_prediction_head",)
# ops a kept pattern may contain (conv / linear, and the relu of conv_relu / linear_relu)
_QUANT_TARGETS_PREFIX = ("aten.conv", "aten.linear", "aten.relu")


def expand_precisions(precisions: Iterable[str]) -> list[str]:
    return SPEC.expand(list(precisions))


def versions() -> dict[str, str]:
    return library_versions(("executorch", "torchao"))


# -- errors -------------------------------------------------------------------------------------
_OP_PATTERNS = (
    r"(aten[:.]{1,2}[A-Za-z_0-9]+(?:\.[A-Za-z_0-9]+)?)",
    r"[Mm]issing (?:out variants?|operators?)[^A-Za-z]*['\"]?([\w:.]+)",
    r"[Uu]nsupported (?:op(?:erator)?)[^A-Za-z]*['\"]?([\w:.]+)",
)


def _export_error(what: str, exc: BaseException, op: Optional[str] = None) -> ExportError:
    return format_error("executorch", "ExecuTorch export", what, exc, _OP_PATTERNS, op)


@contextlib.contextmanager
def _quiet():
    """The exporters print progress / warnings on every call; keep the export output readable."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)
        try:
            yield
        finally:
            logging.getLogger().setLevel(level)


# -- graph export -------------------------------------------------------------------------------
def _contiguous_(module: torch.nn.Module) -> torch.nn.Module:
    """Make every parameter and buffer contiguous (in place; see the module docstring)."""
    with torch.no_grad():
        for mod in module.modules():
            for name, p in list(mod.named_parameters(recurse=False)):
                if not p.is_contiguous():
                    mod._parameters[name] = torch.nn.Parameter(p.detach().contiguous(), requires_grad=False)
            for name, b in list(mod.named_buffers(recurse=False)):
                if b is not None and not b.is_contiguous():
                    mod._buffers[name] = b.contiguous()
    return module


def _dynamic_shapes(input_names: Sequence[str], dynamic_axes: Optional[Mapping[str, Mapping[int, str]]]):
    if not dynamic_axes:
        return None
    dims: dict[str, Any] = {}
    return tuple(
        {a: dims.setdefault(lbl, torch.export.Dim(lbl, min=1, max=MAX_POINTS)) for a, lbl in dynamic_axes[n].items()}
        if n in dynamic_axes else None
        for n in input_names
    )


def _torch_export(module: torch.nn.Module, args: tuple, dynamic_shapes, what: str):
    try:
        with torch.no_grad(), _quiet(), MathAttention():
            return torch.export.export(module, args, dynamic_shapes=dynamic_shapes, strict=False)
    except Exception as exc:  # noqa: BLE001
        raise _export_error(f"{what} (torch.export)", exc) from exc


def weight_op_filter(float_modules: Sequence[str] = ()):
    """XNNPACKQuantizer filter keeping only the ``QUANT_PATTERNS`` (conv, linear) outside
    ``float_modules``. Used by the PTQ export and by QAT (``export.quantize``), so both quantise
    the same ops: quantising the elementwise ops as well (``set_global`` alone) made XNNPACK refuse
    LayerNorm2d's int8 subtract at load ("Failed to create XNNSubtract node")."""

    def keep(node: torch.fx.Node) -> bool:
        # the quantizer asks about every node of a pattern (weight / bias get_attr nodes too)
        if node.op != "call_function":
            return True
        if not str(node.target).startswith(_QUANT_TARGETS_PREFIX):
            return False
        stack = node.meta.get("nn_module_stack") or {}
        paths = [v[0] if isinstance(v, tuple) else str(v) for v in stack.values()]
        return not any(p == f or p.startswith(f + ".") for p in paths for f in float_modules)

    return keep


def quantize_int8_static(module: torch.nn.Module, args: tuple, dynamic_shapes, feeds: list[dict],
                         input_names: Sequence[str], float_modules: Sequence[str] = (), what: str = "graph"):
    """PT2E static int8 (XNNPACKQuantizer, per-channel symmetric) calibrated on ``feeds``;
    returns (exported program of the converted module, quantisation details)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if not feeds:
        raise ValueError("int8_static needs calibration images (calib_images): never random tensors")

    config = get_symmetric_quantization_config(is_per_channel=True)
    quantizer = XNNPACKQuantizer().set_global(config)
    quantizer.set_filter_function(weight_op_filter(float_modules))
    gm = _torch_export(module, args, dynamic_shapes, what).module()
    try:
        with torch.no_grad(), _quiet():
            prepared = prepare_pt2e(gm, quantizer)
            for feed in feeds:
                prepared(*(torch.from_numpy(np.ascontiguousarray(feed[k])) for k in input_names))
            converted = convert_pt2e(prepared)
    except Exception as exc:  # noqa: BLE001
        raise _export_error(f"{what} (PT2E int8 quantisation)", exc) from exc
    quantized_ops = sum(1 for n in converted.graph.nodes
                        if "quantize_per_channel" in str(n.target))
    ep = _torch_export(converted, args, dynamic_shapes, f"{what} (quantised)")
    details = {
        "method": "torchao.quantization.pt2e (prepare_pt2e / convert_pt2e) + XNNPACKQuantizer",
        "scheme": "static", "weight_type": "int8", "per_channel": True, "symmetric": True,
        "activation_type": "int8", "calibration": "MinMax observers (histogram-free)",
        "num_calibration_samples": len(feeds), "quantized_patterns": list(QUANT_PATTERNS),
        "float_modules": list(float_modules), "num_weight_quantized_ops": quantized_ops,
        "float_ops": "activation x activation matmuls (attention), norms, softmax, residual adds / muls",
    }
    return ep, details


def delegation_summary(edge_program) -> dict[str, Any]:
    """How many nodes the XNNPACK partitioner took, and which ops it left to the portable kernels."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(edge_program.exported_program().graph_module)
    not_delegated = {op: c.non_delegated for op, c in info.delegation_by_operator.items() if c.non_delegated}
    return {
        "backend": "XnnpackBackend",
        "num_delegated_subgraphs": int(info.num_delegated_subgraphs),
        "num_delegated_nodes": int(info.num_delegated_nodes),
        "num_non_delegated_nodes": int(info.num_non_delegated_nodes),
        "non_delegated_ops": dict(sorted(not_delegated.items())),
    }


def drop_noop_copies(gm: torch.fx.GraphModule):
    """Edge-dialect pass: removes ``expand_copy`` / ``view_copy`` nodes whose output has the
    input's shape. ``torch.matmul`` on 3-D / 4-D operands decomposes into expand + view + bmm
    even when nothing broadcasts; XNNPACK does not take those copies, so each one ran in the
    portable kernels (up to 4 MB per copy in SAM's decoder) and split the delegated graph."""
    from executorch.exir.dialects._ops import ops as exir_ops
    from torch.fx.passes.infra.pass_base import PassResult

    targets = (exir_ops.edge.aten.expand_copy.default, exir_ops.edge.aten.view_copy.default)
    dropped = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in targets:
            continue
        src = node.args[0]
        a, b = src.meta.get("val"), node.meta.get("val")
        # shapes compared as text: symbolic sizes (the decoder's number of points) are equal
        # when they are the same expression, without adding a guard
        if a is not None and b is not None and a.dtype == b.dtype and str(tuple(a.shape)) == str(tuple(b.shape)):
            node.replace_all_uses_with(src)
            gm.graph.erase_node(node)
            dropped += 1
    if dropped:
        gm.graph.lint()
        gm.recompile()
    return PassResult(gm, dropped > 0)


def lower_to_pte(ep, path: Path, what: str) -> dict[str, Any]:
    """Lower an exported program to XNNPACK, write the .pte, check the runtime has a kernel for
    every non-delegated operator. Returns the delegation summary."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        with _quiet():
            edge = to_edge_transform_and_lower(ep, transform_passes=[drop_noop_copies],
                                               partitioner=[XnnpackPartitioner()])
            summary = delegation_summary(edge)
            prog = edge.to_executorch()
    except Exception as exc:  # noqa: BLE001
        raise _export_error(f"{what} (to_edge_transform_and_lower / to_executorch)", exc) from exc
    missing = _missing_kernels(prog)
    if missing:
        raise ExportError(
            f"{what}: ExecuTorch export failed on operator {missing[0]!r} (not supported by format 'executorch'): "
            f"no kernel registered in the ExecuTorch runtime for {missing}"
        )
    with open(path, "wb") as fh:
        prog.write_to_file(fh)
    return summary


def _missing_kernels(prog) -> list[str]:
    try:
        from executorch.runtime import Runtime

        registered = set(Runtime.get().operator_registry.operator_names)
    except Exception:  # noqa: BLE001 - no runtime to check against: the load check will tell
        return []
    used = []
    for plan in prog.executorch_program.execution_plan:
        for op in plan.operators:
            used.append(f"{op.name}.{op.overload}" if op.overload else op.name)
    return sorted({u for u in used if u not in registered})


def _check_runs(path: Path, args: tuple, ref: Sequence[torch.Tensor], what: str) -> float:
    """Load ``path`` in the ExecuTorch runtime, run it on ``args``; returns max abs error vs
    ``ref`` (recorded as a smoke test; real verification happens in ExportDir.add)."""
    try:
        sess = ExecuTorchBackend().load(path)
        out = sess.run({n: a.numpy() for n, a in zip(sess.input_names, args)})
    except Exception as exc:  # noqa: BLE001
        raise _export_error(f"{what} (ExecuTorch runtime load / run)", exc) from exc
    return max(float(np.abs(out[n] - r.numpy()).max()) for n, r in zip(sess.output_names, ref))


_ET_DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.int64: "int64", torch.int32: "int32",
              torch.bool: "bool", torch.int8: "int8", torch.uint8: "uint8"}


def describe_io(names: Sequence[str], tensors: Sequence[torch.Tensor],
                dynamic_axes: Optional[Mapping[str, Mapping[int, str]]] = None) -> list[dict]:
    dynamic_axes = dynamic_axes or {}
    out = []
    for name, t in zip(names, tensors):
        shape: list[Any] = [int(s) for s in t.shape]
        for axis, label in dynamic_axes.get(name, {}).items():
            shape[axis] = label
        out.append({"name": name, "shape": shape, "dtype": _ET_DTYPES.get(t.dtype, str(t.dtype))})
    return out


# -- the whole export ---------------------------------------------------------------------------
def export_executorch(
    model,
    out_dir: str | Path,
    precisions: Sequence[str] = ("fp32", "int8"),
    calib_images: Any = None,
    *,
    verify_images: Any = None,
    normalize_inside: bool = True,
    mask_outputs: str = "all",
    accept_failures: Optional[Mapping[str, str]] = None,
) -> dict[str, Any]:
    """Export ``model`` to ExecuTorch .pte files (XNNPACK delegate) in ``out_dir`` for every
    precision; write ``manifest.json`` (shared with other formats in the same directory).

    ``calib_images``: folder / paths / uint8 arrays of real images for int8_static calibration
    (required for int8). ``verify_images``: real images for verification against eager PyTorch
    (default: the calibration images); with neither, artifacts are recorded as unverified.
    ``accept_failures``: precision (or 'executorch:precision') -> reason; a verification miss at
    that precision is recorded with the reason instead of raising. Returns the manifest."""
    precisions = expand_precisions(precisions)
    calib = load_images(calib_images)
    if "int8_static" in precisions and not calib:
        raise ValueError(
            "executorch int8_static needs calibration images (calib_images: a folder, paths or uint8 "
            "arrays of real images); it is never calibrated on random tensors"
        )
    try:
        import executorch  # noqa: F401
    except ImportError as exc:
        raise ExportError("format 'executorch' needs executorch: pip install executorch") from exc
    xd = ExportDir(out_dir, model, normalize_inside=normalize_inside, mask_outputs=mask_outputs,
                   verify_images=verify_images if verify_images is not None else calib,
                   accept_failures=accept_failures)
    model = xd.model
    vers = versions()

    graphs = {
        "encoder": _contiguous_(EncoderWrapper(model, normalize_inside=normalize_inside).eval()),
        "decoder": _contiguous_(DecoderWrapper(model, mask_outputs=mask_outputs).eval()),
    }
    names = {"encoder": (ENCODER_INPUT_NAMES, ENCODER_OUTPUT_NAMES),
             "decoder": (DECODER_INPUT_NAMES, DECODER_OUTPUT_NAMES)}
    axes = {"encoder": {}, "decoder": DECODER_DYNAMIC_AXES}
    args = {"encoder": graphs["encoder"].example_inputs(), "decoder": graphs["decoder"].example_inputs(3)}
    feeds: dict[str, list] = {}
    with xd.scratch("executorch") as tmp:
        for prec in precisions:
            for role in ("encoder", "decoder"):
                module, ex = graphs[role], args[role]
                in_names, out_names = names[role]
                dyn = _dynamic_shapes(in_names, axes[role])
                file = f"{role}_{prec}.pte"
                staged = Path(tmp) / file
                quant = None
                if prec == "fp32":
                    # norms as XNNPACK ops (export.norms): float graphs only; the checks below
                    # still compare the .pte with the original module
                    ep = _torch_export(with_product_norms(module)[0], ex, dyn, file)
                else:
                    if role not in feeds:
                        feeds[role] = (encoder_calibration_feeds(model, calib, normalize_inside) if role == "encoder"
                                       else decoder_calibration_feeds(model, calib))
                    ep, quant = quantize_int8_static(
                        module, ex, dyn, feeds[role], in_names,
                        DECODER_FLOAT_MODULES if role == "decoder" else (), what=file)
                    quant["calibration_images"] = len(calib)
                summary = lower_to_pte(ep, staged, file)
                with torch.no_grad():
                    ref = module(*ex)
                ref = ref if isinstance(ref, tuple) else (ref,)
                smoke = _check_runs(staged, ex, ref, file)
                notes = [
                    f"delegation: {summary['num_delegated_nodes']} nodes in {summary['num_delegated_subgraphs']} "
                    f"XNNPACK subgraph(s), {summary['num_non_delegated_nodes']} not delegated "
                    f"({', '.join(f'{k} x{v}' for k, v in summary['non_delegated_ops'].items()) or 'none'})",
                    f"example-input max abs error vs eager wrapper: {smoke:.3g}",
                ]
                if role == "decoder":
                    notes.append(f"dynamic number of points: 1..{MAX_POINTS} (torch.export.Dim 'num_points')")
                if quant is not None:
                    quant["delegation"] = summary
                xd.add(
                    staged, file, role=role, fmt=FORMAT, precision=prec,
                    inputs=describe_io(in_names, ex, axes[role]), outputs=describe_io(out_names, ref),
                    dynamic_axes=axes[role], quantization=quant,
                    exporter="torch.export + executorch.exir.to_edge_transform_and_lower (XnnpackPartitioner)",
                    backend_versions=vers, notes=notes,
                )
    return xd.manifest


# -- runtime --------------------------------------------------------------------------------------
# A .pte program has positional inputs / outputs; their names are the canonical ones
# (sam_edge.runtime.feeds), chosen by arity. Threads: XNNPACK runs on ExecuTorch's process-wide
# threadpool; ``threads`` (or SAM_EDGE_THREADS) sets its size, by default min(4, available
# cores). The pool is shared by every loaded program, so the last ``load`` with a different count
# wins. ``executorch`` is imported in ExecuTorchBackend.load only.
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
        try:
            ins, outs = canonical_names(n_in)
        except ValueError:
            raise RuntimeError(f"{self.path}: {n_in} inputs; expected 1 (image encoder) or 5 (mask decoder)") from None
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
