"""TinyViT image encoder with MobileSAM's parameter layout.

The module tree (and therefore every state-dict key and shape) matches the image encoder of
MobileSAM's ``mobile_sam.pt`` (keys there carry an ``image_encoder.`` prefix), so that checkpoint
loads with ``strict=True``. Compared with MobileSAM's implementation:

* the stride of the final patch merging is the ``last_merge_stride`` argument (MobileSAM keys it
  off the output width being 320/448/576); ``1`` gives SAM's ``img_size / 16`` embedding grid;
* the output grid follows from the input instead of a hard-coded 64 x 64;
* the attention bias is gathered from ``attention_biases`` on every call (no train/eval cache),
  which keeps the graph traceable for ``torch.export`` / ONNX.

Layout conventions: convolutional stages work on B x C x H x W maps, the attention blocks on
channels-last B x H x W x C maps; every stage takes and returns B x C x H x W.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d


def _conv_out(size: int, stride: int) -> int:
    """Output length of a 3x3 convolution with padding 1 and the given stride."""
    return (size - 1) // stride + 1


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability ``drop_prob``.

    x: B x ... (any trailing shape). Kept samples are scaled by ``1 / (1 - drop_prob)`` so the
    expectation is unchanged; identity when not training or ``drop_prob == 0``.
    """
    if drop_prob <= 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class DropPath(nn.Module):
    """Module wrapper of :func:`drop_path` (no parameters, so it adds no state-dict keys)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class ConvBN(nn.Sequential):
    """Bias-free Conv2d followed by BatchNorm2d (children ``c`` and ``bn``).

    B x in_chans x H x W -> B x out_chans x H' x W'.
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int = 1,
        *,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.add_module(
            "c",
            nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, groups=groups, bias=False),
        )
        bn = nn.BatchNorm2d(out_chans)
        nn.init.constant_(bn.weight, bn_weight_init)
        nn.init.zeros_(bn.bias)
        self.add_module("bn", bn)


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 ConvBNs with a GELU between: B x in_chans x S x S -> B x D x S/4 x S/4."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            ConvBN(in_chans, embed_dim // 2, 3, stride=2, padding=1),
            nn.GELU(),
            ConvBN(embed_dim // 2, embed_dim, 3, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual (1x1 expand, 3x3 depthwise, 1x1 project) with a GELU after the sum.

    B x C x H x W -> B x C x H x W.
    """

    def __init__(self, dim: int, expand_ratio: float, drop_path: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden, 1)
        self.act1 = nn.GELU()
        self.conv2 = ConvBN(hidden, hidden, 3, padding=1, groups=hidden)
        self.act2 = nn.GELU()
        # Zero-initialised BN scale: the block starts as identity (+ GELU).
        self.conv3 = ConvBN(hidden, dim, 1, bn_weight_init=0.0)
        self.act3 = nn.GELU()
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.conv1(x))
        y = self.act2(self.conv2(y))
        y = self.conv3(y)
        return self.act3(x + self.drop_path(y))


class PatchMerging(nn.Module):
    """1x1 ConvBN, GELU, depthwise 3x3 ConvBN (stride ``stride``), GELU, 1x1 ConvBN.

    B x dim x H x W -> B x out_dim x ceil(H/stride) x ceil(W/stride).
    """

    def __init__(self, dim: int, out_dim: int, stride: int = 2) -> None:
        super().__init__()
        self.act = nn.GELU()
        self.conv1 = ConvBN(dim, out_dim, 1)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride=stride, padding=1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        return self.conv3(x)


class ConvLayer(nn.Module):
    """First TinyViT stage: ``depth`` MBConvs then an optional PatchMerging.

    B x dim x H x W -> B x out_dim x H' x W' (H' = H when there is no downsample).
    """

    def __init__(
        self,
        dim: int,
        *,
        depth: int,
        expand_ratio: float,
        drop_path: Sequence[float],
        downsample: PatchMerging | None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio, drop_path[i]) for i in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return x


class Mlp(nn.Module):
    """Pre-norm MLP: ``fc2(gelu(fc1(norm(x))))`` on the last axis (... x C -> ... x C)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class Attention(nn.Module):
    """Pre-norm multi-head self-attention over one window, with a LeViT-style learned bias.

    The bias depends only on the absolute offset (|dy|, |dx|) between two tokens of a
    ``window_size`` x ``window_size`` window: ``attention_biases`` is num_heads x ws^2, and the
    non-persistent buffer ``attention_bias_idxs`` (N x N, N = ws^2, row-major tokens) holds the
    column ``|dy| * ws + |dx|`` for every (query, key) pair.

    The qkv projection is laid out per head as [q | k | v] (each head_dim wide).
    """

    def __init__(self, dim: int, *, num_heads: int, window_size: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

        ys, xs = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
        ys, xs = ys.flatten(), xs.flatten()
        idxs = (ys[:, None] - ys[None, :]).abs() * window_size + (xs[:, None] - xs[None, :]).abs()
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window_size * window_size))
        self.register_buffer("attention_bias_idxs", idxs, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B' x N x C (B' = batch * windows, N = ws^2) -> B' x N x C."""
        b, n, c = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, 3 * self.head_dim).transpose(1, 2)
        q, k, v = qkv.split(self.head_dim, dim=-1)  # each B' x heads x N x head_dim
        bias = self.attention_biases[:, self.attention_bias_idxs]  # heads x N x N
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class TinyViTBlock(nn.Module):
    """Windowed attention, depthwise local conv, MLP; each with its own residual except the conv.

    ``x = x + attn(x)`` (non-overlapping windows, zero padding to a multiple of the window, padded
    tokens attended to as in TinyViT), ``x = local_conv(x)``, ``x = x + mlp(x)``.
    B x H x W x C -> B x H x W x C.
    """

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int,
        window_size: int,
        mlp_ratio: float = 4.0,
        local_conv_size: int = 3,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if window_size <= 0:
            raise ValueError("window_size must be positive")
        self.window_size = window_size
        self.attn = Attention(dim, num_heads=num_heads, window_size=window_size)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = ConvBN(
            dim, dim, local_conv_size, padding=local_conv_size // 2, groups=dim
        )
        self.drop_path = DropPath(drop_path)

    def _window_attention(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        ws = self.window_size
        pad_h, pad_w = (ws - h % ws) % ws, (ws - w % ws) % ws
        if pad_h or pad_w:
            # zero padding on the bottom / right, as F.pad(x, (0, 0, 0, pad_w, 0, pad_h)) does, but
            # written as concatenations: XNNPACK rejects the quantized StaticConstantPad this
            # becomes in ExecuTorch int8 graphs (xnn_status_invalid_parameter), concat it takes
            if pad_w:
                x = torch.cat([x, x.new_zeros(b, h, pad_w, c)], dim=2)
            if pad_h:
                x = torch.cat([x, x.new_zeros(b, pad_h, w + pad_w, c)], dim=1)
        nh, nw = (h + pad_h) // ws, (w + pad_w) // ws
        x = x.reshape(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
        x = self.attn(x)
        x = x.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, nh * ws, nw * ws, c)
        if pad_h or pad_w:
            x = x[:, :h, :w]
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self._window_attention(x))
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.drop_path(self.mlp(x))


