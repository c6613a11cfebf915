"""Format ``tflite``: its spec, its exporter (LiteRT: encoder_<precision>.tflite +
decoder_<precision>.tflite + manifest.json) and its runtime backend (ai-edge-litert).

Graphs are converted with litert-torch (``litert_torch.convert(module, args).export(path)``) and
run with ai-edge-litert's ``Interpreter`` (:class:`LiteRTBackend` below). The
signature's inputs ``args_0 ..`` / outputs ``output_0 ..`` follow the wrappers' ``forward``
order; the manifest records them under the canonical names (``signature_name`` keeps the
tflite name).

Precisions (quantisation by ai-edge-quantizer on the fp32 ``.tflite``):

* ``fp32``;
* ``fp16``: float16 weights (``FLOAT_CASTING``, all supported ops), float32 compute and I/O;
* ``int8_dynamic``: dynamic-range int8 -- int8 channel-wise weights, activations quantised at run
  time -- on ``FULLY_CONNECTED`` and ``CONV_2D`` only (quantising attention's ``BATCH_MATMUL``
  of two activations fails in ai-edge-quantizer);
* ``int8_static``: int8 weights *and* activations, activation ranges calibrated on real images
  (:mod:`export.calibration`). Encoder: full-integer (every supported op, int8 input / output;
  the runtime session quantises the image and dequantises the embedding); if that graph does not
  run, static int8 on ``FULLY_CONNECTED`` / ``CONV_2D`` only (float I/O), noted in the manifest.
  Decoder: static int8 on ``FULLY_CONNECTED`` / ``CONV_2D`` with float I/O -- int8 point
  coordinates would cost ~1 px of precision. (Full-integer graphs used to abort at run time on
  some images: an int8 ``DIV`` whose divisor rounded to its zero point, "data[i] != zero_point";
  LayerNorm2d now multiplies by ``RSQRT`` and the graphs hold no ``DIV``, checked by a test.)
* ``int8``: both int8 variants.

Fixed number of points: litert-torch could not convert the decoder with a dynamic number of
points, so the decoder takes exactly ``max_points`` points (default 8); the runtime pads with
(0, 0) / label -2, which the exported graph masks out of attention (padding with SAM's -1 would
change the result), and refuses more. ``max_points`` is recorded in each decoder entry (and the
point inputs' shapes). A prompt needs n_points + 2 (box) or n_points + 1 (padding point) slots.
"""
from __future__ import annotations

import contextlib
import io
import re
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
import torch

from sam_edge.export.calibration import decoder_calibration_feeds, encoder_calibration_feeds
from sam_edge.export.common import ExportDir, ExportError, format_error, load_images
from sam_edge.export.manifest import library_versions, write_manifest
from sam_edge.export.wrappers import (
    DECODER_INPUT_NAMES,
    ENCODER_INPUT_NAMES,
    DecoderWrapper,
    EncoderWrapper,
    MathAttention,
)
from sam_edge.formats import FormatSpec
from sam_edge.modeling.transformer import attention_mode, key_token_bias
from sam_edge.runtime.backends import BackendUnavailable
from sam_edge.runtime.feeds import canonical_names

DEFAULT_MAX_POINTS = 8
FORMAT = "tflite"
SPEC = FormatSpec(
    name=FORMAT, suffix=".tflite",
    precisions=("fp32", "fp16", "int8_dynamic", "int8_static"),
    aliases={"int8": ("int8_dynamic", "int8_static")},
    toolchain=("litert_torch", "ai_edge_litert", "ai_edge_quantizer"), runtime_packages=("ai_edge_litert",),
    decoder_dynamic_axes={},
    max_points=DEFAULT_MAX_POINTS,
    max_points_reason="litert-torch could not convert a dynamic number of points: the decoder has fixed slots "
                      "(export_tflite(max_points=N), recorded per decoder in the manifest)",
    convert=f"{__name__}:export_tflite", backend=f"{__name__}:LiteRTBackend",
    description="LiteRT / ai-edge-litert (fixed point slots)",
)
PRECISIONS = SPEC.precisions
# ops quantised by int8_dynamic, and by int8_static where the whole graph is not
WEIGHT_OPS = ("FULLY_CONNECTED", "CONV_2D")
VERSION_DISTS = ("litert-torch", "ai-edge-litert", "ai-edge-quantizer")
SIGNATURE_KEY = "serving_default"
# Label of an unused point slot: the exported decoder masks these tokens out of attention, so a
# padded prompt gives exactly the unpadded result (label -1 is SAM's "not a point" token, which
# the model does see).
PAD_LABEL = -2.0


