"""Distil a small image encoder from a SAM teacher (``sam-edge distill``): the two stages.

The student is a registry entry whose prompt-encoder / mask-decoder fields equal the teacher's;
its prompt encoder and mask decoder start as copies of the teacher's, so only the image encoder
has to learn. Two stages, each resumable and each skipped once finished:

* **stage 1** (encoder distillation): MSE between the student's and the teacher's image
  embeddings (optionally + ``cosine_weight`` x (1 - per-location cosine similarity)). The
  teacher's embeddings come from a :class:`distill.cache.TeacherCache` when ``cache`` is set
  (missing images are computed live, or refused with ``cache_missing: error``), else from the
  teacher run live. Works on an SA-1B-format folder or a plain image folder.
* **stage 2** (prompt-in-the-loop): on SA-1B-format data, prompts simulated from the ground-truth
  masks as in SAM's recipe (a point inside the mask or a noisy box, then ``corrections`` clicks
  drawn where student and teacher disagree, with each model's previous low-res logits fed back
  as its mask prompt). The teacher's output for the same prompts is the target: focal + dice
  (20:1) on the student's logits against the teacher's binarised masks, MSE of the IoU head
  against the teacher's IoU predictions, plus ``embed_loss_weight`` x the embedding MSE. The
  decoder stays frozen (``freeze_decoder: true``) or is fine-tuned with the encoder.

Both stages: AdamW, linear warmup + cosine decay, autocast (bf16 on CUDA by default), gradient
accumulation, gradient clipping, a tqdm bar (steps/s, img/s), ``RUN/<stage>/metrics.csv`` and
``val.csv`` (+ TensorBoard when installed), periodic validation against the teacher, and an
atomic checkpoint ``RUN/<stage>/checkpoints/last.pt`` (student, optimizer, scheduler, grad
scaler, per-rank RNG state captured at the step boundary, step = data position) every
``ckpt_every`` steps. Data order and per-sample choices are pure functions of (seed, stage, step,
sample), so ``--resume`` continues bit-exactly. Multi-process training under ``torchrun`` is
handled by :mod:`training.ddp` (the loop is :mod:`training.engine`).

Outputs: ``RUN/config.json``, ``RUN/stage{1,2}/{metrics.csv, val.csv, checkpoints/last.pt,
student.safetensors, summary.json}``, ``RUN/student.safetensors`` (full SAM with the student
encoder, loadable with :func:`sam_edge.load_model` or ``create_model(student, checkpoint=...)``)
and ``RUN/summary.json``.

Modules: :mod:`.config` (the config), :mod:`.models` (teacher / student), this module (the stage-2
prompt loop and the stage runner on :class:`training.engine.Engine`), :mod:`.distiller` (the run:
:class:`Distiller`, :func:`run_distill`), :mod:`.cache` / :mod:`.teacher_cache` (the
teacher-embedding cache); the validation against the teacher is
:class:`sam_edge.evaluation.validation.Validator`.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from sam_edge.checkpoint import read_state_dict, save_model
from sam_edge.modeling.sam import Sam
from sam_edge.utils.device import autocast_for
from sam_edge.utils.io import write_json_atomic

from sam_edge.training.engine import Engine, freeze_unused, mix_seed

from sam_edge.data.batches import (FolderItems, SA1BItems, collate, dummy_batch, id_seed, image_rel_id, load_sa1b_sample,
                                   pad_image)
from sam_edge.data import ImageFolderDataset, SA1BDataset, SkipReport, train_val_split
from sam_edge.training.losses import DICE_WEIGHT, FOCAL_WEIGHT, dice_loss, mask_iou, sigmoid_focal_loss
from sam_edge.training.sam_steps import decode
from sam_edge.data.prompts import error_region_points, noisy_boxes, sample_points_in_masks
from sam_edge.evaluation.validation import Validator, load_records

from sam_edge.distillation.config import ROOT, ConfigError, Stage2Config

if TYPE_CHECKING:
    from sam_edge.distillation.distiller import Distiller

log = logging.getLogger("sam_edge.distillation.stages")

# =============================================================================================
# Shared pieces (the engine's and the batch views'), under the names this module always used
# =============================================================================================
_mix = mix_seed
_id_seed = id_seed
_pad_image = pad_image
_image_rel_id = image_rel_id
_load_sa1b_sample = load_sa1b_sample
_FolderItems = FolderItems
_SA1BItems = SA1BItems
_collate = collate
_freeze_unused = freeze_unused


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def _preprocess(model: Sam, images_u8: torch.Tensor, input_sizes: torch.Tensor) -> torch.Tensor:
    """As :func:`distill.pretrain.encode` without the encoder: crop each padded uint8 image to
    its input size, normalise and re-pad with :meth:`Sam.preprocess`."""
    return torch.cat([model.preprocess(img[None, :, :h, :w].float())
                      for img, (h, w) in zip(images_u8, input_sizes.tolist())])


# =============================================================================================
# Stage-2 prompt loop as a module (so DistributedDataParallel sees one forward per micro-batch)
# =============================================================================================
class _PromptLoop(nn.Module):
    """Student encoder + interactive rollout against the teacher; ``forward`` returns the loss.
    The teacher is held outside the module tree (a frozen reference, not a submodule)."""

    def __init__(self, student: Sam, teacher: Sam, cfg: Stage2Config) -> None:
        super().__init__()
        self.student = student
        self._teacher = (teacher,)
        self.cfg = cfg

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor, gt: torch.Tensor, img_idx: torch.Tensor,
                first: str, g: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x: B x 3 x S x S preprocessed, t_emb: B x C x h x w teacher embeddings, gt: P x S x S
        ground-truth masks (prompt source), img_idx: P (image of each mask)."""
        teacher, cfg, student = self._teacher[0], self.cfg, self.student
        s_img = student.image_encoder(x)
        emb_mse = F.mse_loss(s_img.float(), t_emb)
        s_e, t_e = s_img[img_idx], t_emb[img_idx].to(s_img.dtype)
        p = gt.shape[0]
        dev = x.device
        side = 4 * s_e.shape[-1]
        scale = gt.shape[-1] / side
        if first == "point":
            coords, labels = sample_points_in_masks(gt, g)
            box = None
        else:
            coords, labels = torch.zeros(p, 0, 2, device=dev), torch.zeros(p, 0, dtype=torch.int64, device=dev)
            box = noisy_boxes(gt, g)
        rows = torch.arange(p, device=dev)
        s_mask_in = t_mask_in = None
        call_losses, stats = [], defaultdict(list)
        for it in range(1 + cfg.corrections):
            multimask = it == 0 and first == "point"
            pts = (coords, labels) if coords.shape[1] > 0 else None
            with torch.no_grad():
                t_low, t_iou, _ = decode(teacher, t_e, pts, box, t_mask_in, multimask, full_res=False)
            s_low, s_iou, s_logits = decode(student, s_e, pts, box, s_mask_in, multimask, full_res=False)
            # Target: the teacher's *binarised* mask with SAM's focal + dice, not BCE against its
            # probabilities: the deployed output is the logit > 0 region, so the 0-level set is
            # what must match; dice weighs small and large masks alike; away from the boundary
            # the teacher's probabilities are saturated, so soft targets would add little beyond
            # calibration, which the IoU-head MSE below distils separately.
            target = (t_low.float() > 0).float()
            focal = sigmoid_focal_loss(s_logits, target)
            dice = dice_loss(s_logits, target)
            mask_loss = (FOCAL_WEIGHT * focal + DICE_WEIGHT * dice).mean()  # all M outputs, matched by index
            iou_mse = F.mse_loss(s_iou, t_iou.float())
            call_losses.append(mask_loss + cfg.iou_loss_weight * iou_mse)
            # the mask carried on: the teacher's choice (by its predicted IoU), same index for both
            pick = t_iou.argmax(1) if multimask else torch.zeros(p, dtype=torch.long, device=dev)
            s_bin = s_logits[rows, pick].detach() > 0
            t_bin = target[rows, pick] > 0.5
            stats["mask_loss"].append(mask_loss.detach())
            stats["iou_mse"].append(iou_mse.detach())
            stats["iou_vs_teacher"].append(mask_iou(s_bin, t_bin).mean())
            if it == cfg.corrections:
                break
            s_mask_in = s_low[rows, pick][:, None].detach().float()
            t_mask_in = t_low[rows, pick][:, None].float()
            new_c, new_l = error_region_points(s_bin, t_bin, g)
            new_c = (new_c + 0.5) * scale - 0.5  # low-res cell centre in the input frame
            coords = torch.cat([coords, new_c], 1)
            labels = torch.cat([labels, new_l], 1)
        loss = torch.stack(call_losses).mean() + cfg.embed_loss_weight * emb_mse
        out = {"mask_loss": torch.stack(stats["mask_loss"]).mean(), "iou_mse": torch.stack(stats["iou_mse"]).mean(),
               "emb_mse": emb_mse.detach(), "iou_first": stats["iou_vs_teacher"][0],
               "iou_last": stats["iou_vs_teacher"][-1]}
        return loss, out


