"""Per-image (sequential) scoring against a reference: the prompts drawn from ground-truth masks,
one model's masks for them, and the comparison of two models' masks (or a model's and the
ground truth). Used by the distillation's periodic validation against the teacher
(:class:`Validator`: the teacher side computed once, each call scores the student; its figures
are ``RUN/<stage>/val.csv``'s columns) and by the tests' sequential reference of the batched
evaluator (:mod:`sam_edge.evaluation.evaluator`, which draws the same prompts with
:func:`make_prompts`)."""
from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sam_edge.modeling.sam import Sam
from sam_edge.utils.device import autocast_for

from sam_edge.data import SA1BDataset, SampleError, SkipReport, read_rgb
from sam_edge.data.batches import id_seed, load_sa1b_sample, pad_image
from sam_edge.data.prompts import masks_to_boxes, sample_points_in_masks
from sam_edge.data.sa1b import resize_image
from sam_edge.training.engine import mix_seed
from sam_edge.training.losses import mask_iou
from sam_edge.training.sam_steps import decode, encode

if TYPE_CHECKING:
    import sam_edge.distillation.distiller

__all__ = ["PROMPT_KINDS", "Validator", "compare", "gt_frame", "load_records", "make_prompts", "metric_order", "predict"]


PROMPT_KINDS = ("point1", "point2", "box")


def fixed_boxes(h: int, w: int) -> torch.Tensor:
    """Boxes for images without annotations: the centre half and the four quadrants."""
    return torch.tensor([[w / 4, h / 4, 3 * w / 4, 3 * h / 4], [0, 0, w / 2, h / 2], [w / 2, 0, w, h / 2],
                         [0, h / 2, w / 2, h], [w / 2, h / 2, w, h]], dtype=torch.float32)


def make_prompts(rec: dict[str, Any], kinds: Sequence[str], g: torch.Generator) -> dict[str, tuple]:
    """kind -> ((coords K x N x 2, labels K x N) or None, boxes K x 4 or None), drawn from the
    record's ground-truth masks (in ``kinds`` order, with ``g``). Without masks only the box
    kind is available (fixed boxes)."""
    gt = rec["masks"]
    out: dict[str, tuple] = {}
    for kind in kinds:
        if gt is None:
            if kind == "box":
                out[kind] = (None, fixed_boxes(*rec["input_size"]))
            continue
        if kind == "point1":
            out[kind] = (sample_points_in_masks(gt, g), None)
        elif kind == "point2":
            c1, l1 = sample_points_in_masks(gt, g)
            c2, l2 = sample_points_in_masks(gt, g)
            out[kind] = ((torch.cat([c1, c2], 1), torch.cat([l1, l2], 1)), None)
        elif kind == "box":
            out[kind] = (None, masks_to_boxes(gt))
        else:  # pragma: no cover
            raise ValueError(f"unknown prompt kind {kind!r}")
    return out


def to_frame(logits: torch.Tensor, input_size: tuple[int, int], image_size: int, full_res: bool) -> torch.Tensor:
    """Low-res logits K x M x L x L -> boolean masks in the input frame, padding cropped: at
    full resolution (upsampled to S x S, cropped to h x w) or at low resolution."""
    h, w = input_size
    if full_res:
        up = F.interpolate(logits.float(), (image_size, image_size), mode="bilinear", align_corners=False)
        return up[..., :h, :w] > 0
    side = logits.shape[-1]
    return logits[..., : math.ceil(h * side / image_size), : math.ceil(w * side / image_size)] > 0


def gt_frame(masks: torch.Tensor, input_size: tuple[int, int], image_size: int, side: int, full_res: bool) -> torch.Tensor:
    h, w = input_size
    if full_res:
        return masks[:, :h, :w]
    low = F.adaptive_avg_pool2d(masks[:, None].float(), side)[:, 0] >= 0.5
    return low[:, : math.ceil(h * side / image_size), : math.ceil(w * side / image_size)]


@torch.no_grad()
def predict(model: Sam, emb: torch.Tensor, prompts: dict[str, tuple], input_size: tuple[int, int],
             full_res: bool) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """kind -> (masks K x M x H x W bool, predicted IoU K x M) for one image embedding 1 x C x h x w.
    One point gives the 3 multimask outputs; two points and a box a single mask."""
    device = emb.device
    out = {}
    for kind, (pts, box) in prompts.items():
        k = (pts[0] if pts is not None else box).shape[0]
        e = emb.expand(k, -1, -1, -1)
        pts_d = (pts[0].to(device), pts[1].to(device)) if pts is not None else None
        box_d = box.to(device) if box is not None else None
        low, iou, _ = decode(model, e, pts_d, box_d, None, kind == "point1", full_res=False)
        out[kind] = (to_frame(low.float(), input_size, model.image_size, full_res).cpu(), iou.float().cpu())
    return out


