"""Checkpoint loading and saving.

Loading accepts: the official ``segment_anything`` ``.pth`` layout (and MobileSAM's
``mobile_sam.pt``, same key names), our ``.safetensors`` (config in its metadata), and torch
files holding a dict wrapped under ``model`` / ``state_dict`` (training checkpoints). torch files
are read with ``weights_only=True``: a pickle that needs code execution is refused. Loading is
strict: missing, unexpected and mis-shaped keys are named in the error.

This module is state-dict and file I/O only: building a model from a name or a file
(``load_model``, ``load_model_spec``) is :mod:`sam_edge.registry`'s job.
"""
from __future__ import annotations

from sam_edge.errors import UserError

import json
import pickle
import re
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from .utils.io import atomic_path, write_json_atomic

CONFIG_METADATA_KEY = "sam_edge_config"


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be read, or does not fit the model it is loaded into."""


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    # Training checkpoints wrap the weights; DDP prefixes them with "module.".
    for _ in range(2):
        if isinstance(obj, Mapping):
            for key in ("model", "state_dict"):
                if key in obj and isinstance(obj[key], Mapping):
                    obj = obj[key]
                    break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"checkpoint {path}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint {path}: entries that are not tensors: {bad[:5]}")
    sd = dict(obj)
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Read a checkpoint file -> (state dict, stored model config or None)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path}: is a folder, expected a checkpoint file (.safetensors, .pth, .pt)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
            sd = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {path}: not a readable safetensors file ({exc})") from exc
        config = _metadata_config(meta, path)
        return _check_finite(sd, path), config
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()[0] if str(exc).strip() else "refused"
        raise CheckpointError(
            f"checkpoint {path}: refused, it is a pickle that needs code execution to load "
            f"(torch.load weights_only=True rejected it: {first}). "
            "Re-save it as a plain state dict or as safetensors."
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else f"{type(exc).__name__}: empty or cut short"
        raise CheckpointError(f"checkpoint {path}: not a readable torch file ({why})") from exc
    config = obj.get("config") if isinstance(obj, Mapping) and isinstance(obj.get("config"), Mapping) else None
    return _check_finite(_unwrap(obj, path), path), config


def _metadata_config(meta: Mapping[str, str], path: Path) -> dict | None:
    """The model config stored in a safetensors file's metadata (a JSON object), or None."""
    if CONFIG_METADATA_KEY not in meta:
        return None
    try:
        config = json.loads(meta[CONFIG_METADATA_KEY])
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {path}: metadata {CONFIG_METADATA_KEY!r} is not JSON ({exc}); "
                              "expected the model config written by sam_edge.save_model") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint {path}: metadata {CONFIG_METADATA_KEY!r} is a JSON "
                              f"{type(config).__name__}, expected an object (the model config)")
    return config


def _check_finite(sd: Mapping[str, torch.Tensor], path: Path) -> Mapping[str, torch.Tensor]:
    """Refuse weights holding NaN or inf: such a model answers NaN scores and empty masks
    without an error."""
    bad = [k for k, v in sd.items() if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" ... and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise CheckpointError(f"checkpoint {path}: non-finite weights (NaN or inf) in {', '.join(bad[:5])}{more}")
    return sd


def describe_state_dict(sd: Mapping[str, torch.Tensor]) -> str:
    """Guess the architecture of a SAM-family state dict from tell-tale keys."""
    if "image_encoder.patch_embed.seq.0.c.weight" in sd:
        dims = sd["image_encoder.patch_embed.seq.2.c.weight"].shape[0] if "image_encoder.patch_embed.seq.2.c.weight" in sd else "?"
        return f"TinyViT image encoder (MobileSAM layout, first stage width {dims})"
    if "image_encoder.stages.0.0.token_mixer.dw3.conv.weight" in sd:
        width = sd["image_encoder.stages.0.0.token_mixer.dw3.conv.weight"].shape[0]
        return f"RepViT image encoder (first stage width {width})"
    if "image_encoder.patch_embed.proj.weight" in sd:
        embed = sd["image_encoder.patch_embed.proj.weight"].shape[0]
        depth = len({m.group(1) for k in sd if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))})
        names = {(768, 12): "ViT-B", (1024, 24): "ViT-L", (1280, 32): "ViT-H"}
        name = names.get((embed, depth), "ViT")
        if "image_encoder.patch_embed.stem.0.weight" in sd:
            name += " with conv stem"
        pos = sd.get("image_encoder.pos_embed")
        size = f", {pos.shape[1] * 16} px input" if pos is not None else ""
        return f"{name} image encoder (embed_dim {embed}, depth {depth}{size})"
    if any(k.startswith("image_encoder.") for k in sd):
        return "an unrecognised image encoder"
    return "no image encoder weights (keys do not start with 'image_encoder.')"


def check_state_dict(model: nn.Module, sd: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` naming missing, unexpected and mis-shaped keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in sd and tuple(sd[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or shapes):
        return

    def _fmt(label: str, items: list[str]) -> str:
        more = f" ... and {len(items) - 8} more" if len(items) > 8 else ""
        return f"{label} ({len(items)}): {', '.join(items[:8])}{more}"

    lines = [f"{source} does not fit the model. The checkpoint holds {describe_state_dict(sd)}; "
             f"the model expects {describe_state_dict(expected)}."]
    if missing:
        lines.append(_fmt("missing keys", missing))
    if unexpected:
        lines.append(_fmt("unexpected keys", unexpected))
    if shapes:
        lines.append(_fmt("mis-shaped keys", shapes))
    raise CheckpointError("; ".join(lines))  # one line: the CLI prints it as its error


def load_checkpoint_into(model: nn.Module, path: str | Path, model_name: str | None = None,
                         key_filter: Callable[[dict], Mapping[str, torch.Tensor]] | None = None) -> nn.Module:
    """Strictly load the weights at ``path`` into ``model`` (in place) and return it; ``key_filter``
    (e.g. an encoder family's ``filter_keys``) may first rewrite a foreign layout's key names."""
    sd, _ = read_state_dict(path)
    if key_filter is not None:
        sd = key_filter(dict(sd))
    source = f"checkpoint {path}" + (f" (loading into {model_name!r})" if model_name else "")
    check_state_dict(model, sd, source)
    model.load_state_dict(sd, strict=True)
    return model


def save_model(model: nn.Module, path: str | Path, config: object | None = None) -> Path:
    """Write ``model``'s weights as safetensors (config in the metadata) and ``<stem>.json``
    beside it holding the config. Both writes are atomic."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"save_model: path must end in .safetensors, got {path}")
    config = config if config is not None else getattr(model, "config", None)
    cfg_dict = config.to_dict() if hasattr(config, "to_dict") else config
    meta = {CONFIG_METADATA_KEY: json.dumps(cfg_dict)} if cfg_dict is not None else {}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    if cfg_dict is not None:
        write_json_atomic(path.with_suffix(".json"), cfg_dict)
    return path
