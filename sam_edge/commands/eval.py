"""Alias of `sam-edge evaluate --against teacher` (same flags as before, same outputs): score a
distilled student against its teacher on held-out SA-1B-format data: mIoU of the student's masks
against the teacher's for 1 point (each model's mask chosen by its own predicted IoU, and the best
of the student's 3), 2 points and a box, plus both models against ground truth. Images, masks and
prompts depend only on --seed and the image ids, so every student is scored on the same ones.
Prints a table; --out writes JSON."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--student", required=True,
                        help="registered model name, or a .safetensors written by distill/save_model")
    parser.add_argument("--student-checkpoint", help="weights for a --student given by name")
    parser.add_argument("--teacher", required=True, help="registered teacher name")
    parser.add_argument("--teacher-checkpoint", help="teacher weights (default: the variant's bundled weights)")
    parser.add_argument("--data", required=True, help="held-out SA-1B-format folder")
    parser.add_argument("--images", type=int, default=None, help="first N usable images (default: all)")
    parser.add_argument("--masks-per-image", type=int, default=8, help="ground-truth masks per image (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mask choice and prompts (default 0)")
    parser.add_argument("--low-res", action="store_true",
                        help="compare masks at the decoder's low resolution (faster) instead of the input size")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument("--amp", default="off", choices=("off", "bf16", "fp16", "auto"), help="autocast (default off)")
    parser.add_argument("--out", help="write the result as JSON to this file")


def run(args: argparse.Namespace) -> int:
    from sam_edge.commands.evaluate import run_against_teacher

    return run_against_teacher(
        student=args.student, student_checkpoint=args.student_checkpoint, teacher=args.teacher,
        teacher_checkpoint=args.teacher_checkpoint, data=args.data, images=args.images,
        masks_per_image=args.masks_per_image, seed=args.seed, low_res=args.low_res, device=args.device,
        amp=args.amp, out=args.out)
