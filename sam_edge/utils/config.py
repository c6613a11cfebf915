"""Config parsing shared by the distillation, pretraining and pipeline configs (and the model
registry): strict dataclass construction from dicts (unknown keys and wrong types are errors
naming the key path), ``KEY=VALUE`` overrides, safe YAML reading. No torch here: the registry
imports this module at ``import sam_edge``."""
from __future__ import annotations

from sam_edge.errors import UserError

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar, Union

T = TypeVar("T")


def dataclass_from_dict(cls: type[T], data: dict[str, Any], what: str) -> T:
    """``cls(**data)`` after checking that every key is a field of ``cls``; lists become tuples
    (YAML/JSON have no tuples). ``what`` names the config in the error message."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} keys {unknown}; known keys: {sorted(known)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


class ConfigError(UserError, ValueError):
    """A config that cannot be used; the message starts with the key path (``distill.stage1.lr``,
    ``pretrain.amp``, ``bench.runs``) or the file's name."""


# -- typed, strict sections -----------------------------------------------------------------------
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
        return parse_section(tp, {} if value is None else value, path)
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


def parse_section(cls: type, data: Any, path: str) -> Any:
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


# -- overrides ----------------------------------------------------------------------------------
def apply_override(data: dict[str, Any], item: str, root: str) -> None:
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


# -- YAML ---------------------------------------------------------------------------------------
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
