"""The batched evaluator: one model scored on SA-1B-format data with seeded simulated prompts,
in one of two modes (:func:`evaluate`, CLI ``sam-edge evaluate --against teacher|gt``):

* ``against="teacher"``, :func:`evaluate_student`: a student's masks against its teacher's for the
  same prompts (1 point with each model's own choice of its 3 masks, the best of the student's
  3, 2 points, a box), and both models against the ground truth (``sam-edge eval`` is this mode);
* ``against="gt"``, :func:`evaluate_promptable`: a model's masks against the ground truth (1
  point, 1 point + error-region corrections, a noisy box; SAM's protocol: the mask's centre
  click, the exact box), optionally per mask-area bucket (pretraining's validation).

:func:`format_eval_table` prints the teacher mode's result. Both modes keep the sequential
versions' random draws exactly (same generators, same calls in the same order, on the CPU), so
images, masks and prompts are identical to one image at a time (the tests' reference,
``tests/eval_reference.py``; the per-image scoring of the distillation's periodic validation is
:mod:`sam_edge.evaluation.validation`). What changes is how the models
run: ``batch_images`` images are encoded together, the decoder runs once per prompt kind (or once
for several kinds) over all masks of the chunk, with each mask's image embedding *indexed* from
the batch (no repeat per image), masks are upsampled with one ``F.interpolate`` per call and
IoUs are computed for the whole chunk with a float ``bmm`` (exact: the counts are integers
< 2**24) instead of boolean ``&`` / ``|`` sums. The only numeric difference left is the
floating-point one of running the encoder / decoder with other batch sizes (a logit within
~1e-6 of 0 may flip a pixel), so mIoUs agree to far better than 1e-3.

Merging prompt kinds in one decoder call: SAM's decoder treats each row independently and
the ``multimask`` flag only slices the 4 outputs (:meth:`MaskDecoder.forward`), so prompts with
the *same number of sparse tokens* can share a call: one point (+ the padding point SAM adds
without a box) and a box both give 2 tokens. Prompts with different token counts cannot be
merged (a padding point changes the output), so two points (3 tokens) keep their own call.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

from sam_edge.modeling.sam import Sam

from sam_edge.data import SA1BDataset, SkipReport
from sam_edge.data.sa1b import SampleError
from sam_edge.data.batches import id_seed, image_rel_id, load_sa1b_sample
from sam_edge.evaluation.validation import PROMPT_KINDS, make_prompts, metric_order
from sam_edge.training.engine import mix_seed
from sam_edge.utils.device import amp_dtype, autocast_for
from sam_edge.training.losses import sam_loss
from sam_edge.training.sam_steps import AREA_BUCKETS, decode, encode, prepare_item
from sam_edge.data.prompts import center_points, error_region_points, masks_to_boxes, noisy_boxes, sample_points_in_masks

__all__ = ["AGAINST", "batched_mask_iou", "evaluate", "evaluate_promptable", "evaluate_student", "format_eval_table"]


# ------------------------------------------------------------------------------------ helpers
def batched_mask_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """:func:`distill.losses.mask_iou` of P x M x N predictions against P x N targets (both
    {0, 1} float) -> P x M, with one ``bmm``. The intersections and areas are integer counts
    below 2**24, exact in float32 whatever the summation order, so the result is bit-identical
    to ``mask_iou`` on the boolean masks."""
    inter = torch.bmm(pred, target[:, :, None])[..., 0]
    union = pred.sum(-1) + target.sum(-1)[:, None] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def _binary(x: torch.Tensor) -> torch.Tensor:
    return (x > 0).to(torch.float32)


def _decode_merged(model: Sam, emb: torch.Tensor, rows: torch.Tensor,
                   groups: Sequence[tuple[Any, Any, bool]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Several prompt groups for the same P masks (image embedding ``emb[rows]``) in one mask
    decoder call. ``groups``: (points or None, boxes or None, multimask). Returns per group
    (low-res logits P x M x L x L, predicted IoU P x M float), as :func:`sam_edge.training.pretrain.decode`
    with ``full_res=False``. Groups must give the same number of sparse tokens; otherwise (or
    without ``MaskDecoder.predict_masks``) each group gets its own call."""
    pe = model.prompt_encoder
    enc = [pe(pts, box, None) for pts, box, _ in groups]
    if len({sp.shape[1] for sp, _ in enc}) != 1 or not hasattr(model.mask_decoder, "predict_masks"):
        e = emb[rows]
        return [decode(model, e, pts, box, None, mm, full_res=False)[:2] for pts, box, mm in groups]
    n = [sp.shape[0] for sp, _ in enc]
    sparse = torch.cat([sp for sp, _ in enc])
    dense = torch.cat([dn for _, dn in enc])
    low, iou = model.mask_decoder.predict_masks(emb[rows.repeat(len(groups))], pe.get_dense_pe(), sparse, dense)
    out, o = [], 0
    for (_, _, mm), k in zip(groups, n):
        sl = slice(1, None) if mm else slice(0, 1)
        out.append((low[o:o + k, sl], iou[o:o + k, sl].float()))
        o += k
    return out


