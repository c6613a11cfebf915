"""Teacher and student models of a distillation run: the frozen teacher, the student built from
the registry with the teacher's prompt encoder / mask decoder, and the check that the two can
share them."""
from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from sam_edge.checkpoint import check_state_dict, read_state_dict
from sam_edge.modeling.sam import Sam
from sam_edge.registry import ModelConfig, build_sam, bundled_weights_path, create_model, get_config, list_models

from sam_edge.distillation.config import ROOT, ConfigError, DistillConfig

log = logging.getLogger("sam_edge.distillation.stages")

__all__ = ["DECODER_FIELDS", "build_student", "build_teacher", "check_decoder_compat", "load_model_spec"]


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
    (:func:`sam_edge.checkpoint.load_model_spec`)."""
    from sam_edge.registry import load_model_spec as _load

    return _load(spec, checkpoint)
