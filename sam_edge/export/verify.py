"""Check an exported artifact against eager PyTorch on real images.

Encoder: cosine similarity (per image, flattened embedding; the minimum over images is checked)
and max abs error of the image embeddings. Decoder: fed the *eager* embeddings (so decoder
error is measured on its own) and prompts drawn from each image (points, a box, points + box,
and a mask prompt from a previous eager prediction); low-res logits thresholded at 0 give masks,
compared by IoU (mean over all prompts x outputs is checked; the minimum is reported; two empty
masks count as IoU 1), plus the max abs error of the predicted IoU scores.

Tolerances by precision (``TOLERANCES``): fp32 cosine >= 0.9999, mask IoU >= 0.99,
IoU-score error <= 1e-3; fp16 cosine >= 0.999, mask IoU >= 0.97, IoU-score error <= 1e-2;
int8 (dynamic or static) cosine >= 0.98, mask IoU >= 0.9, IoU-score error <= 0.1.
"""
from __future__ import annotations

from sam_edge.errors import UserError

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from sam_edge.modeling.sam import Sam
from sam_edge.runtime.backends import get_backend
from sam_edge.runtime.manifest import artifact_path
from sam_edge.runtime.feeds import DECODER_INPUT_NAMES, decoder_feed, point_inputs
from sam_edge.runtime.predictor import encoder_input  # noqa: F401 (re-exported)
from sam_edge.transforms import ResizeLongestSide

TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"cosine_min": 0.9999, "mask_iou_mean": 0.99, "iou_score_max_abs": 1e-3},
    "fp16": {"cosine_min": 0.999, "mask_iou_mean": 0.97, "iou_score_max_abs": 1e-2},
    "int8": {"cosine_min": 0.98, "mask_iou_mean": 0.9, "iou_score_max_abs": 0.1},
}


def tolerance_for(precision: str) -> dict[str, float]:
    """fp32 / fp16 by name; any int8 variant (int8_dynamic, int8_static, int8_weights, ...) and
    palettised weights (palettize4, palettize6) get the int8 tolerances."""
    if precision.startswith(("int8", "palettize", "int4")):
        return TOLERANCES["int8"]
    if precision not in TOLERANCES:
        raise ValueError(f"no verification tolerance for precision {precision!r}; known: {sorted(TOLERANCES)}")
    return TOLERANCES[precision]


class VerificationError(UserError, AssertionError):
    """An artifact missed a tolerance against eager PyTorch."""


@torch.no_grad()
def eager_embedding(model: Sam, image: np.ndarray) -> np.ndarray:
    resized = ResizeLongestSide(model.image_size).apply_image(np.ascontiguousarray(image))
    t = torch.as_tensor(resized).permute(2, 0, 1)[None].float()
    return model.image_encoder(model.preprocess(t)).numpy()


