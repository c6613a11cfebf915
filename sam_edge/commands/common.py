"""Arguments and helpers shared by the commands that run a model on an image."""
from __future__ import annotations

import argparse
import sys


def add_model_arguments(parser: argparse.ArgumentParser, model_required: bool = True) -> None:
    parser.add_argument("image", help="input image file (JPEG/PNG/...; grayscale, RGBA and 16-bit are converted)")
    parser.add_argument("--model", required=model_required, help="registered model name (see `sam-edge models`)")
    parser.add_argument("--checkpoint", help="weights: official .pth, MobileSAM .pt or sam-edge .safetensors")
    parser.add_argument("--seed", type=int, default=0, help="seed for random init when no checkpoint is given")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def load_model_from_args(args: argparse.Namespace):
    import torch

    from ..registry import bundled_weights_path, create_model, get_config

    if args.checkpoint is None and bundled_weights_path(get_config(args.model)) is None:
        print(
            f"warning: no --checkpoint given: {args.model} runs with RANDOM weights (seed {args.seed}); "
            "its masks show the pipeline works, not what the model can do",
            file=sys.stderr,
        )
        torch.manual_seed(args.seed)
    from ..utils.device import resolve_device

    device = resolve_device(args.device)  # before loading: a bad --device fails fast
    return create_model(args.model, checkpoint=args.checkpoint).to(device)
