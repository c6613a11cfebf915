"""Quantise outside the per-format exporters.

--torchao METHOD: torchao int8 (int8_weight_only or int8_dynamic) for PyTorch deployment; writes
a .pt (torchao tensors + model config; load with export.quantize.load_torchao) and prints eager
latency and output agreement against fp32, measured in the same run. torchao quantises nn.Linear
only (the decoder's transformer; a convolutional encoder stays float).

--qat: quantisation-aware training of the image encoder for ExecuTorch int8 (PT2E, the same
XNNPACK scheme as `sam-edge export`): a short distillation run against the teacher's embeddings
with fake quantisation, then encoder_int8_qat.pte is lowered, verified against the fp32 student
and added to the export directory --out (next to what `sam-edge export` wrote there). Prints
embedding cosine and teacher MSE of fp32, post-training int8 and QAT int8 on held-out images."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="registered model name or a sam-edge .safetensors file")
    parser.add_argument("--checkpoint", help="weights for --model given by name (default: bundled weights)")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--torchao", choices=("int8_weight_only", "int8_dynamic"), help="torchao int8 method")
    mode.add_argument("--qat", action="store_true", help="QAT of the image encoder for ExecuTorch int8")
    parser.add_argument("--teacher", default="sam_demo_teacher", help="QAT: teacher model name (default sam_demo_teacher)")
    parser.add_argument("--teacher-checkpoint", help="QAT: teacher weights (default: bundled)")
    parser.add_argument("--data", help="QAT: image folder (SA-1B folders work): train, calibration and held-out images")
    parser.add_argument("--target", choices=("student", "teacher"), default="student",
                        help="QAT: learn the fp32 student's embeddings (recover what int8 loses, default) or the teacher's")
    parser.add_argument("--images", type=int, default=256, help="QAT: training images (default 256)")
    parser.add_argument("--calib-images", type=int, default=16, help="QAT/PTQ calibration images (default 16)")
    parser.add_argument("--eval-images", type=int, default=16, help="QAT: held-out images for the comparison (default 16)")
    parser.add_argument("--steps", type=int, default=200, help="QAT steps (default 200)")
    parser.add_argument("--batch-size", type=int, default=8, help="QAT batch size (default 8)")
    parser.add_argument("--lr", type=float, default=1e-5, help="QAT peak learning rate, cosine to 0 (default 1e-5)")
    parser.add_argument("--repeats", type=int, default=20, help="torchao: timed runs (default 20)")
    parser.add_argument("--out", required=True, help="--torchao: output .pt file; --qat: export directory")


def run(args: argparse.Namespace) -> int:
    from sam_edge.registry import load_model_spec

    model = load_model_spec(args.model, args.checkpoint).eval()
    return _torchao(args, model) if args.torchao else _qat(args, model)


def _torchao(args, model) -> int:
    import torch

    from sam_edge.utils.timing import timed
    from sam_edge.encoders import fuse_model

    from sam_edge.export.quantize import save_torchao, torchao_quantize
    from sam_edge.export.wrappers import DecoderWrapper

    if not args.out.endswith(".pt"):
        raise ValueError(f"--out: expected a .pt file for --torchao, got {args.out!r}")
    import copy

    fp32 = fuse_model(copy.deepcopy(model).eval())
    q, details = torchao_quantize(model, args.torchao)
    save_torchao(q, args.out, args.torchao, details)
    torch.manual_seed(0)
    x = torch.randn(1, 3, model.image_size, model.image_size)
    res = {}
    with torch.no_grad():
        for name, m in (("fp32", fp32), (args.torchao, q)):
            emb = m.image_encoder(x)
            dec = DecoderWrapper(m).eval()
            ex = dec.example_inputs(2)
            ex = (emb, *ex[1:])
            res[name] = {"encoder_ms": 1e3 * timed(lambda: m.image_encoder(x), args.repeats, warmup=2),
                         "decoder_ms": 1e3 * timed(lambda: dec(*ex), args.repeats * 5, warmup=3),
                         "emb": emb, "low": dec(*ex)[0]}
    a, b = res["fp32"], res[args.torchao]
    cos = float(torch.nn.functional.cosine_similarity(a["emb"].flatten(), b["emb"].flatten(), dim=0))
    inter = ((a["low"] > 0) & (b["low"] > 0)).sum().item()
    union = ((a["low"] > 0) | (b["low"] > 0)).sum().item()
    print(f"torchao {args.torchao}: {details['num_linear']} nn.Linear quantised "
          f"({details['linear_weight_share']:.0%} of the parameters) -> {args.out}")
    print(f"encoder: fp32 {a['encoder_ms']:.2f} ms, torchao {b['encoder_ms']:.2f} ms "
          f"({a['encoder_ms'] / b['encoder_ms']:.2f}x); embedding cosine {cos:.5f}")
    print(f"decoder: fp32 {a['decoder_ms']:.2f} ms, torchao {b['decoder_ms']:.2f} ms "
          f"({a['decoder_ms'] / b['decoder_ms']:.2f}x); mask IoU vs fp32 {inter / max(union, 1):.4f}")
    return 0


def _qat(args, model) -> int:
    from sam_edge.export.qat import export_qat

    export_qat(model, args.out, teacher=args.teacher, teacher_checkpoint=args.teacher_checkpoint, data=args.data,
               target=args.target, images=args.images, calib_images=args.calib_images,
               eval_images=args.eval_images, steps=args.steps, batch_size=args.batch_size, lr=args.lr)
    return 0
