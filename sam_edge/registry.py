"""Named model variants and the one builder that turns a config into a :class:`Sam`.

A variant is a :class:`ModelConfig`. ``create_model(name, checkpoint=None, **overrides)`` builds
it (random init, seeded by the caller) and, given a checkpoint, loads it strictly.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from .utils.config import dataclass_from_dict

from .modeling.image_encoder import ImageEncoderViT
from .modeling.mask_decoder import MaskDecoder
from .modeling.prompt_encoder import PromptEncoder
from .modeling.repvit import RepViT
from .modeling.sam import PIXEL_MEAN, PIXEL_STD, Sam
from .modeling.tiny_vit import TinyViT
from .modeling.transformer import TwoWayTransformer

ENCODER_KINDS = ("vit", "tiny_vit", "repvit")


#: bounds of a model config read from a file (a checkpoint's metadata): sizes beyond these would
#: exhaust memory or fail deep inside PyTorch instead of naming the bad field
MAX_IMAGE_SIZE = 8192
MAX_DIM = 16384
MAX_PARAMS = 4_000_000_000


def _check_field_types(cfg: Any) -> None:
    """Each field of ``cfg`` has its declared type (JSON gives lists for tuples: converted by
    the loader) and sizes are positive and bounded."""
    import math

    for f in dataclasses.fields(cfg):
        v, typ, name = getattr(cfg, f.name), str(f.type), f.name
        lo = 0 if name in ("window_size", "global_attn_indexes") else 1
        if typ == "str":
            ok = isinstance(v, str)
            want = "a string"
        elif typ == "bool":
            ok = isinstance(v, bool)
            want = "true or false"
        elif typ == "int":
            ok = isinstance(v, int) and not isinstance(v, bool) and lo <= v <= MAX_DIM
            want = f"an integer in [{lo}, {MAX_DIM}]"
        elif typ == "float":
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 < v <= 1000
            want = "a number in (0, 1000]"
        elif typ.startswith("tuple[int"):
            ok = isinstance(v, tuple) and 0 < len(v) <= 64 and all(
                isinstance(x, int) and not isinstance(x, bool) and lo <= x <= MAX_DIM for x in v)
            want = f"a non-empty list of integers in [{lo}, {MAX_DIM}]"
        elif typ.startswith("tuple[float"):
            ok = isinstance(v, tuple) and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)
            want = "a list of finite numbers"
        else:  # pragma: no cover - a new field type: add it above
            continue
        if not ok:
            raise ValueError(f"{name} must be {want}, got {v!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a SAM-family model. Fields not used by ``encoder_kind`` are
    ignored by the builder (they keep their defaults)."""

    name: str
    encoder_kind: str = "vit"
    image_size: int = 1024
    patch_size: int = 16
    patch_embed: str = "patch"  # ViT only: "patch" (SAM's patchify conv) or "conv" (conv stem)
    # ViT encoder
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    mlp_ratio: float = 4.0
    # TinyViT encoder (MobileSAM layout)
    tiny_embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    tiny_depths: tuple[int, ...] = (2, 2, 6, 2)
    tiny_num_heads: tuple[int, ...] = (2, 4, 5, 10)
    tiny_window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    # RepViT encoder (convolutional student; also uses mlp_ratio, RepViT's recipe is 2.0)
    rep_dims: tuple[int, ...] = (48, 96, 192, 384)
    rep_depths: tuple[int, ...] = (2, 2, 14, 2)
    rep_use_se: bool = True
    # prompt encoder + mask decoder
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    iou_head_hidden_dim: int = 256
    num_multimask_outputs: int = 3
    pixel_mean: tuple[float, ...] = PIXEL_MEAN
    pixel_std: tuple[float, ...] = PIXEL_STD
    # documentation only
    description: str = ""
    checkpoint_hint: str = ""
    # weights shipped inside the package (sam_edge/weights/<file>), loaded by default
    bundled_weights: str = ""

    def __post_init__(self) -> None:
        _check_field_types(self)
        if self.encoder_kind not in ENCODER_KINDS:
            raise ValueError(f"encoder_kind must be one of {ENCODER_KINDS}, got {self.encoder_kind!r}")
        if self.image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16, got {self.image_size}")
        if not 16 <= self.image_size <= MAX_IMAGE_SIZE:
            raise ValueError(f"image_size must be in [16, {MAX_IMAGE_SIZE}], got {self.image_size}")
        bad = [i for i in self.global_attn_indexes if not 0 <= i < self.depth]
        if self.encoder_kind == "vit" and bad:
            raise ValueError(f"global_attn_indexes must be block indexes in [0, depth={self.depth}), got {bad}")
        for name in ("pixel_mean", "pixel_std"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"{name} must hold 3 numbers (R, G, B), got {getattr(self, name)!r}")
        if any(s <= 0 for s in self.pixel_std):
            raise ValueError(f"pixel_std must be > 0, got {self.pixel_std!r}")
        params = self.approx_params()
        if params > MAX_PARAMS:
            raise ValueError(f"these sizes give a model of about {params / 1e9:.1f} G parameters (SAM ViT-H: "
                             f"0.64 G); refusing above {MAX_PARAMS / 1e9:.0f} G")

    def approx_params(self) -> int:
        """A rough parameter count (transformer blocks ~12 d^2, convolutions ignored): enough to
        refuse a config whose sizes would exhaust memory before building it."""
        if self.encoder_kind == "vit":
            enc = 12 * self.depth * self.embed_dim ** 2
        elif self.encoder_kind == "tiny_vit":
            enc = sum(12 * n * d ** 2 for n, d in zip(self.tiny_depths, self.tiny_embed_dims))
        else:
            enc = sum(int(4 * self.mlp_ratio) * n * d ** 2 for n, d in zip(self.rep_depths, self.rep_dims))
        p = self.prompt_embed_dim
        dec = self.decoder_depth * (8 * p * p + 2 * p * self.decoder_mlp_dim) + self.num_multimask_outputs * 3 * p * p
        return int(enc + dec)

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding grid (64 for a 1024 input)."""
        return self.image_size // 16

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        return dataclass_from_dict(cls, data, "model config")


_REGISTRY: dict[str, ModelConfig] = {}


def register(config: ModelConfig) -> ModelConfig:
    if config.name in _REGISTRY:
        raise ValueError(f"model {config.name!r} is already registered")
    _REGISTRY[config.name] = config
    return config


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """The registered config for ``name``, with optional field overrides (e.g. image_size=512)."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    cfg = _REGISTRY[name]
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


