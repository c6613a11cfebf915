"""Distil a small image encoder from a SAM teacher: ``sam-edge distill`` and ``sam-edge eval``.

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
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import time
import types
import typing
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sam_edge.checkpoint import check_state_dict, read_state_dict, save_model
from sam_edge.modeling.sam import Sam
from sam_edge.registry import ModelConfig, build_sam, bundled_weights_path, create_model, get_config, list_models
from sam_edge.utils.io import remove_stale_temps, write_json_atomic

from sam_edge.training import ddp
from sam_edge.training.engine import Engine, RunStateError, amp_dtype, autocast, freeze_unused, mix_seed

from sam_edge.data.batches import (FolderItems, SA1BItems, collate, dummy_batch, id_seed, image_rel_id, load_sa1b_sample,
                      pad_image)
from sam_edge.data import ImageFolderDataset, SA1BDataset, SampleError, SkipReport, read_rgb, train_val_split
from sam_edge.data.sa1b import resize_image
from sam_edge.training.losses import DICE_WEIGHT, FOCAL_WEIGHT, dice_loss, mask_iou, sigmoid_focal_loss
from sam_edge.training.pretrain import decode, encode
from sam_edge.data.prompts import error_region_points, masks_to_boxes, noisy_boxes, sample_points_in_masks

log = logging.getLogger("sam_edge.distillation.stages")

__all__ = [
    "ConfigError",
    "DECODER_FIELDS",
    "DistillConfig",
    "Distiller",
    "RunStateError",
    "Stage1Config",
    "Stage2Config",
    "build_student",
    "build_teacher",
    "check_decoder_compat",
    "config_from_dict",
    "evaluate_student",
    "load_config",
    "load_model_spec",
    "run_distill",
]


class ConfigError(ValueError):
    """A distillation config that cannot be used; the message starts with the key path."""


# =============================================================================================
# Config
# =============================================================================================
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


def _type_name(tp: Any) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
    if dataclasses.is_dataclass(tp):
        return _parse_section(tp, {} if value is None else value, path)
    bad = ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        else:
            raise bad
        if not math.isfinite(value):  # .nan / .inf: a run that trains to NaN weights
            raise ConfigError(f"{path}: expected a finite number, got {value!r}")
        return value
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    raise TypeError(f"{path}: unsupported config type {tp!r}")  # pragma: no cover


def _parse_section(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of options, got {data!r} ({type(data).__name__})")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        names = ", ".join(f"{path}.{k}" for k in unknown)
        raise ConfigError(f"unknown config key{'s' if len(unknown) > 1 else ''} {names}; "
                          f"known keys of {path}: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{path}.{name}"
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
                raise ConfigError(f"{key}: required, not set")
            continue
        kwargs[name] = _coerce(hints[name], data[name], key)
    return cls(**kwargs)


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
    return validate_config(_parse_section(DistillConfig, data, ROOT))


def _apply_override(data: dict[str, Any], item: str, root: str = ROOT) -> None:
    """Set ``KEY=VALUE`` (value parsed as YAML) in the section mapping ``data``; ``root`` names
    the section in errors and is accepted as a key prefix."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. stage1.lr=1e-3")
    key, text = item.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if parts[0] == root and len(parts) > 1:
        parts = parts[1:]
    if not all(parts):
        raise ConfigError(f"--set {item!r}: bad key {key!r}")
    try:
        value = safe_yaml(text, f"--set {key}")
    except ConfigError:
        value = text
    node = data
    for i, p in enumerate(parts[:-1]):
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: {root}.{'.'.join(parts[:i + 1])} is not a section")
        node = child
    node[parts[-1]] = value


#: largest config file read (bytes): a config is a page of settings, not data
MAX_CONFIG_BYTES = 1 << 20


def safe_yaml(text: str, name: str) -> Any:
    """``yaml.safe_load`` without aliases: ``*name`` references are refused (an alias bomb, a few
    hundred bytes that expand to gigabytes, hangs any code that walks or formats the result)."""
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise ConfigError(f"{name}: line {mark.line + 1}: YAML aliases (*name) are not accepted in configs; "
                                  "write the value out")
            return super().compose_node(parent, index)

    try:
        return yaml.load(text, Loader=NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name}: not valid YAML ({_yaml_problem(exc)})") from None


