"""Seeds derived from integers, shared by the data pipeline and the training engine."""
from __future__ import annotations


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (stable across runs and platforms)."""
    import numpy as np

    s = np.random.SeedSequence([int(v) & 0xFFFFFFFF for v in values] + [len(values)])
    a, b = s.generate_state(2, np.uint32)
    return ((int(a) << 32) | int(b)) & (2**63 - 1)
