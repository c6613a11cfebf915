"""Deterministic train / validation split by hashing each id.

An id goes to validation when ``sha1(f"{seed}:{id}")`` read as a fraction in [0, 1) is below
``val_fraction``: the decision depends on the id alone, so adding samples to a dataset never
moves an existing one between the sets.
"""
from __future__ import annotations

import hashlib
import re
from typing import Hashable, Iterable

__all__ = ["id_fraction", "train_val_split"]


def id_fraction(sample_id: Hashable, seed: int = 0) -> float:
    """The id's position in [0, 1): the first 64 bits of sha1(f"{seed}:{id}")."""
    digest = hashlib.sha1(f"{seed}:{sample_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _natural_key(value: Hashable) -> tuple:
    text = str(value)
    return tuple((0, int(tok), "") if tok.isdigit() else (1, 0, tok) for tok in re.split(r"(\d+)", text) if tok)


def train_val_split(ids: Iterable[Hashable], val_fraction: float = 0.1, seed: int = 0) -> tuple[list, list]:
    """Split ``ids`` into (train_ids, val_ids), each sorted in natural order (``sa_2`` before
    ``sa_10``); duplicates are kept once. ``val_fraction`` in [0, 1]."""
    if not 0.0 <= float(val_fraction) <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    unique = list(dict.fromkeys(ids))
    train, val = [], []
    for sample_id in unique:
        (val if id_fraction(sample_id, seed) < val_fraction else train).append(sample_id)
    return sorted(train, key=_natural_key), sorted(val, key=_natural_key)