# =============================================================================================
# Stage runner: a distillation stage is a task on the training engine
# =============================================================================================
class _Stage(Engine):
    """What both stages share on top of :class:`training.engine.Engine`: the run folder
    ``RUN/<stage>/``, skipping a finished stage, the validation against the teacher, the
    train/validation split and the outputs."""

    name = "stage"
    number = 0

    def __init__(self, d: "Distiller", scfg: Any) -> None:
        super().__init__(out=d.out / self.name, cfg=scfg, model=d.student, env=d.env, seed=d.cfg.seed,
                         amp=d.cfg.amp, workers=d.cfg.workers, run_config=dataclasses.asdict(d.cfg))
        self.d = d
        self.final_path = self.out / "student.safetensors"
        self.summary_path = self.out / "summary.json"
        self.report = SkipReport()
        self.collate = collate
        self.validator: Optional[Validator] = None

    # -- engine hooks --------------------------------------------------------------------------
    def config_scope(self, key: str) -> bool:
        return key.startswith(self.name + ".") or "." not in key

    def tb_prefix(self) -> str:
        return f"{self.name}/"

    def finished(self) -> bool:
        if not (self.summary_path.is_file() and self.final_path.is_file()):
            return False
        try:
            return bool(json.loads(self.summary_path.read_text()).get("finished"))
        except ValueError:
            return False

    def skipped_summary(self) -> dict[str, Any]:
        summary = json.loads(self.summary_path.read_text())
        sd, _ = read_state_dict(self.final_path)
        self.d.student.load_state_dict(sd, strict=True)
        if self.env.is_main:
            log.info("%s: already finished (%s), skipped", self.name, self.final_path)
        planned = self.cfg.steps  # (not resolving epochs: that would rescan the data)
        if planned is not None and planned != summary.get("steps") and self.env.is_main:
            log.warning("%s: finished with %s steps, the config now asks for %d; delete %s to train it again",
                        self.name, summary.get("steps"), planned, self.final_path)
        return {**summary, "skipped_on_rerun": True}

    def set_train_mode(self) -> None:
        self.module.train()
        if getattr(self.cfg, "freeze_bn", False):
            for m in self.module.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def dummy_batch(self) -> dict[str, Any]:
        return dummy_batch(self.d.image_size)

    def has_validation(self) -> bool:
        return bool(self.val_ids) and bool(self.d.cfg.val_images)

    def validate(self) -> dict[str, float]:
        if self.validator is None:
            recs = load_records(self.val_root, self.val_ids[: self.d.cfg.val_images], self.d.image_size,
                                 self.d.cfg.val_masks_per_image, self.d.cfg.seed, self.report)
            same_root = Path(self.val_root).resolve() == Path(self.d.cfg.data).resolve()
            self.validator = Validator(self.d, recs, self.val_kinds(), use_cache=same_root)
        return self.validator(self.d.student)

    def summary_extra(self) -> dict[str, Any]:
        return {"data": self.report.summary(), "cache_misses": self.d.cache_misses}

    def finish(self, summary: dict[str, Any]) -> None:
        save_model(self.d.student, self.final_path)
        write_json_atomic(self.summary_path, summary)

    def val_kinds(self) -> tuple[str, ...]:
        raise NotImplementedError

    # -- shared data helpers -------------------------------------------------------------------
    def _split(self, rel_ids: list[str]) -> tuple[list[str], Path, list[str]]:
        """(train ids, validation root, validation ids), by image path relative to the folder."""
        cfg = self.d.cfg
        if cfg.val_data is not None:
            val_ds = ImageFolderDataset(cfg.val_data, verify_images=False)
            return list(rel_ids), Path(cfg.val_data), val_ds.ids
        train, val = train_val_split(rel_ids, cfg.val_fraction, seed=cfg.seed)
        return train, Path(cfg.data), val

    def _set_train(self, rel_ids: list[str], train_ids: list[str]) -> None:
        index = {sid: i for i, sid in enumerate(rel_ids)}
        try:
            self.set_train([index[s] for s in train_ids], self.d.cfg.data)
        except ValueError as exc:
            raise ConfigError(f"{ROOT}.{self.name}.{exc}") from None
        if self.env.is_main and not self.val_ids and self.d.cfg.val_images:
            log.warning("%s: no validation images (val_fraction %s)", self.name, self.d.cfg.val_fraction)


