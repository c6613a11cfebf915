"""Strict dataclass construction from dicts (YAML/JSON configs): unknown keys are an error,
never silently dropped."""
from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def dataclass_from_dict(cls: type[T], data: dict[str, Any], what: str) -> T:
    """``cls(**data)`` after checking that every key is a field of ``cls``; lists become tuples
    (YAML/JSON have no tuples). ``what`` names the config in the error message."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} keys {unknown}; known keys: {sorted(known)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