def _yaml_problem(exc: Exception) -> str:
    """PyYAML's error on one line: the problem and where (its str() spans several lines)."""
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if problem is None:
        return " ".join(str(exc).split())
    return f"{problem}" + (f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "")


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping; errors name the file."""
    import yaml

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, expected a YAML config file")
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size} bytes; a config file is at most {MAX_CONFIG_BYTES} bytes")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                          "expected a YAML config file") from None
    if "\x00" in text:
        raise ConfigError(f"{path}: holds NUL bytes (a binary file?); expected a YAML config file")
    try:
        raw = safe_yaml(text, str(path)) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(exc)})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


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


def blame_file(exc: ConfigError, path: str | Path | None, overrides: Sequence[str], root: str) -> ConfigError:
    """``exc`` prefixed with the config file's name, unless no file was read or the key it names
    (``root.a.b``) was set by a ``--set`` / command-line override."""
    if path is None or str(exc).startswith(str(path)):
        return exc
    m = re.search(rf"\b{re.escape(root)}\.([\w.]+)", str(exc))
    key = m.group(1) if m else None
    for item in overrides:
        k = item.split("=", 1)[0].strip()
        k = k[len(root) + 1:] if k.startswith(root + ".") else k
        if key is not None and (key == k or key.startswith(k + ".") or k.startswith(key + ".")):
            return exc
    return ConfigError(f"{path}: {exc}")


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


# =============================================================================================
# Models
# =============================================================================================
#: ModelConfig fields that fix the prompt encoder / mask decoder and the input pipeline: a
#: student must share them with its teacher.
DECODER_FIELDS = ("image_size", "prompt_embed_dim", "mask_in_chans", "decoder_depth", "decoder_num_heads",
                  "decoder_mlp_dim", "iou_head_hidden_dim", "num_multimask_outputs", "pixel_mean", "pixel_std")


def _model_config(name: str, role: str) -> ModelConfig:
    try:
        return get_config(name)
    except KeyError:
        raise ConfigError(f"{ROOT}.{role}: unknown model {name!r}; registered: {', '.join(list_models())}") from None


def check_decoder_compat(teacher: ModelConfig, student: ModelConfig) -> None:
    """Raise :class:`ConfigError` naming every decoder-side field where the two differ."""
    diffs = [f"{k}: teacher {getattr(teacher, k)!r}, student {getattr(student, k)!r}"
             for k in DECODER_FIELDS if getattr(teacher, k) != getattr(student, k)]
    if diffs:
        raise ConfigError(
            f"{ROOT}.student: {student.name!r} cannot take the prompt encoder / mask decoder of teacher "
            f"{teacher.name!r}; these fields differ: " + "; ".join(diffs))


def build_teacher(cfg: DistillConfig) -> Sam:
    """The frozen teacher: ``teacher_checkpoint`` or the registry's bundled weights."""
    mcfg = _model_config(cfg.teacher, "teacher")
    if cfg.teacher_checkpoint is None and bundled_weights_path(mcfg) is None:
        log.warning("teacher %r has no bundled weights and no teacher_checkpoint is set: it has RANDOM weights",
                    cfg.teacher)
    teacher = create_model(cfg.teacher, checkpoint=cfg.teacher_checkpoint)
    teacher.requires_grad_(False)
    return teacher.eval()


def _load_encoder_init(student: Sam, path: str | Path) -> None:
    """Load image-encoder weights from a full SAM-family checkpoint (``image_encoder.*`` keys
    taken) or an encoder-only one (keys with or without the prefix). Strict on the encoder."""
    sd, _ = read_state_dict(path)
    pre = "image_encoder."
    if any(k.startswith(pre) for k in sd):
        enc = {k: v for k, v in sd.items() if k.startswith(pre)}
    else:
        enc = {pre + k: v for k, v in sd.items()}
    holder = nn.Module()
    holder.image_encoder = student.image_encoder
    check_state_dict(holder, enc, f"{ROOT}.student_init {path}")
    holder.load_state_dict(enc, strict=True)


