"""The distillation config: :class:`DistillConfig` (+ its two stage sections), strict parsing
(unknown keys and wrong types are errors naming ``distill.<path>``), range checks, YAML files
with ``--set`` overrides, and the checks of the input paths. The generic pieces (typed coercion,
``a.b=c`` overrides, safe YAML) are :mod:`sam_edge.utils.config`, shared with the pretraining and
pipeline configs."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from sam_edge.utils.config import (MAX_CONFIG_BYTES, ConfigError, apply_override, blame_file, parse_section,
                                   read_yaml_mapping, safe_yaml)

__all__ = ["ConfigError", "DistillConfig", "MAX_BATCH", "MAX_CONFIG_BYTES", "ROOT", "Stage1Config", "Stage2Config",
           "blame_file", "check_paths", "config_from_dict", "load_config", "read_yaml_mapping", "safe_yaml",
           "validate_config"]


@dataclass
class Stage1Config:
    """Encoder distillation (embedding regression)."""

    steps: Optional[int] = None  # optimizer steps; None -> epochs x steps per epoch; 0 -> skip
    epochs: int = 1
    batch_size: int = 8  # images per optimizer step, over all ranks and micro-batches
    grad_accum: int = 1  # micro-batches per step (each rank: batch_size / world / grad_accum)
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    loss: str = "mse"  # "mse" | "mse+cosine"
    cosine_weight: float = 1.0  # weight of (1 - cosine similarity) with loss "mse+cosine"
    ckpt_every: int = 200
    log_every: int = 10
    val_every: int = 500  # 0 = only at the end


@dataclass
class Stage2Config:
    """Prompt-in-the-loop distillation against the teacher's masks."""

    steps: int = 0  # 0 = skip the stage
    batch_size: int = 4
    grad_accum: int = 1
    masks_per_image: int = 4
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_steps: int = 20
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0
    point_prob: float = 0.5  # first prompt: a point with this probability, else a noisy box
    corrections: int = 2  # error-region clicks after the first prompt
    freeze_decoder: bool = True  # false: prompt encoder + mask decoder are fine-tuned too
    # keep BatchNorm running statistics (and batch-statistics normalisation) from stage 1: stage-2
    # batches are a few images, whose statistics drift the encoder away from what stage 1 fit
    freeze_bn: bool = True
    embed_loss_weight: float = 1.0  # share of the stage-1 embedding MSE kept in the loss
    iou_loss_weight: float = 1.0  # MSE of the student's IoU predictions against the teacher's
    ckpt_every: int = 100
    log_every: int = 10
    val_every: int = 200


@dataclass
class DistillConfig:
    teacher: str
    student: str
    data: str
    out: str
    teacher_checkpoint: Optional[str] = None  # None: the registry's bundled weights (if any)
    student_init: Optional[str] = None  # image-encoder weights to start from (full SAM or encoder-only)
    cache: Optional[str] = None  # teacher-embedding cache; None: the teacher runs live
    cache_missing: str = "live"  # image not in the cache: "live" (compute it) or "error"
    val_data: Optional[str] = None  # separate held-out folder; None: a split of `data`
    val_fraction: float = 0.05
    val_images: int = 8  # images used by the periodic validation
    val_masks_per_image: int = 4
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | bf16 | fp16 | off
    workers: int = 0  # DataLoader worker processes per rank
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)


ROOT = "distill"


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{ROOT}.{key}: {msg}")


