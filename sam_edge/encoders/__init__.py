"""Image-encoder families: each one registers itself from its own file.

A family is a kind of image encoder (``"vit"``, ``"tiny_vit"``, ``"repvit"``, ...): a frozen config
dataclass holding only that family's fields, a builder ``(config, image_size, out_chans) -> nn.Module``
returning a ``B x out_chans x image_size/16 x image_size/16`` embedding, and optionally a
``fuse(model)`` for re-parameterisation before export, a checkpoint key filter for foreign
checkpoint layouts, and a parameter estimate (used to refuse absurd configs before building).

Adding a built-in family is one file + one line: write ``sam_edge/encoders/<kind>.py`` calling
:func:`register_encoder` (and ``sam_edge.registry.register(ModelConfig(...))`` for its named
variants), then add ``"<kind>"`` to :data:`BUILTIN_FAMILIES`. The built-in files are imported on
first use, so ``import sam_edge`` stays cheap and a family file may import :mod:`sam_edge.registry`.
A family defined elsewhere (a plugin, a test) just calls :func:`register_encoder` before use.

The ``nn.Module`` classes themselves live in :mod:`sam_edge.modeling` (pure PyTorch).
"""
from __future__ import annotations

import dataclasses
import importlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from torch import nn

__all__ = [
    "BUILTIN_FAMILIES",
    "EncoderFamily",
    "MAX_DIM",
    "check_fields",
    "check_value",
    "encoder_kinds",
    "family_of",
    "field_check",
    "fuse_model",
    "get_encoder",
    "load_builtin_families",
    "register_encoder",
]

#: built-in families, by kind: ``sam_edge/encoders/<kind>.py``, imported on first use
BUILTIN_FAMILIES: tuple[str, ...] = ("vit", "tiny_vit", "repvit")

#: bound of every integer size of a config read from a file (a checkpoint's metadata): sizes
#: beyond it would exhaust memory or fail deep inside PyTorch instead of naming the bad field
MAX_DIM = 16384

_SUPPORTED_TYPES = ("str", "bool", "int", "float", "tuple[int, ...]", "tuple[float, ...]")


@dataclass(frozen=True)
class EncoderFamily:
    """One registered image-encoder family (see :func:`register_encoder`)."""

    kind: str
    config_cls: type
    build: Callable[[Any, int, int], nn.Module]
    fuse: Callable[[nn.Module], Any] | None = None
    filter_keys: Callable[[dict], dict] | None = None
    approx_params: Callable[[Any], int] | None = None
    #: field names of the old flat ``ModelConfig`` layout -> this family's field names
    legacy_names: Mapping[str, str] = field(default_factory=dict)
    description: str = ""

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self.config_cls))

    def field_for(self, key: str) -> str | None:
        """This family's field taking ``key`` (a field name or an old flat name), or None."""
        if key in self.legacy_names:
            return self.legacy_names[key]
        return key if key in self.field_names else None

    def make_config(self, values: Mapping[str, Any] | None = None) -> Any:
        """The family's config from ``{field: value}`` (JSON lists become tuples)."""
        values = dict(values or {})
        unknown = sorted(k for k in values if k not in self.field_names)
        if unknown:
            raise TypeError(f"encoder {self.kind!r} has no field(s) {unknown}; its fields: {list(self.field_names)}")
        return self.config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


_FAMILIES: dict[str, EncoderFamily] = {}


def _type_name(t: Any) -> str:
    if isinstance(t, str):
        return t.replace("Tuple", "tuple")
    return t.__name__ if isinstance(t, type) else str(t)


def register_encoder(
    kind: str,
    config_cls: type,
    build: Callable[[Any, int, int], nn.Module],
    *,
    fuse: Callable[[nn.Module], Any] | None = None,
    filter_keys: Callable[[dict], dict] | None = None,
    approx_params: Callable[[Any], int] | None = None,
    legacy_names: Mapping[str, str] | None = None,
    description: str = "",
) -> EncoderFamily:
    """Register an image-encoder family under ``kind``.

    * ``config_cls``: a frozen dataclass holding only this family's fields, each with a default
      and one of the types str, bool, int, float, tuple[int, ...], tuple[float, ...]. Call
      :func:`check_fields` in its ``__post_init__`` (types and bounds, errors naming the field);
      an integer field may set ``metadata={"min": 0}`` to allow 0 (default minimum 1).
    * ``build(config, image_size, out_chans) -> nn.Module``: maps ``B x 3 x S x S`` to
      ``B x out_chans x S/16 x S/16``.
    * ``fuse(model)``: optional, re-parameterises ``model`` in place for inference (e.g. BN folding);
      called by :func:`fuse_model`; must leave modules it does not know alone and be idempotent.
    * ``filter_keys(state_dict) -> state_dict``: optional, rewrites a foreign checkpoint layout
      (recognised by a tell-tale key) into this package's key names; must return other state dicts
      unchanged.
    * ``approx_params(config) -> int``: optional rough encoder parameter count.
    * ``legacy_names``: old flat ``ModelConfig`` field names that this family's fields answer to.
    """
    if not isinstance(kind, str) or not kind.isidentifier():
        raise ValueError(f"encoder kind must be an identifier string, got {kind!r}")
    if kind in _FAMILIES:
        raise ValueError(f"encoder kind {kind!r} is already registered")
    if not (dataclasses.is_dataclass(config_cls) and isinstance(config_cls, type)):
        raise TypeError(f"encoder {kind!r}: config_cls must be a dataclass type, got {config_cls!r}")
    if not config_cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise TypeError(f"encoder {kind!r}: config_cls {config_cls.__name__} must be a frozen dataclass")
    names = set()
    for f in dataclasses.fields(config_cls):
        if _type_name(f.type) not in _SUPPORTED_TYPES:
            raise TypeError(f"encoder {kind!r}: field {f.name} has type {_type_name(f.type)!r}; "
                            f"supported: {', '.join(_SUPPORTED_TYPES)}")
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            raise TypeError(f"encoder {kind!r}: field {f.name} needs a default")
        names.add(f.name)
    legacy = dict(legacy_names or {})
    bad = sorted(v for v in legacy.values() if v not in names)
    if bad:
        raise ValueError(f"encoder {kind!r}: legacy_names map to unknown fields {bad}")
    for name, fn in (("build", build), ("fuse", fuse), ("filter_keys", filter_keys), ("approx_params", approx_params)):
        if fn is not None and not callable(fn):
            raise TypeError(f"encoder {kind!r}: {name} must be callable, got {fn!r}")
    family = EncoderFamily(kind, config_cls, build, fuse, filter_keys, approx_params, legacy, description)
    _FAMILIES[kind] = family
    return family


