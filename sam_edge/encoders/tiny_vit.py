"""TinyViT image encoder in MobileSAM's layout (MobileSAM and the TinyViT students).

MobileSAM's ``mobile_sam.pt`` uses this package's key names: it loads unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..modeling.tiny_vit import TinyViT
from ..registry import ModelConfig, register
from . import check_fields, register_encoder
from .vit import DEMO_TEACHER


@dataclass(frozen=True)
class TinyViTConfig:
    """Four stages (conv stage, then attention stages at 1/8, 1/16, 1/16 of the input)."""

    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        check_fields(self)


def build(cfg: TinyViTConfig, image_size: int, out_chans: int) -> nn.Module:
    return TinyViT(
        img_size=image_size,
        embed_dims=cfg.embed_dims,
        depths=cfg.depths,
        num_heads=cfg.num_heads,
        window_sizes=cfg.window_sizes,
        mlp_ratio=cfg.mlp_ratio,
        out_chans=out_chans,
    )


def approx_params(cfg: TinyViTConfig) -> int:
    return sum(12 * n * d ** 2 for n, d in zip(cfg.depths, cfg.embed_dims))


register_encoder(
    "tiny_vit", TinyViTConfig, build, approx_params=approx_params,
    legacy_names={"tiny_embed_dims": "embed_dims", "tiny_depths": "depths", "tiny_num_heads": "num_heads",
                  "tiny_window_sizes": "window_sizes", "mlp_ratio": "mlp_ratio"},
    description="TinyViT (MobileSAM layout)",
)

register(ModelConfig(
    name="mobilesam_tinyvit", encoder=TinyViTConfig(),
    description="MobileSAM: TinyViT-5M image encoder + SAM prompt encoder / mask decoder",
    checkpoint_hint="mobile_sam.pt",
))

# Tiny variant: same code paths, small enough for a 2-core CPU test suite.
register(ModelConfig(
    name="mobilesam_test_tiny", image_size=256,
    encoder=TinyViTConfig(embed_dims=(16, 32, 48, 64), depths=(1, 1, 1, 1), num_heads=(1, 2, 3, 4),
                          window_sizes=(4, 4, 8, 4)),
    prompt_embed_dim=64, decoder_num_heads=4, decoder_mlp_dim=128, iou_head_hidden_dim=64,
    description="tiny TinyViT SAM for tests (random init)",
))

# A demo student swaps only the image encoder: it copies every prompt-encoder / mask-decoder field
# from the demo teacher, so it can take over the teacher's trained prompt encoder and mask decoder.
register(ModelConfig(
    name="tinyvit_demo_student", image_size=256,
    encoder=TinyViTConfig(embed_dims=(24, 48, 96, 160), depths=(1, 2, 3, 1), num_heads=(1, 2, 3, 5),
                          window_sizes=(8, 8, 16, 8)),
    **DEMO_TEACHER.decoder_fields(),
    description="demo student: small TinyViT encoder (MobileSAM layout; stages at 64/32/16/16 px, "
                "windows 8/16/8) at 256 px with sam_demo_teacher's 128-d decoder",
))
