"""RepViT-style convolutional image encoder for SAM students (EdgeSAM-class, mobile-first).

The encoder is built only from operators that every mobile runtime (Core ML, XNNPACK /
ExecuTorch, TFLite / LiteRT) runs well: 3x3 depthwise and 1x1 pointwise convolutions, GELU,
global average pooling + sigmoid (squeeze-excitation) and SAM's LayerNorm2d neck. It has no
attention and no reshapes, so it exports to every format without graph surgery.

Training-time structure vs. deployment structure
------------------------------------------------
During training every convolution is followed by a BatchNorm, and every token mixer is a
MobileOne / RepVGG-style multi-branch depthwise block (3x3 dw conv+BN, 1x1 dw conv+BN and an
identity BN, summed). :meth:`RepViT.reparameterize` (or the module-level
:func:`reparameterize_model`) folds, in place, every BatchNorm into the preceding convolution
and every multi-branch mixer into ONE 3x3 depthwise convolution with bias. The eval-mode output
is unchanged (up to float rounding) and the module no longer holds any BatchNorm.

``reparameterize()`` requires eval mode: folding uses the BN running statistics, which are what
eval mode uses; in training mode BN normalises with batch statistics, so a fused model would
silently compute something else. It therefore raises ``RuntimeError`` when the module is in
training mode and there is still something to fold. It is idempotent: a second call is a no-op.
A reparameterised module has a different state dict (fused convs, no BN keys), so reparameterise
*after* loading a checkpoint, right before export or deployment.

Layout (B = batch, S = input side, a multiple of 16; ``dims`` / ``depths`` per stage)::

    stem      B x 3 x S x S        -> B x dims[0] x S/4 x S/4     (two 3x3 stride-2 ConvBN)
    stage 0   B x dims[0] x S/4    -> same                        (depths[0] RepViTBlocks)
    trans 0   -> B x dims[1] x S/8                                (dw 3x3 s2 + pw + FFN)
    stage 1   ...
    trans 1   -> B x dims[2] x S/16
    stage 2.. stay at S/16; later transitions have stride 1 (no stride 32)
    neck      B x dims[-1] x S/16  -> B x out_chans x S/16 x S/16 (1x1, LN2d, 3x3, LN2d)
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d

__all__ = [
    "ChannelMixer",
    "ConvBN",
    "RepDWMixer",
    "RepViT",
    "RepViTBlock",
    "SqueezeExcite",
    "Transition",
    "reparameterize_model",
]


def _fold_bn(
    kernel: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm into the convolution (kernel O x I x k x k, bias O or None)
    that precedes it; returns the fused (kernel, bias)."""
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    conv_bias = bias if bias is not None else torch.zeros_like(bn.running_mean)
    return kernel * scale.reshape(-1, 1, 1, 1), bn.bias + (conv_bias - bn.running_mean) * scale


def _check_eval(module: nn.Module) -> None:
    if module.training:
        raise RuntimeError(
            f"{type(module).__name__}.reparameterize() needs eval mode: call model.eval() first. "
            "BatchNorm folding uses the running statistics, which only eval mode uses; a model "
            "fused in training mode would compute something different."
        )


class ConvBN(nn.Module):
    """Conv2d (no bias) followed by BatchNorm2d; after :meth:`reparameterize` a single Conv2d
    with bias (``bn`` becomes ``nn.Identity``).

    B x in_chans x H x W -> B x out_chans x H' x W' (H' = ceil(H / stride) for odd kernels with
    padding ``kernel_size // 2``).
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int = 1,
        *,
        stride: int = 1,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_chans, out_chans, kernel_size, stride, kernel_size // 2, groups=groups, bias=False
        )
        self.bn: nn.Module = nn.BatchNorm2d(out_chans)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    @property
    def is_fused(self) -> bool:
        return not isinstance(self.bn, nn.BatchNorm2d)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold ``bn`` into ``conv`` (in place; needs eval mode; no-op once fused)."""
        if self.is_fused:
            return
        _check_eval(self)
        c = self.conv
        kernel, bias = _fold_bn(c.weight, c.bias, self.bn)
        fused = nn.Conv2d(
            c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding,
            groups=c.groups, bias=True,
        ).to(device=kernel.device, dtype=kernel.dtype)
        fused.weight.copy_(kernel)
        fused.bias.copy_(bias)
        fused.train(self.training)
        self.conv = fused
        self.bn = nn.Identity()


