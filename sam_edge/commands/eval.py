"""Score a distilled student against its teacher on held-out SA-1B-format data: mIoU of the
student's masks against the teacher's for 1 point (each model's mask chosen by its own predicted
IoU, and the best of the student's 3), 2 points and a box, plus both models against ground
truth. Images, masks and prompts depend only on --seed and the image ids, so every student is
scored on the same ones. Prints a table; --out writes JSON."""
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
    import time

    from sam_edge.registry import create_model
    from sam_edge.utils.io import write_json_atomic

    from sam_edge.data import SA1BDataset
    from sam_edge.utils.device import resolve_device
    from sam_edge.distillation.stages import format_eval_table, load_model_spec
    from sam_edge.evaluation.evaluator import evaluate_student

    if args.images is not None and args.images < 1:
        raise ValueError("--images must be >= 1")
    if args.masks_per_image < 1:
        raise ValueError("--masks-per-image must be >= 1")
    import logging

    from sam_edge.registry import bundled_weights_path, get_config

    device = resolve_device(args.device)
    if args.teacher_checkpoint is None and bundled_weights_path(get_config(args.teacher)) is None:
        logging.getLogger("distill.eval").warning(
            "teacher %r has no bundled weights and no --teacher-checkpoint: it has RANDOM weights", args.teacher)
    teacher = create_model(args.teacher, checkpoint=args.teacher_checkpoint).to(device)
    student = load_model_spec(args.student, args.student_checkpoint).to(device)
    ds = SA1BDataset(args.data, image_size=teacher.image_size)
    t0 = time.perf_counter()
    result = evaluate_student(student, teacher, ds, images=args.images, masks_per_image=args.masks_per_image,
                              seed=args.seed, full_res=not args.low_res, amp=args.amp, progress=True)
    result.update(student=args.student, student_checkpoint=args.student_checkpoint, teacher=args.teacher,
                  teacher_checkpoint=args.teacher_checkpoint, data=str(args.data),
                  seconds=round(time.perf_counter() - t0, 2), data_summary=ds.report.summary())
    print(format_eval_table(result))
    if args.out:
        write_json_atomic(args.out, result)
        print(f"wrote {args.out}")
    return 0
