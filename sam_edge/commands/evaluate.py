"""Promptable-segmentation mIoU of a model on SA-1B-format data, with seeded simulated prompts:
one point (best of the 3 masks), one point + N error-region corrections, and a noisy box; and
SAM's standard protocol (a click at the mask's centre, the exact box)."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="registered model name")
    parser.add_argument("--checkpoint", help="weights (default: the variant's bundled weights, if any)")
    parser.add_argument("--data", required=True, help="SA-1B-format folder (held-out images)")
    parser.add_argument("--images", type=int, default=None, help="evaluate the first N usable images (default: all)")
    parser.add_argument("--masks-per-image", type=int, default=8)
    parser.add_argument("--corrections", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1, help="seed of the simulated prompts")
    parser.add_argument("--by-area", action="store_true",
                        help="also report each mIoU per mask-area bucket (< 256, 256-1024, ... pixels)")
    parser.add_argument("--json", help="also write the result to this JSON file")


def run(args: argparse.Namespace) -> int:
    from sam_edge.utils.io import dumps_json
    import time

    import torch

    from sam_edge.registry import create_model
    from sam_edge.utils.io import write_json_atomic

    from sam_edge.data import SA1BDataset
    from sam_edge.evaluation.evaluator import evaluate_promptable as evaluate

    model = create_model(args.model, checkpoint=args.checkpoint)
    ds = SA1BDataset(args.data, image_size=model.image_size)
    indices = list(range(len(ds)))[: args.images]
    t0 = time.perf_counter()
    with torch.no_grad():
        result = evaluate(model, ds, indices, args.masks_per_image, corrections=args.corrections,
                          seed=args.seed, report=ds.report, by_area=args.by_area)
    result.update(images=len(indices), seconds=round(time.perf_counter() - t0, 1),
                  model=args.model, checkpoint=args.checkpoint, data=str(args.data),
                  data_summary=ds.report.summary())
    print(dumps_json(result, indent=2))
    if args.json:
        write_json_atomic(args.json, result)
    return 0
