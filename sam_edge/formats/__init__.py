"""The export-format registry: one :class:`FormatSpec` per format holds every fact about it
(artifact suffix, precisions and their user aliases, toolchain to export, packages to run, the
decoder's dynamic axes and point limit, its exporter and its runtime backend).

Built-in formats live one per module, ``sam_edge.formats.<name>``, each exposing ``SPEC``; they are
listed once in :data:`BUILTIN_FORMATS` and imported on the first registry access (this module
imports no toolchain). More formats plug in with :func:`register_format`::

    register_format(FormatSpec(name="torchscript", suffix=".pt", precisions=("fp32",),
                               convert="mypkg.ts:export_torchscript", backend="mypkg.ts:TorchScriptBackend"))

``convert`` is ``(model, out_dir, precisions, **kw) -> manifest dict`` (keywords: calib_images,
verify_images, normalize_inside, mask_outputs, accept_failures); ``backend`` returns a runtime
backend (:class:`sam_edge.runtime.Backend`). Both may be a callable or a ``"module:attr"`` string
imported on first use. The spec records the module that registered it (``module``), so that a
fresh process (the bench runner, an isolated export) can import it and see the format too.
"""
from __future__ import annotations

from sam_edge.errors import UserError

import dataclasses
import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence, Union

#: The built-in formats, in their default order: ``sam_edge.formats.<name>.SPEC`` each.
BUILTIN_FORMATS = ("onnx", "executorch", "tflite", "coreml")

#: The decoder's dynamic point axis, as most formats export it.
POINTS_AXES = {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}}

Ref = Union[Callable[..., Any], str]


class FormatError(UserError, ValueError):
    """An unknown format or precision, or a bad registration (one line, naming the input)."""


@dataclass(frozen=True)
class FormatSpec:
    name: str
    suffix: str  # artifact file suffix, e.g. ".onnx" (encoder_<precision><suffix>)
    precisions: tuple[str, ...]
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # user word -> precisions
    toolchain: tuple[str, ...] = ()  # import names needed to export
    runtime_packages: tuple[str, ...] = ()  # import names needed to run an artifact
    decoder_dynamic_axes: Mapping[str, Mapping[int, str]] = field(default_factory=dict)
    max_points: Optional[int] = None  # decoder's point limit; None: sam_edge.predictor.MAX_POINTS
    max_points_reason: str = ""  # why a format differs from the default
    convert: Optional[Ref] = None
    backend: Optional[Ref] = None
    platforms: Optional[tuple[str, ...]] = None  # sys.platform values its runtime runs on; None: any
    description: str = ""  # one line for help texts
    # the module that registered it (filled by register_format), or "module:function" registering
    # it when called: what a fresh process imports (:func:`load_registrations`) to see this format
    module: Optional[str] = None

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum() or self.name != self.name.lower():
            raise FormatError(f"format name {self.name!r}: expected a lower-case identifier")
        if not self.precisions:
            raise FormatError(f"format {self.name!r}: needs at least one precision")
        object.__setattr__(self, "precisions", tuple(self.precisions))
        object.__setattr__(self, "aliases", {k: tuple(v) for k, v in dict(self.aliases).items()})
        for word, names in self.aliases.items():
            bad = [p for p in names if p not in self.precisions]
            if bad:
                raise FormatError(f"format {self.name!r}: alias {word!r} names unknown precision(s) {bad}")
        if self.max_points is None:
            from sam_edge.predictor import MAX_POINTS

            object.__setattr__(self, "max_points", MAX_POINTS)

    @property
    def runs_here(self) -> bool:
        """Whether this platform can run its artifacts (Core ML: macOS only)."""
        return self.platforms is None or sys.platform in self.platforms

    def words(self) -> tuple[str, ...]:
        """Every precision word this format takes: its precisions and its aliases."""
        return tuple(dict.fromkeys((*self.precisions, *self.aliases)))

    def expand(self, requested: Sequence[str]) -> list[str]:
        """User precisions -> this format's, in order, deduplicated; one this format does not take
        raises :class:`FormatError` naming it and what the format takes."""
        taken, skipped = precisions_for(self, requested)
        if skipped:
            raise FormatError(f"precision {skipped[0]!r} is not supported by format {self.name!r}; "
                              f"expected one of {list(self.words())}")
        return taken

    def load_convert(self) -> Callable[..., dict]:
        return _resolve(self.convert, f"format {self.name!r} has no exporter (convert)")

    def load_backend(self) -> Callable[..., Any]:
        return _resolve(self.backend, f"format {self.name!r} has no runtime backend")


def _resolve(ref: Optional[Ref], missing: str) -> Callable[..., Any]:
    if ref is None:
        raise FormatError(missing)
    if isinstance(ref, str):
        module, _, attr = ref.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj
    return ref


_REGISTRY: dict[str, FormatSpec] = {}
_builtins_loaded = False


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for name in BUILTIN_FORMATS:
        if name not in _REGISTRY:
            spec = importlib.import_module(f"{__name__}.{name}").SPEC
            _REGISTRY[name] = dataclasses.replace(spec, module=spec.module or f"{__name__}.{name}")
    # built-ins first, in BUILTIN_FORMATS order, then formats registered before this ran
    order = [n for n in BUILTIN_FORMATS if n in _REGISTRY] + [n for n in _REGISTRY if n not in BUILTIN_FORMATS]
    _REGISTRY.update({n: _REGISTRY.pop(n) for n in order})


