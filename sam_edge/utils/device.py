"""One place that turns a ``--device`` value into a ``torch.device``, refusing what this machine
cannot run (CUDA or MPS not available, an unknown name) with an error naming the option."""
from __future__ import annotations

from sam_edge.errors import UserError


class DeviceUnavailable(UserError, ValueError):
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


#: the ``amp`` / ``--amp`` values: ``auto`` (bf16 on CUDA, off elsewhere), ``bf16``, ``fp16``, ``off``
AMP_CHOICES = ("auto", "bf16", "fp16", "off")


def resolve_amp(device, amp: str = "auto", option: str = "amp") -> str:
    """The autocast a device runs under for ``amp``: ``"bf16"``, ``"fp16"`` or ``"off"``.
    ``auto`` is bf16 on CUDA and off elsewhere (measured: bf16 autocast is slower on this
    project's CPUs). Raises ``ValueError`` naming ``option`` for a value not in
    :data:`AMP_CHOICES`."""
    if amp not in AMP_CHOICES:
        raise ValueError(f"{option} must be one of {AMP_CHOICES}, got {amp!r}")
    if amp == "auto":
        return "bf16" if _device_type(device) == "cuda" else "off"
    return amp


def amp_dtype(device, amp: str = "auto"):
    """:func:`resolve_amp` as a ``torch.dtype`` (``None`` = no autocast)."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(resolve_amp(device, amp))


def autocast_for(device, amp=None):
    """A ``torch.autocast`` context for ``device`` (a ``torch.device`` or its name): ``amp`` is
    a resolved dtype (``torch.bfloat16`` / ``torch.float16``; ``None`` = disabled) or an
    :data:`AMP_CHOICES` value (``auto`` resolved for the device, see :func:`resolve_amp`)."""
    import torch

    if isinstance(amp, str):
        amp = amp_dtype(device, amp)
    if amp is None:
        return torch.autocast(_device_type(device), enabled=False)
    return torch.autocast(_device_type(device), dtype=amp)


def _device_type(device) -> str:
    return device.type if hasattr(device, "type") else str(device).split(":", 1)[0]