def build_student(cfg: DistillConfig, teacher: Sam) -> Sam:
    """``build_sam(student config)``; encoder from ``student_init`` (else random, seeded by the
    caller); prompt encoder + mask decoder copied from the teacher (strict)."""
    scfg = _model_config(cfg.student, "student")
    tcfg = getattr(teacher, "config", None) or _model_config(cfg.teacher, "teacher")
    check_decoder_compat(tcfg, scfg)
    student = build_sam(scfg)
    student.config = scfg  # type: ignore[attr-defined]
    if cfg.student_init:
        _load_encoder_init(student, cfg.student_init)
    student.prompt_encoder.load_state_dict(teacher.prompt_encoder.state_dict(), strict=True)
    student.mask_decoder.load_state_dict(teacher.mask_decoder.state_dict(), strict=True)
    return student


def load_model_spec(spec: str, checkpoint: str | None = None) -> Sam:
    """A registered name (+ optional checkpoint) or a ``.safetensors`` model file
    (:func:`sam_edge.registry.load_model_spec`)."""
    from sam_edge.registry import load_model_spec as _load

    return _load(spec, checkpoint)


# =============================================================================================
# Shared pieces (the engine's and the batch views'), under the names this module always used
# =============================================================================================
_mix = mix_seed
_id_seed = id_seed
_amp_dtype = amp_dtype
_autocast = autocast
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
# Prompts, predictions and comparisons shared by validation and `sam-edge eval`
# =============================================================================================
PROMPT_KINDS = ("point1", "point2", "box")


def _fixed_boxes(h: int, w: int) -> torch.Tensor:
    """Boxes for images without annotations: the centre half and the four quadrants."""
    return torch.tensor([[w / 4, h / 4, 3 * w / 4, 3 * h / 4], [0, 0, w / 2, h / 2], [w / 2, 0, w, h / 2],
                         [0, h / 2, w / 2, h], [w / 2, h / 2, w, h]], dtype=torch.float32)


def _make_prompts(rec: dict[str, Any], kinds: Sequence[str], g: torch.Generator) -> dict[str, tuple]:
    """kind -> ((coords K x N x 2, labels K x N) or None, boxes K x 4 or None), drawn from the
    record's ground-truth masks (in ``kinds`` order, with ``g``). Without masks only the box
    kind is available (fixed boxes)."""
    gt = rec["masks"]
    out: dict[str, tuple] = {}
    for kind in kinds:
        if gt is None:
            if kind == "box":
                out[kind] = (None, _fixed_boxes(*rec["input_size"]))
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


def _to_frame(logits: torch.Tensor, input_size: tuple[int, int], image_size: int, full_res: bool) -> torch.Tensor:
    """Low-res logits K x M x L x L -> boolean masks in the input frame, padding cropped: at
    full resolution (upsampled to S x S, cropped to h x w) or at low resolution."""
    h, w = input_size
    if full_res:
        up = F.interpolate(logits.float(), (image_size, image_size), mode="bilinear", align_corners=False)
        return up[..., :h, :w] > 0
    side = logits.shape[-1]
    return logits[..., : math.ceil(h * side / image_size), : math.ceil(w * side / image_size)] > 0


def _gt_frame(masks: torch.Tensor, input_size: tuple[int, int], image_size: int, side: int, full_res: bool) -> torch.Tensor:
    h, w = input_size
    if full_res:
        return masks[:, :h, :w]
    low = F.adaptive_avg_pool2d(masks[:, None].float(), side)[:, 0] >= 0.5
    return low[:, : math.ceil(h * side / image_size), : math.ceil(w * side / image_size)]


