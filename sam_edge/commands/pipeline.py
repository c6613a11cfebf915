"""The main job: teacher -> distilled student -> verified ONNX / ExecuTorch / TFLite / Core ML
artifacts -> host benchmark -> report, one command. Each stage records its key (config + inputs'
hashes) in RUN/pipeline.json and is skipped when done; a rerun after a crash resumes at the
stage that failed (distillation from its last checkpoint). --dry-run checks the config, paths,
disk space and installed toolchains without training."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="configs/demo.yaml", help="pipeline YAML (default configs/demo.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value, e.g. distill.stage1.steps=100 or bench.runs=5 (repeatable)")
    parser.add_argument("--out", help="run folder (default: the config's pipeline.out)")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate config, paths, disk space and toolchains; train nothing")


def run(args: argparse.Namespace) -> int:
    from sam_edge.pipeline.run import load_pipeline_config, run_pipeline

    cfg = load_pipeline_config(args.config, args.overrides, out=args.out)
    run_pipeline(cfg, dry_run=args.dry_run, log=lambda s: print(s, flush=True))
    return 0