def _import_builtin(kind: str) -> None:
    importlib.import_module(f"{__name__}.{kind}")


def load_builtin_families() -> None:
    """Import every built-in family file (each registers itself and its named variants)."""
    for kind in BUILTIN_FAMILIES:
        _import_builtin(kind)


def encoder_kinds() -> tuple[str, ...]:
    """Every registered encoder kind (built-ins first, then in registration order)."""
    load_builtin_families()
    return tuple(_FAMILIES)


def get_encoder(kind: str) -> EncoderFamily:
    """The family registered as ``kind`` (a built-in is imported on first use)."""
    if kind not in _FAMILIES and isinstance(kind, str) and kind in BUILTIN_FAMILIES:
        _import_builtin(kind)
    if kind not in _FAMILIES:
        raise ValueError(f"encoder_kind must be one of {encoder_kinds()}, got {kind!r}")
    return _FAMILIES[kind]


def family_of(config: Any) -> EncoderFamily:
    """The family whose config class ``config`` is an instance of."""
    for fam in _FAMILIES.values():
        if type(config) is fam.config_cls:
            return fam
    load_builtin_families()
    for fam in _FAMILIES.values():
        if type(config) is fam.config_cls:
            return fam
    raise TypeError(f"{type(config).__name__} is not the config class of a registered encoder family")


def fuse_model(model: nn.Module) -> nn.Module:
    """Re-parameterise ``model`` in place for inference with its encoder family's ``fuse`` (RepViT:
    BatchNorm folded into the convolutions; ViT and TinyViT: nothing) and return it.

    The family is read from ``model.config.encoder_kind`` (set by ``create_model``, ``build_sam``
    and ``load_model``); a module without a config gets every registered family's ``fuse``."""
    cfg = getattr(model, "config", None)
    kind = getattr(cfg, "encoder_kind", None)
    if isinstance(kind, str):
        families = [get_encoder(kind)]
    else:
        load_builtin_families()
        families = list(_FAMILIES.values())
    for fam in families:
        if fam.fuse is not None:
            fam.fuse(model)
    return model


def check_value(label: str, typ: str, value: Any, lo: int = 1) -> None:
    """Raise ``ValueError`` naming ``label`` unless ``value`` has type ``typ`` (one of the supported
    field types) within the bounds of a model config."""
    if typ == "str":
        ok, want = isinstance(value, str), "a string"
    elif typ == "bool":
        ok, want = isinstance(value, bool), "true or false"
    elif typ == "int":
        ok = isinstance(value, int) and not isinstance(value, bool) and lo <= value <= MAX_DIM
        want = f"an integer in [{lo}, {MAX_DIM}]"
    elif typ == "float":
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
              and 0 < value <= 1000)
        want = "a number in (0, 1000]"
    elif typ.startswith("tuple[int"):
        ok = isinstance(value, (tuple, list)) and 0 < len(value) <= 64 and all(
            isinstance(x, int) and not isinstance(x, bool) and lo <= x <= MAX_DIM for x in value)
        want = f"a non-empty list of integers in [{lo}, {MAX_DIM}]"
    elif typ.startswith("tuple[float"):
        ok = isinstance(value, (tuple, list)) and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in value)
        want = "a list of finite numbers"
    else:
        raise TypeError(f"{label}: unsupported field type {typ!r}")
    if not ok:
        raise ValueError(f"{label} must be {want}, got {value!r}")


def field_check(cls: type, name: str) -> tuple[str, int]:
    """(type name, lower bound) of field ``name`` of dataclass ``cls``."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return _type_name(f.type), int(f.metadata.get("min", 1))


def check_fields(cfg: Any, skip: tuple[str, ...] = ()) -> None:
    """Each field of dataclass ``cfg`` has its declared type (tuples for tuple fields) and sizes are
    positive (or >= the field's ``metadata["min"]``) and bounded; errors name the field."""
    for f in dataclasses.fields(cfg):
        if f.name in skip:
            continue
        v = getattr(cfg, f.name)
        typ = _type_name(f.type)
        check_value(f.name, typ, v, int(f.metadata.get("min", 1)))
        if typ.startswith("tuple") and not isinstance(v, tuple):
            raise ValueError(f"{f.name} must be a tuple, got {v!r}")
