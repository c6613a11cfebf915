"""SAM's mask decoder: two-way transformer, transposed-conv upscaling and a hypernetwork head."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (hypernetwork and IoU head)."""

    def __init__(
        self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int, sigmoid_output: bool = False
    ) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.relu(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


def _conv_transpose_2x2_blocks(x: torch.Tensor, conv: nn.ConvTranspose2d) -> torch.Tensor:
    """``conv`` (kernel 2, stride 2, no padding) on channels-last pixels ``x`` (... x Cin), as one
    GEMM: the 2 x 2 output blocks do not overlap, so each input pixel maps to its own block.
    Returns ... x 2 x 2 x Cout: the output pixel (2y + i, 2x + j) of input pixel (y, x) at
    [..., i, j, :] (the same sums as ``conv``, the pixels in block order; see
    :meth:`MaskDecoder._upscaled_masks`)."""
    cin, cout = x.shape[-1], conv.out_channels
    y = x.reshape(-1, cin) @ conv.weight.permute(0, 2, 3, 1).reshape(cin, 4 * cout)  # columns (i, j, o)
    y = y.view(*x.shape[:-1], 2, 2, cout)
    return y + conv.bias if conv.bias is not None else y


def _is_sam_upscaling(seq: nn.Module) -> bool:
    if not (isinstance(seq, nn.Sequential) and len(seq) == 5):
        return False
    convs_ok = all(
        isinstance(c, nn.ConvTranspose2d) and c.kernel_size == (2, 2) and c.stride == (2, 2)
        and c.padding == (0, 0) and c.output_padding == (0, 0) and c.dilation == (1, 1) and c.groups == 1
        for c in (seq[0], seq[3])
    )
    return convs_ok and isinstance(seq[1], LayerNorm2d)


class MaskDecoder(nn.Module):
    """Predicts masks and their IoU from an image embedding and prompt embeddings.

    ``forward`` takes image_embeddings (1 or B) x C x H x W, image_pe 1 x C x H x W, sparse
    B x N x C and dense B x C x H x W prompt embeddings, and returns masks B x M x 4H x 4W (low-res
    logits) and iou_pred B x M, with M = num_multimask_outputs if multimask_output else 1.
    """

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)
        # Training-time formulation of the upscaling (set by the trainers, see
        # :meth:`use_gemm_upscaling`); inference and export keep SAM's transposed convolutions.
        self.gemm_upscaling = False

    def use_gemm_upscaling(self, on: bool = True) -> "MaskDecoder":
        """Compute ``output_upscaling`` and the mask product channels-last, the transposed
        convolutions as GEMMs: the same function and parameters, ~1.8x faster forward + backward
        on the CPU (the convolution path's GELU backward runs on mixed memory layouts). Off for
        export: the graph keeps SAM's ConvTranspose2d ops that every converter knows."""
        self.gemm_upscaling = bool(on) and _is_sam_upscaling(self.output_upscaling)
        return self

    def _upscaled_masks(self, src: torch.Tensor, hyper_in: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """``src`` B x HW x C (transformer output), ``hyper_in`` B x M x C' -> masks B x M x 4H x 4W."""
        b, _, c = src.shape
        if self.gemm_upscaling:
            # Every layer of the upscaling is per pixel (a 2x2 / stride-2 transposed convolution
            # maps each pixel to its own block, LayerNorm and GELU are per pixel, so is the mask
            # product), so the pixels stay in block order B x H x W x 2 x 2 x 2 x 2 x C' and only
            # the M-channel masks are put in image order at the end (one small permute instead of
            # two pixel shuffles of the 32- and 16-channel features, forward and backward).
            up = self.output_upscaling
            x = _conv_transpose_2x2_blocks(src.reshape(b, h, w, c), up[0])      # B H W 2 2 C/4
            x = up[2](F.layer_norm(x, (x.shape[-1],), up[1].weight, up[1].bias, up[1].eps))
            x = up[4](_conv_transpose_2x2_blocks(x, up[3]))                     # B H W 2 2 2 2 C/8
            m = hyper_in.shape[1]
            masks = x.reshape(b, -1, x.shape[-1]) @ hyper_in.transpose(1, 2)   # B (H W 2 2 2 2) M
            # rows 4y + 2i + k, columns 4x + 2j + l, for block indices [y, x, i, j, k, l]
            masks = masks.view(b, h, w, 2, 2, 2, 2, m).permute(0, 7, 1, 3, 5, 2, 4, 6)
            return masks.reshape(b, m, 4 * h, 4 * w)
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        _, c2, h2, w2 = upscaled.shape
        return (hyper_in @ upscaled.reshape(b, c2, h2 * w2)).reshape(b, -1, h2, w2)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        masks, iou_pred = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        sl = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, sl], iou_pred[:, sl]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All num_mask_tokens outputs: masks B x 4 x 4H x 4W and IoU B x 4."""
        b = sparse_prompt_embeddings.shape[0]
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse_prompt_embeddings], dim=1)
        if image_embeddings.shape[0] not in (1, b):
            image_embeddings = torch.repeat_interleave(image_embeddings, b, dim=0)
        # one image embedding and one positional encoding broadcast over the B prompts (SAM
        # repeats both B times; the sums are the same, without the copies)
        src = image_embeddings + dense_prompt_embeddings
        if src.shape[0] != b:
            src = src.expand(b, -1, -1, -1)
        _, c, h, w = src.shape
        hs, src = self.transformer(src, image_pe, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        masks = self._upscaled_masks(src, hyper_in, h, w)
        return masks, self.iou_prediction_head(iou_token_out)
