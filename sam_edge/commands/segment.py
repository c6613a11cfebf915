"""Segment an image from point and/or box prompts; writes mask PNG(s), an overlay PNG and
result.json (scores, prompts, model, timings) into --out."""
from __future__ import annotations

import argparse
import os
import re
import shutil
import math
import time
from pathlib import Path

from .common import add_model_arguments, load_model_from_args


def _point(text: str) -> tuple[float, float, int]:
    parts = text.split(",")
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"--point expects X,Y or X,Y,LABEL, got {text!r}")
    try:
        x, y = float(parts[0]), float(parts[1])
        label = int(parts[2]) if len(parts) == 3 else 1
    except ValueError:
        raise argparse.ArgumentTypeError(f"--point expects numbers X,Y[,LABEL], got {text!r}") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise argparse.ArgumentTypeError(f"--point coordinates must be finite, got {text!r}")
    if label not in (0, 1):
        raise argparse.ArgumentTypeError(f"--point LABEL must be 1 (foreground) or 0 (background), got {label} in {text!r}")
    return x, y, label


def _box(text: str) -> tuple[float, float, float, float]:
    parts = text.split(",")
    try:
        vals = tuple(float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--box expects numbers X0,Y0,X1,Y1, got {text!r}") from None
    if len(vals) != 4:
        raise argparse.ArgumentTypeError(f"--box expects 4 numbers X0,Y0,X1,Y1, got {text!r}")
    return vals  # ordering and bounds are checked against the image by the predictor


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, model_required=False)
    parser.add_argument("--artifacts", metavar="DIR",
                        help="run exported artifacts (a `sam-edge export` directory) instead of a PyTorch --model")
    from sam_edge.formats import format_names

    parser.add_argument("--format", dest="artifact_format", choices=format_names(),
                        help="with --artifacts: which format's artifacts (default: the first in the manifest)")
    parser.add_argument("--precision", help="with --artifacts: which precision (default: fp32 if exported)")
    parser.add_argument("--point", type=_point, action="append", default=[], metavar="X,Y[,LABEL]",
                        help="prompt point in image pixels; LABEL 1 foreground (default) or 0 background; repeatable")
    parser.add_argument("--box", type=_box, metavar="X0,Y0,X1,Y1", help="prompt box in image pixels")
    parser.add_argument("--multimask", action="store_true", help="return 3 masks (whole/part/subpart) instead of 1")
    parser.add_argument("--out", required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from ..image import load_image
    from ..predictor import PromptError, SamPredictor
    from ..registry import bundled_weights_path, get_config
    from ..utils.io import write_json_atomic
    from ..visualize import overlay_masks

    if not args.point and args.box is None:
        raise PromptError("give at least one --point X,Y[,LABEL] or a --box X0,Y0,X1,Y1")
    image = load_image(args.image)
    if args.artifacts:
        if args.model or args.checkpoint:
            raise SystemExit("sam-edge segment: give either --artifacts DIR or --model/--checkpoint, not both")
        from ..runtime import load_predictor

        predictor = load_predictor(args.artifacts, precision=args.precision, fmt=args.artifact_format)
        art = predictor.encoder_artifact
        source = {"artifacts": str(args.artifacts), "format": art["format"], "precision": art["precision"],
                  "model": predictor.manifest["model"]["name"]}
    else:
        if not args.model:
            raise SystemExit("sam-edge segment: --model NAME (or --artifacts DIR) is required")
        model = load_model_from_args(args)
        predictor = SamPredictor(model)
        source = {"model": args.model, "checkpoint": args.checkpoint,
                  "random_weights": args.checkpoint is None and bundled_weights_path(get_config(args.model)) is None}
    t0 = time.perf_counter()
    predictor.set_image(image)
    t1 = time.perf_counter()
    coords = np.array([p[:2] for p in args.point], dtype=np.float64) if args.point else None
    labels = np.array([p[2] for p in args.point], dtype=np.int64) if args.point else None
    box = np.array(args.box, dtype=np.float64) if args.box is not None else None
    masks, scores, _ = predictor.predict(coords, labels, box, multimask_output=args.multimask)
    t2 = time.perf_counter()

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    # the result set is written to a staging folder beside --out, then published at once: a
    # failure (read-only folder, full disk) leaves the previous result as it was
    staging = out.parent / f".{out.name}.staging-{os.getpid()}"
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        order = np.argsort(-scores)
        files = []
        for rank, i in enumerate(order):
            name = f"mask_{rank}.png"
            Image.fromarray(masks[i].astype(np.uint8) * 255).save(staging / name, format="PNG")
            files.append({"file": name, "score": float(scores[i]), "area": int(masks[i].sum())})
        Image.fromarray(overlay_masks(image, [masks[order[0]]], points=coords, labels=labels, boxes=box)).save(
            staging / "overlay.png", format="PNG")
        result = {
            "image": str(args.image),
            "image_size": [int(image.shape[0]), int(image.shape[1])],
            **source,
            "prompts": {
                "points": coords.tolist() if coords is not None else None,
                "labels": labels.tolist() if labels is not None else None,
                "box": box.tolist() if box is not None else None,
                "multimask": bool(args.multimask),
            },
            "masks": files,
            "timing_s": {"encoder": round(t1 - t0, 4), "decoder": round(t2 - t1, 4)},
        }
        write_json_atomic(staging / "result.json", result)
        _publish(staging, out)
    except OSError as exc:
        raise ValueError(f"--out {out}: cannot write the result ({exc.strerror or exc}); nothing was changed "
                         f"there") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    best = files[0]
    print(f"{len(files)} mask(s) -> {out}/ (best score {best['score']:.3f}, area {best['area']} px); "
          f"encoder {t1 - t0:.3f} s, decoder {1000 * (t2 - t1):.1f} ms")
    return 0


#: the files a segment result set consists of
_RESULT_FILE = re.compile(r"mask_\d+\.png|overlay\.png|result\.json")


def _publish(staging: Path, out: Path) -> None:
    """Make the files in ``staging`` the result set in ``out``. A folder holding only an earlier
    result set (or nothing) is swapped whole (rename: all new or all old); a folder with other
    files keeps them: stale result files are removed and the new ones moved in, result.json last."""
    if out.is_dir() and any(not _RESULT_FILE.fullmatch(p.name) for p in out.iterdir()):
        for old in out.iterdir():
            if _RESULT_FILE.fullmatch(old.name) and not (staging / old.name).exists():
                old.unlink()
        for f in sorted(staging.iterdir(), key=lambda p: p.name == "result.json"):
            os.replace(f, out / f.name)
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    try:
        os.replace(staging, out)
    except OSError:
        if old.exists():
            os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
