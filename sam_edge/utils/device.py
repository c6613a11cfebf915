"""One place that turns a ``--device`` value into a ``torch.device``, refusing what this machine
cannot run (CUDA or MPS not available, an unknown name) with an error naming the option."""
from __future__ import annotations


class DeviceUnavailable(ValueError):
    """A ``--device`` value this machine cannot run."""


def resolve_device(device: str = "auto", local_rank: int = 0, option: str = "--device"):
    """``auto`` -> CUDA when available, else CPU; ``cuda`` -> ``cuda:LOCAL_RANK``; ``mps`` only
    where PyTorch has MPS. Raises :class:`DeviceUnavailable` (a ``ValueError``)."""
    import torch

    name = str(device).strip()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name if name != "cuda" else f"cuda:{local_rank}")
    except (RuntimeError, ValueError):
        raise DeviceUnavailable(f"{option} {device!r}: unknown device; expected cpu, cuda, cuda:N, mps "
                                "or auto") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this PyTorch has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise DeviceUnavailable(f"{option} {device!r}: CUDA is not available ({why}); use {option}=cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceUnavailable(f"{option} {device!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceUnavailable(f"{option} {device!r}: MPS is not available on this machine; use {option}=cpu")
    elif dev.type != "cpu":
        raise DeviceUnavailable(f"{option} {device!r}: expected cpu, cuda, cuda:N, mps or auto")
    return dev