def _to_dev(pts, device):
    return None if pts is None else (pts[0].to(device), pts[1].to(device))


# ---------------------------------------------------------------------------- evaluate_student
def _predict_chunk(model: Sam, images: torch.Tensor, sizes: torch.Tensor, img_idx: torch.Tensor,
                   prompts: dict[str, tuple], full_res: bool, valid: torch.Tensor,
                   dtype: Optional[torch.dtype]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One model on a chunk: binary masks in the input frame, P x 5 x N float (point1's 3
    outputs, point2, box; pixels outside the image's h x w zeroed, N = S*S or L*L), the point1
    predicted IoUs P x 3, and the low-res side L."""
    device = next(model.parameters()).device
    with autocast_for(device, dtype):
        emb = encode(model, images.to(device), sizes)
        rows = img_idx.to(device)
        p1, p2, bx = prompts["point1"][0], prompts["point2"][0], prompts["box"][1]
        (low1, iou1), (lowb, _) = _decode_merged(model, emb, rows, [(_to_dev(p1, device), None, True),
                                                                    (None, bx.to(device), False)])
        low2, _, _ = decode(model, emb[rows], _to_dev(p2, device), None, None, False, full_res=False)
        low = torch.cat([low1.float(), low2.float(), lowb.float()], 1)  # P x 5 x L x L, a new tensor
        side = low.shape[-1]
        if full_res:
            s = model.image_size
            low = F.interpolate(low, (s, s), mode="bilinear", align_corners=False)
        masks = low.gt_(0).flatten(-2).cpu()  # in place: 1.0 / 0.0 (``low`` is a fresh float tensor)
    if not bool(valid.all()):
        masks.mul_(valid[img_idx][:, None])
    return masks, iou1.float().cpu(), side


def _valid_region(sizes: torch.Tensor, image_size: int, side: int, full_res: bool) -> torch.Tensor:
    """B x N float: 1 inside each image's compared region (``_to_frame`` / ``_gt_frame`` crop)."""
    n = image_size if full_res else side
    hw = sizes if full_res else torch.ceil(sizes.double() * side / image_size).long()
    ar = torch.arange(n)
    v = (ar[None, :, None] < hw[:, 0, None, None]) & (ar[None, None, :] < hw[:, 1, None, None])
    return v.flatten(1).float()


def _gt_chunk(gt: torch.Tensor, side: int, full_res: bool) -> torch.Tensor:
    """P x S x S bool ground truth (zero padding) -> P x N float as ``_gt_frame`` compares it
    (outside the crop it is zero anyway: the padding is empty)."""
    if not full_res:
        gt = F.adaptive_avg_pool2d(gt[:, None].float(), side)[:, 0] >= 0.5
    return gt.flatten(1).float()


def _compare_chunk(s: torch.Tensor, s_iou: torch.Tensor, t: torch.Tensor, t_iou: torch.Tensor,
                   gt: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
    """:func:`sam_edge.evaluation.validation.compare` for student / teacher / ground truth at once.
    s, t: P x 5 x N (point1 x 3, point2, box), *_iou: P x 3, gt: P x N."""
    rows = torch.arange(s.shape[0])
    s_c, t_c = s_iou.argmax(1), t_iou.argmax(1)
    t_ref = torch.stack([t[rows, t_c], t[:, 3], t[:, 4]], 1)  # the teacher's mask per kind
    inter = torch.bmm(s, t_ref.transpose(1, 2))  # P x 5 x 3
    s_area, t_area = s.sum(-1), t_ref.sum(-1)

    def iou(i, a, b):
        u = a + b - i
        return torch.where(u > 0, i / u.clamp(min=1), torch.ones_like(u))

    st_oracle = iou(inter[:, :3, 0], s_area[:, :3], t_area[:, :1])  # P x 3
    out = {"student_vs_teacher": {
        "point1": st_oracle[rows, s_c],
        "point1_oracle": st_oracle.max(1).values,
        "point2": iou(inter[:, 3, 1], s_area[:, 3], t_area[:, 1]),
        "box": iou(inter[:, 4, 2], s_area[:, 4], t_area[:, 2]),
    }}
    for name, m, c in (("student_vs_gt", s, s_c), ("teacher_vs_gt", t, t_c)):
        v = batched_mask_iou(m, gt)  # P x 5
        out[name] = {"point1": v[rows, c], "point1_oracle": v[:, :3].max(1).values, "point2": v[:, 3], "box": v[:, 4]}
    return out


@torch.no_grad()
def evaluate_student(
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
    batch_images: int = 8,
) -> dict[str, Any]:
    """The sequential student-vs-teacher evaluation (same arguments, images, masks, prompts and
    result), ``batch_images`` images at a time: one encoder call per model and chunk, one
    decoder call for point1 + box (2 sparse tokens each) and one for point2, IoUs of the whole
    chunk at once."""
    if batch_images < 1:
        raise ValueError(f"batch_images must be >= 1, got {batch_images}")
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
    dtype_s, dtype_t = amp_dtype(dev_s, amp), amp_dtype(dev_t, amp)
    was = (student.training, teacher.training)
    student.eval()
    teacher.eval()
    want = len(dataset) if images is None else min(int(images), len(dataset))
    acc: dict[str, dict[str, list[torch.Tensor]]] = {
        "student_vs_teacher": defaultdict(list), "student_vs_gt": defaultdict(list), "teacher_vs_gt": defaultdict(list)}
    used: list[str] = []
    bar = tqdm(total=want, desc="eval", disable=None if progress else True, dynamic_ncols=True)
    idx = 0
    try:
        while len(used) < want and idx < len(dataset):
            recs, ids = [], []
            while len(recs) < min(batch_images, want - len(used)) and idx < len(dataset):
                sid = image_rel_id(dataset.path(idx), dataset.root)
                idx += 1
                g = torch.Generator().manual_seed(mix_seed(seed, id_seed(sid)))
                try:
                    rec = load_sa1b_sample(dataset, idx - 1, size, masks_per_image, g)
                except SampleError as exc:
                    dataset.report.skip(exc.path, exc.reason, exc.detail)
                    continue
                recs.append((rec, make_prompts(rec, PROMPT_KINDS, g)))
                ids.append(sid)
            if not recs:
                break
            images_u8 = torch.stack([r["image"] for r, _ in recs])
            sizes = torch.tensor([r["input_size"] for r, _ in recs])
            counts = torch.tensor([r["masks"].shape[0] for r, _ in recs])
            img_idx = torch.repeat_interleave(torch.arange(len(recs)), counts)
            gt = torch.cat([r["masks"] for r, _ in recs])
            prompts = {}
            for kind in PROMPT_KINDS:
                parts = [p[kind] for _, p in recs]
                pts = None if parts[0][0] is None else (torch.cat([q[0][0] for q in parts]),
                                                        torch.cat([q[0][1] for q in parts]))
                box = None if parts[0][1] is None else torch.cat([q[1] for q in parts])
                prompts[kind] = (pts, box)
            if gt.shape[0]:
                t_m, t_iou, side = _predict_chunk(teacher, images_u8, sizes, img_idx, prompts, full_res,
                                                  _valid_region(sizes, size, 4 * _emb_side(teacher), full_res), dtype_t)
                s_m, s_iou, _ = _predict_chunk(student, images_u8, sizes, img_idx, prompts, full_res,
                                               _valid_region(sizes, size, 4 * _emb_side(student), full_res), dtype_s)
                gt_f = _gt_chunk(gt, side, full_res) * _valid_region(sizes, size, side, full_res)[img_idx]
                for name, vals in _compare_chunk(s_m, s_iou, t_m, t_iou, gt_f).items():
                    for k, v in vals.items():
                        acc[name][k].append(v)
            else:  # no masks in the whole chunk: nothing to score, as the slow version
                for name in acc:
                    for k in ("point1", "point1_oracle", "point2", "box"):
                        acc[name][k].append(torch.zeros(0))
            used.extend(ids)
            bar.update(len(recs))
    finally:
        bar.close()
        student.train(was[0])
        teacher.train(was[1])
    result: dict[str, Any] = {
        name: {k: float(torch.cat(vals[k]).mean()) for k in metric_order(list(vals))} for name, vals in acc.items()}
    result["images"] = len(used)
    result["masks"] = int(sum(len(v) for v in acc["student_vs_teacher"]["box"]))
    result["masks_per_image"] = masks_per_image
    result["seed"] = seed
    result["full_res"] = full_res
    result["image_ids"] = used
    return result


def _emb_side(model: Sam) -> int:
    return int(model.prompt_encoder.image_embedding_size[0])


# ------------------------------------------------------------------------------ pretrain.evaluate
def _promptable_chunk(model: Sam, chunk: list[dict[str, Any]], corrections: int,
                      ious: dict[str, list[torch.Tensor]], areas: list[torch.Tensor]) -> None:
    """Score one chunk of prepared images (see :func:`evaluate_promptable`)."""
    device = next(model.parameters()).device
    images = torch.stack([c["item"]["image"] for c in chunk])
    sizes = torch.stack([c["item"]["input_size"] for c in chunk])
    counts = [c["item"]["masks"].shape[0] for c in chunk]
    gt_cpu = torch.cat([c["item"]["masks"] for c in chunk])
    p = gt_cpu.shape[0]
    if p == 0:
        return
    gt = gt_cpu.to(device)
    img_idx = torch.repeat_interleave(torch.arange(len(chunk)), torch.tensor(counts)).to(device)
    emb = encode(model, images.to(device), sizes)

    def cat_pts(key):
        return (torch.cat([c[key][0] for c in chunk]).to(device), torch.cat([c[key][1] for c in chunk]).to(device))

    center = center_points(gt_cpu)
    exact = masks_to_boxes(gt_cpu)
    # every 2-token prompt in one decoder call: 1 point (+ pad) x 3 (random, centre, the
    # rollout's first click; 3 outputs each) and 2 boxes (noisy, exact; 1 output each)
    r0 = cat_pts("r0")
    (l_p1, _), (l_c, _), (l_r0, i_r0), (l_nb, _), (l_ex, _) = _decode_merged(model, emb, img_idx, [
        (cat_pts("p1"), None, True), ((center[0].to(device), center[1].to(device)), None, True),
        (r0, None, True), (None, torch.cat([c["nb"] for c in chunk]).to(device), False),
        (None, exact.to(device), False)])
    s = model.image_size
    up_pts = F.interpolate(torch.cat([l_p1, l_c, l_r0]).float(), (s, s), mode="bilinear", align_corners=False)
    up_box = F.interpolate(torch.cat([l_nb, l_ex]).float(), (s, s), mode="bilinear", align_corners=False)
    gt_f = gt.flatten(1).float()
    gt2, gt3 = gt_f.repeat(2, 1), gt_f.repeat(3, 1)
    pt_iou = batched_mask_iou(_binary(up_pts).flatten(-2), gt3).view(3, p, 3)  # (p1, centre, r0) x P x 3
    box_iou = batched_mask_iou(_binary(up_box).flatten(-2), gt2)[:, 0].view(2, p)
    # the rollout (interactive_rollout, first='point', extra_iters=0, full_res=True): the first
    # call's mask is the one with the lowest SAM loss, later calls have 1 output
    logits = up_pts[2 * p:]
    _, best, _ = sam_loss(logits, i_r0, gt.float())
    rows = torch.arange(p, device=device)
    chosen = logits[rows, best] > 0
    last_iou = pt_iou[2].gather(1, best[:, None])[:, 0]
    mask_input = l_r0[rows, best][:, None].float()
    coords, labels = r0
    scale = s / gt.shape[-1]
    bounds = torch.tensor([0] + counts).cumsum(0).tolist()
    e = emb[img_idx]
    for it in range(corrections):
        # each image's clicks from its own copy of the shared generator, positioned where the
        # slow version drew them (see evaluate_promptable)
        clicks = [error_region_points(chosen[a:b], gt[a:b], c["g_corr"])
                  for c, a, b in zip(chunk, bounds[:-1], bounds[1:])]
        new_c = (torch.cat([q[0] for q in clicks]) + 0.5) * scale - 0.5
        coords = torch.cat([coords, new_c], 1)
        labels = torch.cat([labels, torch.cat([q[1] for q in clicks])], 1)
        low, _, full = decode(model, e, (coords, labels), None, mask_input, False, full_res=True)
        chosen = full[:, 0] > 0
        mask_input = low[:, 0][:, None].float()
        last_iou = None
    if last_iou is None:
        last_iou = batched_mask_iou(chosen.flatten(-2)[:, None].float(), gt_f)[:, 0]
    ious["point1"].append(pt_iou[0].max(1).values.cpu())
    ious["point1_corr"].append(last_iou.cpu())
    ious["box"].append(box_iou[0].cpu())
    ious["point1_center"].append(pt_iou[1].max(1).values.cpu())
    ious["box_exact"].append(box_iou[1].cpu())
    areas.append(gt_cpu.flatten(1).sum(1))


@torch.no_grad()
def evaluate_promptable(
    model: Sam,
    dataset: SA1BDataset,
    indices: list[int],
    masks_per_image: int = 8,
    corrections: int = 8,
    seed: int = 1,
    report: SkipReport | None = None,
    by_area: bool = False,
    *,
    batch_images: int = 8,
) -> dict[str, Any]:
    """The sequential promptable evaluation (same arguments, prompts and result), ``batch_images``
    images at a time.

    The slow version draws everything from one generator ``g``, image after image: the mask
    choice, the random point, the rollout's first click, ``corrections`` error-region clicks
    (each depends on the previous prediction) and the noisy box. Here each image's draws are
    made in that order *before* the batched decoder calls: the error-region clicks consume a
    fixed amount of ``g`` whatever the prediction (:func:`error_region_points` draws one key
    per pixel, no data-dependent branch), so ``g`` is copied where they start (``g_corr``, used
    later by the batched rollout with the actual predictions) and advanced past them with the
    same calls on the ground truth; the noisy box and the next image then see exactly the
    stream position they saw before (the skip draws the same uniform keys that
    ``error_region_points`` draws, one per pixel, without the region work). Every prompt is therefore identical to the slow version's;
    only the batched floating point differs."""
    if batch_images < 1:
        raise ValueError(f"batch_images must be >= 1, got {batch_images}")
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    ious: dict[str, list[torch.Tensor]] = {"point1": [], "point1_corr": [], "box": [], "point1_center": [],
                                           "box_exact": []}
    areas: list[torch.Tensor] = []
    chunk: list[dict[str, Any]] = []
    try:
        for i in indices:
            try:
                item = dataset[i]
            except SampleError as exc:
                if report is not None:
                    report.skip(exc.path, exc.reason, exc.detail)
                continue
            it = prepare_item(item, model.image_size, masks_per_image, g)
            gt = it["masks"]
            rec = {"item": it, "p1": sample_points_in_masks(gt, g), "r0": sample_points_in_masks(gt, g)}
            rec["g_corr"] = torch.Generator().set_state(g.get_state())
            for _ in range(corrections):  # advance g past the clicks: error_region_points draws one
                torch.rand((gt.shape[0], gt[0].numel()), generator=g)  # uniform key per pixel (the tests check)
            rec["nb"] = noisy_boxes(gt, g)
            chunk.append(rec)
            if len(chunk) == batch_images:
                _promptable_chunk(model, chunk, corrections, ious, areas)
                chunk = []
        if chunk:
            _promptable_chunk(model, chunk, corrections, ious, areas)
    finally:
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


# ------------------------------------------------------------------------------- the one entry
#: the two modes: a student against its teacher, a model against the ground truth
AGAINST = ("teacher", "gt")


def evaluate(model: Sam, dataset: SA1BDataset, *, against: str, teacher: Optional[Sam] = None,
             images: Optional[int] = None, masks_per_image: int = 8, seed: Optional[int] = None,
             batch_images: int = 8, **options: Any) -> dict[str, Any]:
    """Score ``model`` on ``dataset`` (the first ``images`` usable images, ``masks_per_image``
    ground-truth masks each).

    ``against="teacher"``: :func:`evaluate_student` (``model`` is the student; ``teacher``
    required; ``seed`` default 0; ``options``: ``full_res``, ``amp``, ``progress``).
    ``against="gt"``: :func:`evaluate_promptable` (``seed`` default 1; ``options``:
    ``corrections``, ``by_area``; skipped samples go to ``dataset.report``)."""
    if against == "teacher":
        if teacher is None:
            raise ValueError("evaluate against the teacher needs a teacher model")
        return evaluate_student(model, teacher, dataset, images=images, masks_per_image=masks_per_image,
                                seed=0 if seed is None else seed, batch_images=batch_images, **options)
    if against == "gt":
        indices = list(range(len(dataset)))[:images]
        return evaluate_promptable(model, dataset, indices, masks_per_image, seed=1 if seed is None else seed,
                                   report=dataset.report, batch_images=batch_images, **options)
    raise ValueError(f"against must be one of {AGAINST}, got {against!r}")


# ------------------------------------------------------------------------------------- output
_ROW_NAMES = {"point1": "1 point (own IoU choice)", "point1_oracle": "1 point (best of 3)",
              "point2": "2 points", "box": "box"}


def format_eval_table(result: dict[str, Any]) -> str:
    """A small text table of :func:`evaluate_student`'s result."""
    cols = ("student_vs_teacher", "student_vs_gt", "teacher_vs_gt")
    heads = ("student vs teacher", "student vs GT", "teacher vs GT")
    keys = metric_order(list(result["student_vs_teacher"]))
    w0 = max(len(_ROW_NAMES.get(k, k)) for k in keys) + 2
    lines = [f"{'prompt':<{w0}}" + "".join(f"{h:>20}" for h in heads)]
    for k in keys:
        cells = "".join(f"{result[c].get(k, float('nan')):>20.4f}" for c in cols)
        lines.append(f"{_ROW_NAMES.get(k, k):<{w0}}" + cells)
    lines.append(f"({result['images']} images, {result['masks']} masks)")
    return "\n".join(lines)
