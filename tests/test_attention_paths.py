"""The two-way transformer's attention computed two ways (sam_edge.modeling.transformer.Attention):
``direct`` (SAM's code) and ``factorised`` (the large side's projections folded into the few
tokens of the small side). Same function and gradients; far fewer FLOPs for a click."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from sam_edge import create_model
from sam_edge.modeling.transformer import Attention


def _run(att: Attention, mode: str, q, k, v):
    att.mode = mode
    att.zero_grad()
    for t in (q, k, v):
        t.grad = None
    out = att(q, k, v)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    # the key bias adds a constant per softmax row: its gradient is 0 (to rounding) on both paths
    grads += [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in att.parameters()]
    return out.detach(), grads


@pytest.mark.parametrize("shape", [(3, 7, 3, 300), (3, 7, 1, 300), (1, 5, 1, 1024), (3, 300, 3, 7), (2, 1024, 1, 6),
                                   (2, 1024, 2, 1)])
def test_factorised_equals_direct_outputs_and_gradients(shape):
    torch.manual_seed(0)
    bq, nq, bk, nk = shape
    att = Attention(64, 4, downsample_rate=2).double()
    q = torch.randn(bq, nq, 64, dtype=torch.double, requires_grad=True)
    k = torch.randn(bk, nk, 64, dtype=torch.double, requires_grad=True)
    v = torch.randn(bk, nk, 64, dtype=torch.double, requires_grad=True)
    ref, ref_g = _run(att, "direct", q, k, v)
    got, got_g = _run(att, "factorised", q, k, v)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    for a, b in zip(got_g, ref_g):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_auto_picks_the_cheaper_path():
    att = Attention(256, 8, downsample_rate=2)  # SAM's decoder: head_dim 16
    x = lambda b, n: torch.zeros(b, n, 256)  # noqa: E731
    assert att._path(x(1, 7), x(1, 4096), x(1, 4096)) == "few_queries"      # one click vs the image
    assert att._path(x(1, 4096), x(1, 7), x(1, 7)) == "few_keys"
    assert att._path(x(1, 69), x(1, 4096), x(1, 4096)) == "direct"         # 64 points: more than head_dim
    assert att._path(x(64, 7), x(1, 256), x(1, 256)) == "direct"          # image shared by 64 prompts
    assert att._path(x(1, 7), x(1, 7), x(1, 7)) == "direct"               # self-attention
    att.mode = "direct"
    assert att._path(x(1, 7), x(1, 4096), x(1, 4096)) == "direct"


def _decoder_flops_and_output(model, mode: str, num_points: int):
    from sam_edge.export.wrappers import DecoderWrapper

    for m in model.modules():
        if isinstance(m, Attention):
            m.mode = mode
    w = DecoderWrapper(model).eval()
    torch.manual_seed(1)
    g = model.prompt_encoder.image_embedding_size
    args = (torch.randn(1, model.mask_decoder.transformer_dim, *g), torch.rand(1, num_points, 2) * 200,
            torch.ones(1, num_points), torch.zeros(1, 1, 4 * g[0], 4 * g[1]), torch.zeros(1))
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        out = w(*args)
    return fc.get_total_flops(), out


def test_a_click_costs_fewer_decoder_flops_with_the_same_masks():
    """SAM's 256-d decoder on a 64 x 64 embedding (the 1024-px students'), two points."""
    torch.manual_seed(0)
    model = create_model("sam_test_tiny", image_size=1024, prompt_embed_dim=256, decoder_num_heads=8,
                         decoder_mlp_dim=2048, iou_head_hidden_dim=256)
    direct, (m0, s0) = _decoder_flops_and_output(model, "direct", 2)
    fact, (m1, s1) = _decoder_flops_and_output(model, "factorised", 2)
    auto, _ = _decoder_flops_and_output(model, "auto", 2)
    assert auto == fact and direct / fact > 1.6, (direct / 1e9, fact / 1e9)
    torch.testing.assert_close(m1, m0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s1, s0, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["direct", "factorised"])
@pytest.mark.parametrize("few", ["keys", "queries"])
def test_key_token_bias_removes_masked_keys_on_both_paths(mode, few):
    """The fixed-slot TFLite decoder masks its padding slots with key_token_bias: a masked key is
    as if it were not there, whichever path computes the attention."""
    from sam_edge.modeling.transformer import key_token_bias

    torch.manual_seed(0)
    att = Attention(64, 4, downsample_rate=2).double()
    att.mode = mode
    nq, nk = (200, 6) if few == "keys" else (6, 200)
    q = torch.randn(2, nq, 64, dtype=torch.double)
    k, v = torch.randn(2, nk, 64, dtype=torch.double), torch.randn(2, nk, 64, dtype=torch.double)
    keep = torch.ones(2, nk, dtype=torch.bool)
    keep[0, -1] = keep[1, 2] = False
    bias = (~keep).double() * -1e4
    with torch.no_grad(), key_token_bias(bias, nk):
        got = att(q, k, v)
    with torch.no_grad():
        for b in range(2):
            ref = att(q[b:b + 1], k[b:b + 1, keep[b]], v[b:b + 1, keep[b]])
            torch.testing.assert_close(got[b:b + 1], ref, rtol=1e-9, atol=1e-10)
        assert not torch.allclose(att(q, k, v), got)  # without the bias the masked keys count


def test_torch_export_takes_the_factorised_path_and_torchao_weights_the_direct_one():
    """Under torch.export the weights are fake tensors: the path choice must not mistake them for
    quantised ones (that sent every exported decoder down the direct path); a torchao int8 weight
    (a tensor subclass with only a linear kernel) must still go direct."""
    seen = []

    class Rec(Attention):
        def _path(self, q, k, v):
            seen.append(super()._path(q, k, v))
            return seen[-1]

    class Host(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.att = Rec(64, 4, downsample_rate=2)

        def forward(self, q, k):
            return self.att(q, k, k)

    n = torch.export.Dim("n", min=1, max=16)
    torch.export.export(Host().eval(), (torch.randn(1, 3, 64), torch.randn(1, 300, 64)),
                        dynamic_shapes=({1: n}, None), strict=False)
    assert seen and set(seen) == {"few_queries"}
    torchao = pytest.importorskip("torchao.quantization")
    att = Attention(64, 4, downsample_rate=2)
    torchao.quantize_(att, torchao.Int8WeightOnlyConfig())
    assert not att._plain_weights()
    assert att._path(torch.zeros(1, 3, 64), torch.zeros(1, 300, 64), torch.zeros(1, 300, 64)) == "direct"