def expand_precisions(precisions: Iterable[str]) -> list[str]:
    return SPEC.expand(list(precisions))


# -- errors ---------------------------------------------------------------------------------------
_OP_PATTERNS = (
    r"torch\.ops\.(aten\.[A-Za-z_0-9.]+)",
    r"Lowering not found: ([\w.:]+)",
    r"(aten[:.]{1,2}[A-Za-z_0-9.]+)",
    r"['\"]?(tfl\.[\w]+)['\"]? op",
    r"Node number \d+ \((\w+)\)",
    r"[Uu]nsupported (?:TFL )?op(?:erator|eration)?[^A-Za-z]*['\"]?([\w:.]+)",
)


def _export_error(what: str, exc: BaseException, stage: str = "conversion") -> ExportError:
    return format_error("tflite", f"TFLite {stage}", what, exc, _OP_PATTERNS)


@contextlib.contextmanager
def _quiet():
    """Silence litert-torch's rich progress log and the quantizer's progress bars."""
    try:
        from litert_torch import progress
        console = progress.console
        old = console.quiet
        console.quiet = True
    except Exception:  # noqa: BLE001 - cosmetic only
        console, old = None, None
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        if console is not None:
            console.quiet = old


# -- decoder with exact point-slot padding ----------------------------------------------------------
class SlotDecoderWrapper(DecoderWrapper):
    """:class:`export.wrappers.DecoderWrapper` with a fixed number of point slots: slots labelled
    ``PAD_LABEL`` (-2; see :data:`PAD_LABEL`) are removed from
    the prompt exactly -- masked out as attention keys, so no other token or pixel sees them
    (padding with label -1 instead adds "not a point" tokens and changes the result: sam_test_tiny
    low-res logits moved by up to 0.14, mask IoU 0.78). Label -1 keeps its eager meaning."""

    def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input):
        n_out = self.mask_decoder.num_mask_tokens + 1  # iou token + mask tokens come first
        pad = (point_labels == PAD_LABEL).to(image_embeddings.dtype)
        bias = torch.cat([torch.zeros_like(pad[:, :1]).expand(-1, n_out), pad], dim=1) * -1e4
        n_tokens = n_out + point_labels.shape[1]
        if n_tokens == self.embedding_size[0] * self.embedding_size[1]:
            raise ValueError("max_points: token count equals the image token count; pick another max_points")
        with key_token_bias(bias, n_tokens):
            return super().forward(image_embeddings, point_coords, point_labels, mask_input, has_mask_input)


# -- conversion -----------------------------------------------------------------------------------
def convert_graph(module: torch.nn.Module, args: tuple, path: Path) -> list[str]:
    """litert-torch conversion of ``module(*args)`` to ``path``; returns notes. If the plain
    conversion fails, it is retried with SDPA replaced by its math form
    (:class:`export.wrappers.MathAttention`); a second failure raises :class:`ExportError`
    naming the operator where the message shows it."""
    import litert_torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    notes: list[str] = []
    module = module.eval()
    first: Optional[BaseException] = None
    for attempt in ("plain", "math-attention"):
        try:
            with torch.no_grad(), _quiet(), sdpa_kernel(SDPBackend.MATH), \
                    (MathAttention() if attempt == "math-attention" else contextlib.nullcontext()):
                litert_torch.convert(module, args).export(str(path))
            if first is not None:
                notes.append(f"plain litert-torch conversion failed, converted with math attention: "
                             f"{_export_error(path.name, first)}")
            return notes
        except Exception as exc:  # noqa: BLE001
            if path.exists():
                path.unlink()
            if first is None:
                first = exc
                continue
            raise _export_error(f"{path.name} (litert-torch)", first) from first
    raise AssertionError("unreachable")