def build_image_encoder(cfg: ModelConfig) -> nn.Module:
    if cfg.encoder_kind == "vit":
        return ImageEncoderViT(
            img_size=cfg.image_size,
            patch_size=cfg.patch_size,
            embed_dim=cfg.embed_dim,
            depth=cfg.depth,
            num_heads=cfg.num_heads,
            mlp_ratio=cfg.mlp_ratio,
            out_chans=cfg.prompt_embed_dim,
            window_size=cfg.window_size,
            global_attn_indexes=cfg.global_attn_indexes,
            patch_embed=cfg.patch_embed,
        )
    if cfg.encoder_kind == "repvit":
        return RepViT(
            img_size=cfg.image_size,
            dims=cfg.rep_dims,
            depths=cfg.rep_depths,
            mlp_ratio=cfg.mlp_ratio,
            use_se=cfg.rep_use_se,
            out_chans=cfg.prompt_embed_dim,
        )
    return TinyViT(
        img_size=cfg.image_size,
        embed_dims=cfg.tiny_embed_dims,
        depths=cfg.tiny_depths,
        num_heads=cfg.tiny_num_heads,
        window_sizes=cfg.tiny_window_sizes,
        mlp_ratio=cfg.mlp_ratio,
        out_chans=cfg.prompt_embed_dim,
    )


