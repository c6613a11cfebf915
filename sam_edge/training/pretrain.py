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
IoU; averaged over the calls. The loop is the training engine's (:mod:`training.engine`):
AdamW, linear warmup + cosine decay, gradient accumulation and clipping, bf16 autocast on CUDA,
DDP under torchrun, DataLoader workers, prompts sampled on the training device. Every
``ckpt_every`` steps (and on Ctrl-C / SIGTERM) ``RUN/checkpoints/last.pt`` is written atomically
with model, optimizer, scheduler, RNG states and data position: ``--resume`` continues exactly.
Metrics go to ``RUN/metrics.csv`` / ``RUN/val.csv`` (and TensorBoard if installed). Validation:
mIoU of the chosen mask for 1 point (best of 3), 1 point + corrections, and a box.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from sam_edge.checkpoint import save_model
from sam_edge.modeling.sam import Sam
from sam_edge.registry import create_model
from sam_edge.utils.io import write_json_atomic

from sam_edge.training import ddp
from sam_edge.training.engine import Engine
from sam_edge.utils.device import autocast_for

from sam_edge.data.batches import SA1BItems, dummy_batch
from sam_edge.data.batches import collate as collate_samples
from sam_edge.data import SA1BDataset, SkipReport, train_val_split

log = logging.getLogger("sam_edge.training.pretrain")


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
    grad_accum: int = 1  # micro-batches per optimiser step
    workers: int = 0  # DataLoader worker processes (per rank)
    compile: str = "off"  # off | decoder: torch.compile the prompt encoder + mask decoder

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PretrainConfig":
        """Strict: unknown keys, wrong types (``pretrain.KEY: expected ...``), non-finite numbers
        and sizes out of range are :class:`~sam_edge.utils.config.ConfigError` errors naming the key."""
        from sam_edge.utils.config import ConfigError, parse_section

        if not isinstance(d, dict):
            raise ConfigError(f"pretrain: expected a mapping of options, got {type(d).__name__}")
        cfg = parse_section(cls, d, "pretrain")
        cfg.validate()
        return cfg

    #: (key, lowest, highest) for the integer options; None: unbounded
    INT_RANGES = (("epochs", 1, None), ("max_steps", 1, None), ("batch_size", 1, 65536),
                  ("masks_per_image", 1, 65536), ("warmup_steps", 0, None), ("corrections", 0, 1000),
                  ("extra_iters", 0, 1000), ("val_images", 0, None), ("val_every", 1, None),
                  ("ckpt_every", 1, None), ("log_every", 1, None), ("grad_accum", 1, 65536), ("workers", 0, 1024))

    def validate(self) -> "PretrainConfig":
        from sam_edge.utils.config import ConfigError

        for key, lo, hi in self.INT_RANGES:
            v = getattr(self, key)
            if v is not None and (v < lo or (hi is not None and v > hi)):
                want = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
                raise ConfigError(f"pretrain.{key}: must be {want}, got {v}")
        checks = (("lr", self.lr > 0, "> 0"), ("weight_decay", self.weight_decay >= 0, ">= 0"),
                  ("grad_clip", self.grad_clip >= 0, ">= 0"), ("min_lr_ratio", 0 <= self.min_lr_ratio <= 1, "in [0, 1]"),
                  ("point_prob", 0 <= self.point_prob <= 1, "in [0, 1]"),
                  ("val_fraction", 0 <= self.val_fraction < 1, "in [0, 1)"))
        for key, ok, want in checks:
            if not ok:
                raise ConfigError(f"pretrain.{key}: must be {want}, got {getattr(self, key)}")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise ConfigError(f"pretrain.amp: must be auto, bf16, fp16 or off, got {self.amp!r}")
        if self.compile not in ("off", "decoder"):
            raise ConfigError(f"pretrain.compile: must be off or decoder, got {self.compile!r}")
        return self


from sam_edge.training.sam_steps import (  # noqa: F401 (re-exported: the SAM forward pieces)
    AREA_BUCKETS, collate, decode, encode, interactive_rollout, prepare_item)