def _signature_keys(path: Path) -> tuple[list[str], list[str]]:
    sess = LiteRTSession(path)
    return list(sess._in_keys), list(sess._out_keys)


def describe_io(path: Path) -> tuple[list[dict], list[dict]]:
    """Canonical-name records (shape, dtype, tflite signature name, quantisation) of a graph."""
    sess = LiteRTSession(path)

    def desc(details: dict, keys: list[str]) -> list[dict]:
        out = []
        for name, key in zip(details, keys):
            d = details[name]
            rec = {"name": name, "shape": [int(v) for v in d.get("shape_signature", d["shape"])],
                   "dtype": np.dtype(d["dtype"]).name, "signature_name": key}
            scale, zero = d.get("quantization", (0.0, 0))
            if scale:
                rec["quantization"] = {"scale": float(scale), "zero_point": int(zero)}
            out.append(rec)
        return out

    return desc(sess.input_details(), sess._in_keys), desc(sess.output_details(), sess._out_keys)


# -- quantisation ---------------------------------------------------------------------------------
def _op(name: str):
    from ai_edge_quantizer import qtyping

    return getattr(qtyping.TFLOperationName, name)


def _write(q, dst: Path, calibration=None) -> None:
    if dst.exists():
        dst.unlink()
    with _quiet():
        q.quantize(calibration, serialize_to_path=str(dst), enable_progress_report=False)


def convert_fp16(src: Path, dst: Path) -> dict[str, Any]:
    from ai_edge_quantizer import quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    q = quantizer.Quantizer(str(src))
    q.add_weight_only_config(regex=".*", operation_name=_op("ALL_SUPPORTED"), num_bits=16,
                             algorithm_key=AlgorithmName.FLOAT_CASTING)
    _write(q, dst)
    return {"method": "ai_edge_quantizer weight-only FLOAT_CASTING", "weight_type": "float16",
            "ops": "ALL_SUPPORTED", "compute": "float32", "io": "float32"}


def quantize_int8_dynamic(src: Path, dst: Path) -> dict[str, Any]:
    from ai_edge_quantizer import quantizer

    q = quantizer.Quantizer(str(src))
    for op in WEIGHT_OPS:
        q.add_dynamic_config(regex=".*", operation_name=_op(op), num_bits=8)
    _write(q, dst)
    return {"method": "ai_edge_quantizer dynamic (dynamic-range int8)", "weight_type": "int8",
            "granularity": "CHANNELWISE", "activations": "dynamic (quantised per call)",
            "ops": list(WEIGHT_OPS), "io": "float32"}


def _tflite_feeds(feeds: list[dict], input_names: Sequence[str], keys: Sequence[str],
                  max_points: Optional[int]) -> list[dict]:
    out = []
    for f in feeds:
        f = dict(f)
        if max_points is not None:
            f["point_coords"], f["point_labels"] = pad_points(f["point_coords"], f["point_labels"], max_points)
        out.append({k: np.ascontiguousarray(np.asarray(f[n], np.float32)) for n, k in zip(input_names, keys)})
    return out


