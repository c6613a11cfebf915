"""List the registered model variants with their encoder family, input size and checkpoint file."""
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
    print(f"{'name':<22} {'encoder family':<15} {'input':>5}  {'checkpoint':<22} description")
    for c in configs:
        print(f"{c.name:<22} {c.encoder_kind:<15} {c.image_size:>5}  {c.checkpoint_hint or '-':<22} {c.description}")
    families = sorted({c.encoder_kind for c in configs})
    print("\nencoder families: " + "; ".join(f"{k}: {_family_summary(k)}" for k in families))
    return 0


def _family_summary(kind: str) -> str:
    from ..encoders import get_encoder

    fam = get_encoder(kind)
    return fam.description or fam.config_cls.__name__
