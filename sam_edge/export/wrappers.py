"""Export-friendly wrappers around a :class:`sam_edge.Sam`: one graph for the image encoder, one
branch-free graph for the prompt encoder + mask decoder.

Encoder input convention (``EncoderWrapper``)
---------------------------------------------
``image``: 1 x 3 x S x S float32, the image resized so that its longest side is S
(``ResizeLongestSide``) and padded bottom-right to S x S.

* ``normalize_inside=True`` (default): raw 0..255 pixels. ``Sam.preprocess`` normalises first and
  then pads with zeros, so the runtime pads the raw image with the *pixel mean*: after
  ``(x - mean) / std`` inside the graph the padding is exactly 0, as in eager PyTorch. No pad
  mask or valid-size input is needed. (See :func:`pad_raw_with_mean`.)
* ``normalize_inside=False``: the input is already normalised and zero-padded
  (:func:`sam_edge.transforms.normalize_pad`).

Decoder inputs (``DecoderWrapper``), segment-anything ``utils/onnx.py`` conventions
-----------------------------------------------------------------------------------
``image_embeddings`` 1 x C x h x w; ``point_coords`` 1 x N x 2 float (x, y) in the model input
frame (after ResizeLongestSide, *before* the +0.5 pixel-centre shift which the graph applies);
``point_labels`` 1 x N float: 1 foreground, 0 background, -1 padding, 2 / 3 box top-left /
bottom-right corner; ``mask_input`` 1 x 1 x 4h x 4w low-res logits; ``has_mask_input`` (1,)
float 0 or 1. A prompt without a box must carry one padding point (0, 0) with label -1 (as
``PromptEncoder`` does in eager mode); :func:`build_point_inputs` builds these arrays.
Outputs ``low_res_masks`` 1 x M x 4h x 4w logits and ``iou_predictions`` 1 x M, where M depends
on ``mask_outputs``: ``"all"`` (M = 1 + num_multimask_outputs; index 0 is the single-mask output,
1: the multimask outputs, the runtime slices), ``"multimask"`` or ``"single"``.
No upscaling to the original image size happens inside the graph.
"""
from __future__ import annotations

import torch
from torch import nn

from sam_edge.encoders import fuse_model
from sam_edge.modeling.sam import Sam
from sam_edge.runtime.feeds import (  # noqa: F401 (canonical names, re-exported)
    DECODER_INPUT_NAMES,
    DECODER_OUTPUT_NAMES,
    ENCODER_INPUT_NAMES,
    ENCODER_OUTPUT_NAMES,
)
from sam_edge.runtime.feeds import point_inputs as build_point_inputs  # noqa: F401
from sam_edge.runtime.predictor import _pad_raw_with_mean as pad_raw_with_mean  # noqa: F401

MASK_OUTPUT_MODES = ("all", "multimask", "single")


def prepare_model_for_export(model: Sam) -> Sam:
    """Eval mode, and RepViT-style branches fused (``fuse_model``: the encoder family's fuse; a no-op for
    encoders without ``reparameterize``). In place; returns ``model``."""
    model.eval()
    fuse_model(model)
    return model


class EncoderWrapper(nn.Module):
    """1 x 3 x S x S image (see the module docstring) -> image_embeddings 1 x C x S/16 x S/16."""

    def __init__(self, model: Sam, normalize_inside: bool = True) -> None:
        super().__init__()
        prepare_model_for_export(model)
        self.image_encoder = model.image_encoder
        self.normalize_inside = normalize_inside
        self.image_size = model.image_size
        self.register_buffer("pixel_mean", model.pixel_mean.detach().clone().reshape(1, 3, 1, 1).contiguous())
        self.register_buffer("inv_std", (1.0 / model.pixel_std.detach().clone()).reshape(1, 3, 1, 1).contiguous())

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = (image - self.pixel_mean) * self.inv_std if self.normalize_inside else image
        return self.image_encoder(x)

    def example_inputs(self) -> tuple[torch.Tensor]:
        s = self.image_size
        return (torch.full((1, 3, s, s), 128.0) if self.normalize_inside else torch.zeros(1, 3, s, s),)


