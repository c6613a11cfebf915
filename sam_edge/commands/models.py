"""List the registered model variants with their encoder, input size and checkpoint file."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the full configs as JSON")


def run(args: argparse.Namespace) -> int:
    from ..registry import get_config, list_models
    from ..utils.io import dumps_json

    configs = [get_config(n) for n in list_models()]
    if args.json:
        print(dumps_json([c.to_dict() for c in configs], indent=2))
        return 0
    print(f"{'name':<22} {'encoder':<9} {'input':>5}  {'checkpoint':<22} description")
    for c in configs:
        enc = f"{c.encoder_kind}"
        print(f"{c.name:<22} {enc:<9} {c.image_size:>5}  {c.checkpoint_hint or '-':<22} {c.description}")
    return 0
