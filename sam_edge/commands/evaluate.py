"""Score a model on SA-1B-format data with seeded simulated prompts, against the ground truth or
against its teacher (--against; the one batched evaluator, sam_edge.evaluation.evaluator).

--against gt (default): promptable-segmentation mIoU of --model against the ground-truth masks:
one point (best of the 3 masks), one point + N error-region corrections, and a noisy box; and
SAM's standard protocol (a click at the mask's centre, the exact box). Prints JSON; --json/--out
also writes it.

--against teacher: mIoU of a distilled student's (--model/--student) masks against its
--teacher's for the same prompts: 1 point (each model's mask chosen by its own predicted IoU, and
the best of the student's 3), 2 points and a box, plus both models against the ground truth.
Images, masks and prompts depend only on --seed and the image ids, so every student is scored
on the same ones. Prints a table; --out/--json writes JSON. `sam-edge eval` is an alias of this
mode."""
from __future__ import annotations

import argparse

AGAINST = ("gt", "teacher")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--against", choices=AGAINST, default="gt",
                        help="gt: the model against the ground truth (default); teacher: a student against its "
                             "--teacher (and both against the ground truth), as `sam-edge eval`")
    parser.add_argument("--model", "--student", dest="model", required=True,
                        help="registered model name, or a .safetensors written by distill/save_model "
                             "(--against teacher: the student)")
    parser.add_argument("--checkpoint", "--student-checkpoint", dest="checkpoint",
                        help="weights for a --model given by name (default: the variant's bundled weights, if any)")
    parser.add_argument("--teacher", help="--against teacher: registered teacher name (required there)")
    parser.add_argument("--teacher-checkpoint", help="--against teacher: teacher weights (default: bundled)")
    parser.add_argument("--data", required=True, help="SA-1B-format folder (held-out images)")
    parser.add_argument("--images", type=int, default=None, help="evaluate the first N usable images (default: all)")
    parser.add_argument("--masks-per-image", type=int, default=8, help="ground-truth masks per image (default 8)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the mask choice and prompts (default 1 against gt, 0 against the teacher)")
    gt = parser.add_argument_group("--against gt")
    gt.add_argument("--corrections", type=int, default=8, help="error-region clicks after the first point (default 8)")
    gt.add_argument("--by-area", action="store_true",
                    help="also report each mIoU per mask-area bucket (< 256, 256-1024, ... pixels)")
    teacher = parser.add_argument_group("--against teacher")
    teacher.add_argument("--low-res", action="store_true",
                         help="compare masks at the decoder's low resolution (faster) instead of the input size")
    teacher.add_argument("--amp", default="off", choices=("off", "bf16", "fp16", "auto"), help="autocast (default off)")
    parser.add_argument("--device", default=None,
                        help="auto | cpu | cuda (default: auto against the teacher, cpu against gt)")
    parser.add_argument("--json", "--out", dest="out", help="also write the result as JSON to this file")


def run(args: argparse.Namespace) -> int:
    if args.against == "teacher":
        if not args.teacher:
            raise ValueError("--against teacher needs --teacher")
        return run_against_teacher(
            student=args.model, student_checkpoint=args.checkpoint, teacher=args.teacher,
            teacher_checkpoint=args.teacher_checkpoint, data=args.data, images=args.images,
            masks_per_image=args.masks_per_image, seed=0 if args.seed is None else args.seed, low_res=args.low_res,
            device=args.device or "auto", amp=args.amp, out=args.out)
    return run_against_gt(args)


def run_against_gt(args: argparse.Namespace) -> int:
    import time

    import torch

    from sam_edge.registry import load_model_spec
    from sam_edge.utils.io import dumps_json, write_json_atomic

    from sam_edge.data import SA1BDataset
    from sam_edge.evaluation.evaluator import evaluate

    model = load_model_spec(args.model, args.checkpoint)
    if args.device is not None:
        from sam_edge.utils.device import resolve_device

        model = model.to(resolve_device(args.device))
    ds = SA1BDataset(args.data, image_size=model.image_size)
    t0 = time.perf_counter()
    with torch.no_grad():
        result = evaluate(model, ds, against="gt", images=args.images, masks_per_image=args.masks_per_image,
                          seed=1 if args.seed is None else args.seed, corrections=args.corrections,
                          by_area=args.by_area)
    result.update(images=len(list(range(len(ds)))[: args.images]), seconds=round(time.perf_counter() - t0, 1),
                  model=args.model, checkpoint=args.checkpoint, data=str(args.data),
                  data_summary=ds.report.summary())
    print(dumps_json(result, indent=2))
    if args.out:
        write_json_atomic(args.out, result)
    return 0


def run_against_teacher(*, student: str, student_checkpoint: str | None, teacher: str,
                        teacher_checkpoint: str | None, data: str, images: int | None, masks_per_image: int,
                        seed: int, low_res: bool, device: str, amp: str, out: str | None) -> int:
    """``sam-edge evaluate --against teacher`` (= ``sam-edge eval``): prints the table, writes
    ``out`` (JSON) when given."""
    import logging
    import time

    from sam_edge.registry import load_model_spec
    from sam_edge.registry import bundled_weights_path, create_model, get_config
    from sam_edge.utils.device import resolve_device
    from sam_edge.utils.io import write_json_atomic

    from sam_edge.data import SA1BDataset
    from sam_edge.evaluation import evaluator

    if images is not None and images < 1:
        raise ValueError("--images must be >= 1")
    if masks_per_image < 1:
        raise ValueError("--masks-per-image must be >= 1")
    dev = resolve_device(device)
    if teacher_checkpoint is None and bundled_weights_path(get_config(teacher)) is None:
        logging.getLogger("distill.eval").warning(
            "teacher %r has no bundled weights and no --teacher-checkpoint: it has RANDOM weights", teacher)
    t_model = create_model(teacher, checkpoint=teacher_checkpoint).to(dev)
    s_model = load_model_spec(student, student_checkpoint).to(dev)
    ds = SA1BDataset(data, image_size=t_model.image_size)
    t0 = time.perf_counter()
    result = evaluator.evaluate(s_model, ds, against="teacher", teacher=t_model, images=images,
                                masks_per_image=masks_per_image, seed=seed, full_res=not low_res, amp=amp,
                                progress=True)
    result.update(student=student, student_checkpoint=student_checkpoint, teacher=teacher,
                  teacher_checkpoint=teacher_checkpoint, data=str(data),
                  seconds=round(time.perf_counter() - t0, 2), data_summary=ds.report.summary())
    print(evaluator.format_eval_table(result))
    if out:
        write_json_atomic(out, result)
        print(f"wrote {out}")
    return 0