def build_sam(cfg: ModelConfig, image_encoder: nn.Module | None = None) -> Sam:
    """Build a :class:`Sam` from a config; pass ``image_encoder`` to swap in a student."""
    grid = cfg.embedding_size
    return Sam(
        image_encoder=image_encoder if image_encoder is not None else build_image_encoder(cfg),
        prompt_encoder=PromptEncoder(
            embed_dim=cfg.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(cfg.image_size, cfg.image_size),
            mask_in_chans=cfg.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=cfg.prompt_embed_dim,
            transformer=TwoWayTransformer(
                depth=cfg.decoder_depth,
                embedding_dim=cfg.prompt_embed_dim,
                num_heads=cfg.decoder_num_heads,
                mlp_dim=cfg.decoder_mlp_dim,
            ),
            num_multimask_outputs=cfg.num_multimask_outputs,
            iou_head_hidden_dim=cfg.iou_head_hidden_dim,
        ),
        image_size=cfg.image_size,
        pixel_mean=cfg.pixel_mean,
        pixel_std=cfg.pixel_std,
    )


WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def bundled_weights_path(cfg: ModelConfig) -> Path | None:
    """Path of the weights shipped with the package for this variant, or None."""
    return WEIGHTS_DIR / cfg.bundled_weights if cfg.bundled_weights else None


def create_model(
    name: str, checkpoint: str | Path | None = None, *, pretrained: bool = True, **overrides: Any
) -> Sam:
    """Build the registered variant ``name`` in eval mode; load ``checkpoint`` strictly if given.

    ``checkpoint`` may be an official ``.pth`` (segment_anything / MobileSAM layout), a
    ``.safetensors`` written by :func:`sam_edge.checkpoint.save_model`, or a torch file holding
    a dict wrapped under ``model`` / ``state_dict``. Variants that ship weights in the package
    (``sam_demo_teacher``) load them when no checkpoint is given, unless ``pretrained=False``.
    Otherwise the weights are random (seed with ``torch.manual_seed``).
    """
    cfg = get_config(name, **overrides)
    model = build_sam(cfg)
    model.config = cfg  # type: ignore[attr-defined]
    bundled = bundled_weights_path(cfg)
    if checkpoint is None and pretrained and bundled is not None:
        checkpoint = bundled
    if checkpoint is not None:
        from .checkpoint import load_checkpoint_into

        load_checkpoint_into(model, checkpoint, model_name=name)
    return model.eval()


