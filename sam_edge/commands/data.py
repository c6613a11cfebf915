"""Datasets: generate a synthetic set in the SA-1B layout (``synth``), or check an SA-1B folder
or image folder and report what a training run would skip (``check``)."""
from __future__ import annotations

import argparse
import logging
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True

    synth = sub.add_parser(
        "synth", help="write a synthetic SA-1B-format set (sa_N.jpg + sa_N.json + index.json)",
        description="Write sa_1 .. sa_N (.jpg + .json with COCO RLE masks) and index.json. "
        "Scenes: textured backgrounds, 4-12 occluding objects of varied shape, nested "
        "whole/part/subpart objects. The same seed gives byte-identical files; rerunning resumes.",
    )
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--num-images", type=int, default=100, help="number of images (default 100)")
    synth.add_argument("--image-size", type=int, default=256, help="square image side in pixels (default 256)")
    synth.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    synth.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    synth.set_defaults(_data_run=_run_synth)

    check = sub.add_parser(
        "check", help="scan an SA-1B folder (or an image folder) and print what would be skipped",
        description="Scan every sample once (JSON, image header, decode for truncation, RLE sizes) "
        "and print a summary; each skipped sample is logged with its reason.",
    )
    check.add_argument("dir", help="folder of sa_N.jpg + sa_N.json (or of images with --images)")
    check.add_argument("--images", action="store_true", help="treat DIR as a plain image folder")
    check.add_argument("--min-area", type=int, default=0, help="drop masks smaller than this (pixels)")
    check.add_argument("--no-verify", action="store_true", help="read image headers only (faster, misses truncation)")
    check.add_argument("--json", dest="json_out", help="also write the report as JSON to this file")
    check.set_defaults(_data_run=_run_check)


def run(args: argparse.Namespace) -> int:
    return int(args._data_run(args) or 0)


def _ensure_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)


def _run_synth(args: argparse.Namespace) -> int:
    from sam_edge.data.synth import generate_dataset

    _ensure_logging()
    t0 = time.perf_counter()
    index = generate_dataset(args.out, args.num_images, args.image_size, args.seed, args.workers, progress=True)
    dt = time.perf_counter() - t0
    rate = index["generated"] / dt if dt > 0 else 0.0
    levels = ", ".join(f"{k}: {v}" for k, v in index["masks_per_level"].items())
    print(f"{index['num_images']} images ({index['generated']} generated, {index['reused']} already complete) "
          f"in {dt:.1f} s ({rate:.1f} images/s) -> {args.out}")
    print(f"{index['num_masks']} masks ({levels})")
    return 0


def _run_check(args: argparse.Namespace) -> int:
    from sam_edge.data import ImageFolderDataset, SA1BDataset

    _ensure_logging()
    verify = not args.no_verify
    if args.images:
        ds = ImageFolderDataset(args.dir, verify_images=verify)
    else:
        ds = SA1BDataset(args.dir, min_area=args.min_area, verify_images=verify)
    print(ds.report.summary())
    if args.json_out:
        from sam_edge.utils.io import write_json_atomic

        write_json_atomic(args.json_out, ds.report.to_dict())
    return 0 if len(ds) > 0 else 1