def quantize_int8_static(src: Path, dst: Path, feeds: list[dict], input_names: Sequence[str],
                         full_integer: bool, max_points: Optional[int] = None) -> dict[str, Any]:
    """Static int8 (weights + activations calibrated on ``feeds``, canonical-name dicts).
    ``full_integer``: every supported op (int8 I/O) first, checked by running one feed; on
    failure, ``FULLY_CONNECTED`` / ``CONV_2D`` only with float I/O (the reason is recorded)."""
    from ai_edge_quantizer import quantizer

    if not feeds:
        raise ValueError("int8_static needs calibration images (calib_images): never random tensors")
    keys, _ = _signature_keys(src)
    data = {SIGNATURE_KEY: _tflite_feeds(feeds, input_names, keys, max_points)}
    scopes = [("ALL_SUPPORTED",), WEIGHT_OPS] if full_integer else [WEIGHT_OPS]
    fallback = None
    for ops in scopes:
        q = quantizer.Quantizer(str(src))
        for op in ops:
            q.add_static_config(regex=".*", operation_name=_op(op), activation_num_bits=8, weight_num_bits=8)
        try:
            with _quiet():
                calib = q.calibrate(data, num_threads=1)
            _write(q, dst, calib)
            sess = LiteRTSession(dst)
            sess.run(dict(zip(sess.input_names, (feeds[0][n] for n in sess.input_names))))
        except Exception as exc:  # noqa: BLE001
            if ops == WEIGHT_OPS:
                raise _export_error(f"{dst.name} (ai-edge-quantizer static int8)", exc, "quantization") from exc
            fallback = f"full-integer int8 failed ({_export_error(dst.name, exc, 'quantization')}); " \
                       f"static int8 on {list(WEIGHT_OPS)} only"
            continue
        rec = {"method": "ai_edge_quantizer static (min/max calibration)", "weight_type": "int8",
               "granularity": "CHANNELWISE", "activation_type": "int8 (asymmetric, per tensor)",
               "ops": list(ops), "full_integer": ops != WEIGHT_OPS,
               "io": "int8 (quantised / dequantised by the runtime)" if ops != WEIGHT_OPS else "float32",
               "num_calibration_samples": len(feeds)}
        if fallback:
            rec["fallback"] = fallback
        return rec
    raise AssertionError("unreachable")