@torch.no_grad()
def _predict(model: Sam, emb: torch.Tensor, prompts: dict[str, tuple], input_size: tuple[int, int],
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
        out[kind] = (_to_frame(low.float(), input_size, model.image_size, full_res).cpu(), iou.float().cpu())
    return out


def _compare(pred: dict[str, tuple], ref: dict[str, tuple]) -> dict[str, torch.Tensor]:
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


def _metric_order(keys: Sequence[str]) -> list[str]:
    order = ["point1", "point1_oracle", "point2", "box"]
    return [k for k in order if k in keys] + sorted(k for k in keys if k not in order)


def _load_records(root: Path, rel_ids: Sequence[str], size: int, k: int, seed: int,
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
        g = torch.Generator().manual_seed(_mix(seed, _id_seed(rel)))
        try:
            if rel in pos:
                recs.append(_load_sa1b_sample(sa, pos[rel], size, k, g))
            else:
                img, hw = _pad_image(resize_image(read_rgb(root / rel, report), size), size)
                recs.append({"id": rel, "image": img, "input_size": hw, "masks": None})
        except SampleError as exc:
            if report is not None:
                report.skip(exc.path, exc.reason, exc.detail)
    return recs


class _Validator:
    """Teacher side computed once (embeddings, fixed prompts, masks at low resolution); each
    call scores the student against it: ``emb_mse`` and, per prompt kind, the mIoU of the
    student's masks against the teacher's (``box_vs_teacher``, ``point1_vs_teacher`` with each
    model's own choice of its 3 masks, ``point1_oracle_vs_teacher``)."""

    def __init__(self, d: "Distiller", records: list[dict[str, Any]], kinds: Sequence[str],
                 use_cache: bool) -> None:
        self.d = d
        self.refs = []
        for rec in records:
            g = torch.Generator().manual_seed(_mix(d.cfg.seed, 11, _id_seed(rec["id"])))
            img = rec["image"][None].to(d.device)
            sizes = torch.tensor([rec["input_size"]])
            t_emb = d.teacher_embeddings([rec["id"]], img, sizes, use_cache=use_cache)
            prompts = _make_prompts(rec, kinds, g)
            with _autocast(d.device, d.amp_dtype):
                t_out = _predict(d.teacher, t_emb, prompts, rec["input_size"], full_res=False)
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
            with _autocast(dev, self.d.amp_dtype):
                s_emb = encode(student, ref["image"][None].to(dev), sizes).float()
                s_out = _predict(student, s_emb, ref["prompts"], ref["input_size"], full_res=False)
            mse.append(F.mse_loss(s_emb.cpu(), ref["t_emb"]).item())
            for k, v in _compare(s_out, ref["t_out"]).items():
                ious[k].append(v)
        student.train(was)
        out = {"emb_mse": float(np.mean(mse)) if mse else float("nan")}
        for k in _metric_order(list(ious)):
            out[f"{k}_vs_teacher"] = float(torch.cat(ious[k]).mean())
        return out


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
        self.validator: Optional[_Validator] = None

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
            recs = _load_records(self.val_root, self.val_ids[: self.d.cfg.val_images], self.d.image_size,
                                 self.d.cfg.val_masks_per_image, self.d.cfg.seed, self.report)
            same_root = Path(self.val_root).resolve() == Path(self.d.cfg.data).resolve()
            self.validator = _Validator(self.d, recs, self.val_kinds(), use_cache=same_root)
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
        with _autocast(dev, self.d.amp_dtype):
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
        with _autocast(dev, self.d.amp_dtype):
            loss, parts = self.module(x, t, batch["masks"].to(dev, non_blocking=True),
                                      batch["img_idx"].to(dev, non_blocking=True), first, self.dev_gen)
        out = {"loss": loss.detach(), **parts, "first_point": float(first == "point")}
        return loss, out

    def val_kinds(self) -> tuple[str, ...]:
        return ("point1", "box")


# =============================================================================================
# The run
# =============================================================================================
def _open_cache(root: str) -> Any:
    """Open the teacher-embedding cache (``distill.cache.TeacherCache``); tests replace this."""
    try:
        from sam_edge.distillation.cache import TeacherCache
    except ImportError as exc:
        raise ConfigError(f"{ROOT}.cache: the teacher-embedding cache reader (distill.cache) is not "
                          f"available ({exc}); remove cache to run the teacher live") from exc
    return TeacherCache(root)


class Distiller:
    """Everything one ``sam-edge distill`` run needs: teacher, student, cache, process group.
    ``run()`` executes the stages in order (skipping finished ones) and writes the outputs."""

    def __init__(self, cfg: DistillConfig) -> None:
        validate_config(cfg)
        check_paths(cfg)
        tcfg = _model_config(cfg.teacher, "teacher")
        scfg = _model_config(cfg.student, "student")
        check_decoder_compat(tcfg, scfg)
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.image_size = tcfg.image_size
        self.cache = None
        if cfg.cache is not None:
            self.cache = _open_cache(cfg.cache)
            self._check_cache(tcfg)
        self.env = ddp.setup(cfg.device, option="distill.device")
        try:
            self.device = self.env.device
            self.amp_dtype = _amp_dtype(self.device, cfg.amp)
            torch.manual_seed(cfg.seed)  # a teacher without weights (tests) is the same on every rank and run
            self.teacher = build_teacher(cfg).to(self.device)
            torch.manual_seed(cfg.seed)  # identical student init on every rank
            self.student = build_student(cfg, self.teacher).to(self.device)
            torch.manual_seed(_mix(cfg.seed, 5, self.env.rank))  # per-rank training randomness
        except BaseException:
            ddp.cleanup(self.env)
            raise
        self.cache_misses = 0
        self._emb_shape = (tcfg.prompt_embed_dim, tcfg.embedding_size, tcfg.embedding_size)

    def _check_cache(self, tcfg: ModelConfig) -> None:
        """The cache must hold this teacher's embeddings: same name, image size, embedding shape,
        model config and weights (sha256 of the checkpoint file, when the cache records one)."""
        meta = dict(getattr(self.cache, "meta", {}) or {})
        problems = []
        if meta.get("teacher") != self.cfg.teacher:
            problems.append(f"teacher {meta.get('teacher')!r} (config: {self.cfg.teacher!r})")
        if meta.get("image_size") is not None and int(meta["image_size"]) != tcfg.image_size:
            problems.append(f"image_size {meta.get('image_size')} (teacher {self.cfg.teacher!r}: {tcfg.image_size})")
        want_shape = [tcfg.prompt_embed_dim, tcfg.embedding_size, tcfg.embedding_size]
        if meta.get("embedding_shape") is not None and list(meta["embedding_shape"]) != want_shape:
            problems.append(f"embedding_shape {list(meta['embedding_shape'])} (teacher gives {want_shape})")
        if not problems and isinstance(meta.get("model_config"), dict):
            old, new = _jsonable(ModelConfig.normalize_dict(meta["model_config"])), _jsonable(tcfg.to_dict())
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k != "description")
            if diff:
                problems.append(f"a {self.cfg.teacher!r} whose config differs in {diff}")
        if not problems and "checkpoint" in meta:
            problems += self._cache_weights_problem(meta["checkpoint"], tcfg)
        if problems:
            raise ConfigError(f"{ROOT}.cache: {self.cfg.cache} holds embeddings of " + " and ".join(problems)
                              + "; rebuild it with `sam-edge cache-teacher` or point cache at the right folder")
        root = meta.get("data_root")
        if root and Path(root).resolve() != Path(self.cfg.data).resolve():
            log.warning("cache %s was computed from %s, distilling on %s: entries are matched by relative path",
                        self.cfg.cache, root, self.cfg.data)

    def _cache_weights_problem(self, recorded: Any, tcfg: ModelConfig) -> list[str]:
        import hashlib

        ours = Path(self.cfg.teacher_checkpoint) if self.cfg.teacher_checkpoint else bundled_weights_path(tcfg)
        if ours is not None and not ours.is_file():
            ours = None
        if recorded is None and ours is None:
            return []
        if recorded is None or ours is None:
            theirs = "the registry default weights" if recorded is None else f"checkpoint {recorded.get('path')}"
            mine = "the registry default weights" if ours is None else f"checkpoint {ours}"
            return [f"teacher weights from {theirs} (config: {mine})"]
        sha = recorded.get("sha256") if isinstance(recorded, dict) else None
        if not sha:
            return []
        h = hashlib.sha256()
        with open(ours, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 24), b""):
                h.update(chunk)
        if h.hexdigest() != sha:
            return [f"other teacher weights ({recorded.get('path')}, sha256 {sha[:12]}...; config: {ours}, "
                    f"sha256 {h.hexdigest()[:12]}...)"]
        return []

    def teacher_embeddings(self, ids: Sequence[Optional[str]], images_u8: torch.Tensor,
                           input_sizes: torch.Tensor, use_cache: bool = True) -> torch.Tensor:
        """B x C x h x w float32 on the training device: from the cache when it holds the image,
        else computed by the teacher (or refused, with ``cache_missing: error``). ``ids`` are
        image paths relative to ``data`` (the cache's keys); ``use_cache=False`` for images of
        another folder (``val_data``), whose relative paths may collide with the cache's."""
        out: list[Optional[torch.Tensor]] = [None] * len(ids)
        live = list(range(len(ids)))
        if self.cache is not None and use_cache:
            live = []
            for i, sid in enumerate(ids):
                if sid is not None and sid in self.cache:
                    t = self.cache.get(sid).float()
                    if tuple(t.shape) != self._emb_shape:
                        raise ValueError(f"{ROOT}.cache: entry {sid!r} has shape {tuple(t.shape)}, teacher "
                                         f"{self.cfg.teacher!r} gives {self._emb_shape}")
                    out[i] = t.to(self.device, non_blocking=True)
                else:
                    live.append(i)
            missing = [ids[i] for i in live if ids[i] is not None]
            if missing:
                if self.cfg.cache_missing == "error":
                    raise KeyError(f"{ROOT}.cache: {self.cfg.cache} has no embedding for {missing[:5]}"
                                   f"{' ...' if len(missing) > 5 else ''} (set cache_missing: live to compute them)")
                if self.cache_misses == 0:
                    log.warning("images missing from the cache %s (e.g. %s): computing their embeddings live",
                                self.cfg.cache, missing[0])
                self.cache_misses += len(missing)
        if live:
            sel = torch.tensor(live)
            with torch.no_grad(), _autocast(self.device, self.amp_dtype):
                emb = encode(self.teacher, images_u8[sel.to(images_u8.device)], input_sizes[sel]).float()
            for j, i in enumerate(live):
                out[i] = emb[j]
        return torch.stack(out)  # type: ignore[arg-type]

    def run(self, resume: bool = False, progress: bool = True) -> dict[str, Any]:
        cfg = self.cfg
        try:
            if self.env.is_main:
                self.out.mkdir(parents=True, exist_ok=True)
                remove_stale_temps(self.out)  # left by a killed run
                write_json_atomic(self.out / "config.json", dataclasses.asdict(cfg))
            t0 = time.perf_counter()
            s1 = _Stage1(self, cfg.stage1).run(resume, progress)
            s2 = _Stage2(self, cfg.stage2).run(resume, progress)
            final = self.out / "student.safetensors"
            validation = s2.get("validation") or s1.get("validation") or {}
            summary = {
                "teacher": cfg.teacher, "student": cfg.student, "model": str(final),
                "device": str(self.device), "world_size": self.env.world_size,
                "seconds_this_run": round(time.perf_counter() - t0, 2),
                "steps": {"stage1": s1.get("steps", 0), "stage2": s2.get("steps", 0)},
                "stage1": s1, "stage2": s2, "validation": validation,
            }
            if self.env.is_main:
                save_model(self.student, final)
                write_json_atomic(self.out / "summary.json", summary)
            ddp.barrier(self.env)
            return summary
        finally:
            ddp.cleanup(self.env)


