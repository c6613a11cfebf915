"""The SAM forward pieces shared by training tasks and the evaluator: batch preparation
(``prepare_item``, ``collate``), ``encode`` / ``decode`` of a :class:`Sam`, the interactive
prompt rollout of SAM's recipe (``interactive_rollout``) and the mask-area buckets of the
evaluation tables. They sit under the tasks (pretraining, distillation) and the evaluator, which
all import them, so none of those imports another."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sam_edge.data.prompts import error_region_points, noisy_boxes, sample_points_in_masks
from sam_edge.modeling.sam import Sam
from sam_edge.training.losses import mask_iou, sam_loss

# ----------------------------------------------------------------------------------- batches
def prepare_item(item: dict[str, Any], image_size: int, k: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """One dataset item (already resized to longest side ``image_size``) -> padded uint8 image
    3 x S x S, the input size (h, w), and up to ``k`` masks (chosen with ``g``) padded to S x S."""
    img = torch.from_numpy(np.array(item["image"], dtype=np.uint8)).permute(2, 0, 1)
    h, w = img.shape[-2:]
    masks = torch.from_numpy(np.array(item["masks"], dtype=bool))
    n = masks.shape[0]
    pick = torch.randperm(n, generator=g)[:k]
    masks = masks[pick]
    pad = (0, image_size - w, 0, image_size - h)
    return {
        "image": F.pad(img, pad),
        "input_size": torch.tensor([h, w]),
        "masks": F.pad(masks, pad),
    }


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {
        "images": torch.stack([it["image"] for it in items]),
        "input_sizes": torch.stack([it["input_size"] for it in items]),
        "masks": torch.cat([it["masks"] for it in items]),
        "img_idx": torch.cat([torch.full((it["masks"].shape[0],), i) for i, it in enumerate(items)]),
    }


def encode(model: Sam, images_u8: torch.Tensor, input_sizes: torch.Tensor) -> torch.Tensor:
    """Crop each padded uint8 image to its input size, normalise and re-pad it with
    :meth:`Sam.preprocess` (as at inference), and encode the batch."""
    x = torch.cat([
        model.preprocess(img[None, :, :h, :w].float()) for img, (h, w) in zip(images_u8, input_sizes.tolist())
    ])
    return model.image_encoder(x)


def decode(model: Sam, emb, points, boxes, mask_input, multimask: bool, full_res: bool = True):
    """Prompt encoder + mask decoder for P prompts whose image embeddings are ``emb`` (P x C x h x w).
    Returns low-res logits P x M x 4h x 4w, IoU P x M and the logits the loss / IoU use: upsampled
    to P x M x S x S with ``full_res``, else the low-res ones (as float)."""
    sparse, dense = model.prompt_encoder(points, boxes, mask_input)
    low, iou = model.mask_decoder(emb, model.prompt_encoder.get_dense_pe(), sparse, dense, multimask)
    logits = low.float()
    if full_res:
        s = model.image_size
        logits = F.interpolate(logits, (s, s), mode="bilinear", align_corners=False)
    return low, iou.float(), logits


def interactive_rollout(
    model: Sam,
    emb: torch.Tensor,
    gt: torch.Tensor,
    g: torch.Generator,
    *,
    first: str,
    corrections: int,
    extra_iters: int,
    full_res: bool = False,
) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]], list[torch.Tensor]]:
    """Run SAM's interactive prompt simulation for P masks.

    emb: P x C x h x w, gt: P x S x S bool (model input frame). ``first`` is 'point' or 'box'.
    With ``full_res`` the loss, the IoU and the error region are computed on logits upsampled to
    S x S; otherwise on the low-res 4h x 4w logits against the area-downsampled ground truth
    (16x fewer pixels). Prompts are drawn with ``g`` (see :mod:`distill.prompts`): with a
    generator on ``emb``'s device the whole rollout stays on the device, with no host
    round trip. Returns (mean loss over calls, per-call loss parts, per-call IoU of the chosen
    mask), all tensors on the device.
    """
    device = emb.device
    s = gt.shape[-1]
    if full_res:
        target = gt
    else:
        low_side = 4 * emb.shape[-1]
        target = F.adaptive_avg_pool2d(gt[:, None].float(), low_side)[:, 0] >= 0.5
    scale = s / target.shape[-1]
    target_f = target.float()
    if first == "point":
        coords, labels = sample_points_in_masks(gt, g)
        box = None
    else:
        coords = torch.zeros(gt.shape[0], 0, 2, device=device)
        labels = torch.zeros(gt.shape[0], 0, dtype=torch.int64, device=device)
        box = noisy_boxes(gt, g)
    mask_input = None
    losses, parts, ious = [], [], []
    rows = torch.arange(gt.shape[0], device=device)
    n_calls = 1 + corrections + extra_iters
    for it in range(n_calls):
        multimask = it == 0 and first == "point"
        pts = (coords, labels) if coords.shape[1] > 0 else None
        low, iou_pred, logits = decode(model, emb, pts, box, mask_input, multimask, full_res)
        loss, best, part = sam_loss(logits, iou_pred, target_f)
        losses.append(loss)
        parts.append(part)
        chosen = logits[rows, best].detach() > 0
        ious.append(mask_iou(chosen, target))
        if it == n_calls - 1:
            break
        mask_input = low[rows, best][:, None].detach().float()
        if it < corrections:
            new_c, new_l = error_region_points(chosen, target, g)
            new_c = (new_c + 0.5) * scale - 0.5  # cell centre in the input frame
            coords = torch.cat([coords, new_c], dim=1)
            labels = torch.cat([labels, new_l], dim=1)
    return torch.stack(losses).mean(), parts, ious



AREA_BUCKETS = ((0, 256), (256, 1024), (1024, 4096), (4096, 16384), (16384, math.inf))
