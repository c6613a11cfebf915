"""The sequential evaluators as they were before they were batched (one image at a time, one
decoder call per prompt kind): the reference that tests/test_evaluation.py holds the batched
:mod:`distill.evaluation` to (same figures, same images and prompts)."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

import torch

from sam_edge.data import SA1BDataset, SkipReport
from sam_edge.data.sa1b import SampleError
from sam_edge.data.batches import id_seed as _id_seed, image_rel_id as _image_rel_id, load_sa1b_sample as _load_sa1b_sample
from sam_edge.evaluation.validation import (PROMPT_KINDS, compare as _compare, gt_frame as _gt_frame, make_prompts as _make_prompts,
                                            metric_order as _metric_order, predict as _predict)
from sam_edge.training.engine import mix_seed as _mix
from sam_edge.utils.device import amp_dtype as _amp_dtype, autocast_for as _autocast
from sam_edge.training.losses import mask_iou
from sam_edge.training.pretrain import AREA_BUCKETS, collate, decode, encode, interactive_rollout, prepare_item
from sam_edge.data.prompts import center_points, masks_to_boxes, noisy_boxes, sample_points_in_masks
from sam_edge.modeling.sam import Sam


@torch.no_grad()
def evaluate_student_reference(
    student: Sam,
    teacher: Sam,
    dataset: SA1BDataset | str | Path,
    *,
    images: Optional[int] = None,
    masks_per_image: int = 8,
    seed: int = 0,
    full_res: bool = True,
    amp: str = "off",
    progress: bool = False,
) -> dict[str, Any]:
    """mIoU of the student's masks against the teacher's, and of both against ground truth.

    The first ``images`` usable images of ``dataset`` (sorted ids), up to ``masks_per_image``
    ground-truth masks each and the prompts drawn from them depend only on ``seed`` and the image
    id, so every student is scored on the same images, masks and prompts. Prompts: ``point1``
    one point inside the mask (3 outputs; each model's mask chosen by its own predicted IoU),
    ``point1_oracle`` the best of the student's 3 against the reference's chosen mask,
    ``point2`` two points inside the mask and ``box`` the mask's tight box (single output).
    Masks are compared in the model input frame (``full_res``: upsampled to the input size,
    padding cropped). Returns ``student_vs_teacher``, ``student_vs_gt``, ``teacher_vs_gt``
    (metric -> mIoU), ``images``, ``masks`` and the ``image_ids`` used.
    """
    if student.image_size != teacher.image_size:
        raise ValueError(f"student input size {student.image_size} != teacher's {teacher.image_size}")
    if not isinstance(dataset, SA1BDataset):
        dataset = SA1BDataset(dataset, image_size=teacher.image_size)
    elif dataset.image_size != teacher.image_size:
        raise ValueError(f"dataset resizes to {dataset.image_size}, the models take {teacher.image_size}: "
                         f"build it with SA1BDataset(root, image_size={teacher.image_size})")
    from tqdm import tqdm

    size = teacher.image_size
    dev_s, dev_t = next(student.parameters()).device, next(teacher.parameters()).device
    dtype = _amp_dtype(dev_s, amp)
    was = (student.training, teacher.training)
    student.eval()
    teacher.eval()
    want = len(dataset) if images is None else min(int(images), len(dataset))
    acc: dict[str, dict[str, list[torch.Tensor]]] = {
        "student_vs_teacher": defaultdict(list), "student_vs_gt": defaultdict(list), "teacher_vs_gt": defaultdict(list)}
    used: list[str] = []
    bar = tqdm(total=want, desc="eval", disable=None if progress else True, dynamic_ncols=True)
    for idx in range(len(dataset)):
        if len(used) >= want:
            break
        sid = _image_rel_id(dataset.path(idx), dataset.root)
        g = torch.Generator().manual_seed(_mix(seed, _id_seed(sid)))
        try:
            rec = _load_sa1b_sample(dataset, idx, size, masks_per_image, g)
        except SampleError as exc:
            dataset.report.skip(exc.path, exc.reason, exc.detail)
            continue
        prompts = _make_prompts(rec, PROMPT_KINDS, g)
        sizes = torch.tensor([rec["input_size"]])
        with _autocast(dev_t, _amp_dtype(dev_t, amp)):
            t_emb = encode(teacher, rec["image"][None].to(dev_t), sizes)
            t_out = _predict(teacher, t_emb, prompts, rec["input_size"], full_res)
        with _autocast(dev_s, dtype):
            s_emb = encode(student, rec["image"][None].to(dev_s), sizes)
            s_out = _predict(student, s_emb, prompts, rec["input_size"], full_res)
        gt = _gt_frame(rec["masks"], rec["input_size"], size, 4 * t_emb.shape[-1], full_res)
        gt_ref = {k: (gt, None) for k in prompts}
        for name, (pred, ref) in {"student_vs_teacher": (s_out, t_out), "student_vs_gt": (s_out, gt_ref),
                                  "teacher_vs_gt": (t_out, gt_ref)}.items():
            for k, v in _compare(pred, ref).items():
                acc[name][k].append(v)
        used.append(sid)
        bar.update(1)
    bar.close()
    student.train(was[0])
    teacher.train(was[1])
    result: dict[str, Any] = {
        name: {k: float(torch.cat(vals[k]).mean()) for k in _metric_order(list(vals))} for name, vals in acc.items()}
    result["images"] = len(used)
    result["masks"] = int(sum(len(v) for v in acc["student_vs_teacher"]["box"]))
    result["masks_per_image"] = masks_per_image
    result["seed"] = seed
    result["full_res"] = full_res
    result["image_ids"] = used
    return result



def _point_iou(model: Sam, emb: torch.Tensor, gt: torch.Tensor, points) -> torch.Tensor:
    """IoU with ``gt`` of the best of the 3 outputs for one click per mask (oracle choice)."""
    coords, labels = points
    _, _, full = decode(model, emb, (coords.to(emb.device), labels.to(emb.device)), None, None, True)
    return mask_iou(full > 0, gt[:, None]).max(1).values.cpu()


def _box_iou(model: Sam, emb: torch.Tensor, gt: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """IoU with ``gt`` of the single-mask output for one box per mask."""
    _, _, full = decode(model, emb, None, boxes.to(emb.device), None, False)
    return mask_iou(full[:, 0] > 0, gt).cpu()


@torch.no_grad()
def evaluate_reference(
    model: Sam,
    dataset: SA1BDataset,
    indices: list[int],
    masks_per_image: int = 8,
    corrections: int = 8,
    seed: int = 1,
    report: SkipReport | None = None,
    by_area: bool = False,
) -> dict[str, Any]:
    """Validation mIoU in the model's input frame, with fixed (seeded) prompts:
    ``point1`` one point drawn uniformly inside the mask, best of the 3 masks against ground
    truth; ``point1_corr`` after ``corrections`` error-region clicks (single mask); ``box`` a
    noisy box (SAM's training jitter; single mask). Also the standard protocol of SAM's paper /
    RITM, which is easier: ``point1_center`` one click at the point farthest from the mask
    boundary (best of 3) and ``box_exact`` the tight ground-truth box (single mask).
    ``by_area`` adds ``by_area``: the same mIoUs per mask-area bucket (pixels in the input frame,
    :data:`AREA_BUCKETS`), with the mask count of each."""
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    ious = {"point1": [], "point1_corr": [], "box": [], "point1_center": [], "box_exact": []}
    areas: list[torch.Tensor] = []
    for i in indices:
        try:
            item = dataset[i]
        except SampleError as exc:
            if report is not None:
                report.skip(exc.path, exc.reason, exc.detail)
            continue
        batch = collate([prepare_item(item, model.image_size, masks_per_image, g)])
        emb = encode(model, batch["images"].to(device), batch["input_sizes"])
        gt = batch["masks"].to(device)
        emb = emb.expand(gt.shape[0], -1, -1, -1)
        ious["point1"].append(_point_iou(model, emb, gt, sample_points_in_masks(gt.cpu(), g)))
        _, _, corr = interactive_rollout(model, emb, gt, g, first="point", corrections=corrections,
                                         extra_iters=0, full_res=True)
        ious["point1_corr"].append(corr[-1].cpu())
        ious["box"].append(_box_iou(model, emb, gt, noisy_boxes(gt.cpu(), g)))
        ious["point1_center"].append(_point_iou(model, emb, gt, center_points(gt)))
        ious["box_exact"].append(_box_iou(model, emb, gt, masks_to_boxes(gt)))
        areas.append(gt.flatten(1).sum(1).cpu())
    model.train(was_training)
    per_mask = {k: torch.cat(v) for k, v in ious.items() if v}
    out: dict[str, Any] = {k: float(per_mask[k].mean()) if k in per_mask else float("nan") for k in ious}
    out["masks"] = int(sum(len(v) for v in ious["box"]))
    if by_area:
        area = torch.cat(areas) if areas else torch.zeros(0)
        out["by_area"] = {}
        for lo, hi in AREA_BUCKETS:
            sel = (area >= lo) & (area < hi)
            if sel.any():
                row = {k: float(v[sel].mean()) for k, v in per_mask.items()}
                out["by_area"][f"{lo}-{hi}"] = {**row, "masks": int(sel.sum())}
    return out
