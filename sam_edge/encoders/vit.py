"""SAM's ViT image encoder (the teachers: ViT-B/L/H, the demo teacher, the tiny test model).

Official ``segment_anything`` checkpoints use this package's key names: they load unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..modeling.image_encoder import ImageEncoderViT
from ..registry import ModelConfig, register
from . import check_fields, register_encoder


@dataclass(frozen=True)
class ViTConfig:
    """SAM ViT encoder: ``depth`` blocks of width ``embed_dim``; blocks not in
    ``global_attn_indexes`` attend within ``window_size`` windows (0: no windows)."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    global_attn_indexes: tuple[int, ...] = field(default=(2, 5, 8, 11), metadata={"min": 0})
    window_size: int = field(default=14, metadata={"min": 0})
    mlp_ratio: float = 4.0
    patch_size: int = 16
    patch_embed: str = "patch"  # "patch" (SAM's patchify conv) or "conv" (conv stem)

    def __post_init__(self) -> None:
        check_fields(self)
        bad = [i for i in self.global_attn_indexes if not 0 <= i < self.depth]
        if bad:
            raise ValueError(f"global_attn_indexes must be block indexes in [0, depth={self.depth}), got {bad}")


def build(cfg: ViTConfig, image_size: int, out_chans: int) -> nn.Module:
    return ImageEncoderViT(
        img_size=image_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        out_chans=out_chans,
        window_size=cfg.window_size,
        global_attn_indexes=cfg.global_attn_indexes,
        patch_embed=cfg.patch_embed,
    )


def approx_params(cfg: ViTConfig) -> int:
    return 12 * cfg.depth * cfg.embed_dim ** 2


register_encoder(
    "vit", ViTConfig, build, approx_params=approx_params,
    legacy_names={n: n for n in ("embed_dim", "depth", "num_heads", "global_attn_indexes", "window_size",
                                 "mlp_ratio", "patch_size", "patch_embed")},
    description="SAM ViT (windowed + global attention)",
)

_SAM_VARIANTS = {
    "sam_vit_b": dict(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    "sam_vit_l": dict(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "sam_vit_h": dict(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
}
_OFFICIAL_FILES = {"sam_vit_b": "sam_vit_b_01ec64.pth", "sam_vit_l": "sam_vit_l_0b3195.pth",
                   "sam_vit_h": "sam_vit_h_4b8939.pth"}

for _name, _kw in _SAM_VARIANTS.items():
    register(ModelConfig(
        name=_name, encoder=ViTConfig(**_kw),
        description=f"SAM ViT-{_name[-1].upper()} (teacher), 1024 px input",
        checkpoint_hint=_OFFICIAL_FILES[_name],
    ))

# Tiny variant: same code paths, small enough for a 2-core CPU test suite.
register(ModelConfig(
    name="sam_test_tiny", image_size=256,
    encoder=ViTConfig(embed_dim=64, depth=4, num_heads=2, global_attn_indexes=(1, 3), window_size=4),
    prompt_embed_dim=64, decoder_num_heads=4, decoder_mlp_dim=128, iou_head_hidden_dim=64,
    description="tiny ViT SAM for tests (random init)",
))

# Demo teacher: SAM's architecture, narrowed so that it trains and runs on a 2-core CPU: 256 px
# input (16 x 16 image embedding), a 6-block ViT-192 encoder, 128-channel prompt encoder / mask
# decoder. Trained with `sam-edge pretrain` on synthetic SA-1B-format data (see README). The demo
# students (tiny_vit.py, repvit.py) import DEMO_TEACHER and copy its decoder fields.
DEMO_TEACHER = register(ModelConfig(
    name="sam_demo_teacher", image_size=256,
    encoder=ViTConfig(embed_dim=192, depth=6, num_heads=3, global_attn_indexes=(2, 5), window_size=8),
    prompt_embed_dim=128, decoder_num_heads=4, decoder_mlp_dim=1024, iou_head_hidden_dim=128,
    bundled_weights="sam_demo_teacher.safetensors",
    description="demo teacher: 6-block ViT-192 SAM at 256 px, 128-d decoder, trained on synthetic data "
                "(bundled fp16 weights; held-out mIoU box 0.68, 1 point 0.54, 1 point + 8 clicks 0.71)",
))