def register_format(spec: FormatSpec, *, replace: bool = False) -> FormatSpec:
    """Add ``spec`` to the registry (``replace=True`` to replace a format of the same name) and
    return it, with ``module`` set to the caller's module when not given."""
    _load_builtins()
    if spec.name in _REGISTRY and not replace:
        raise FormatError(f"format {spec.name!r} is already registered (by {_REGISTRY[spec.name].module}); "
                          f"pass replace=True to replace it")
    if spec.module is None:
        caller = sys._getframe(1).f_globals.get("__name__")
        spec = dataclasses.replace(spec, module=caller if caller != "__main__" else None)
    _REGISTRY[spec.name] = spec
    return spec


def load_registrations(refs: Sequence[str]) -> None:
    """Import each ``module`` (it registers formats when imported) or ``module:function`` (called
    after the import); what a spec's ``module`` says. Used by fresh processes (bench runner,
    isolated exports) to see formats registered outside :data:`BUILTIN_FORMATS`."""
    for ref in refs:
        module, _, func = ref.partition(":")
        mod = importlib.import_module(module)
        if func:
            getattr(mod, func)()


def registration_refs(formats: Sequence[str]) -> list[str]:
    """The ``module`` refs of the given registered formats that are not built-ins (unknown names
    are skipped): what a fresh process must load to see them."""
    out: list[str] = []
    for name in formats:
        spec = _REGISTRY.get(name)
        if spec is not None and name not in BUILTIN_FORMATS and spec.module and spec.module not in out:
            out.append(spec.module)
    return out


def unregister_format(name: str) -> None:
    """Remove a registered format (tests; a built-in comes back only by registering it again)."""
    _load_builtins()
    _REGISTRY.pop(name, None)


def get_format(name: str | FormatSpec) -> FormatSpec:
    if isinstance(name, FormatSpec):
        return name
    _load_builtins()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise FormatError(f"unknown format {name!r}; known formats: {', '.join(_REGISTRY)}") from None


def format_names() -> list[str]:
    """Registered format names, built-ins first (without importing the built-in modules)."""
    if _builtins_loaded:
        return list(_REGISTRY)
    return list(BUILTIN_FORMATS) + [n for n in _REGISTRY if n not in BUILTIN_FORMATS]


def all_formats() -> list[FormatSpec]:
    _load_builtins()
    return list(_REGISTRY.values())


def runnable_formats() -> list[str]:
    """Formats whose artifacts can run on this platform (Core ML: macOS only)."""
    return [s.name for s in all_formats() if s.runs_here]


def user_precisions() -> tuple[str, ...]:
    """Every precision word some format takes (its precisions and aliases): fp32, fp16, then the
    others sorted (so ``int8`` / ``palettize`` come before their variants)."""
    words = {w for s in all_formats() for w in s.words()}
    first = [w for w in ("fp32", "fp16") if w in words]
    return tuple(first + sorted(words - set(first)))


def precisions_for(fmt: str | FormatSpec, requested: Sequence[str]) -> tuple[list[str], list[str]]:
    """(this format's precisions for the requested words, aliases expanded, deduplicated; the
    requested words it does not take)."""
    spec = get_format(fmt)
    taken: list[str] = []
    skipped: list[str] = []
    for word in requested:
        names = [p for p in spec.aliases.get(word, (word,)) if p in spec.precisions]
        if not names:
            skipped.append(word)
        taken.extend(p for p in names if p not in taken)
    return taken, skipped


def parse_list(text: str | Sequence[str], what: str, allowed: Sequence[str]) -> list[str]:
    """``"a,b"`` (or a sequence) -> deduplicated items, each one of ``allowed``; anything else is a
    one-line :class:`FormatError` naming ``what`` and the input."""
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise FormatError(f"{what}: expected a comma-separated list of {list(allowed)}, got {text!r}"
                          + (f" (unknown: {', '.join(bad)})" if bad else ""))
    return list(dict.fromkeys(items))


def parse_formats(text: str | Sequence[str], what: str = "formats") -> list[str]:
    return parse_list(text, what, format_names())


def parse_precisions(text: str | Sequence[str], what: str = "precision") -> list[str]:
    return parse_list(text, what, user_precisions())


def missing_toolchain(fmt: str | FormatSpec, runtime: bool = False) -> list[str]:
    """The import names of ``fmt``'s toolchain (``runtime``: its runtime packages) that are not
    installed here."""
    spec = get_format(fmt)
    mods = spec.runtime_packages if runtime else spec.toolchain
    out = []
    for m in mods:
        try:
            found = importlib.util.find_spec(m) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(m)
    return out


def installed_formats(requested: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """(the requested formats whose toolchain is installed, format -> "not installed: ..." for the
    others)."""
    ok, missing = [], {}
    for fmt in requested:
        lacking = missing_toolchain(fmt)
        if lacking:
            missing[fmt] = f"not installed: {', '.join(lacking)}"
        else:
            ok.append(fmt)
    return ok, missing


def formats_help() -> str:
    """``onnx, executorch, tflite, coreml`` (the registry's formats, for help texts)."""
    return ", ".join(format_names())


def precisions_table() -> str:
    """One line per format: name, precisions, aliases, runtime (for help texts and docs)."""
    rows = []
    for s in all_formats():
        aliases = "; ".join(f"{k} = {'+'.join(v)}" for k, v in s.aliases.items())
        rows.append(f"  {s.name:11s} {', '.join(s.precisions)}" + (f" ({aliases})" if aliases else "")
                    + (f"; {s.description}" if s.description else ""))
    return "\n".join(rows)


__all__ = [
    "BUILTIN_FORMATS", "FormatError", "FormatSpec", "POINTS_AXES", "all_formats", "format_names", "formats_help",
    "get_format", "installed_formats", "load_registrations", "registration_refs", "missing_toolchain", "parse_formats", "parse_list", "parse_precisions",
    "precisions_for", "precisions_table", "register_format", "runnable_formats", "unregister_format",
    "user_precisions",
]