class BasicLayer(nn.Module):
    """Attention stage: ``depth`` TinyViTBlocks then an optional PatchMerging.

    B x dim x H x W -> B x out_dim x H' x W' (H' = H when there is no downsample).
    """

    def __init__(
        self,
        dim: int,
        *,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        local_conv_size: int,
        drop_path: Sequence[float],
        downsample: PatchMerging | None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(
                dim,
                num_heads=num_heads,
                window_size=window_size,
                mlp_ratio=mlp_ratio,
                local_conv_size=local_conv_size,
                drop_path=drop_path[i],
            )
            for i in range(depth)
        )
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        for blk in self.blocks:
            x = blk(x)
        x = x.permute(0, 3, 1, 2)
        if self.downsample is not None:
            x = self.downsample(x)
        return x


class TinyViT(nn.Module):
    """TinyViT image encoder for SAM (MobileSAM's ``vit_t``).

    ``forward``: B x in_chans x S x S (normalised, padded image; S = ``img_size``) ->
    B x out_chans x S/16 x S/16 with the defaults (``last_merge_stride=1``). More generally the
    grid is S / (4 * 2**(L-2) * last_merge_stride) for L = len(depths) stages, rounded up per
    stride-2 step; it is recorded in ``grid_size`` and ``stage_resolutions``.

    Stage 0 is convolutional (MBConv); stages 1.. are windowed-attention TinyViT blocks. Each
    stage but the last ends with a PatchMerging to the next stage's width, of stride 2 except the
    final one (``last_merge_stride``). ``norm_head`` / ``head`` are the ImageNet classifier kept
    for checkpoint compatibility; they are not used by ``forward``.
    """

    def __init__(
        self,
        *,
        img_size: int = 1024,
        in_chans: int = 3,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        out_chans: int = 256,
        num_classes: int = 1000,
        last_merge_stride: int = 1,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        num_layers = len(depths)
        if num_layers < 2:
            raise ValueError("TinyViT needs at least two stages (one conv, one attention)")
        if not len(embed_dims) == len(num_heads) == len(window_sizes) == num_layers:
            raise ValueError("embed_dims, depths, num_heads and window_sizes must have equal length")
        if last_merge_stride not in (1, 2):
            raise ValueError(f"last_merge_stride must be 1 or 2, got {last_merge_stride}")
        self.img_size = img_size
        self.embed_dims = tuple(embed_dims)
        self.depths = tuple(depths)

        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])

        # Spatial size seen by each stage (square input assumed), and of the final map.
        res = _conv_out(_conv_out(img_size, 2), 2)
        resolutions = []
        for i in range(num_layers):
            resolutions.append(res)
            if i < num_layers - 1:
                res = _conv_out(res, last_merge_stride if i == num_layers - 2 else 2)
        self.stage_resolutions = tuple(resolutions)
        self.grid_size = res

        # Stochastic depth rate grows linearly over all blocks, conv blocks included.
        n_blocks = sum(depths)
        dpr = [drop_path_rate * i / max(n_blocks - 1, 1) for i in range(n_blocks)]
        self.layers = nn.ModuleList()
        for i in range(num_layers):
            block_dpr = dpr[sum(depths[:i]) : sum(depths[: i + 1])]
            downsample = None
            if i < num_layers - 1:
                stride = last_merge_stride if i == num_layers - 2 else 2
                downsample = PatchMerging(embed_dims[i], embed_dims[i + 1], stride=stride)
            if i == 0:
                layer: nn.Module = ConvLayer(
                    embed_dims[0],
                    depth=depths[0],
                    expand_ratio=mbconv_expand_ratio,
                    drop_path=block_dpr,
                    downsample=downsample,
                )
            else:
                layer = BasicLayer(
                    embed_dims[i],
                    depth=depths[i],
                    num_heads=num_heads[i],
                    window_size=window_sizes[i],
                    mlp_ratio=mlp_ratio,
                    local_conv_size=local_conv_size,
                    drop_path=block_dpr,
                    downsample=downsample,
                )
            self.layers.append(layer)

        self.norm_head = nn.LayerNorm(embed_dims[-1])
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B x in_chans x S x S -> B x out_chans x grid x grid (grid = S/16 by default)."""
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.neck(x)