class DecoderWrapper(nn.Module):
    """Branch-free prompt encoder + mask decoder (inputs and outputs: module docstring)."""

    def __init__(self, model: Sam, mask_outputs: str = "all") -> None:
        super().__init__()
        if mask_outputs not in MASK_OUTPUT_MODES:
            raise ValueError(f"mask_outputs: expected one of {MASK_OUTPUT_MODES}, got {mask_outputs!r}")
        model.eval()
        pe = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self.pe_layer = pe.pe_layer
        self.mask_downscaling = pe.mask_downscaling
        self.mask_outputs = mask_outputs
        self.input_image_size = tuple(pe.input_image_size)
        self.embed_dim = pe.embed_dim
        self.embedding_size = tuple(pe.image_embedding_size)
        self.num_multimask_outputs = model.mask_decoder.num_multimask_outputs
        with torch.no_grad():
            # Precomputed, contiguous (a strided/expanded constant trips some exporters).
            self.register_buffer("dense_pe", pe.get_dense_pe().detach().clone().contiguous())
            # rows: label -1 (not a point), 0 (bg), 1 (fg), 2 (box top-left), 3 (box bottom-right)
            label_emb = torch.cat(
                [pe.not_a_point_embed.weight] + [pe.point_embeddings[i].weight for i in range(4)], dim=0
            )
            self.register_buffer("label_embeddings", label_emb.detach().clone().contiguous())
            self.register_buffer("no_mask_embed", pe.no_mask_embed.weight.detach().clone().reshape(1, -1, 1, 1).contiguous())
            self.register_buffer("coord_scale", torch.tensor(
                [1.0 / self.input_image_size[1], 1.0 / self.input_image_size[0]], dtype=torch.float32))

    @property
    def num_outputs(self) -> int:
        n = self.num_multimask_outputs
        return {"all": n + 1, "multimask": n, "single": 1}[self.mask_outputs]

    def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        coords = (coords + 0.5) * self.coord_scale
        emb = self.pe_layer._encode(coords)
        labels = labels.unsqueeze(-1)
        emb = emb * (labels != -1).to(emb.dtype)
        for k, value in enumerate((-1.0, 0.0, 1.0, 2.0, 3.0)):
            emb = emb + (labels == value).to(emb.dtype) * self.label_embeddings[k]
        return emb

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sparse = self._embed_points(point_coords, point_labels)
        has = has_mask_input.reshape(1, 1, 1, 1)
        dense = self.mask_downscaling(mask_input) * has + (1.0 - has) * self.no_mask_embed
        masks, iou = self.mask_decoder.predict_masks(image_embeddings, self.dense_pe, sparse, dense)
        if self.mask_outputs == "multimask":
            masks, iou = masks[:, 1:], iou[:, 1:]
        elif self.mask_outputs == "single":
            masks, iou = masks[:, :1], iou[:, :1]
        return masks, iou

    def example_inputs(self, num_points: int = 2) -> tuple[torch.Tensor, ...]:
        h, w = self.embedding_size
        coords = torch.tensor([[[10.0, 20.0], [30.0, 40.0], [50.0, 5.0]]])[:, :num_points]
        if num_points > 3:
            coords = torch.rand(1, num_points, 2) * self.input_image_size[0]
        labels = torch.tensor([[1.0, 0.0, -1.0]])[:, :num_points]
        if num_points > 3:
            labels = torch.ones(1, num_points)
        return (
            torch.randn(1, self.embed_dim, h, w),
            coords,
            labels,
            torch.zeros(1, 1, 4 * h, 4 * w),
            torch.tensor([1.0]),
        )


class MathAttention(torch.overrides.TorchFunctionMode):
    """Replaces ``F.scaled_dot_product_attention`` by its math (matmul + softmax) form while
    tracing: the dynamo ONNX exporter only converts 4-D SDPA, and some encoders call it on 3-D
    (batch*heads) x tokens x dim tensors; SDPA's decomposition leaves ops XNNPACK cannot take.
    Numerically the same as SDPA's math kernel. Used by the onnx, executorch and tflite exporters
    and QAT."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention:
            return _sdpa_math(*args, **kwargs)
        return func(*args, **kwargs)


def _sdpa_math(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    if is_causal or dropout_p or enable_gqa:
        raise NotImplementedError("MathAttention: causal / dropout / GQA attention is not used by SAM")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    attn = (q * scale) @ k.transpose(-2, -1)
    if attn_mask is not None:
        attn = attn + attn_mask if attn_mask.dtype != torch.bool else attn.masked_fill(~attn_mask, float("-inf"))
    return attn.softmax(dim=-1) @ v
