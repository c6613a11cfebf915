"""Layer norms in the ops a delegate takes, for exporters whose delegate has no norm kernel.

ExecuTorch's XNNPACK partitioner takes neither ``aten.native_layer_norm`` nor ``aten.mean`` over
channels (LayerNorm2d), so every norm of SAM's decoder ran in the portable kernels and cut the
graph into ~50 delegated pieces, with copies between them. Written with the means as products
with a constant ``1/C`` vector (a ``linear`` over the last axis, a 1x1 ``conv`` over the channel
axis) the same function (to float rounding: it sums in another order) is all XNNPACK ops:
``linear`` / ``conv``, ``sub``, ``mul``, ``add``, ``rsqrt``. Measured on SAM's 1024-px decoder
(fp32, 2 threads; README "The decoder per click"). Used on float graphs only: in an int8 graph
the quantiser would annotate the mean-by-product as a weight op.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from sam_edge.modeling.common import LayerNorm2d

__all__ = ["ProductLayerNorm", "ProductLayerNorm2d", "with_product_norms"]


class ProductLayerNorm(nn.Module):
    """:class:`torch.nn.LayerNorm` over the last axis, means as ``linear`` with ``1/C``."""

    def __init__(self, ln: nn.LayerNorm) -> None:
        super().__init__()
        if len(ln.normalized_shape) != 1:
            raise ValueError(f"ProductLayerNorm: normalized_shape {tuple(ln.normalized_shape)} is not one axis")
        c = ln.normalized_shape[0]
        self.register_buffer("avg", torch.full((1, c), 1.0 / c, dtype=ln.weight.dtype if ln.weight is not None
                                               else torch.float32))
        self.weight, self.bias, self.eps = ln.weight, ln.bias, ln.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x - F.linear(x, self.avg)
        y = d * torch.rsqrt(F.linear(d * d, self.avg) + self.eps)
        if self.weight is not None:
            y = y * self.weight
        return y + self.bias if self.bias is not None else y


class ProductLayerNorm2d(nn.Module):
    """:class:`sam_edge.modeling.common.LayerNorm2d` (over the channels of B x C x H x W), means as
    a 1x1 ``conv`` with ``1/C``."""

    def __init__(self, ln: LayerNorm2d) -> None:
        super().__init__()
        c = ln.weight.shape[0]
        self.register_buffer("avg", torch.full((1, c, 1, 1), 1.0 / c, dtype=ln.weight.dtype))
        self.weight, self.bias, self.eps = ln.weight, ln.bias, ln.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x - F.conv2d(x, self.avg)
        y = d * torch.rsqrt(F.conv2d(d * d, self.avg) + self.eps)
        return y * self.weight[:, None, None] + self.bias[:, None, None]


def with_product_norms(module: nn.Module) -> tuple[nn.Module, int]:
    """A deep copy of ``module`` with every ``nn.LayerNorm`` (one axis) and ``LayerNorm2d``
    replaced by its product form; returns (copy, number replaced). ``module`` is not changed."""
    out = copy.deepcopy(module)
    count = 0

    def swap(parent: nn.Module) -> None:
        nonlocal count
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.LayerNorm) and len(child.normalized_shape) == 1:
                setattr(parent, name, ProductLayerNorm(child))
                count += 1
            elif isinstance(child, LayerNorm2d):
                setattr(parent, name, ProductLayerNorm2d(child))
                count += 1
            else:
                swap(child)

    swap(out)
    return out, count
