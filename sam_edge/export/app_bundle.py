"""``sam-edge app-bundle``: put an export into the iOS and Android sample apps in one command.

    sam-edge app-bundle --artifacts runs/demo/export
    sam-edge app-bundle --artifacts runs/demo/export --android tflite:fp32 --ios coreml:fp16

For each app it copies the selected encoder + decoder (sha256 checked against the manifest first)
into the app's model folder, removes models an earlier bundle left there, copies the sample photo,
regenerates ``ModelConstants.swift`` / ``ModelConstants.kt`` and ``apps/model_manifest.json``
(:mod:`export.app_constants`: file names, shapes, sha256, runtime and its minimum version, which
the apps check at load), and writes the golden of the Android instrumented test: the mask that
sam-edge's Python runtime predicts on the sample photo for one foreground tap, with exactly the
artifacts the app bundles. Then it prints what to open.

Models are never committed (each app's ``.gitignore``); the constants, the trimmed manifest, the
sample photo and the golden are.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from sam_edge.runtime.manifest import ManifestError, artifact_path, load_manifest, select_artifacts
from sam_edge.utils.io import atomic_path, dumps_json, write_bytes_atomic

from sam_edge.export import app_constants as ac

REPO_ROOT = ac.REPO_ROOT
SAMPLE_PHOTO = REPO_ROOT / "sam_edge" / "assets" / "astronaut.jpg"
#: the golden tap, in sample-photo pixels (the foreground point of `make demo`)
GOLDEN_POINT = (190.0, 120.0)
GOLDEN_MIN_IOU = 0.95
MODEL_SUFFIXES = (".pte", ".tflite", ".mlpackage", ".onnx")


def app_paths(apps: Path) -> dict[str, Path]:
    android = apps / "android" / "app" / "src"
    return {
        "android_models": android / "main" / "assets",
        "android_sample": android / "main" / "assets" / "sample.jpg",
        "android_golden": android / "androidTest" / "assets",
        "kotlin": android / "main" / "java" / Path(*ac.KOTLIN_PACKAGE.split(".")) / "ModelConstants.kt",
        "ios_models": apps / "ios" / "SamEdgeDemo" / "Models",
        "ios_sample": apps / "ios" / "SamEdgeDemo" / "Resources" / "sample.jpg",
        "swift": apps / "ios" / "SamEdgeDemo" / "ModelConstants.swift",
        "manifest_copy": apps / "model_manifest.json",
    }


def parse_selection(text: str, what: str) -> tuple[str, Optional[str]]:
    """``"executorch:fp32"`` -> ("executorch", "fp32"); ``"tflite"`` -> ("tflite", None)."""
    fmt, _, precision = text.partition(":")
    if not fmt:
        raise ManifestError(f"{what} {text!r}: expected FORMAT[:PRECISION], e.g. executorch:fp32")
    return fmt, precision or None


def _copy_artifact(src: Path, dest_dir: Path) -> Path:
    """Copy a file or a directory artifact (``.mlpackage``) into ``dest_dir`` atomically."""
    dest = dest_dir / src.name
    dest_dir.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        tmp = dest_dir / f".{src.name}.tmp-bundle"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp, symlinks=False)
        old = dest_dir / f".{src.name}.old-bundle"
        shutil.rmtree(old, ignore_errors=True)
        if dest.exists():
            dest.rename(old)
        tmp.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
    return dest


def _remove_stale(folder: Path, keep: set[str]) -> list[str]:
    """Models of an earlier bundle (encoder_* / decoder_* with a model suffix) not in ``keep``."""
    removed = []
    if not folder.is_dir():
        return removed
    for p in sorted(folder.iterdir()):
        if p.name in keep or not p.name.startswith(("encoder_", "decoder_")) or p.suffix not in MODEL_SUFFIXES:
            continue
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        removed.append(p.name)
    return removed


def golden(export_dir: Path, manifest: dict[str, Any], fmt: str, precision: Optional[str],
           photo: Path = SAMPLE_PHOTO, point: tuple[float, float] = GOLDEN_POINT) -> tuple[dict[str, Any], np.ndarray]:
    """What the Android app must show after one tap at ``point`` on the sample photo: the
    multimask output with the highest predicted IoU (as ``MainActivity`` selects it), predicted
    by the Python runtime on the same artifacts. Returns (golden.json dict, H x W bool mask)."""
    from sam_edge.image import load_image
    from sam_edge.runtime.predictor import ArtifactPredictor

    pred = ArtifactPredictor(export_dir, precision=precision, manifest=manifest, fmt=fmt)
    image = load_image(photo)
    pred.set_image(image)
    masks, ious, _ = pred.predict(point_coords=np.array([point], dtype=np.float32),
                                  point_labels=np.array([1], dtype=np.float32), multimask_output=True)
    layout = ac.app_constants(manifest, fmt, precision)
    indices = layout["multimask_indices"] or [layout["single_mask_index"]]
    best = int(np.argmax(ious))
    h, w = image.shape[:2]
    info = {"image": "sample.jpg", "width": int(w), "height": int(h), "points": [list(point)], "labels": [1],
            "mask_index": int(indices[best]), "predicted_iou": float(ious[best]), "mask_png": "golden_mask.png",
            "mask_pixels": int(masks[best].sum()), "min_iou": GOLDEN_MIN_IOU,
            "encoder_file": pred.encoder_artifact["file"], "decoder_file": pred.decoder_artifact["file"],
            "encoder_sha256": pred.encoder_artifact["sha256"], "decoder_sha256": pred.decoder_artifact["sha256"],
            "made_by": "sam-edge app-bundle (sam_edge.runtime.ArtifactPredictor)"}
    return info, masks[best].astype(bool)


def _png_bytes(mask: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def bundle(export_dir: str | Path, apps: str | Path = ac.APPS_DIR, ios: str = "coreml:fp16",
           android: str = "executorch:fp32", with_golden: bool = True) -> dict[str, Any]:
    """Copy, regenerate and write the golden (see the module doc). Returns what was done."""
    export_dir, apps = Path(export_dir), Path(apps)
    if not export_dir.is_dir():
        raise ManifestError(f"{export_dir}: not an export directory (run `sam-edge export` or `make demo` first)")
    if not (apps / "android").is_dir() or not (apps / "ios").is_dir():
        raise ManifestError(f"{apps}: no android/ and ios/ sample apps here (give --apps, the checkout's apps/)")
    manifest = load_manifest(export_dir)  # every artifact's sha256 checked
    paths = app_paths(apps)
    (ios_fmt, ios_prec), (and_fmt, and_prec) = parse_selection(ios, "--ios"), parse_selection(android, "--android")
    if ios_fmt != "coreml":
        raise ManifestError(f"--ios {ios!r}: the iOS app runs Core ML (coreml[:PRECISION])")
    if and_fmt not in ("executorch", "tflite"):
        raise ManifestError(f"--android {android!r}: the Android app runs executorch or tflite")
    done: dict[str, Any] = {"copied": [], "removed": []}
    for fmt, prec, key in ((ios_fmt, ios_prec, "ios_models"), (and_fmt, and_prec, "android_models")):
        pair = select_artifacts(manifest, prec, fmt)
        names = {a["file"] for a in pair}
        done["removed"] += [str(paths[key] / n) for n in _remove_stale(paths[key], names)]
        for art in pair:
            done["copied"].append(str(_copy_artifact(artifact_path(export_dir, art), paths[key])))
    for key in ("ios_sample", "android_sample"):
        paths[key].parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(paths[key], SAMPLE_PHOTO.read_bytes())
    res = ac.generate(export_dir, paths["swift"], paths["kotlin"], ios_fmt, and_fmt,
                      ios_precision=ios_prec or ac.DEFAULT_IOS[1], android_precision=and_prec,
                      manifest_copy=paths["manifest_copy"], manifest=manifest)
    done["constants"] = [str(paths["swift"]), str(paths["kotlin"]), str(paths["manifest_copy"])]
    if with_golden:
        info, mask = golden(export_dir, manifest, and_fmt, res["android"]["precision"])
        gdir = paths["android_golden"]
        gdir.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(gdir / info["mask_png"], _png_bytes(mask))
        write_bytes_atomic(gdir / "golden.json", (dumps_json(info, indent=2) + "\n").encode())
        done["golden"] = info
    done["ios"], done["android"] = res["ios"], res["android"]
    return done


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--artifacts", required=True, help="export directory (e.g. runs/demo/export from `make demo`)")
    ap.add_argument("--ios", default="coreml:fp16", help="FORMAT[:PRECISION] for the iOS app (default coreml:fp16)")
    ap.add_argument("--android", default="executorch:fp32",
                    help="FORMAT[:PRECISION] for the Android app: executorch or tflite (default executorch:fp32)")
    ap.add_argument("--apps", default=str(ac.APPS_DIR), help="the checkout's apps/ folder (default: %(default)s)")
    ap.add_argument("--no-golden", action="store_true", help="skip the Android test's golden mask")


def run(args: argparse.Namespace) -> int:
    done = bundle(args.artifacts, args.apps, args.ios, args.android, with_golden=not args.no_golden)
    for p in done["removed"]:
        print(f"removed {p} (an earlier bundle)")
    for p in done["copied"]:
        print(f"copied  {p}")
    for p in done["constants"]:
        print(f"wrote   {p}")
    if "golden" in done:
        g = done["golden"]
        print(f"wrote   golden for the Android test: mask {g['mask_index']} of {g['decoder_file']}, "
              f"{g['mask_pixels']} px, predicted IoU {g['predicted_iou']:.3f}")
    apps = Path(args.apps)
    print("\nnext:")
    print(f"  iOS:     cd {apps / 'ios'} && xcodegen generate && open SamEdgeDemo.xcodeproj   "
          f"({done['ios']['encoder']['file']} + {done['ios']['decoder']['file']}, iOS >= {done['ios']['min_runtime_version']})")
    print(f"  Android: open {apps / 'android'} in Android Studio, or: cd {apps / 'android'} && ./gradlew :app:installDebug   "
          f"({done['android']['encoder']['file']} + {done['android']['decoder']['file']}, "
          f"{done['android']['runtime']} >= {done['android']['min_runtime_version']})")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="sam-edge app-bundle", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    args = ap.parse_args(argv)
    try:
        return run(args)
    except ManifestError as exc:
        print(f"sam-edge app-bundle: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
