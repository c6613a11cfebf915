"""Named model variants, the builder that turns a config into a :class:`Sam`, and model loading.

A variant is a :class:`ModelConfig`: the fields shared by every SAM-family model (input size,
prompt encoder / mask decoder, pixel statistics) plus ``encoder_kind`` and ``encoder``, the config
of that image-encoder family (see :mod:`sam_edge.encoders`; each family file registers its own
variants). ``create_model(name, checkpoint=None, **overrides)`` builds one (random init, seeded by
the caller) and, given a checkpoint, loads it strictly; :func:`load_model` builds a model from a
file written by :func:`sam_edge.checkpoint.save_model` (config in its metadata).

Config dicts come in two layouts, both read by :meth:`ModelConfig.from_dict`: the nested one that
:meth:`ModelConfig.to_dict` writes (``"encoder": {...}``) and the old flat one (every family's
fields side by side: ``embed_dim``, ``tiny_*``, ``rep_*``...) stored in older checkpoints,
manifests and caches.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from . import encoders
from .checkpoint import CONFIG_METADATA_KEY, CheckpointError, check_state_dict, read_state_dict
from .encoders import MAX_DIM  # noqa: F401  (re-exported)
from .encoders import EncoderFamily, check_fields, check_value, field_check, fuse_model, get_encoder
from .modeling.mask_decoder import MaskDecoder
from .modeling.prompt_encoder import PromptEncoder
from .modeling.sam import PIXEL_MEAN, PIXEL_STD, Sam
from .modeling.transformer import TwoWayTransformer

__all__ = [
    "DECODER_FIELDS",
    "ModelConfig",
    "build_image_encoder",
    "build_sam",
    "bundled_weights_path",
    "create_model",
    "fuse_model",
    "get_config",
    "list_models",
    "load_model",
    "load_model_spec",
    "register",
]


def __getattr__(name: str) -> Any:
    # ENCODER_KINDS was a constant; the kinds are now whatever sam_edge.encoders has registered
    if name == "ENCODER_KINDS":
        return encoders.encoder_kinds()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: bounds of a model config read from a file (a checkpoint's metadata): sizes beyond these would
#: exhaust memory or fail deep inside PyTorch instead of naming the bad field
MAX_IMAGE_SIZE = 8192
MAX_PARAMS = 4_000_000_000

#: the prompt-encoder / mask-decoder fields: a student that keeps them can take over its teacher's
#: prompt encoder and mask decoder weights unchanged
DECODER_FIELDS = (
    "prompt_embed_dim", "mask_in_chans", "decoder_depth", "decoder_num_heads", "decoder_mlp_dim",
    "iou_head_hidden_dim", "num_multimask_outputs", "pixel_mean", "pixel_std",
)

_CHECKED_FAMILIES: set[str] = set()


def _family(kind: Any) -> EncoderFamily:
    check_value("encoder_kind", "str", kind)
    fam = get_encoder(kind)
    if kind not in _CHECKED_FAMILIES:
        clash = sorted(set(fam.field_names) & set(_COMMON_FIELDS))
        if clash:
            raise ValueError(f"encoder {kind!r}: config fields {clash} clash with ModelConfig's own fields")
        _CHECKED_FAMILIES.add(kind)
    return fam


@dataclass(frozen=True, init=False)
class ModelConfig:
    """Everything needed to build a SAM-family model.

    ``ModelConfig(name, encoder_kind=None, encoder=None, **fields)``: ``encoder`` is the family's
    config (e.g. :class:`sam_edge.encoders.vit.ViTConfig`; a dict of its fields; or None for its
    defaults); ``encoder_kind`` defaults to the family of ``encoder`` (else ``"vit"``). ``fields``
    are the common fields below and, as overrides of ``encoder``, the family's fields by their
    names or by the old flat names (``tiny_window_sizes``, ``rep_dims``...). A keyword that no
    field takes is a ``TypeError`` naming it. The family's fields also read as attributes by the
    old flat names (``cfg.embed_dim`` of a ViT config, ``cfg.rep_dims`` of a RepViT one)."""

    name: str
    encoder_kind: str = "vit"
    image_size: int = 1024
    encoder: Any = None
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

    def __init__(self, name: str, encoder_kind: str | None = None, encoder: Any = None, **fields: Any) -> None:
        values = {k: f.default for k, f in _COMMON_FIELDS.items()}
        overrides = {}
        for k, v in fields.items():
            if k in _COMMON_FIELDS:
                values[k] = v
            else:
                overrides[k] = v
        if encoder_kind is None:
            encoder_kind = "vit" if encoder is None or isinstance(encoder, Mapping) else encoders.family_of(encoder).kind
        fam = _family(encoder_kind)
        mapped: dict[str, Any] = {}
        unknown = [k for k in overrides if fam.field_for(k) is None]
        if unknown:
            raise TypeError(f"ModelConfig {name!r}: unknown field(s) {unknown}: neither a model field nor a field of "
                            f"encoder {encoder_kind!r} ({', '.join(fam.field_names)})")
        for k, v in overrides.items():
            target = fam.field_for(k)
            if target in mapped:
                raise TypeError(f"ModelConfig {name!r}: {k} and another keyword both set encoder field {target}")
            typ, lo = field_check(fam.config_cls, target)
            check_value(k, typ, v, lo)  # named as given (an old flat name stays recognisable)
            mapped[target] = v
        if encoder is None or isinstance(encoder, Mapping):
            enc = fam.make_config({**dict(encoder or {}), **mapped})
        elif type(encoder) is fam.config_cls:
            enc = dataclasses.replace(encoder, **mapped) if mapped else encoder
        else:
            raise ValueError(f"encoder: a {type(encoder).__name__} does not configure encoder_kind {encoder_kind!r} "
                             f"(expected a {fam.config_cls.__name__})")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "encoder_kind", encoder_kind)
        object.__setattr__(self, "encoder", enc)
        for k, v in values.items():
            object.__setattr__(self, k, v)
        self._validate(fam)

    def _validate(self, fam: EncoderFamily) -> None:
        check_fields(self, skip=("encoder",))
        if self.image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16, got {self.image_size}")
        if not 16 <= self.image_size <= MAX_IMAGE_SIZE:
            raise ValueError(f"image_size must be in [16, {MAX_IMAGE_SIZE}], got {self.image_size}")
        for name in ("pixel_mean", "pixel_std"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"{name} must hold 3 numbers (R, G, B), got {getattr(self, name)!r}")
        if any(s <= 0 for s in self.pixel_std):
            raise ValueError(f"pixel_std must be > 0, got {self.pixel_std!r}")
        params = self.approx_params()
        if params > MAX_PARAMS:
            raise ValueError(f"these sizes give a model of about {params / 1e9:.1f} G parameters (SAM ViT-H: "
                             f"0.64 G); refusing above {MAX_PARAMS / 1e9:.0f} G")

    def __getattr__(self, name: str) -> Any:
        # only called when normal lookup fails: the family's fields by their old flat names
        if name.startswith("__") or name in ("encoder", "encoder_kind"):
            raise AttributeError(name)
        d = self.__dict__
        if "encoder" in d and "encoder_kind" in d:
            target = get_encoder(d["encoder_kind"]).legacy_names.get(name)
            if target is not None:
                return getattr(d["encoder"], target)
            raise AttributeError(f"ModelConfig {d.get('name')!r} (encoder_kind {d['encoder_kind']!r}) has no "
                                 f"attribute {name!r}")
        raise AttributeError(name)

    @property
    def family(self) -> EncoderFamily:
        """The image-encoder family (see :mod:`sam_edge.encoders`)."""
        return get_encoder(self.encoder_kind)

    def approx_params(self) -> int:
        """A rough parameter count (transformer blocks ~12 d^2, convolutions ignored): enough to
        refuse a config whose sizes would exhaust memory before building it."""
        fam = self.family
        enc = int(fam.approx_params(self.encoder)) if fam.approx_params is not None else 0
        p = self.prompt_embed_dim
        dec = self.decoder_depth * (8 * p * p + 2 * p * self.decoder_mlp_dim) + self.num_multimask_outputs * 3 * p * p
        return int(enc + dec)

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding grid (64 for a 1024 input)."""
        return self.image_size // 16

    def decoder_fields(self) -> dict[str, Any]:
        """The prompt-encoder / mask-decoder fields (:data:`DECODER_FIELDS`), e.g. for a student
        that keeps its teacher's decoder: ``ModelConfig(..., **teacher.decoder_fields())``."""
        return {f: getattr(self, f) for f in DECODER_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        """The nested layout: common fields, ``encoder_kind`` and ``encoder`` (the family's fields)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        """Read a config dict in the nested layout (:meth:`to_dict`) or the old flat one. Lists
        become tuples (JSON has none). Unknown keys are refused, naming them; the old flat fields
        of other encoder families (which old flat dicts always hold) are type-checked and ignored.
        Top-level family fields are read as old flat names first and override the nested ones."""
        if not isinstance(data, Mapping):
            raise ValueError(f"model config must be an object (name -> value), got {type(data).__name__}")
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        kind = data.get("encoder_kind", "vit")
        fam = _family(kind)
        nested = data.get("encoder")
        if nested is not None and not isinstance(nested, Mapping):
            raise ValueError(f"encoder must be an object (the {kind!r} encoder's fields), got {nested!r}")
        nested = {k: tuple(v) if isinstance(v, list) else v for k, v in (nested or {}).items()}
        unknown = [f"encoder.{k}" for k in nested if k not in fam.field_names]
        flat: dict[str, Any] = {}
        others = _other_flat_fields()
        for k, v in data.items():
            if k in _COMMON_FIELDS or k in ("name", "encoder_kind", "encoder"):
                continue
            if k in fam.legacy_names or (k not in others and fam.field_for(k) is not None):
                flat[k] = v
            elif k in others:  # an old flat field of another family (e.g. ViT's num_heads in a TinyViT dict)
                typ, lo = field_check(*others[k])
                check_value(k, typ, v, lo)
            else:
                unknown.append(k)
        if unknown:
            known = sorted(f.name for f in dataclasses.fields(cls))
            raise ValueError(f"unknown model config keys {sorted(unknown)}; known keys: {known} and the fields of "
                             f"encoder {kind!r}: {list(fam.field_names)}")
        common = {k: v for k, v in data.items() if k in _COMMON_FIELDS}
        if "name" not in data:
            raise ValueError("model config has no 'name'")
        # the flat family fields as overrides of the nested ones: checked (and named) as given
        return cls(data["name"], encoder_kind=kind, encoder=nested, **common, **flat)

    @classmethod
    def normalize_dict(cls, data: Any) -> Any:
        """``data`` (a config dict of either layout) in :meth:`to_dict`'s layout, for comparing
        configs stored by older versions; ``data`` itself when it is not a valid config."""
        try:
            return cls.from_dict(data).to_dict()
        except (TypeError, ValueError):
            return data


_COMMON_FIELDS = {f.name: f for f in dataclasses.fields(ModelConfig) if f.name not in ("name", "encoder_kind", "encoder")}


def _other_flat_fields() -> dict[str, tuple[type, str]]:
    """old flat field name -> (config class, field) over every registered family"""
    out: dict[str, tuple[type, str]] = {}
    for kind in encoders.encoder_kinds():
        fam = get_encoder(kind)
        for old, new in fam.legacy_names.items():
            out.setdefault(old, (fam.config_cls, new))
    return out


_REGISTRY: dict[str, ModelConfig] = {}


def register(config: ModelConfig) -> ModelConfig:
    """Add a named variant (``config.name``); a name already taken is refused."""
    if not isinstance(config, ModelConfig):
        raise TypeError(f"register: expected a ModelConfig, got {type(config).__name__}")
    if config.name in _REGISTRY:
        raise ValueError(f"model {config.name!r} is already registered")
    _REGISTRY[config.name] = config
    return config


def list_models() -> list[str]:
    encoders.load_builtin_families()
    return sorted(_REGISTRY)


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """The registered config for ``name``, with optional overrides: common fields (image_size=512)
    and the encoder family's fields, by name or by the old flat name (``rep_dims=...``)."""
    if name not in _REGISTRY:
        encoders.load_builtin_families()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    cfg = _REGISTRY[name]
    if not overrides:
        return cfg
    if "encoder_kind" in overrides and "encoder" not in overrides and overrides["encoder_kind"] != cfg.encoder_kind:
        overrides = {**overrides, "encoder": None}  # another family: its defaults
    return dataclasses.replace(cfg, **overrides)


def build_image_encoder(cfg: ModelConfig) -> nn.Module:
    """The image encoder of ``cfg``, built by its family."""
    return cfg.family.build(cfg.encoder, cfg.image_size, cfg.prompt_embed_dim)


def build_sam(cfg: ModelConfig, image_encoder: nn.Module | None = None) -> Sam:
    """Build a :class:`Sam` from a config; pass ``image_encoder`` to swap in a student. Without one,
    the model's ``config`` attribute is ``cfg``."""
    grid = cfg.embedding_size
    model = Sam(
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
    if image_encoder is None:
        model.config = cfg  # type: ignore[attr-defined]
    return model


WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def bundled_weights_path(cfg: ModelConfig) -> Path | None:
    """Path of the weights shipped with the package for this variant, or None."""
    return WEIGHTS_DIR / cfg.bundled_weights if cfg.bundled_weights else None


def _load_weights(model: nn.Module, cfg: ModelConfig, sd: Mapping[str, Any], source: str) -> None:
    """Strictly load ``sd`` (after the family's key filter for foreign layouts) into ``model``."""
    fam = cfg.family
    if fam.filter_keys is not None:
        sd = fam.filter_keys(dict(sd))
    check_state_dict(model, sd, source)
    model.load_state_dict(sd, strict=True)


def create_model(
    name: str, checkpoint: str | Path | None = None, *, pretrained: bool = True, **overrides: Any
) -> Sam:
    """Build the registered variant ``name`` in eval mode; load ``checkpoint`` strictly if given.

    ``checkpoint`` may be an official ``.pth`` (segment_anything / MobileSAM layout), a
    ``.safetensors`` written by :func:`sam_edge.checkpoint.save_model`, a torch file holding
    a dict wrapped under ``model`` / ``state_dict``, or a layout the encoder family's key filter
    recognises. Variants that ship weights in the package (``sam_demo_teacher``) load them when no
    checkpoint is given, unless ``pretrained=False``. Otherwise the weights are random (seed with
    ``torch.manual_seed``). ``overrides`` as for :func:`get_config`.
    """
    cfg = get_config(name, **overrides)
    model = build_sam(cfg)
    model.config = cfg  # type: ignore[attr-defined]
    bundled = bundled_weights_path(cfg)
    if checkpoint is None and pretrained and bundled is not None:
        checkpoint = bundled
    if checkpoint is not None:
        sd, _ = read_state_dict(checkpoint)
        _load_weights(model, cfg, sd, f"checkpoint {checkpoint} (loading into {name!r})")
    return model.eval()


def load_model(path: str | Path) -> Sam:
    """Build a :class:`Sam` from a safetensors file written by :func:`sam_edge.checkpoint.save_model`
    (the config travels in its metadata, either layout) and load its weights."""
    sd, cfg = read_state_dict(path)
    if cfg is None:
        raise CheckpointError(
            f"checkpoint {path}: carries no sam_edge model config; use "
            "sam_edge.create_model(NAME, checkpoint=PATH) with the matching model name instead"
        )
    try:
        config = ModelConfig.from_dict(cfg)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path}: its model config (metadata {CONFIG_METADATA_KEY!r}) is not "
                              f"valid: {exc}") from None
    model = build_sam(config)
    model.config = config  # type: ignore[attr-defined]
    _load_weights(model, config, sd, f"checkpoint {path}")
    return model.eval()


def load_model_spec(spec: str | Path, checkpoint: str | Path | None = None) -> Sam:
    """A registered model name (+ optional ``checkpoint``) or the path of a ``.safetensors``
    written by :func:`sam_edge.checkpoint.save_model` (config in its metadata)."""
    p = Path(spec)
    if p.suffix == ".safetensors" or p.is_file():
        if checkpoint:
            raise ValueError(f"{spec} is a model file: give either it or a name + checkpoint, not both")
        return load_model(p)
    return create_model(str(spec), checkpoint=checkpoint)

