"""Distil a small student image encoder from a SAM teacher, in two resumable stages: stage 1
regresses the teacher's image embeddings (from a teacher-embedding cache or the teacher run
live); stage 2 trains prompt-in-the-loop against the teacher's masks. Outputs under OUT:
stage1/, stage2/ (metrics.csv, val.csv, checkpoints/last.pt, student.safetensors), the final
student.safetensors and summary.json. Multi-GPU: torchrun --nproc_per_node N $(which sam-edge)
distill --config FILE. A finished stage is skipped when rerun; an unfinished one continues
exactly with --resume."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True,
                        help="YAML file: its distill: section, or the whole file (see configs/demo.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set stage1.lr=1e-3 --set stage2.steps=0 "
                             "(value parsed as YAML; repeatable)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an unfinished stage from OUT/<stage>/checkpoints/last.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _setup_logging() -> None:
    import logging
    import os

    rank = int(os.environ.get("RANK", "0"))
    root = logging.getLogger()
    if not root.handlers:
        fmt = "%(levelname)s %(name)s: %(message)s" if rank == 0 else f"[rank {rank}] %(levelname)s %(name)s: %(message)s"
        logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format=fmt, stream=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from sam_edge.utils.io import dumps_json

    from sam_edge.distillation.config import load_config
    from sam_edge.distillation.distiller import run_distill

    _setup_logging()
    cfg = load_config(args.config, args.overrides)
    summary = run_distill(cfg, resume=args.resume, progress=not args.no_progress)
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        short = {"model": summary["model"], "steps": summary["steps"], "validation": summary["validation"],
                 "stage1": {k: summary["stage1"].get(k) for k in ("train_seconds", "steps_per_s", "img_per_s",
                                                                   "skipped_on_rerun", "skipped") if k in summary["stage1"]},
                 "stage2": {k: summary["stage2"].get(k) for k in ("train_seconds", "steps_per_s", "img_per_s",
                                                                   "skipped_on_rerun", "skipped") if k in summary["stage2"]}}
        print(dumps_json(short, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry (``python -m sam_edge.commands.distill``, e.g. under torchrun): the same
    as ``sam-edge distill ...``, errors reported the same way."""
    import sys

    from sam_edge.cli import main as cli_main

    return cli_main(["distill", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
