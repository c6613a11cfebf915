"""SAM's training losses: focal + dice (20:1) on masks, MSE on the IoU head, and the minimum
over the multimask outputs back-propagated."""
from __future__ import annotations

import torch
import torch.nn.functional as F

FOCAL_WEIGHT = 20.0
DICE_WEIGHT = 1.0
IOU_WEIGHT = 1.0


def sigmoid_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Per-mask focal loss, mean over pixels. logits, target: ... x H x W -> ..."""
    prob = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.flatten(-2).mean(-1)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Per-mask soft dice loss. logits, target: ... x H x W -> ..."""
    prob = torch.sigmoid(logits).flatten(-2)
    target = target.flatten(-2)
    inter = (prob * target).sum(-1)
    return 1 - (2 * inter + eps) / (prob.sum(-1) + target.sum(-1) + eps)


def mask_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of boolean masks ... x H x W -> ... (an empty union counts as IoU 1)."""
    pred, target = pred.flatten(-2), target.flatten(-2)
    inter = (pred & target).sum(-1).float()
    union = (pred | target).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def sam_loss(
    logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """SAM's loss for one decoder call.

    logits: B x M x H x W mask logits (M = 3 multimask or 1), iou_pred: B x M, target: B x H x W
    in {0, 1}. The mask loss (20 focal + 1 dice) of the best of the M masks is back-propagated;
    the IoU head regresses the actual IoU of every output mask.
    Returns (loss scalar, index of the chosen mask B, parts for logging).
    """
    tgt = target[:, None].expand_as(logits).float()
    focal = sigmoid_focal_loss(logits, tgt)
    dice = dice_loss(logits, tgt)
    per_mask = FOCAL_WEIGHT * focal + DICE_WEIGHT * dice  # B x M
    best = per_mask.argmin(dim=1)
    rows = torch.arange(logits.shape[0], device=logits.device)
    with torch.no_grad():
        actual_iou = mask_iou(logits > 0, tgt > 0.5)
    iou_loss = F.mse_loss(iou_pred, actual_iou, reduction="none").mean(1)
    loss = (per_mask[rows, best] + IOU_WEIGHT * iou_loss).mean()
    parts = {
        "focal": focal[rows, best].mean().detach(),
        "dice": dice[rows, best].mean().detach(),
        "iou_mse": iou_loss.mean().detach(),
        "iou": actual_iou[rows, best].mean(),
    }
    return loss, best, parts
