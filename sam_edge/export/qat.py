"""Quantisation-aware training of the image encoder for ExecuTorch int8 (PT2E, the XNNPACK scheme
of the ExecuTorch exporter), as a function: what ``sam-edge quantize --qat`` and the pipeline's
quantize stage run. A short distillation against the teacher's embeddings with fake
quantisation; ``encoder_int8_qat.pte`` is lowered, verified against the fp32 student and added
to the export directory ``out``."""
from __future__ import annotations

from typing import Any


def export_qat(model, out, *, teacher: str, data: str, teacher_checkpoint: str | None = None,
               target: str = "student", images: int = 256, calib_images: int = 16, eval_images: int = 16,
               steps: int = 200, batch_size: int = 8, lr: float = 1e-5) -> dict[str, Any]:
    """QAT of ``model``'s encoder; returns the manifest entry of ``encoder_int8_qat.pte``. Prints
    embedding cosine / teacher MSE of fp32, post-training int8 and QAT int8 on held-out images."""
    from pathlib import Path

    from sam_edge.registry import create_model

    from sam_edge.export.common import ExportDir, load_images
    from sam_edge.formats.executorch import FORMAT, describe_io, lower_to_pte, versions
    from sam_edge.export.quantize import qat_encoder
    from sam_edge.export.wrappers import ENCODER_INPUT_NAMES, ENCODER_OUTPUT_NAMES, EncoderWrapper

    if not data:
        raise ValueError("--qat needs --data: a folder of real images (train, calibration, held-out)")
    if min(images, calib_images, eval_images, steps, batch_size) < 1:
        raise ValueError("--images, --calib-images, --eval-images, --steps and --batch-size must be >= 1")
    images = load_images(data, limit=images + eval_images)
    if len(images) < eval_images + 1:
        raise ValueError(f"--data {data}: {len(images)} images, need more than --eval-images {eval_images}")
    train, held = images[: -eval_images], images[-eval_images:]
    teacher_model = create_model(teacher, checkpoint=teacher_checkpoint).eval()
    ep_qat, _, metrics = qat_encoder(model, teacher_model, train, train[: calib_images], held,
                                     steps=steps, batch_size=batch_size, lr=lr,
                                     target=target)
    for k in ("fp32", "ptq", "qat"):
        m = metrics[k]
        print(f"{k:5s} embedding cosine vs fp32 student (min over {len(held)} held-out) "
              f"{m['cosine_min_vs_fp32']:.5f}; MSE vs teacher {m['mse_vs_teacher']:.5f}")
    xd = ExportDir(out, model, verify_images=held)
    wrapper = EncoderWrapper(model).eval()
    ex = wrapper.example_inputs()
    with xd.scratch("qat") as tmp:
        staged = Path(tmp) / "encoder_int8_qat.pte"
        summary = lower_to_pte(ep_qat, staged, staged.name)
        quant = {"method": "torchao.quantization.pt2e prepare_qat_pt2e / convert_pt2e + XNNPACKQuantizer(is_qat)",
                 "per_channel": True, "symmetric": True, "activation_type": "int8", "weight_type": "int8",
                 "teacher": teacher, "qat": {k: v for k, v in metrics.items() if k != "log"},
                 "delegation": summary}
        entry = xd.add(staged, "encoder_int8_qat.pte", role="encoder", fmt=FORMAT, precision="int8_qat",
                       inputs=describe_io(ENCODER_INPUT_NAMES, ex, {}),
                       outputs=describe_io(ENCODER_OUTPUT_NAMES, (wrapper(*ex).detach(),)),
                       quantization=quant, exporter="torch.export (QAT) + XnnpackPartitioner", backend_versions=versions())
    v = entry["verification"]["metrics"]
    print(f"encoder_int8_qat.pte -> {out} (verified: cosine {v['cosine_min']:.5f} vs eager fp32)")
    return entry