class RepDWMixer(nn.Module):
    """Re-parameterisable depthwise token mixer (MobileOne / RepViT ``RepVGGDW``).

    Training: ``bn_dw3(dw3x3(x)) + bn_dw1(dw1x1(x)) + bn_id(x)``. After :meth:`reparameterize`
    the three branches are one 3x3 depthwise Conv2d with bias, ``fused``.
    B x dim x H x W -> B x dim x H x W.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.dw3: ConvBN | None = ConvBN(dim, dim, 3, groups=dim)
        self.dw1: ConvBN | None = ConvBN(dim, dim, 1, groups=dim)
        self.bn_id: nn.BatchNorm2d | None = nn.BatchNorm2d(dim)
        self.fused: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.fused(x)
        return self.dw3(x) + self.dw1(x) + self.bn_id(x)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fuse the three branches into ``fused`` (in place; needs eval mode; no-op once fused)."""
        if self.fused is not None:
            return
        _check_eval(self)
        assert self.dw3 is not None and self.dw1 is not None and self.bn_id is not None
        self.dw3.reparameterize()  # each branch -> conv with bias
        self.dw1.reparameterize()
        k3, b3 = self.dw3.conv.weight, self.dw3.conv.bias
        k1, b1 = self.dw1.conv.weight, self.dw1.conv.bias
        # identity as a depthwise 3x3 kernel (1 at the centre), then its BN folded in
        identity = torch.zeros_like(k3)
        identity[:, 0, 1, 1] = 1.0
        kid, bid = _fold_bn(identity, None, self.bn_id)
        kernel = k3 + F.pad(k1, (1, 1, 1, 1)) + kid  # 1x1 kernel zero-padded to 3x3
        bias = b3 + b1 + bid
        fused = nn.Conv2d(self.dim, self.dim, 3, 1, 1, groups=self.dim, bias=True).to(
            device=k3.device, dtype=k3.dtype
        )
        fused.weight.copy_(kernel)
        fused.bias.copy_(bias)
        fused.train(self.training)
        self.fused = fused
        self.dw3 = self.dw1 = self.bn_id = None


class SqueezeExcite(nn.Module):
    """Channel gating: ``x * sigmoid(expand(relu(reduce(avgpool(x)))))`` (1x1 convs with bias).

    B x dim x H x W -> B x dim x H x W. No BatchNorm, nothing to reparameterise.
    """

    def __init__(self, dim: int, rd_ratio: float = 0.25) -> None:
        super().__init__()
        hidden = max(8, int(round(dim * rd_ratio / 8)) * 8)
        self.reduce = nn.Conv2d(dim, hidden, 1)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(self.act(self.reduce(s))))