class _Stage1(_Stage):
    name = "stage1"
    number = 1

    def planned_steps(self) -> int:
        s = self.cfg
        if s.steps is not None:
            return s.steps
        if not hasattr(self, "steps_per_epoch"):
            self.prepare_data()
        return s.epochs * self.steps_per_epoch

    def prepare_data(self) -> None:
        if hasattr(self, "items"):
            return
        size = self.d.image_size
        # header check only: a file that fails to decode is skipped (and counted) when loaded
        ds = ImageFolderDataset(self.d.cfg.data, image_size=size, verify_images=False, report=self.report)
        if len(ds) == 0:
            raise ConfigError(f"{ROOT}.data: no readable images in {self.d.cfg.data}: {self.report.summary()}")
        rel = ds.ids
        train, self.val_root, self.val_ids = self._split(rel)
        self._set_train(rel, train)
        self.items = _FolderItems(ds, size)

    def trainable(self) -> nn.Module:
        student = self.d.student
        student.requires_grad_(False)
        student.image_encoder.requires_grad_(True)
        _freeze_unused(student.image_encoder, self.d.image_size, self.d.device)
        return student.image_encoder

    def compute_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        dev = self.d.device
        images = batch["images"].to(dev, non_blocking=True)
        sizes = batch["input_sizes"]
        t = self.d.teacher_embeddings(batch["ids"], images, sizes)
        x = _preprocess(self.d.student, images, sizes)
        with autocast_for(dev, self.d.amp_dtype):
            s = self.module(x)
        s = s.float()
        if s.shape != t.shape:
            raise ValueError(f"student embedding {tuple(s.shape)} does not match the teacher's {tuple(t.shape)}")
        mse = F.mse_loss(s, t)
        cos = (1 - F.cosine_similarity(s, t, dim=1, eps=1e-6)).mean()
        loss = mse + self.cfg.cosine_weight * cos if self.cfg.loss == "mse+cosine" else mse
        return loss, {"loss": loss.detach(), "mse": mse.detach(), "cos_dist": cos.detach()}

    def val_kinds(self) -> tuple[str, ...]:
        return ("box",)


