"""Export a model's image encoder and prompt encoder + mask decoder as separate artifacts (ONNX,
ExecuTorch .pte, TFLite, Core ML .mlpackage) at the requested precisions, each verified against
eager PyTorch on real images, into one directory with manifest.json (sha256 of every file).

Each format runs in a fresh Python process (a failed dynamo export can poison later exports in
the same process); all of them merge into the same manifest. int8 static quantisation is
calibrated on --calib images (a folder, an SA-1B folder, or `skimage` for scikit-image's sample
photos), never on random tensors. A precision a format does not take is skipped with a note."""
from __future__ import annotations

import argparse
import subprocess
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="registered model name (see `sam-edge models`) or a sam-edge .safetensors model file")
    parser.add_argument("--checkpoint", help="weights for --model given by name (default: bundled weights)")
    parser.add_argument("--formats", default="onnx,executorch,tflite,coreml",
                        help="comma-separated: onnx, executorch, tflite, coreml (default: all four)")
    parser.add_argument("--precision", default="fp32,fp16,int8",
                        help="comma-separated: fp32, fp16, int8 (= every int8 variant of the format), int8_dynamic, "
                             "int8_static, int8_weights, palettize (4 and 6 bit), palettize4, palettize6 "
                             "(default fp32,fp16,int8)")
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
    from sam_edge.export.api import FORMATS, USER_PRECISIONS, parse_list, precisions_for

    formats = parse_list(args.formats, "--formats", list(FORMATS))
    precisions = parse_list(args.precision, "--precision", USER_PRECISIONS)
    accept = _accept(args.accept)
    if args.calib_images < 0 or args.verify_images < 1:
        raise ValueError("--calib-images must be >= 0 and --verify-images >= 1")
    if getattr(args, "overwrite", False):
        _clear_export(args.out)
    if len(formats) > 1 and not args.same_process:
        # one fresh process per format, same arguments otherwise
        for fmt in formats:
            sub = _argv_for_format(args, fmt)
            print(f"== {fmt} ==", flush=True)
            rc = subprocess.call([sys.executable, "-m", "sam_edge.cli", *sub])
            if rc:
                print(f"sam-edge export: error: format {fmt} failed (exit {rc}); artifacts exported before it are "
                      f"kept in {args.out}", file=sys.stderr)
                return rc
        return _summary(args.out)

    from sam_edge.export.api import export_format

    from sam_edge.registry import load_model_spec

    model = load_model_spec(args.model, args.checkpoint).eval()
    calib, verify = resolve_images(args)
    for fmt in formats:
        precs, skipped = precisions_for(fmt, precisions)
        if skipped:
            print(f"{fmt}: skipping precision(s) {', '.join(skipped)} (not supported by this format)")
        if not precs:
            continue
        export_format(model, fmt, args.out, precs, calib_images=calib or None, verify_images=verify,
                      normalize_inside=args.normalize == "inside", mask_outputs=args.mask_outputs,
                      accept_failures=accept)
    return _summary(args.out)


def _clear_export(out_dir) -> None:
    """``--overwrite``: remove the manifest of ``out_dir`` and the artifacts it lists (only those
    inside the folder; nothing else in it is touched)."""
    import json
    from pathlib import Path

    from sam_edge.runtime.manifest import MANIFEST_NAME, ManifestError, artifact_path

    from sam_edge.export.common import _remove

    man = Path(out_dir) / MANIFEST_NAME
    if not man.is_file():
        return
    try:
        arts = json.loads(man.read_text()).get("artifacts", [])
    except (ValueError, AttributeError):
        arts = []
    for art in arts if isinstance(arts, list) else []:
        try:
            _remove(artifact_path(out_dir, art))
        except (ManifestError, OSError):
            continue  # an entry pointing outside the folder is never deleted
    man.unlink()


def _argv_for_format(args, fmt: str) -> list[str]:
    """This command again, for one format, exported in its own process."""
    argv = ["export", "--model", args.model, "--precision", args.precision, "--out", args.out,
            "--calib-images", str(args.calib_images), "--verify-images", str(args.verify_images),
            "--normalize", args.normalize, "--mask-outputs", args.mask_outputs, "--formats", fmt, "--same-process"]
    for flag, value in (("--checkpoint", args.checkpoint), ("--calib", args.calib), ("--verify", args.verify)):
        if value:
            argv += [flag, value]
    for item in args.accept:
        argv += ["--accept", item]
    return argv


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