# ---------------------------------------------------------------------------------- trainer
class _RolloutLoss(nn.Module):
    """Encoder + :func:`interactive_rollout` as one module, so DDP sees one forward per micro-batch."""

    def __init__(self, model: Sam, cfg: PretrainConfig) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg

    def forward(self, images: torch.Tensor, input_sizes: torch.Tensor, gt: torch.Tensor, img_idx: torch.Tensor,
                first: str, g: torch.Generator):
        emb = encode(self.model, images, input_sizes)[img_idx]
        return interactive_rollout(self.model, emb, gt, g, first=first, corrections=self.cfg.corrections,
                                   extra_iters=self.cfg.extra_iters, full_res=self.cfg.full_res_loss)


class Trainer(Engine):
    """SAM-recipe promptable training of a whole model (``sam-edge pretrain``) as a task on the
    training engine: the batch is SA-1B samples with ``masks_per_image`` masks each (chosen per
    (seed, step, image), only those decoded), the loss :func:`interactive_rollout` (prompts
    sampled on the training device with the engine's device generator), validation
    :func:`evaluate` on a held-out split. ``fit()`` runs it (``OUT/checkpoints/last.pt``,
    ``metrics.csv``, ``val.csv``, ``model.safetensors``, ``summary.json``)."""

    name = "pretrain"
    number = 7
    resume_requires_checkpoint = True

    def __init__(self, cfg: PretrainConfig, dataset: SA1BDataset | None = None) -> None:
        if cfg.compile not in ("off", "decoder"):
            raise ValueError(f"pretrain: compile must be off or decoder, got {cfg.compile!r}")
        if cfg.grad_accum < 1 or cfg.workers < 0:
            raise ValueError("pretrain: grad_accum must be >= 1 and workers >= 0")
        env = ddp.setup(cfg.device)
        torch.manual_seed(cfg.seed)  # identical init on every rank
        model = create_model(cfg.model, checkpoint=cfg.init, pretrained=False).to(env.device)
        super().__init__(out=Path(cfg.out), cfg=cfg, model=model, env=env, seed=cfg.seed, amp=cfg.amp,
                         workers=cfg.workers, run_config=dataclasses.asdict(cfg))
        self.image_size = model.image_size
        self.report = SkipReport()
        ds = dataset or SA1BDataset(cfg.data, image_size=self.image_size, report=self.report)
        self.report = ds.report
        self.dataset = ds
        train_ids, val_ids = train_val_split(ds.ids, cfg.val_fraction, seed=cfg.seed)
        if not train_ids:
            raise ValueError(f"no usable training samples in {cfg.data}: {ds.report.summary()}")
        index = {sid: i for i, sid in enumerate(ds.ids)}
        self.set_train([index[s] for s in train_ids], cfg.data)
        self.val_idx = [index[s] for s in val_ids][: cfg.val_images]
        self.items = SA1BItems(ds, self.image_size, cfg.masks_per_image, cfg.seed)
        self.collate = collate_samples
        self.total_steps = self.planned_steps()
        if cfg.compile != "off":
            self._compile()
        self.setup_training()

    def set_train(self, train_idx: list[int], what: str) -> None:
        self.train_idx = list(train_idx)
        self.steps_per_epoch = max(1, len(self.train_idx) // self.cfg.batch_size)

    # -- task hooks ------------------------------------------------------------------------------
    def planned_steps(self) -> int:
        return self.cfg.max_steps or self.cfg.epochs * self.steps_per_epoch

    def prepare_data(self) -> None:  # done in __init__ (the dataset may be given)
        pass

    def setup_training(self) -> None:
        if not hasattr(self, "opt"):
            super().setup_training()

    def trainable(self) -> nn.Module:
        self.model.requires_grad_(True)
        self.model.mask_decoder.use_gemm_upscaling()  # same function, faster backward
        return _RolloutLoss(self.model, self.cfg)

    def find_unused(self, module: nn.Module) -> bool:
        # a step may not touch every parameter (the mask-prompt convolutions without
        # corrections, the padding-point embedding with a box prompt)
        return True

    def has_validation(self) -> bool:
        return bool(self.val_idx)

    def dummy_batch(self) -> dict[str, Any]:
        return dummy_batch(self.image_size)

    def _compile(self) -> None:
        """``compile: decoder``: the prompt encoder and mask decoder under ``torch.compile``.
        The prompt grows by one click per correction, so each click count is its own static
        graph (dynamic shapes hit an inductor stride assertion in the CPU flash-attention kernel
        with torch 2.13); the recompile limit is raised to cover them. Measured on the 2-core
        CPU: no gain for minutes of compilation; meant for CUDA (benchmarks/train_step.py --compile)."""
        import torch._dynamo as dynamo

        limit = 4 * (2 + self.cfg.corrections + self.cfg.extra_iters)
        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(dynamo.config, name):
                setattr(dynamo.config, name, max(getattr(dynamo.config, name), limit))
        m = self.model
        m.mask_decoder = torch.compile(m.mask_decoder, dynamic=False)
        m.prompt_encoder.forward = torch.compile(m.prompt_encoder.forward, dynamic=False)

    def compute_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        first = "point" if torch.rand(1, generator=self.gen).item() < self.cfg.point_prob else "box"
        dev = self.device
        images = batch["images"].to(dev, non_blocking=True)
        gt = batch["masks"].to(dev, non_blocking=True)
        img_idx = batch["img_idx"].to(dev, non_blocking=True)
        with autocast_for(dev, self.amp_dtype):
            loss, parts, ious = self.module(images, batch["input_sizes"], gt, img_idx, first, self.dev_gen)
        return loss, {
            "loss": loss.detach(),
            "focal": torch.stack([p["focal"] for p in parts]).mean(),
            "dice": torch.stack([p["dice"] for p in parts]).mean(),
            "iou_mse": torch.stack([p["iou_mse"] for p in parts]).mean(),
            "iou_first": ious[0].mean(),
            "iou_last": ious[-1].mean(),
            "first_point": float(first == "point"),
        }

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        from sam_edge.evaluation.evaluator import evaluate_promptable

        return evaluate_promptable(self.model, self.dataset, self.val_idx, self.cfg.masks_per_image,
                                   corrections=self.cfg.corrections, seed=self.cfg.seed + 1, report=self.report)

    # -- batches outside the loop (tests, benchmarks) --------------------------------------------
    def batch_for_step(self, step: int) -> list[int]:
        return self.plan(step)

    def load_batch(self, indices: list[int], step: int = 0) -> Optional[dict[str, Any]]:
        batch = self.collate([self.items[(step, i)] for i in indices])
        for path, reason, detail in batch["skips"]:
            self.report.skip(path, reason, detail)
        return batch if batch["n"] else None

    # -- outputs ---------------------------------------------------------------------------------
    def summary_extra(self) -> dict[str, Any]:
        return {"train_images": len(self.train_idx), "val_images": len(self.val_idx),
                "data": self.report.to_dict(), "data_summary": self.report.summary()}

    def finish(self, summary: dict[str, Any]) -> None:
        save_model(self.model, self.out / "model.safetensors")
        write_json_atomic(self.out / "summary.json", summary)
        log.info("data: %s", self.report.summary())

    def fit(self, resume: bool = False, progress: bool = True) -> dict[str, Any]:
        try:
            if self.env.is_main:
                self.out.mkdir(parents=True, exist_ok=True)
                write_json_atomic(self.out / "config.json", dataclasses.asdict(self.cfg))
            return self.run(resume=resume, progress=progress)
        finally:
            ddp.cleanup(self.env)


#: Mask-area buckets of ``evaluate(by_area=True)``, in pixels: at 256 px a token of the 16 x 16
#: image embedding covers 256 pixels, so these are < 1, 1-4, 4-16, 16-64 and > 64 tokens.


def __getattr__(name: str) -> Any:
    # ``distill.pretrain.evaluate``: the batched evaluator of distill.evaluation (which imports this module)
    if name == "evaluate":
        from sam_edge.evaluation.evaluator import evaluate_promptable

        return evaluate_promptable
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