# -- the whole export -----------------------------------------------------------------------------
def export_tflite(
    model,
    out_dir: str | Path,
    precisions: Sequence[str] = ("fp32", "fp16", "int8"),
    calib_images: Any = None,
    *,
    verify_images: Any = None,
    normalize_inside: bool = True,
    mask_outputs: str = "all",
    accept_failures: Optional[Mapping[str, str]] = None,
    max_points: int = DEFAULT_MAX_POINTS,
    full_integer_encoder: bool = True,
) -> dict[str, Any]:
    """Export ``model`` to TFLite in ``out_dir`` for every precision; write ``manifest.json``.

    ``calib_images``: folder / paths / uint8 arrays of real images for int8_static calibration.
    ``verify_images``: real images for verification against eager PyTorch (default: the
    calibration images); with neither, artifacts are recorded as unverified.
    ``accept_failures``: precision (or 'tflite:precision') -> reason; a verification miss at that
    precision is recorded instead of raising. ``max_points``: the decoder's fixed number of
    point slots. ``full_integer_encoder``: int8_static encoder with every op in int8 (else
    FULLY_CONNECTED / CONV_2D only). Returns the manifest."""
    precisions = expand_precisions(precisions)
    if int(max_points) < 1:
        raise ValueError(f"max_points: expected >= 1, got {max_points}")
    max_points = int(max_points)
    calib = load_images(calib_images)
    if "int8_static" in precisions and not calib:
        raise ValueError("tflite int8_static needs calibration images (calib_images): never random tensors")
    xd = ExportDir(out_dir, model, normalize_inside=normalize_inside, mask_outputs=mask_outputs,
                   verify_images=verify_images if verify_images is not None else calib,
                   accept_failures=accept_failures)
    model = xd.model
    versions = library_versions(VERSION_DISTS)

    enc = EncoderWrapper(model, normalize_inside=normalize_inside).eval()
    dec = SlotDecoderWrapper(model, mask_outputs=mask_outputs).eval()
    dec_args = dec.example_inputs(max_points)
    with xd.scratch("tflite") as tmp:
        tmp = Path(tmp)
        fp32 = {"encoder": tmp / "encoder_fp32.tflite", "decoder": tmp / "decoder_fp32.tflite"}
        notes = {
            "encoder": convert_graph(enc, enc.example_inputs(), fp32["encoder"]),
        }
        # SAM's direct attention: LiteRT runs the factorised form's batched matmuls slower
        # (1024-px decoder, 1 click: 110 ms vs 72 ms; benchmarks/decoder_latency.py)
        with attention_mode(dec, "direct"):
            notes["decoder"] = convert_graph(dec, dec_args, fp32["decoder"])
        names = {"encoder": ENCODER_INPUT_NAMES, "decoder": DECODER_INPUT_NAMES}
        feeds: dict[str, list] = {}
        for prec in precisions:
            for role in ("encoder", "decoder"):
                file = f"{role}_{prec}.tflite"
                staged = tmp / f"staged_{file}"
                quant = None
                try:
                    if prec == "fp32":
                        shutil.copyfile(fp32[role], staged)
                    elif prec == "fp16":
                        quant = convert_fp16(fp32[role], staged)
                    elif prec == "int8_dynamic":
                        quant = quantize_int8_dynamic(fp32[role], staged)
                    else:
                        if role not in feeds:
                            feeds[role] = (encoder_calibration_feeds(model, calib, normalize_inside)
                                           if role == "encoder" else decoder_calibration_feeds(model, calib))
                        quant = quantize_int8_static(
                            fp32[role], staged, feeds[role], names[role],
                            full_integer=full_integer_encoder and role == "encoder",
                            max_points=max_points if role == "decoder" else None)
                        quant["calibration_images"] = len(calib)
                    inputs, outputs = describe_io(staged)
                except ExportError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    raise _export_error(f"{file} ({prec})", exc, "quantization") from exc
                role_notes = list(notes[role])
                if role == "decoder":
                    role_notes.append(
                        f"fixed number of point slots: max_points={max_points}; the runtime fills unused slots with "
                        f"(0, 0) / label {PAD_LABEL:g} (masked out in the graph, exact) and refuses more points")
                entry = xd.add(staged, file, role=role, fmt="tflite", precision=prec, inputs=inputs,
                               outputs=outputs, dynamic_axes={}, quantization=quant,
                               exporter=f"litert-torch {versions.get('litert-torch', '')}".strip(),
                               backend_versions=versions, notes=role_notes)
                if role == "decoder":
                    entry["max_points"] = max_points
                    write_manifest(xd.path, xd.manifest)
    return xd.manifest


# -- runtime --------------------------------------------------------------------------------------
# A .tflite file written above has one signature, ``serving_default``, whose inputs are ``args_0 ..``
# and outputs ``output_0 ..`` in the order of the wrapper's ``forward``. The session exposes the
# canonical names instead (by arity), so it is interchangeable with the other formats' sessions.
# The decoder has a *fixed* number of points N: the session fills unused slots with point (0, 0)
# and label PAD_LABEL (-2), which the graph masks out of attention (exactly the unpadded result),
# and refuses more than N points with a ValueError. Quantised inputs / outputs (a full-integer int8
# graph) are quantised / dequantised with the tensor's scale and zero point, so callers always
# pass and get float32. ``ai_edge_litert`` is imported inside LiteRTBackend.load only.


def _index(name: str) -> int:
    m = re.search(r"(\d+)$", name)
    return int(m.group(1)) if m else 0


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
        try:
            ins, outs = canonical_names(len(self._in_keys), len(self._out_keys))
        except ValueError as exc:
            raise ValueError(f"{self.path}: a tflite graph: {exc}") from None
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
