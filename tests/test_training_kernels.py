"""Training-time formulations of model ops: the same function as the inference graph.

``MaskDecoder.use_gemm_upscaling`` computes the transposed-convolution upscaling channels-last as
GEMMs (used by pretraining and distillation stage 2); the transformer's attention runs in fp32
under CPU bf16 autocast. Both must give the outputs and gradients of the plain path.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sam_edge.modeling.mask_decoder import MaskDecoder
from sam_edge.modeling.transformer import Attention, TwoWayTransformer


def _decoder(dim: int = 64) -> MaskDecoder:
    torch.manual_seed(0)
    tr = TwoWayTransformer(depth=2, embedding_dim=dim, num_heads=4, mlp_dim=128)
    dec = MaskDecoder(transformer_dim=dim, transformer=tr)
    for p in dec.parameters():  # non-trivial LayerNorm / bias values
        nn.init.normal_(p, std=0.3)
    return dec


def _inputs(dim: int, b: int = 5, h: int = 6, w: int = 7):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(1, dim, h, w, generator=g), torch.randn(1, dim, h, w, generator=g),
            torch.randn(b, 3, dim, generator=g), torch.randn(b, dim, h, w, generator=g))


@pytest.mark.parametrize("multimask", [True, False])
def test_gemm_upscaling_matches_transposed_convolutions(multimask):
    ref = _decoder()
    fast = copy.deepcopy(ref).use_gemm_upscaling()
    assert fast.gemm_upscaling and not ref.gemm_upscaling
    outs, grads = [], []
    for dec in (ref, fast):
        emb, pe, sparse, dense = (t.clone().requires_grad_(True) for t in _inputs(64))
        masks, iou = dec(emb, pe, sparse, dense, multimask)
        (masks.square().mean() + masks.mean() + iou.sum()).backward()
        outs.append((masks.detach(), iou.detach()))
        grads.append([emb.grad, dense.grad] + [p.grad for p in dec.parameters()])
    assert outs[0][0].shape == outs[1][0].shape == (5, 3 if multimask else 1, 24, 28)
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(outs[1][1], outs[0][1], rtol=1e-4, atol=1e-4)
    for a, b in zip(grads[0], grads[1]):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5)
    # the transposed convolutions' weights did receive gradients through the GEMM path
    assert fast.output_upscaling[0].weight.grad.abs().sum() > 0


def test_gemm_upscaling_off_for_a_non_sam_upscaling():
    dec = _decoder()
    dec.output_upscaling[0] = nn.ConvTranspose2d(64, 16, kernel_size=2, stride=2, padding=0, output_padding=0,
                                                 dilation=1, groups=2)
    assert dec.use_gemm_upscaling().gemm_upscaling is False  # falls back to the module path


def test_attention_runs_fp32_under_cpu_autocast_and_keeps_gradients():
    torch.manual_seed(0)
    att = Attention(32, 4, downsample_rate=2)
    q = torch.randn(3, 5, 32, requires_grad=True)
    k = torch.randn(3, 9, 32, requires_grad=True)
    ref = att(q, k, k)
    ref.sum().backward()
    ref_grad = q.grad.clone()
    q.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = att(q, k, k)
    assert out.dtype == torch.bfloat16  # the projections still run in bf16
    out.float().sum().backward()
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)
    torch.testing.assert_close(q.grad, ref_grad, rtol=0.1, atol=0.05)


@pytest.mark.parametrize("nk", [1, 7, 15, 16, 20])
def test_small_softmax_padding_gives_softmax(nk):
    """Attention's few-keys softmax over < 16 keys is computed on rows padded with -inf (the CPU
    kernel's fast path): the values and gradients of softmax."""
    from sam_edge.modeling.transformer import _softmax_lastdim

    x = torch.randn(3, 50, 4, nk, dtype=torch.double, requires_grad=True)
    w = torch.randn(3, 50, 4, nk, dtype=torch.double)
    ref = x.softmax(-1)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), x)
    got = _softmax_lastdim(x)
    (g_got,) = torch.autograd.grad((got * w).sum(), x)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g_got, g_ref, rtol=1e-10, atol=1e-12)
