"""Train a SAM-architecture model on SA-1B-format data with SAM's interactive recipe (first
prompt from the ground truth, error-region corrections with the previous logits as mask prompt,
then iterations with no new point). Resumable: --resume continues exactly from RUN/checkpoints/last.pt."""
from __future__ import annotations

import argparse
import dataclasses


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sam_edge.training.pretrain import PretrainConfig

    parser.add_argument("--config", help="YAML file with any of the options below (flags override it)")
    parser.add_argument("--model", help="registered model name to train (random init unless --init)")
    parser.add_argument("--data", help="SA-1B-format folder (sa_*.jpg + sa_*.json)")
    parser.add_argument("--out", help="run folder: checkpoints, metrics.csv, val.csv, model.safetensors")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    for f in dataclasses.fields(PretrainConfig):
        if f.name in ("model", "data", "out"):
            continue
        flag = "--" + f.name.replace("_", "-")
        typ = {int: int, float: float, str: str, bool: _bool}.get(type(f.default), str)
        if f.name in ("max_steps",):
            typ = int
        parser.add_argument(flag, type=typ, default=None, help=f"(default: {f.default})")


def config_from_args(args: argparse.Namespace):
    from sam_edge.training.pretrain import PretrainConfig

    from sam_edge.utils.config import ConfigError, blame_file

    values: dict = {}
    if args.config:
        from sam_edge.utils.config import read_yaml_mapping

        values.update(read_yaml_mapping(args.config))
    flags = set()
    for f in dataclasses.fields(PretrainConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
            flags.add(f.name)
    missing = [k for k in ("model", "data", "out") if not values.get(k)]
    if missing:
        raise ValueError(f"pretrain: missing required option(s): {', '.join('--' + m for m in missing)}")
    try:
        return PretrainConfig.from_dict(values)
    except ConfigError as exc:  # a bad value from the file names the file, one from a flag does not
        raise blame_file(exc, args.config, sorted(flags), "pretrain") from None


def run(args: argparse.Namespace) -> int:
    from sam_edge.utils.io import dumps_json
    import logging

    from sam_edge.training.pretrain import Trainer

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(args)
    summary = Trainer(cfg).fit(resume=args.resume)
    print(dumps_json({"steps": summary["steps"], "validation": summary["validation"],
                      "data": summary["data_summary"]}, indent=2))
    return 0
