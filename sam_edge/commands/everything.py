"""Segment everything: a grid of point prompts, filtered by predicted IoU and stability,
de-duplicated by NMS. Writes the masks as COCO RLE JSON (--out) and an overlay PNG."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import add_model_arguments, load_model_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--out", required=True, help="output JSON file (list of annotations, COCO RLE)")
    parser.add_argument("--overlay", help="overlay PNG path (default: next to --out, .png)")
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--points-per-batch", type=int, default=64)
    parser.add_argument("--pred-iou-thresh", type=float, default=0.88)
    parser.add_argument("--stability-score-thresh", type=float, default=0.95)
    parser.add_argument("--box-nms-thresh", type=float, default=0.7)
    parser.add_argument("--crop-n-layers", type=int, default=0)
    parser.add_argument("--min-mask-region-area", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    from ..everything import AutomaticMaskGenerator
    from ..image import load_image
    from ..utils.amg import coco_decode_rle
    from ..utils.io import atomic_path, dumps_json
    from ..visualize import overlay_masks

    image = load_image(args.image)
    model = load_model_from_args(args)
    gen = AutomaticMaskGenerator(
        model,
        points_per_side=args.points_per_side,
        points_per_batch=args.points_per_batch,
        pred_iou_thresh=args.pred_iou_thresh,
        stability_score_thresh=args.stability_score_thresh,
        box_nms_thresh=args.box_nms_thresh,
        crop_n_layers=args.crop_n_layers,
        min_mask_region_area=args.min_mask_region_area,
        output_mode="coco_rle",
    )
    t0 = time.perf_counter()
    anns = gen.generate(image)
    elapsed = time.perf_counter() - t0
    out = Path(args.out)
    overlay_path = Path(args.overlay) if args.overlay else out.with_suffix(".png")
    masks = [coco_decode_rle(a["segmentation"]).astype(bool) for a in anns]
    # both files written first, then renamed (overlay, JSON last): a failure leaves the old pair;
    # NaN scores (empty masks reach the output only when the filters are off) become null
    with atomic_path(out) as tmp_json, atomic_path(overlay_path) as tmp_png:
        tmp_json.write_bytes((dumps_json(anns, indent=2) + "\n").encode())
        Image.fromarray(overlay_masks(image, masks)).save(tmp_png, format="PNG")
    print(f"{len(anns)} masks in {elapsed:.2f} s -> {out}, overlay {overlay_path}")
    return 0

