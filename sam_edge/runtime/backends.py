"""Artifact runtimes: the :class:`Backend` / :class:`Session` protocol and :func:`get_backend`,
which resolves a manifest's ``format`` through the format registry (:mod:`sam_edge.formats`:
each format's module holds its backend class).

A backend turns a file into a :class:`Session` whose ``run(inputs)`` maps a dict of named numpy
arrays to a dict of named numpy outputs. Runtime libraries (onnxruntime, ...) are imported inside
``load``, never at import time. More formats plug in with
:func:`sam_edge.formats.register_format` (its ``backend`` field).
"""
from __future__ import annotations

from sam_edge.errors import UserError

from pathlib import Path
from typing import Mapping, Protocol

import numpy as np


class BackendUnavailable(UserError, RuntimeError):
    """The runtime library for an artifact format is not installed, or the format is unknown."""


class Session(Protocol):
    input_names: list[str]
    output_names: list[str]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class Backend(Protocol):
    name: str

    def load(self, path: Path) -> Session: ...

    def versions(self) -> dict[str, str]: ...


def get_backend(fmt: str) -> Backend:
    """A fresh backend instance for artifact format ``fmt`` (from its :class:`FormatSpec`)."""
    from sam_edge.formats import FormatError, format_names, get_format

    try:
        spec = get_format(fmt)
    except FormatError:
        raise BackendUnavailable(f"no runtime backend registered for artifact format {fmt!r}; known formats: "
                                 f"{', '.join(format_names())}") from None
    try:
        factory = spec.load_backend()
    except FormatError as exc:
        raise BackendUnavailable(str(exc)) from None
    return factory()
