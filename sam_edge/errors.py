"""The one base class of errors caused by what a user gave us (a file, an option, a config key,
a device): :class:`UserError`.

The CLI (:mod:`sam_edge.cli`) prints such an error as one line naming the input and exits 2,
without a traceback; any other exception is a bug and keeps its traceback. Each subclass also
derives from the built-in type it always had (``ValueError``, ``RuntimeError``...), so code that
catches those keeps working.
"""
from __future__ import annotations


class UserError(Exception):
    """An input the user can fix: the message names it and says what was expected."""