_SAM_VARIANTS = {
    "sam_vit_b": dict(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    "sam_vit_l": dict(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "sam_vit_h": dict(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
}
_OFFICIAL_FILES = {"sam_vit_b": "sam_vit_b_01ec64.pth", "sam_vit_l": "sam_vit_l_0b3195.pth",
                   "sam_vit_h": "sam_vit_h_4b8939.pth"}

for _name, _kw in _SAM_VARIANTS.items():
    register(ModelConfig(
        name=_name, encoder_kind="vit", **_kw,
        description=f"SAM ViT-{_name[-1].upper()} (teacher), 1024 px input",
        checkpoint_hint=_OFFICIAL_FILES[_name],
    ))

register(ModelConfig(
    name="mobilesam_tinyvit", encoder_kind="tiny_vit",
    description="MobileSAM: TinyViT-5M image encoder + SAM prompt encoder / mask decoder",
    checkpoint_hint="mobile_sam.pt",
))

# Tiny variants: same code paths, small enough for a 2-core CPU test suite.
register(ModelConfig(
    name="sam_test_tiny", encoder_kind="vit", image_size=256, embed_dim=64, depth=4, num_heads=2,
    global_attn_indexes=(1, 3), window_size=4, prompt_embed_dim=64, decoder_num_heads=4,
    decoder_mlp_dim=128, iou_head_hidden_dim=64, description="tiny ViT SAM for tests (random init)",
))
register(ModelConfig(
    name="mobilesam_test_tiny", encoder_kind="tiny_vit", image_size=256,
    tiny_embed_dims=(16, 32, 48, 64), tiny_depths=(1, 1, 1, 1), tiny_num_heads=(1, 2, 3, 4),
    tiny_window_sizes=(4, 4, 8, 4), prompt_embed_dim=64, decoder_num_heads=4, decoder_mlp_dim=128,
    iou_head_hidden_dim=64, description="tiny TinyViT SAM for tests (random init)",
))

# Demo teacher: SAM's architecture, narrowed so that it trains and runs on a 2-core CPU: 256 px
# input (16 x 16 image embedding), a 6-block ViT-192 encoder, 128-channel prompt encoder / mask
# decoder. Trained with `sam-edge pretrain` on synthetic SA-1B-format data (see README).
register(ModelConfig(
    name="sam_demo_teacher", encoder_kind="vit", image_size=256, embed_dim=192, depth=6, num_heads=3,
    global_attn_indexes=(2, 5), window_size=8, prompt_embed_dim=128, decoder_num_heads=4,
    decoder_mlp_dim=1024, iou_head_hidden_dim=128, bundled_weights="sam_demo_teacher.safetensors",
    description="demo teacher: 6-block ViT-192 SAM at 256 px, 128-d decoder, trained on synthetic data "
                "(bundled fp16 weights; held-out mIoU box 0.68, 1 point 0.54, 1 point + 8 clicks 0.71)",
))

# Students: a student swaps only the image encoder. The demo students copy every prompt-encoder
# / mask-decoder field from the demo teacher, so they can take over its trained prompt encoder
# and mask decoder weights unchanged (`student.mask_decoder.load_state_dict(...)`).
_DECODER_FIELDS = (
    "prompt_embed_dim", "mask_in_chans", "decoder_depth", "decoder_num_heads", "decoder_mlp_dim",
    "iou_head_hidden_dim", "num_multimask_outputs", "pixel_mean", "pixel_std",
)
_DEMO_DECODER = {f: getattr(_REGISTRY["sam_demo_teacher"], f) for f in _DECODER_FIELDS}

register(ModelConfig(
    name="repvit_demo_student", encoder_kind="repvit", image_size=256, mlp_ratio=2.0,
    rep_dims=(24, 48, 128, 192), rep_depths=(1, 2, 4, 2), rep_use_se=True, **_DEMO_DECODER,
    bundled_weights="repvit_demo_student.safetensors",
    description="demo student: ~1.1M-param RepViT encoder (reparameterisable, BN folds away) at "
                "256 px with sam_demo_teacher's 128-d decoder; distilled from sam_demo_teacher "
                "(bundled fp16 weights of `make`'s configs/demo.yaml run; box mIoU vs teacher 0.88)",
))
register(ModelConfig(
    name="tinyvit_demo_student", encoder_kind="tiny_vit", image_size=256,
    tiny_embed_dims=(24, 48, 96, 160), tiny_depths=(1, 2, 3, 1), tiny_num_heads=(1, 2, 3, 5),
    tiny_window_sizes=(8, 8, 16, 8), **_DEMO_DECODER,
    description="demo student: small TinyViT encoder (MobileSAM layout; stages at 64/32/16/16 px, "
                "windows 8/16/8) at 256 px with sam_demo_teacher's 128-d decoder",
))
register(ModelConfig(
    name="repvit_sam", encoder_kind="repvit", image_size=1024, mlp_ratio=2.0,
    rep_dims=(48, 96, 192, 384), rep_depths=(2, 2, 14, 2), rep_use_se=True,
    description="RepViT student (EdgeSAM-class, ~5M-param encoder, stride 16) at 1024 px with SAM's "
                "256-d prompt encoder / mask decoder: distillation target for sam_vit_h",
))
