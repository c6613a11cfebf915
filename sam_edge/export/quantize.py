"""Quantisation outside the per-format exporters.

* :func:`torchao_quantize`: torchao int8 for PyTorch deployment, weight-only
  (``Int8WeightOnlyConfig``) or dynamic activations + int8 weights
  (``Int8DynamicActivationInt8WeightConfig``). torchao quantises ``nn.Linear`` layers only: a
  convolutional encoder (RepViT) keeps its convolutions in float, the decoder's transformer is
  quantised. Saved as a state dict of torchao tensors + the model config; :func:`load_torchao`
  rebuilds it.
* :func:`qat_encoder`: quantisation-aware training of the image encoder for the ExecuTorch int8
  artifact: PT2E ``prepare_qat_pt2e`` with the same XNNPACKQuantizer scheme as the PTQ export
  (per-channel symmetric int8, ``is_qat=True``), a short distillation run against the teacher's
  embeddings on real images (fake quantisation in the forward pass), then ``convert_pt2e`` and
  lowering to an ``encoder_int8_qat.pte`` recorded (and verified) in the export directory.
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sam_edge.encoders import fuse_model
from sam_edge.modeling.sam import Sam

TORCHAO_METHODS = ("int8_weight_only", "int8_dynamic")


# -- torchao ------------------------------------------------------------------------------------
def _torchao_config(method: str):
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig

    if method == "int8_weight_only":
        return Int8WeightOnlyConfig()
    if method == "int8_dynamic":
        return Int8DynamicActivationInt8WeightConfig()
    raise ValueError(f"torchao method {method!r}: expected one of {TORCHAO_METHODS}")


def torchao_quantize(model: Sam, method: str) -> tuple[Sam, dict[str, Any]]:
    """A quantised copy of ``model`` (eval, re-parameterised) and what was quantised."""
    from torchao.quantization import quantize_

    config = _torchao_config(method)
    q = fuse_model(copy.deepcopy(model).eval())
    linears = {n: m.weight.numel() for n, m in q.named_modules() if isinstance(m, torch.nn.Linear)}
    total = sum(p.numel() for p in q.parameters())
    quantize_(q, config)
    return q, {"method": f"torchao {type(config).__name__}", "quantized_modules": "nn.Linear",
               "num_linear": len(linears), "linear_weight_share": sum(linears.values()) / max(total, 1)}


def save_torchao(model: Sam, path: str | Path, method: str, details: dict) -> Path:
    import json

    from sam_edge.utils.io import atomic_path

    path = Path(path)
    payload = {"state_dict": model.state_dict(), "config": json.dumps(model.config.to_dict()),
               "method": method, "details": json.dumps(details), "reparameterized": True}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_torchao(path: str | Path) -> Sam:
    """Rebuild a model saved by :func:`save_torchao` (config -> model -> re-parameterise ->
    quantise -> load the quantised tensors)."""
    import json

    import torchao  # noqa: F401  (registers its tensor types for weights_only loading)

    from sam_edge.registry import ModelConfig, build_sam

    # weights_only: the file is data, never code (a pickle with a __reduce__ would run on load);
    # torchao registers its quantised tensor types as safe globals on import
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - UnpicklingError and friends, named
        raise ValueError(f"{path}: not a torchao model file written by `sam-edge quantize --torchao` "
                         f"(torch.load weights_only=True refused it: {str(exc).splitlines()[0][:200]})") from None
    missing = [k for k in ("state_dict", "config", "method") if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise ValueError(f"{path}: not a torchao model file (missing {', '.join(missing)})")
    model = fuse_model(build_sam(ModelConfig.from_dict(json.loads(payload["config"]))).eval())
    from torchao.quantization import quantize_

    quantize_(model, _torchao_config(payload["method"]))
    model.load_state_dict(payload["state_dict"], assign=True)
    return model.eval()


# -- QAT ----------------------------------------------------------------------------------------
def _encoder_inputs(model: Sam, images: Sequence[np.ndarray], normalize_inside: bool) -> torch.Tensor:
    from sam_edge.export.verify import encoder_input

    mean, std = model.pixel_mean.flatten().tolist(), model.pixel_std.flatten().tolist()
    return torch.from_numpy(np.concatenate(
        [encoder_input(img, model.image_size, mean, std, normalize_inside)[0] for img in images]))


@torch.no_grad()
def _teacher_embeddings(teacher: Sam, images: Sequence[np.ndarray], batch: int = 16) -> torch.Tensor:
    x = _encoder_inputs(teacher, images, normalize_inside=False)
    return torch.cat([teacher.image_encoder(x[i:i + batch]) for i in range(0, len(x), batch)])


def _cosine_min(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1).min())


def qat_encoder(
    student: Sam,
    teacher: Sam,
    train_images: Sequence[np.ndarray],
    calib_images: Sequence[np.ndarray],
    eval_images: Sequence[np.ndarray],
    *,
    steps: int = 200,
    batch_size: int = 8,
    lr: float = 1e-5,
    normalize_inside: bool = True,
    target: str = "student",
    seed: int = 0,
    log_every: int = 25,
) -> tuple[Any, Any, dict[str, Any]]:
    """QAT of ``student``'s image encoder against ``teacher``'s embeddings.

    ``target``: what the fake-quantised encoder learns to reproduce: ``"student"`` (the fp32
    student's own embeddings: recovers what quantisation lost) or ``"teacher"``.
    Returns (exported program of the converted QAT encoder, exported program of the PTQ encoder
    calibrated on the same images, metrics): embedding cosine of QAT / PTQ int8 against the fp32
    student and MSE against the teacher on ``eval_images``, before and after."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e, prepare_qat_pt2e

    from sam_edge.formats.executorch import weight_op_filter
    from sam_edge.export.wrappers import MathAttention
    from sam_edge.export.wrappers import EncoderWrapper

    if not train_images or not calib_images or not eval_images:
        raise ValueError("qat_encoder needs real train, calibration and evaluation images")
    torch.manual_seed(seed)
    wrapper = EncoderWrapper(copy.deepcopy(student), normalize_inside=normalize_inside).eval()
    for p in wrapper.parameters():
        p.data = p.data.contiguous()
    if target not in ("student", "teacher"):
        raise ValueError(f"target: expected 'student' or 'teacher', got {target!r}")
    x_train = _encoder_inputs(student, train_images, normalize_inside)
    if target == "teacher":
        y_train = _teacher_embeddings(teacher, train_images)
    else:
        with torch.no_grad():
            y_train = torch.cat([wrapper(x_train[i:i + 16]) for i in range(0, len(x_train), 16)])
    x_cal = _encoder_inputs(student, calib_images, normalize_inside)
    x_eval = _encoder_inputs(student, eval_images, normalize_inside)
    y_eval_teacher = _teacher_embeddings(teacher, eval_images)
    with torch.no_grad():
        y_eval_fp32 = wrapper(x_eval)

    batch = torch.export.Dim("batch", min=1, max=max(64, batch_size))
    example = (x_train[:batch_size].clone(),)

    def export(module):
        with MathAttention():
            return torch.export.export(module, example, dynamic_shapes=({0: batch},), strict=False)

    def evaluate(module) -> dict[str, float]:
        with torch.no_grad():
            y = torch.cat([module(x_eval[i:i + 8]) for i in range(0, len(x_eval), 8)])
        return {"cosine_min_vs_fp32": _cosine_min(y, y_eval_fp32),
                "mse_vs_teacher": float(F.mse_loss(y, y_eval_teacher))}

    # PTQ baseline, same scheme and calibration images
    ptq_q = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    ptq_q.set_filter_function(weight_op_filter())
    ptq = prepare_pt2e(export(wrapper).module(), ptq_q)
    with torch.no_grad():
        for i in range(0, len(x_cal), 8):
            ptq(x_cal[i:i + 8])
    ptq = convert_pt2e(ptq)
    metrics: dict[str, Any] = {"fp32": {"cosine_min_vs_fp32": 1.0,
                                        "mse_vs_teacher": float(F.mse_loss(y_eval_fp32, y_eval_teacher))},
                               "ptq": evaluate(ptq)}

    # QAT: observers start from the calibration images, then distillation with fake quantisation
    qat_q = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_qat=True))
    qat_q.set_filter_function(weight_op_filter())
    prepared = prepare_qat_pt2e(export(wrapper).module(), qat_q)
    with torch.no_grad():
        for i in range(0, len(x_cal), 8):
            prepared(x_cal[i:i + 8])
    move_exported_model_to_train(prepared)
    # Freeze the quantisation parameters at their calibrated values: with moving-average observers
    # left on, the loss rose even at learning rate 0 (ranges drifting batch to batch).
    from torchao.quantization.pt2e.fake_quantize import disable_observer

    prepared.apply(disable_observer)
    opt = torch.optim.AdamW([p for p in prepared.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    log = []
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(x_train), (batch_size,), generator=gen)
        loss = F.mse_loss(prepared(x_train[idx]), y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (step - 1) / steps))
        opt.step()
        if step % log_every == 0 or step == steps:
            log.append({"step": step, "loss": float(loss), "seconds": round(time.perf_counter() - t0, 1)})
            print(f"qat step {step}/{steps} loss {float(loss):.5f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    move_exported_model_to_eval(prepared)
    converted = convert_pt2e(prepared)
    metrics["qat"] = evaluate(converted)
    metrics.update({"target": target, "steps": steps, "batch_size": batch_size, "lr": lr, "train_images": len(train_images),
                    "calibration_images": len(calib_images), "eval_images": len(eval_images), "log": log})
    one = (x_eval[:1].clone(),)
    with MathAttention():
        ep_qat = torch.export.export(converted, one, strict=False)
        ep_ptq = torch.export.export(ptq, one, strict=False)
    return ep_qat, ep_ptq, metrics