class ChannelMixer(nn.Module):
    """Residual pointwise FFN: ``x + BN(proj(GELU(BN(expand(x)))))``.

    The last BN's scale starts at zero, so the block starts as the identity.
    B x dim x H x W -> B x dim x H x W.
    """

    def __init__(self, dim: int, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.expand = ConvBN(dim, hidden, 1)
        self.act = nn.GELU()
        self.proj = ConvBN(hidden, dim, 1, bn_weight_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(self.act(self.expand(x)))


class RepViTBlock(nn.Module):
    """Token mixer (:class:`RepDWMixer`), optional :class:`SqueezeExcite`, then a residual
    :class:`ChannelMixer`. B x dim x H x W -> B x dim x H x W."""

    def __init__(self, dim: int, *, mlp_ratio: float = 2.0, use_se: bool = False) -> None:
        super().__init__()
        self.token_mixer = RepDWMixer(dim)
        self.se: nn.Module = SqueezeExcite(dim) if use_se else nn.Identity()
        self.channel_mixer = ChannelMixer(dim, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_mixer(self.se(self.token_mixer(x)))


class Transition(nn.Module):
    """Between stages: depthwise 3x3 ConvBN (stride ``stride``), pointwise ConvBN to
    ``out_dim``, residual :class:`ChannelMixer`.

    B x in_dim x H x W -> B x out_dim x ceil(H / stride) x ceil(W / stride).
    """

    def __init__(self, in_dim: int, out_dim: int, *, stride: int = 2, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.dw = ConvBN(in_dim, in_dim, 3, stride=stride, groups=in_dim)
        self.pw = ConvBN(in_dim, out_dim, 1)
        self.channel_mixer = ChannelMixer(out_dim, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_mixer(self.pw(self.dw(x)))


class RepViT(nn.Module):
    """RepViT / MobileOne-style convolutional image encoder for SAM.

    ``forward``: B x 3 x S x S (normalised, zero-padded image; S = ``img_size``, a multiple of
    16) -> B x out_chans x S/16 x S/16, SAM's image-embedding layout.

    Args (keyword-only):
        img_size: input side S (recorded; the network itself is fully convolutional).
        in_chans: input channels.
        dims: width of each stage (at least 3 stages: strides 4, 8, 16, then 16 again).
        depths: number of :class:`RepViTBlock` per stage (same length as ``dims``).
        mlp_ratio: hidden / input width of every channel mixer.
        use_se: put squeeze-excitation in every other block of each stage (blocks 0, 2, ...),
            as RepViT does.
        out_chans: channels of the output embedding (the decoder's ``prompt_embed_dim``).
    """

    def __init__(
        self,
        *,
        img_size: int = 1024,
        in_chans: int = 3,
        dims: Sequence[int] = (48, 96, 192, 384),
        depths: Sequence[int] = (2, 2, 14, 2),
        mlp_ratio: float = 2.0,
        use_se: bool = True,
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        if len(dims) != len(depths):
            raise ValueError(f"dims and depths must have equal length, got {len(dims)} and {len(depths)}")
        if len(dims) < 3:
            raise ValueError(f"RepViT needs at least 3 stages to reach stride 16, got {len(dims)}")
        if img_size % 16:
            raise ValueError(f"img_size must be a multiple of 16, got {img_size}")
        self.img_size = img_size
        self.dims = tuple(int(d) for d in dims)
        self.depths = tuple(int(d) for d in depths)
        self.grid_size = img_size // 16

        d0 = self.dims[0]
        self.stem = nn.Sequential(
            ConvBN(in_chans, d0 // 2, 3, stride=2),
            nn.GELU(),
            ConvBN(d0 // 2, d0, 3, stride=2),
            nn.GELU(),
        )
        self.stages = nn.ModuleList()
        self.transitions = nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(self.dims, self.depths)):
            self.stages.append(nn.Sequential(*(
                RepViTBlock(dim, mlp_ratio=mlp_ratio, use_se=use_se and j % 2 == 0) for j in range(depth)
            )))
            if i < len(self.dims) - 1:
                # stem stride 4, two stride-2 transitions reach 16; later ones keep stride 16
                stride = 2 if i < 2 else 1
                self.transitions.append(Transition(dim, self.dims[i + 1], stride=stride, mlp_ratio=mlp_ratio))
        self.neck = nn.Sequential(
            nn.Conv2d(self.dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B x in_chans x S x S -> B x out_chans x S/16 x S/16."""
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i < len(self.transitions):
                x = self.transitions[i](x)
        return self.neck(x)

    @torch.no_grad()
    def reparameterize(self) -> "RepViT":
        """Fuse for deployment, in place: every BN into its conv, every :class:`RepDWMixer`
        into one 3x3 depthwise conv. Eval output is unchanged; no BatchNorm remains.

        Raises ``RuntimeError`` in training mode (unless already fused). Idempotent.
        Returns ``self``.
        """
        if self.training and any(isinstance(m, nn.BatchNorm2d) for m in self.modules()):
            _check_eval(self)
        # Mixers first (they fuse their own ConvBN branches), then the remaining ConvBNs.
        for m in list(self.modules()):
            if isinstance(m, RepDWMixer):
                m.reparameterize()
        for m in list(self.modules()):
            if isinstance(m, ConvBN):
                m.reparameterize()
        return self


def reparameterize_model(model: nn.Module) -> nn.Module:
    """Call ``reparameterize()`` on every submodule of ``model`` that has one (the outermost
    such module in each branch of the tree; it fuses its own children), in place. Works on a
    whole :class:`~sam_edge.modeling.sam.Sam` as well as on an encoder; modules without a
    ``reparameterize`` method are left untouched. Needs eval mode (see the module docstring).
    Returns ``model``."""

    def visit(module: nn.Module) -> None:
        fn = getattr(module, "reparameterize", None)
        if callable(fn):
            fn()
            return
        for child in module.children():
            visit(child)

    visit(model)
    return model