def run_distill(cfg: DistillConfig, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Build a :class:`Distiller` and run it; returns the summary (also in ``RUN/summary.json``)."""
    return Distiller(cfg).run(resume=resume, progress=progress)


# =============================================================================================
# Evaluation: student vs teacher (and both vs ground truth) on held-out SA-1B-format data
# =============================================================================================
_ROW_NAMES = {"point1": "1 point (own IoU choice)", "point1_oracle": "1 point (best of 3)",
              "point2": "2 points", "box": "box"}


def format_eval_table(result: dict[str, Any]) -> str:
    """A small text table of :func:`evaluate_student`'s result."""
    cols = ("student_vs_teacher", "student_vs_gt", "teacher_vs_gt")
    heads = ("student vs teacher", "student vs GT", "teacher vs GT")
    keys = _metric_order(list(result["student_vs_teacher"]))
    w0 = max(len(_ROW_NAMES.get(k, k)) for k in keys) + 2
    lines = [f"{'prompt':<{w0}}" + "".join(f"{h:>20}" for h in heads)]
    for k in keys:
        cells = "".join(f"{result[c].get(k, float('nan')):>20.4f}" for c in cols)
        lines.append(f"{_ROW_NAMES.get(k, k):<{w0}}" + cells)
    lines.append(f"({result['images']} images, {result['masks']} masks)")
    return "\n".join(lines)


def __getattr__(name: str) -> Any:
    # the batched evaluator lives in distill.evaluation, which imports this module
    if name == "evaluate_student":
        from sam_edge.evaluation.evaluator import evaluate_student

        return evaluate_student
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
