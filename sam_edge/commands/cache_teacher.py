"""Run the teacher's image encoder once per image and cache the embeddings (C x h x w, e.g.
256x64x64 for SAM at 1024 px: 2 MiB per image in fp16) in shards with an index, for encoder
distillation. Resumable: a rerun skips finished shards; under torchrun each rank takes the shards
k % WORLD_SIZE == RANK. Read the cache with distill.cache.TeacherCache."""
from __future__ import annotations

import argparse
from typing import Sequence


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sam_edge.distillation.cache import AMP_CHOICES, DTYPES

    parser.add_argument("--teacher", required=True, help="registered model name, e.g. sam_vit_h or sam_demo_teacher")
    parser.add_argument("--checkpoint", help="teacher weights (default: the registry's bundled weights, if any)")
    parser.add_argument("--data", required=True, help="image folder (an SA-1B folder works: its .jpg files)")
    parser.add_argument("--out", required=True, help="cache folder: meta.json, shards/, index.json")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16", help="storage dtype (default fp16)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward (default 8)")
    parser.add_argument("--shard-size", type=int, default=64, help="images per shard (default 64)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--limit", type=int, help="cache only the first N image ids (sorted)")
    parser.add_argument("--amp", choices=AMP_CHOICES, default="auto",
                        help="autocast for the forward (default auto: bf16 on CUDA for fp16/bf16 storage)")
    parser.add_argument("--channels-last", action="store_true", help="channels-last encoder (CUDA)")
    parser.add_argument("--workers", type=int, help="image-decoding worker processes (default 4 on CUDA, 0 on CPU)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from sam_edge.utils.io import dumps_json
    import logging

    from sam_edge.distillation.cache import cache_teacher

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    summary = cache_teacher(
        args.teacher, args.data, args.out, checkpoint=args.checkpoint, dtype=args.dtype,
        batch_size=args.batch_size, shard_size=args.shard_size, device=args.device, limit=args.limit,
        amp=args.amp, channels_last=args.channels_last, workers=args.workers,
        progress=not args.no_progress,
    )
    keep = ("rank", "world_size", "num_keys", "num_shards", "shards_written", "shards_reused", "encoded",
            "skipped", "skip_reasons", "seconds", "images_per_s", "complete", "index")
    print(dumps_json({k: summary[k] for k in keep}, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry (``python -m sam_edge.commands.cache_teacher``, e.g. under torchrun): the same
    as ``sam-edge cache-teacher ...``, errors reported the same way."""
    import sys

    from sam_edge.cli import main as cli_main

    return cli_main(["cache-teacher", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