class _Stage2(_Stage):
    name = "stage2"
    number = 2

    def planned_steps(self) -> int:
        return self.cfg.steps

    def prepare_data(self) -> None:
        if hasattr(self, "items") or self.cfg.steps == 0:
            return
        size = self.d.image_size
        ds = SA1BDataset(self.d.cfg.data, image_size=size, verify_images=False, report=self.report)
        if len(ds) == 0:
            raise ConfigError(f"{ROOT}.data: stage 2 needs SA-1B-format data (sa_N.jpg + sa_N.json); "
                              f"no usable sample in {self.d.cfg.data}: {self.report.summary()}")
        rel = [_image_rel_id(ds.path(i), ds.root) for i in range(len(ds))]
        train, self.val_root, self.val_ids = self._split(rel)
        self._set_train(rel, train)
        self.items = _SA1BItems(ds, size, self.cfg.masks_per_image, self.d.cfg.seed)

    def trainable(self) -> nn.Module:
        student = self.d.student
        student.requires_grad_(False)
        student.image_encoder.requires_grad_(True)
        _freeze_unused(student.image_encoder, self.d.image_size, self.d.device)
        if not self.cfg.freeze_decoder:
            student.prompt_encoder.requires_grad_(True)
            student.mask_decoder.requires_grad_(True)
        student.mask_decoder.use_gemm_upscaling()  # same function, faster backward (frozen or not)
        return _PromptLoop(student, self.d.teacher, self.cfg)

    def _find_unused(self, module: nn.Module) -> bool:
        # a trainable prompt encoder has parameters a given step may not touch (the mask-prompt
        # convolutions without corrections, the padding-point embedding with a box prompt)
        return not self.cfg.freeze_decoder

    def compute_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        dev = self.d.device
        images = batch["images"].to(dev, non_blocking=True)
        sizes = batch["input_sizes"]
        t = self.d.teacher_embeddings(batch["ids"], images, sizes)
        x = _preprocess(self.d.student, images, sizes)
        first = "point" if torch.rand(1, generator=self.gen).item() < self.cfg.point_prob else "box"
        with autocast_for(dev, self.d.amp_dtype):
            loss, parts = self.module(x, t, batch["masks"].to(dev, non_blocking=True),
                                      batch["img_idx"].to(dev, non_blocking=True), first, self.dev_gen)
        out = {"loss": loss.detach(), **parts, "first_point": float(first == "point")}
        return loss, out

    def val_kinds(self) -> tuple[str, ...]:
        return ("point1", "box")