def compare(pred: dict[str, tuple], ref: dict[str, tuple]) -> dict[str, torch.Tensor]:
    """Per-mask IoU of ``pred``'s masks against ``ref``'s: for one point, each model's own
    choice by its predicted IoU (``point1``) and the best of ``pred``'s 3 (``point1_oracle``).
    ``ref`` may be ground truth given as ``{kind: (K x H x W, None)}``."""
    out = {}
    for kind, (pm, piou) in pred.items():
        rm, riou = ref[kind]
        rows = torch.arange(pm.shape[0])
        if rm.dim() == 4:  # a model's output: K x M x H x W
            rm = rm[rows, riou.argmax(1)] if rm.shape[1] > 1 else rm[:, 0]
        if pm.shape[1] > 1:
            out[kind] = mask_iou(pm[rows, piou.argmax(1)], rm)
            out[kind + "_oracle"] = mask_iou(pm, rm[:, None]).max(1).values
        else:
            out[kind] = mask_iou(pm[:, 0], rm)
    return out


def metric_order(keys: Sequence[str]) -> list[str]:
    order = ["point1", "point1_oracle", "point2", "box"]
    return [k for k in order if k in keys] + sorted(k for k in keys if k not in order)


def load_records(root: Path, rel_ids: Sequence[str], size: int, k: int, seed: int,
                  report: SkipReport | None = None) -> list[dict[str, Any]]:
    """Validation records: padded image, input size and (for SA-1B samples) ``k`` masks chosen
    with a generator seeded from (seed, image id), so every run sees the same ones."""
    root = Path(root)
    stems = {Path(r).stem: r for r in rel_ids
             if Path(r).parent == Path(".") and re.fullmatch(r"sa_\d+\.jpg", Path(r).name)
             and (root / r).with_suffix(".json").is_file()}
    sa = SA1BDataset(root, ids=list(stems), image_size=size, verify_images=False) if stems else None
    pos = {stems[s]: i for i, s in enumerate(sa.ids)} if sa is not None else {}
    recs = []
    for rel in rel_ids:
        g = torch.Generator().manual_seed(mix_seed(seed, id_seed(rel)))
        try:
            if rel in pos:
                recs.append(load_sa1b_sample(sa, pos[rel], size, k, g))
            else:
                img, hw = pad_image(resize_image(read_rgb(root / rel, report), size), size)
                recs.append({"id": rel, "image": img, "input_size": hw, "masks": None})
        except SampleError as exc:
            if report is not None:
                report.skip(exc.path, exc.reason, exc.detail)
    return recs


class Validator:
    """Teacher side computed once (embeddings, fixed prompts, masks at low resolution); each
    call scores the student against it: ``emb_mse`` and, per prompt kind, the mIoU of the
    student's masks against the teacher's (``box_vs_teacher``, ``point1_vs_teacher`` with each
    model's own choice of its 3 masks, ``point1_oracle_vs_teacher``)."""

    def __init__(self, d: "sam_edge.distillation.distiller.Distiller", records: list[dict[str, Any]], kinds: Sequence[str],
                 use_cache: bool) -> None:
        self.d = d
        self.refs = []
        for rec in records:
            g = torch.Generator().manual_seed(mix_seed(d.cfg.seed, 11, id_seed(rec["id"])))
            img = rec["image"][None].to(d.device)
            sizes = torch.tensor([rec["input_size"]])
            t_emb = d.teacher_embeddings([rec["id"]], img, sizes, use_cache=use_cache)
            prompts = make_prompts(rec, kinds, g)
            with autocast_for(d.device, d.amp_dtype):
                t_out = predict(d.teacher, t_emb, prompts, rec["input_size"], full_res=False)
            self.refs.append({"image": rec["image"], "input_size": rec["input_size"], "t_emb": t_emb.cpu(),
                              "prompts": prompts, "t_out": t_out})

    @torch.no_grad()
    def __call__(self, student: Sam) -> dict[str, float]:
        was = student.training
        student.eval()
        dev = self.d.device
        mse, ious = [], defaultdict(list)
        for ref in self.refs:
            sizes = torch.tensor([ref["input_size"]])
            with autocast_for(dev, self.d.amp_dtype):
                s_emb = encode(student, ref["image"][None].to(dev), sizes).float()
                s_out = predict(student, s_emb, ref["prompts"], ref["input_size"], full_res=False)
            mse.append(F.mse_loss(s_emb.cpu(), ref["t_emb"]).item())
            for k, v in compare(s_out, ref["t_out"]).items():
                ious[k].append(v)
        student.train(was)
        out = {"emb_mse": float(np.mean(mse)) if mse else float("nan")}
        for k in metric_order(list(ious)):
            out[f"{k}_vs_teacher"] = float(torch.cat(ious[k]).mean())
        return out
