"""Export a model's image encoder and prompt encoder + mask decoder as separate artifacts (ONNX,
ExecuTorch .pte, TFLite, Core ML .mlpackage) at the requested precisions, each verified against
eager PyTorch on real images, into one directory with manifest.json (sha256 of every file).

Each format runs in a fresh Python process (:func:`sam_edge.export.api.export_model` with
``isolate=True``: a failed dynamo export can poison later exports in the same process); all of
them merge into the same manifest. int8 static quantisation is
calibrated on --calib images (a folder, an SA-1B folder, or `skimage` for scikit-image's sample
photos), never on random tensors. A precision a format does not take is skipped with a note."""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sam_edge.formats import format_names, formats_help, user_precisions

    parser.add_argument("--model", required=True,
                        help="registered model name (see `sam-edge models`) or a sam-edge .safetensors model file")
    parser.add_argument("--checkpoint", help="weights for --model given by name (default: bundled weights)")
    parser.add_argument("--formats", default=",".join(format_names()),
                        help=f"comma-separated: {formats_help()} (default: all; `python -m sam_edge.formats` "
                             "lists each format's precisions)")
    parser.add_argument("--precision", default="fp32,fp16,int8",
                        help=f"comma-separated: {', '.join(user_precisions())} (int8 = every int8 variant of the "
                             "format, palettize = palettize4 and palettize6; a precision a format does not take "
                             "is skipped with a note; default fp32,fp16,int8)")
    parser.add_argument("--calib", help="calibration images: a folder (SA-1B folders work) or `skimage`")
    parser.add_argument("--calib-images", type=int, default=16, help="calibration images used (default 16)")
    parser.add_argument("--verify", help="verification images (default: the --calib folder's images after the "
                                         "calibration ones, else the bundled sample photos)")
    parser.add_argument("--verify-images", type=int, default=4, help="verification images used (default 4)")
    parser.add_argument("--normalize", choices=("inside", "outside"), default="inside",
                        help="pixel normalisation inside the encoder graph (raw 0..255 input, default) or "
                             "outside (the app normalises); recorded in the manifest")
    parser.add_argument("--mask-outputs", choices=("all", "multimask", "single"), default="all",
                        help="decoder outputs: all (single + multimask, default), multimask or single")
    parser.add_argument("--accept", action="append", default=[], metavar="PRECISION=REASON",
                        help="record a verification miss at PRECISION (or FORMAT:PRECISION) with REASON in the "
                             "manifest instead of failing; repeatable")
    parser.add_argument("--same-process", action="store_true", help="export every format in this process")
    parser.add_argument("--out", required=True, help="export directory")
    parser.add_argument("--overwrite", action="store_true",
                        help="--out holds an export of another model: remove its manifest and the artifacts it lists "
                             "first (without this flag that is an error; an export of the same model is merged)")


def resolve_images(args) -> tuple[list, list]:
    """(calibration images, verification images) as uint8 arrays."""
    from pathlib import Path

    from sam_edge.export.common import load_images

    calib: list = []
    rest: list = []
    if args.calib:
        everything = load_images(args.calib, limit=args.calib_images + args.verify_images)
        calib, rest = everything[: args.calib_images], everything[args.calib_images:]
    if args.verify:
        verify = load_images(args.verify, limit=args.verify_images)
    elif rest:
        verify = rest
    else:
        import sam_edge

        verify = load_images(sorted((Path(sam_edge.__file__).parent / "assets").glob("*.jpg")),
                             limit=args.verify_images)
    return calib, verify


def _accept(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, reason = item.partition("=")
        if not sep or not key.strip() or not reason.strip():
            raise ValueError(f"--accept: expected PRECISION=REASON or FORMAT:PRECISION=REASON, got {item!r}")
        out[key.strip()] = reason.strip()
    return out


def run(args: argparse.Namespace) -> int:
    from sam_edge.export.api import FormatProcessError, export_model
    from sam_edge.formats import parse_formats, parse_precisions

    formats = parse_formats(args.formats, "--formats")
    precisions = parse_precisions(args.precision, "--precision")
    accept = _accept(args.accept)
    if args.calib_images < 0 or args.verify_images < 1:
        raise ValueError("--calib-images must be >= 0 and --verify-images >= 1")
    calib, verify = resolve_images(args)
    try:
        export_model(args.model, args.out, formats, precisions, calib or None, verify_images=verify,
                     normalize_inside=args.normalize == "inside", mask_outputs=args.mask_outputs,
                     accept_failures=accept, checkpoint=args.checkpoint, isolate=not args.same_process,
                     overwrite=getattr(args, "overwrite", False), log=lambda m: print(m, flush=True))
    except FormatProcessError as exc:
        print(f"sam-edge export: error: {exc}", file=sys.stderr)
        return exc.returncode
    return _summary(args.out)


def _summary(out_dir) -> int:
    from sam_edge.runtime import load_manifest

    man = load_manifest(out_dir)
    print(f"{'file':34s} {'format':10s} {'precision':12s} {'MB':>7s}  verification")
    for a in man["artifacts"]:
        v = a.get("verification") or {}
        m = v.get("metrics") or {}
        if "cosine_min" in m:
            detail = f"cosine {m['cosine_min']:.5f}"
        elif "mask_iou_mean" in m:
            detail = f"mask IoU {m['mask_iou_mean']:.4f}"
        else:
            detail = v.get("prediction") or v.get("reason") or ""
        status = {True: "passed", False: "MISSED (accepted)", None: "spec only"}[v.get("passed")]
        print(f"{a['file']:34s} {a['format']:10s} {a['precision']:12s} {a['size_bytes'] / 1e6:7.2f}  {status} {detail}")
    print(f"manifest: {out_dir}/manifest.json")
    return 0
