"""The ``sam-edge`` command line: a thin layer over importable functions.

Each subcommand lives in a module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
modules of the training/export/benchmark packages are imported only when their command runs
(``sam_edge`` never imports them at import time).
"""
from __future__ import annotations

import argparse
import errno
import importlib
import sys
from typing import Sequence

# name -> (module, one-line help); each module is imported when the parser is built (its own heavy
# imports are inside run())
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("sam_edge.commands.models", "list the registered model variants"),
    "segment": ("sam_edge.commands.segment", "segment an image from point / box prompts"),
    "everything": ("sam_edge.commands.everything", "segment everything in an image (COCO RLE JSON + overlay)"),
    "data": ("sam_edge.commands.data", "datasets: synthetic SA-1B-format set (synth), check a folder (check)"),
    "pretrain": ("sam_edge.commands.pretrain", "train a SAM-architecture model with the SAM recipe (promptable segmentation)"),
    "evaluate": ("sam_edge.commands.evaluate", "promptable mIoU on SA-1B-format data: --against gt (ground truth, default) or --against teacher (a student vs its teacher)"),
    "cache-teacher": ("sam_edge.commands.cache_teacher", "run the teacher's image encoder once per image and cache the embeddings (sharded, resumable)"),
    "distill": ("sam_edge.commands.distill", "distil a student image encoder from a SAM teacher (embeddings, then prompt-in-the-loop)"),
    "export": ("sam_edge.commands.export", "export encoder + decoder to the registered formats (see its --formats), verified, with a manifest"),
    "quantize": ("sam_edge.commands.quantize", "torchao int8 for PyTorch, or QAT of the encoder for ExecuTorch int8"),
    "bench": ("sam_edge.commands.bench", "latency and IoU drop of exported artifacts on a device (host, ssh://, adb://)"),
    "pipeline": ("sam_edge.commands.pipeline", "the main job: data -> teacher cache -> distill -> eval -> export -> bench -> report"),
    "serve": ("sam_edge.commands.serve", "serve the browser demo (apps/web, onnxruntime-web WASM) with an export directory at /artifacts/"),
    "app-constants": ("sam_edge.export.app_constants", "generate the iOS / Android sample apps' ModelConstants from an export's manifest"),
    "app-bundle": ("sam_edge.export.app_bundle", "copy an export's models into the iOS / Android sample apps, regenerate their constants and test golden"),
    "report": ("sam_edge.bench.report", "merge bench results into JSON, CSV, Markdown and PNG plots"),
    "eval": ("sam_edge.commands.eval", "alias of `evaluate --against teacher`: a student's mIoU against its teacher (and both against ground truth)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sam-edge", description="Segment Anything for phones, Jetsons and browsers."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, description=(mod.__doc__ or help_text).strip())
        mod.add_arguments(p)
        p.set_defaults(_module=mod)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


#: errors of the file system reported as one line even when no path came with them
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}

#: options whose value may start with a minus sign (a prompt outside the image must reach the
#: out-of-image check, not argparse's "expected one argument")
SIGNED_VALUE_OPTIONS = ("--point", "--box")


def _join_signed_values(argv: Sequence[str]) -> list[str]:
    """``--point -5,10`` -> ``--point=-5,10`` (argparse reads a leading '-' as an option)."""
    out: list[str] = []
    it = iter(argv)
    for a in it:
        if a in SIGNED_VALUE_OPTIONS:
            nxt = next(it, None)
            if nxt is not None and len(nxt) > 1 and nxt[0] == "-" and (nxt[1].isdigit() or nxt[1] == "."):
                out.append(f"{a}={nxt}")
                continue
            out.append(a)
            if nxt is not None:
                out.append(nxt)
            continue
        out.append(a)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_join_signed_values(sys.argv[1:] if argv is None else argv))
    from .errors import UserError

    try:
        return int(args._module.run(args) or 0)
    except (UserError, KeyError, ValueError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"sam-edge {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except OSError as exc:
        # the file system refused (an --out that is a file or under one, a read-only folder, a
        # full disk, a missing input): one line naming the path; the writers leave nothing
        # half-written (sam_edge.utils.io)
        if exc.filename is None and not isinstance(exc, FileNotFoundError) and exc.errno not in _DISK_ERRNOS:
            raise
        from .utils.io import describe_os_error

        print(f"sam-edge {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
