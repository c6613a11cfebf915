"""RepViT convolutional image encoder (EdgeSAM-class students): re-parameterisable, its
BatchNorms and multi-branch mixers fold into plain convolutions before export (:func:`fuse`)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..modeling.repvit import RepViT, reparameterize_model
from ..registry import ModelConfig, register
from . import check_fields, register_encoder
from .vit import DEMO_TEACHER


@dataclass(frozen=True)
class RepViTConfig:
    """Stages of widths ``dims`` and ``depths`` blocks (stride 16 after the second stage)."""

    dims: tuple[int, ...] = (48, 96, 192, 384)
    depths: tuple[int, ...] = (2, 2, 14, 2)
    use_se: bool = True
    mlp_ratio: float = 4.0  # the old flat ModelConfig default; RepViT's recipe (the variants) is 2.0

    def __post_init__(self) -> None:
        check_fields(self)


def build(cfg: RepViTConfig, image_size: int, out_chans: int) -> nn.Module:
    return RepViT(img_size=image_size, dims=cfg.dims, depths=cfg.depths, mlp_ratio=cfg.mlp_ratio,
                  use_se=cfg.use_se, out_chans=out_chans)


def approx_params(cfg: RepViTConfig) -> int:
    return sum(int(4 * cfg.mlp_ratio) * n * d ** 2 for n, d in zip(cfg.depths, cfg.dims))


def fuse(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm / multi-branch mixer into one convolution (eval mode; idempotent)."""
    return reparameterize_model(model)


register_encoder(
    "repvit", RepViTConfig, build, fuse=fuse, approx_params=approx_params,
    legacy_names={"rep_dims": "dims", "rep_depths": "depths", "rep_use_se": "use_se", "mlp_ratio": "mlp_ratio"},
    description="RepViT (convolutional, re-parameterisable)",
)

# A demo student swaps only the image encoder: it copies every prompt-encoder / mask-decoder field
# from the demo teacher, so it can take over the teacher's trained prompt encoder and mask decoder.
register(ModelConfig(
    name="repvit_demo_student", image_size=256,
    encoder=RepViTConfig(dims=(24, 48, 128, 192), depths=(1, 2, 4, 2), use_se=True, mlp_ratio=2.0),
    **DEMO_TEACHER.decoder_fields(),
    bundled_weights="repvit_demo_student.safetensors",
    description="demo student: ~1.1M-param RepViT encoder (reparameterisable, BN folds away) at "
                "256 px with sam_demo_teacher's 128-d decoder; distilled from sam_demo_teacher "
                "(bundled fp16 weights of `make`'s configs/demo.yaml run; box mIoU vs teacher 0.88)",
))
register(ModelConfig(
    name="repvit_sam", image_size=1024,
    encoder=RepViTConfig(dims=(48, 96, 192, 384), depths=(2, 2, 14, 2), use_se=True, mlp_ratio=2.0),
    description="RepViT student (EdgeSAM-class, ~5M-param encoder, stride 16) at 1024 px with SAM's "
                "256-d prompt encoder / mask decoder: distillation target for sam_vit_h",
))