def validate_config(cfg: DistillConfig) -> DistillConfig:
    """Range and choice checks (types are checked by :func:`config_from_dict`)."""
    _check(cfg.device in ("auto", "cpu", "cuda") or bool(re.fullmatch(r"cuda:\d+", cfg.device)), "device",
           f"must be auto, cpu, cuda or cuda:N, got {cfg.device!r}")
    _check(cfg.amp in ("auto", "bf16", "fp16", "off"), "amp", f"must be auto, bf16, fp16 or off, got {cfg.amp!r}")
    _check(cfg.cache_missing in ("live", "error"), "cache_missing", f"must be live or error, got {cfg.cache_missing!r}")
    _check(0.0 <= cfg.val_fraction < 1.0, "val_fraction", f"must be in [0, 1), got {cfg.val_fraction}")
    _check(cfg.val_images >= 0, "val_images", "must be >= 0")
    _check(cfg.val_masks_per_image >= 1, "val_masks_per_image", "must be >= 1")
    _check(cfg.workers >= 0, "workers", "must be >= 0")
    for name in ("teacher", "student", "data", "out"):
        _check(bool(getattr(cfg, name)), name, "must not be empty")
    for sname in ("stage1", "stage2"):
        s = getattr(cfg, sname)
        if s.steps is not None:
            _check(s.steps >= 0, f"{sname}.steps", f"must be >= 0, got {s.steps}")
        for k in ("batch_size", "grad_accum", "ckpt_every", "log_every"):
            _check(getattr(s, k) >= 1, f"{sname}.{k}", f"must be >= 1, got {getattr(s, k)}")
        _check(s.val_every >= 0, f"{sname}.val_every", "must be >= 0")
        _check(s.lr > 0, f"{sname}.lr", f"must be > 0, got {s.lr}")
        _check(s.weight_decay >= 0, f"{sname}.weight_decay", "must be >= 0")
        _check(s.warmup_steps >= 0, f"{sname}.warmup_steps", "must be >= 0")
        _check(0.0 <= s.min_lr_ratio <= 1.0, f"{sname}.min_lr_ratio", "must be in [0, 1]")
        _check(s.grad_clip >= 0, f"{sname}.grad_clip", "must be >= 0 (0 = off)")
    s1, s2 = cfg.stage1, cfg.stage2
    _check(s1.epochs >= 1, "stage1.epochs", "must be >= 1")
    _check(s1.loss in ("mse", "mse+cosine"), "stage1.loss", f"must be 'mse' or 'mse+cosine', got {s1.loss!r}")
    _check(s1.cosine_weight >= 0, "stage1.cosine_weight", "must be >= 0")
    _check(s2.masks_per_image >= 1, "stage2.masks_per_image", "must be >= 1")
    _check(0.0 <= s2.point_prob <= 1.0, "stage2.point_prob", "must be in [0, 1]")
    _check(s2.corrections >= 0, "stage2.corrections", "must be >= 0")
    _check(s2.embed_loss_weight >= 0, "stage2.embed_loss_weight", "must be >= 0")
    _check(s2.iou_loss_weight >= 0, "stage2.iou_loss_weight", "must be >= 0")
    # sizes that allocate per step: a typo of a few zeros must not exhaust memory mid-run
    for key, hi in (("stage1.batch_size", MAX_BATCH), ("stage2.batch_size", MAX_BATCH),
                    ("stage1.grad_accum", MAX_BATCH), ("stage2.grad_accum", MAX_BATCH),
                    ("stage2.masks_per_image", MAX_BATCH), ("val_masks_per_image", MAX_BATCH),
                    ("stage2.corrections", 1000), ("workers", 1024)):
        v = cfg
        for part in key.split("."):
            v = getattr(v, part)
        _check(v <= hi, key, f"must be <= {hi}, got {v}")
    return cfg


#: the largest batch / masks-per-image / accumulation a config may ask for
MAX_BATCH = 65536


def config_from_dict(data: dict[str, Any]) -> DistillConfig:
    """Strictly parse (unknown keys and wrong types are errors naming ``distill.<path>``) and
    validate a config mapping: the ``distill:`` section or a whole distill-only file."""
    return validate_config(parse_section(DistillConfig, data, ROOT))


def _apply_override(data: dict[str, Any], item: str, root: str = ROOT) -> None:
    """:func:`sam_edge.utils.config.apply_override` with the ``distill`` section as default root."""
    apply_override(data, item, root)


def load_config(path: str | Path | None = None, overrides: Sequence[str] = (),
                base: dict[str, Any] | None = None) -> DistillConfig:
    """Read a YAML config (its ``distill:`` section when the file has one, else the whole
    file), apply ``--set key=value`` overrides (values parsed as YAML; keys relative to the
    section, ``distill.`` prefix optional) and parse it strictly."""
    import copy

    data: dict[str, Any] = copy.deepcopy(base) if base else {}
    if path is not None:
        raw = read_yaml_mapping(path)
        section = raw[ROOT] if ROOT in raw else raw
        if section is None:
            section = {}
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: the {ROOT}: section must be a mapping")
        data.update(copy.deepcopy(section))
    for item in overrides:
        _apply_override(data, item)
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise blame_file(exc, path, overrides, ROOT) from None


def check_paths(cfg: DistillConfig) -> None:
    """Inputs that must exist before anything is built."""
    _check(Path(cfg.data).is_dir(), "data", f"folder not found: {cfg.data}")
    if cfg.val_data is not None:
        _check(Path(cfg.val_data).is_dir(), "val_data", f"folder not found: {cfg.val_data}")
    if cfg.cache is not None:
        _check(Path(cfg.cache).is_dir(), "cache", f"teacher-embedding cache folder not found: {cfg.cache}")
    for key in ("teacher_checkpoint", "student_init"):
        p = getattr(cfg, key)
        if p is not None:
            why = "is a folder, expected a checkpoint file" if Path(p).is_dir() else "file not found"
            _check(Path(p).is_file(), key, f"{why}: {p}")
