"""Promptable-segmentation training with SAM's recipe (interactive prompt simulation).

Per step: a batch of images is encoded once; for up to ``masks_per_image`` ground-truth masks of
each image the decoder is run ``1 + corrections + extra_iters`` times:

1. the first prompt comes from the ground truth: a point drawn inside the mask (3 outputs, the
   best one trained) or a noisy box (1 output), chosen per step with probability ``point_prob``;
2. ``corrections`` iterations each add a point drawn from the error region of the previous
   prediction (false negative -> positive click, false positive -> negative) and feed the
   previous low-res logits back as the mask prompt (1 output);
3. ``extra_iters`` iterations add no point, only the mask prompt.

Loss per call: 20 focal + 1 dice on the (best) mask, + MSE of the IoU head against the actual
IoU; averaged over the calls. AdamW, linear warmup + cosine decay, gradient clipping, bf16
autocast on CUDA. Every ``ckpt_every`` steps (and on interrupt) ``RUN/checkpoints/last.pt`` is
written atomically with model, optimizer, scheduler, RNG and data position: ``--resume``
continues exactly. Metrics go to ``RUN/metrics.csv`` / ``RUN/val.csv`` (and TensorBoard if
installed). Validation: mIoU of the chosen mask for 1 point (best of 3), 1 point + corrections,
and a box.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from sam_edge.checkpoint import save_model
from sam_edge.modeling.sam import Sam
from sam_edge.registry import create_model
from sam_edge.utils.config import dataclass_from_dict
from sam_edge.utils.io import atomic_path, write_json_atomic

from .data import SA1BDataset, SkipReport, train_val_split
from .data.sa1b import SampleError
from .losses import mask_iou, sam_loss
from .prompts import center_points, error_region_points, masks_to_boxes, noisy_boxes, sample_points_in_masks
from .runlog import append_csv, interrupt_on_sigterm, truncate_csv

log = logging.getLogger("distill.pretrain")


@dataclass
class PretrainConfig:
    model: str
    data: str
    out: str
    epochs: int = 10
    max_steps: Optional[int] = None
    batch_size: int = 4
    masks_per_image: int = 8
    lr: float = 4e-4
    weight_decay: float = 0.05
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    corrections: int = 8
    extra_iters: int = 2
    point_prob: float = 0.5
    val_fraction: float = 0.1
    val_images: int = 64
    val_every: int = 500
    ckpt_every: int = 200
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"  # auto | bf16 | fp16 | off
    full_res_loss: bool = False  # loss on S x S upsampled logits instead of the low-res ones
    init: Optional[str] = None  # weights to start from

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PretrainConfig":
        return dataclass_from_dict(cls, d, "pretrain config")


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
    (16x fewer pixels: what makes CPU training affordable). Random draws use the CPU generator.
    Returns (mean loss over calls, per-call loss parts, per-call IoU of the chosen mask).
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
    target_cpu = target.cpu()
    if first == "point":
        coords, labels = sample_points_in_masks(gt.cpu(), g)
        box = None
    else:
        coords = torch.zeros(gt.shape[0], 0, 2)
        labels = torch.zeros(gt.shape[0], 0, dtype=torch.int64)
        box = noisy_boxes(gt.cpu(), g).to(device)
    coords, labels = coords.to(device), labels.to(device)
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
            new_c, new_l = error_region_points(chosen.cpu(), target_cpu, g)
            new_c = (new_c + 0.5) * scale - 0.5  # cell centre in the input frame
            coords = torch.cat([coords, new_c.to(device)], dim=1)
            labels = torch.cat([labels, new_l.to(device)], dim=1)
    return torch.stack(losses).mean(), parts, ious


# --------------------------------------------------------------------------------- schedule
def lr_lambda_factory(warmup: int, total: int, min_ratio: float):
    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return fn


def _autocast(device: torch.device, amp: str):
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return torch.autocast(device.type, enabled=False)
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


# ---------------------------------------------------------------------------------- trainer
class Trainer:
    def __init__(self, cfg: PretrainConfig, dataset: SA1BDataset | None = None) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        dev = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = torch.device(dev)
        torch.manual_seed(cfg.seed)
        self.model = create_model(cfg.model, checkpoint=cfg.init, pretrained=False).to(self.device)
        self.image_size = self.model.image_size
        self.report = SkipReport()
        ds = dataset or SA1BDataset(cfg.data, image_size=self.image_size, report=self.report)
        self.report = ds.report
        self.dataset = ds
        train_ids, val_ids = train_val_split(ds.ids, cfg.val_fraction, seed=cfg.seed)
        if not train_ids:
            raise ValueError(f"no usable training samples in {cfg.data}: {ds.report.summary()}")
        index = {sid: i for i, sid in enumerate(ds.ids)}
        self.train_idx = [index[s] for s in train_ids]
        self.val_idx = [index[s] for s in val_ids][: cfg.val_images]
        self.steps_per_epoch = max(1, len(self.train_idx) // cfg.batch_size)
        self.total_steps = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        decay, no_decay = [], []
        for n, p in self.model.named_parameters():
            (no_decay if p.ndim < 2 or "pos_embed" in n or "rel_pos" in n else decay).append(p)
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr, betas=(0.9, 0.999),
        )
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lr_lambda_factory(cfg.warmup_steps, self.total_steps, cfg.min_lr_ratio)
        )
        self.gen = torch.Generator().manual_seed(cfg.seed)  # prompts + mask choice
        self.step = 0
        # RNG state at the start of the current step: an interrupt mid-step saves this one, so
        # the resumed run redraws that step's masks and prompts exactly as an unbroken run would
        self._boundary_rng: Optional[dict[str, torch.Tensor]] = None
        self.ckpt_path = self.out / "checkpoints" / "last.pt"
        self.tb = None

    # -- state --------------------------------------------------------------------------------
    def _rng_now(self) -> dict[str, torch.Tensor]:
        return {"prompt": self.gen.get_state(), "torch": torch.get_rng_state()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "step": self.step,
            "rng": self._boundary_rng or self._rng_now(),
            "config": dataclasses.asdict(self.cfg),
            "model_config": self.model.config.to_dict(),
        }

    def save_checkpoint(self) -> None:
        with atomic_path(self.ckpt_path) as tmp:
            torch.save(self.state_dict(), tmp)
        log.info("checkpoint step %d -> %s", self.step, self.ckpt_path)

    def load_checkpoint(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.gen.set_state(state["rng"]["prompt"])
        torch.set_rng_state(state["rng"]["torch"])
        log.info("resumed from %s at step %d", path, self.step)

    # -- data ---------------------------------------------------------------------------------
    def epoch_order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.cfg.seed * 100003 + epoch)
        perm = torch.randperm(len(self.train_idx), generator=g).tolist()
        return [self.train_idx[i] for i in perm]

    def batch_for_step(self, step: int) -> list[int]:
        epoch, pos = divmod(step, self.steps_per_epoch)
        order = self.epoch_order(epoch)
        b = self.cfg.batch_size
        return order[pos * b : (pos + 1) * b]

    def load_batch(self, indices: list[int]) -> Optional[dict[str, torch.Tensor]]:
        items = []
        for i in indices:
            try:
                item = self.dataset[i]
            except SampleError as exc:
                self.report.skip(exc.path, exc.reason, exc.detail)
                continue
            items.append(prepare_item(item, self.image_size, self.cfg.masks_per_image, self.gen))
        return collate(items) if items else None

    # -- steps --------------------------------------------------------------------------------
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        self.model.train()
        first = "point" if torch.rand(1, generator=self.gen).item() < self.cfg.point_prob else "box"
        images = batch["images"].to(self.device)
        gt = batch["masks"].to(self.device)
        with _autocast(self.device, self.cfg.amp):
            emb = encode(self.model, images, batch["input_sizes"])
            emb = emb[batch["img_idx"].to(self.device)]
            loss, parts, ious = interactive_rollout(
                self.model, emb, gt, self.gen, first=first, corrections=self.cfg.corrections,
                extra_iters=self.cfg.extra_iters, full_res=self.cfg.full_res_loss,
            )
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.sched.step()
        self.step += 1
        return {
            "loss": loss.item(),
            "focal": torch.stack([p["focal"] for p in parts]).mean().item(),
            "dice": torch.stack([p["dice"] for p in parts]).mean().item(),
            "iou_mse": torch.stack([p["iou_mse"] for p in parts]).mean().item(),
            "iou_first": ious[0].mean().item(),
            "iou_last": ious[-1].mean().item(),
            "grad_norm": float(gnorm),
            "first": first,
        }

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        return evaluate(self.model, self.dataset, self.val_idx, self.cfg.masks_per_image,
                        corrections=self.cfg.corrections, seed=self.cfg.seed + 1, report=self.report)

    # -- loop ---------------------------------------------------------------------------------
    def _csv(self, name: str, row: dict[str, Any]) -> None:
        append_csv(self.out / name, row, self.tb)

    def _truncate_logs(self) -> None:
        """After a resume, drop log rows past the checkpoint so the CSVs stay consistent."""
        for name in ("metrics.csv", "val.csv"):
            truncate_csv(self.out / name, self.step)

    def fit(self, resume: bool = False, progress: bool = True) -> dict[str, Any]:
        from tqdm import tqdm

        if resume:
            if not self.ckpt_path.exists():
                raise FileNotFoundError(f"--resume: no checkpoint at {self.ckpt_path}")
            self.load_checkpoint(self.ckpt_path)
            self._truncate_logs()
        try:
            from torch.utils.tensorboard import SummaryWriter  # optional

            self.tb = SummaryWriter(str(self.out / "tb"))
        except Exception:  # tensorboard not installed
            self.tb = None
        write_json_atomic(self.out / "config.json", dataclasses.asdict(self.cfg))
        bar = tqdm(total=self.total_steps, initial=self.step, disable=None if progress else True, desc="pretrain", dynamic_ncols=True)
        t0 = time.perf_counter()
        last_val: dict[str, float] = {}
        restore_sigterm = interrupt_on_sigterm()
        try:
            while self.step < self.total_steps:
                self._boundary_rng = self._rng_now()
                batch = self.load_batch(self.batch_for_step(self.step))
                if batch is None:
                    self.step += 1
                    continue
                m = self.train_step(batch)
                self._boundary_rng = None
                bar.update(1)
                bar.set_postfix(loss=f"{m['loss']:.3f}", iou=f"{m['iou_first']:.2f}/{m['iou_last']:.2f}")
                if self.step % self.cfg.log_every == 0 or self.step == self.total_steps:
                    self._csv("metrics.csv", {"step": self.step, "epoch": self.step // self.steps_per_epoch,
                                              "lr": self.sched.get_last_lr()[0],
                                              "elapsed_s": round(time.perf_counter() - t0, 2), **m})
                if self.step % self.cfg.ckpt_every == 0:
                    self.save_checkpoint()
                if self.val_idx and (self.step % self.cfg.val_every == 0 or self.step == self.total_steps):
                    last_val = self.validate()
                    self._csv("val.csv", {"step": self.step, **last_val})
                    log.info("step %d validation: %s", self.step, last_val)
        except KeyboardInterrupt:
            log.warning("interrupted at step %d: saving a checkpoint (rerun with --resume)", self.step)
            self.save_checkpoint()
            raise
        finally:
            restore_sigterm()
            bar.close()
            if self.tb is not None:
                self.tb.close()
        self.save_checkpoint()
        save_model(self.model, self.out / "model.safetensors")
        summary = {"steps": self.step, "train_images": len(self.train_idx), "val_images": len(self.val_idx),
                   "validation": last_val, "data": self.report.to_dict(), "data_summary": self.report.summary()}
        write_json_atomic(self.out / "summary.json", summary)
        log.info("data: %s", self.report.summary())
        return summary


#: Mask-area buckets of ``evaluate(by_area=True)``, in pixels: at 256 px a token of the 16 x 16
#: image embedding covers 256 pixels, so these are < 1, 1-4, 4-16, 16-64 and > 64 tokens.
AREA_BUCKETS = ((0, 256), (256, 1024), (1024, 4096), (4096, 16384), (16384, math.inf))


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
def evaluate(
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