def prompts_from_image(image: np.ndarray, image_size: int) -> list[dict[str, np.ndarray]]:
    """Deterministic prompts in the *model input frame*, drawn from the image content: the
    brightest and darkest points of a blurred grey image, the centre, and a box around the
    brighter-than-median region (or a central box)."""
    h0, w0 = image.shape[:2]
    tr = ResizeLongestSide(image_size)
    grey = image.astype(np.float32).mean(-1)
    k = max(1, min(h0, w0) // 16)
    small = grey[: h0 // k * k, : w0 // k * k].reshape(h0 // k, k, w0 // k, k).mean((1, 3))
    yb, xb = np.unravel_index(np.argmax(small), small.shape)
    yd, xd = np.unravel_index(np.argmin(small), small.shape)
    bright = np.array([(xb + 0.5) * k, (yb + 0.5) * k])
    dark = np.array([(xd + 0.5) * k, (yd + 0.5) * k])
    centre = np.array([w0 / 2, h0 / 2])
    ys, xs = np.nonzero(grey > np.median(grey))
    box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], float) if len(xs) else np.array([w0 / 4, h0 / 4, 3 * w0 / 4, 3 * h0 / 4])
    if box[2] - box[0] < 4 or box[3] - box[1] < 4:
        box = np.array([w0 / 4, h0 / 4, 3 * w0 / 4, 3 * h0 / 4])
    frame = lambda c: tr.apply_coords(np.asarray(c, float), (h0, w0))  # noqa: E731
    fbox = tr.apply_boxes(box[None], (h0, w0))[0]
    return [
        {"coords": frame(centre[None]), "labels": np.array([1]), "box": None},
        {"coords": frame(np.stack([bright, dark, centre])), "labels": np.array([1, 0, 1]), "box": None},
        {"coords": None, "labels": None, "box": fbox},
        {"coords": frame(centre[None]), "labels": np.array([1]), "box": fbox},
    ]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def _mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU per leading index of boolean masks ... x H x W (1.0 when both empty)."""
    inter = (a & b).reshape(*a.shape[:-2], -1).sum(-1)
    union = (a | b).reshape(*a.shape[:-2], -1).sum(-1)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def verify_encoder(session, model: Sam, images: Sequence[np.ndarray], normalize_inside: bool) -> dict[str, float]:
    cos, err = [], []
    mean = model.pixel_mean.flatten().tolist()
    std = model.pixel_std.flatten().tolist()
    for img in images:
        x, _ = encoder_input(img, model.image_size, mean, std, normalize_inside)
        got = np.asarray(session.run({session.input_names[0]: x})[session.output_names[0]], np.float32)
        ref = eager_embedding(model, img)
        cos.append(_cosine(got, ref))
        err.append(float(np.abs(got - ref).max()))
    return {"cosine_min": min(cos), "cosine_mean": float(np.mean(cos)), "max_abs_error": max(err),
            "num_images": len(images)}


@torch.no_grad()
def verify_decoder(session, model: Sam, images: Sequence[np.ndarray], mask_outputs: str) -> dict[str, float]:
    from sam_edge.export.wrappers import DecoderWrapper

    eager = DecoderWrapper(model, mask_outputs=mask_outputs).eval()
    ious, score_err, n = [], [], 0
    for img in images:
        emb = eager_embedding(model, img)
        for p in prompts_from_image(img, model.image_size):
            pc, pl = point_inputs(p["coords"], p["labels"], p["box"])
            # first pass without a mask prompt, second with the first pass's single-mask logits
            mask_in = None
            for _ in range(2):
                feed = decoder_feed(emb, pc, pl, mask_in)
                ref = eager(*(torch.from_numpy(feed[k]) for k in DECODER_INPUT_NAMES))
                ref_m, ref_s = ref[0].numpy(), ref[1].numpy()
                out = session.run(feed)
                got_m, got_s = out["low_res_masks"], out["iou_predictions"]
                ious.extend(_mask_iou(got_m[0] > 0, ref_m[0] > 0).tolist())
                score_err.append(float(np.abs(got_s - ref_s).max()))
                n += 1
                mask_in = ref_m[:, :1].copy()
    return {"mask_iou_mean": float(np.mean(ious)), "mask_iou_min": float(np.min(ious)),
            "iou_score_max_abs": max(score_err), "num_prompts": n, "num_images": len(images)}


def check_tolerances(metrics: dict[str, float], precision: str, role: str) -> list[str]:
    tol = tolerance_for(precision)
    keys = ("cosine_min",) if role == "encoder" else ("mask_iou_mean", "iou_score_max_abs")
    failures = []
    for k in keys:
        v, t = metrics[k], tol[k]
        ok = v <= t if k.endswith("max_abs") else v >= t
        if not ok:
            failures.append(f"{k}={v:.6g} (tolerance {'<=' if k.endswith('max_abs') else '>='} {t})")
    return failures


def verify_artifact(
    export_dir: str | Path,
    entry: dict[str, Any],
    model: Sam,
    images: Sequence[np.ndarray],
    *,
    normalize_inside: bool = True,
    mask_outputs: str = "all",
    reason: Optional[str] = None,
) -> dict[str, Any]:
    """Run the artifact ``entry`` (a manifest record) through its runtime on ``images`` and
    compare with eager ``model``. Returns the verification record; raises
    :class:`VerificationError` (artifact, metric, value, tolerance) on a miss unless ``reason``
    explains why a miss is accepted (recorded, with ``passed: False``)."""
    if not images:
        raise ValueError("verify_artifact: needs at least one real image")
    model.eval()
    session = get_backend(entry["format"]).load(artifact_path(export_dir, entry))
    if entry["role"] == "encoder":
        metrics = verify_encoder(session, model, images, normalize_inside)
    else:
        metrics = verify_decoder(session, model, images, mask_outputs)
    failures = check_tolerances(metrics, entry["precision"], entry["role"])
    if failures and reason is None:
        raise VerificationError(
            f"{entry['file']} ({entry['role']}, {entry['format']} {entry['precision']}) failed verification: "
            + "; ".join(failures)
        )
    return {
        "passed": not failures,
        "metrics": metrics,
        "tolerances": tolerance_for(entry["precision"]),
        "failures": failures,
        "reason": reason if failures else None,
    }
