"""TinyViT encoder: MobileSAM checkpoint layout, output shapes, batching, gradients, export."""
from __future__ import annotations

import itertools

import pytest
import torch

from sam_edge.modeling.tiny_vit import TinyViT, drop_path

TINY = dict(
    img_size=256,
    embed_dims=(16, 32, 48, 64),
    depths=(1, 1, 1, 1),
    num_heads=(1, 2, 3, 4),
    window_sizes=(4, 4, 8, 4),
)
# Same widths, but every attention stage needs window padding (28 % 5, 14 % 6, 14 % 4).
TINY_PADDED = dict(TINY, img_size=224, depths=(2, 1, 2, 1), window_sizes=(5, 5, 6, 4))

# Number of image-encoder keys in mobile_sam.pt (under the "image_encoder." prefix).
MOBILE_SAM_ENCODER_KEYS = 302


def mobile_sam_encoder_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of MobileSAM's image encoder, written out from the structure of
    mobile_sam/modeling/tiny_vit_sam.py + build_sam_vit_t (not from our module):

    * Conv2d_BN(a, b, ks, groups) = Sequential(c=Conv2d(bias=False), bn=BatchNorm2d(b));
    * patch_embed.seq = [Conv2d_BN(3, 32, 3), GELU, Conv2d_BN(32, 64, 3)];
    * layers.0 = ConvLayer: MBConv(conv1 1x1 -> 4x, conv2 dw 3x3, conv3 1x1 back);
    * layers.1-3 = BasicLayer of TinyViTBlock(attn[attention_biases (heads, ws*ws), norm, qkv,
      proj], mlp[norm, fc1, fc2], local_conv dw 3x3 Conv2d_BN); attention_bias_idxs is a
      non-persistent buffer, so it is not in the state dict;
    * layers.0-2 end with PatchMerging(conv1 1x1, conv2 dw 3x3, conv3 1x1) to the next width;
    * norm_head = LayerNorm(320), head = Linear(320, 1000);
    * neck = [Conv2d(320, 256, 1, bias=False), LayerNorm2d, Conv2d(256, 256, 3, bias=False),
      LayerNorm2d].
    """
    dims, depths, heads, windows = (64, 128, 160, 320), (2, 2, 6, 2), (2, 4, 5, 10), (7, 7, 14, 7)
    ref: dict[str, tuple[int, ...]] = {}

    def conv_bn(prefix: str, cin: int, cout: int, k: int, groups: int = 1) -> None:
        ref[f"{prefix}.c.weight"] = (cout, cin // groups, k, k)
        for name in ("weight", "bias", "running_mean", "running_var"):
            ref[f"{prefix}.bn.{name}"] = (cout,)
        ref[f"{prefix}.bn.num_batches_tracked"] = ()

    def linear(prefix: str, cin: int, cout: int) -> None:
        ref[f"{prefix}.weight"] = (cout, cin)
        ref[f"{prefix}.bias"] = (cout,)

    def layer_norm(prefix: str, dim: int) -> None:
        ref[f"{prefix}.weight"] = (dim,)
        ref[f"{prefix}.bias"] = (dim,)

    conv_bn("patch_embed.seq.0", 3, dims[0] // 2, 3)
    conv_bn("patch_embed.seq.2", dims[0] // 2, dims[0], 3)

    for i in range(depths[0]):
        p, d, hidden = f"layers.0.blocks.{i}", dims[0], dims[0] * 4
        conv_bn(f"{p}.conv1", d, hidden, 1)
        conv_bn(f"{p}.conv2", hidden, hidden, 3, groups=hidden)
        conv_bn(f"{p}.conv3", hidden, d, 1)

    for layer in range(1, 4):
        d = dims[layer]
        for i in range(depths[layer]):
            p = f"layers.{layer}.blocks.{i}"
            ref[f"{p}.attn.attention_biases"] = (heads[layer], windows[layer] ** 2)
            layer_norm(f"{p}.attn.norm", d)
            linear(f"{p}.attn.qkv", d, 3 * d)
            linear(f"{p}.attn.proj", d, d)
            layer_norm(f"{p}.mlp.norm", d)
            linear(f"{p}.mlp.fc1", d, 4 * d)
            linear(f"{p}.mlp.fc2", 4 * d, d)
            conv_bn(f"{p}.local_conv", d, d, 3, groups=d)

    for layer in range(3):
        p, d, out = f"layers.{layer}.downsample", dims[layer], dims[layer + 1]
        conv_bn(f"{p}.conv1", d, out, 1)
        conv_bn(f"{p}.conv2", out, out, 3, groups=out)
        conv_bn(f"{p}.conv3", out, out, 1)

    layer_norm("norm_head", dims[-1])
    linear("head", dims[-1], 1000)

    ref["neck.0.weight"] = (256, dims[-1], 1, 1)
    layer_norm("neck.1", 256)
    ref["neck.2.weight"] = (256, 256, 3, 3)
    layer_norm("neck.3", 256)
    return ref


def random_state_dict(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """A plausible random checkpoint: positive running variances, integer batch counters."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(123, dtype=torch.long)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[key] = torch.randn(shape, generator=g) * 0.2
    return sd


def randomized(model: TinyViT, seed: int = 0) -> TinyViT:
    """Fill every parameter/buffer randomly so no branch is a no-op (e.g. zero-init BN scales)."""
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(random_state_dict(shapes, seed), strict=True)
    return model


def test_state_dict_matches_mobile_sam_layout():
    ref = mobile_sam_encoder_shapes()
    ours = {k: tuple(v.shape) for k, v in TinyViT().state_dict().items()}
    assert len(ref) == MOBILE_SAM_ENCODER_KEYS
    assert sorted(set(ours) - set(ref)) == []
    assert sorted(set(ref) - set(ours)) == []
    mismatched = {k: (ours[k], ref[k]) for k in ref if ours[k] != ref[k]}
    assert mismatched == {}
    for key in (
        "patch_embed.seq.0.c.weight",
        "patch_embed.seq.0.bn.running_mean",
        "layers.0.blocks.0.conv1.c.weight",
        "layers.1.blocks.0.attn.qkv.weight",
        "layers.1.blocks.0.local_conv.bn.weight",
        "layers.1.downsample.conv2.c.weight",
        "neck.0.weight",
        "norm_head.weight",
        "head.weight",
    ):
        assert key in ours


def test_attention_bias_index_buffer_matches_mobile_sam():
    model = TinyViT()
    buffers = dict(model.named_buffers())
    idx_keys = [k for k in buffers if k.endswith("attention_bias_idxs")]
    assert len(idx_keys) == 2 + 6 + 2
    assert not any(k.endswith("attention_bias_idxs") for k in model.state_dict())
    for key in idx_keys:
        layer = int(key.split(".")[1])
        ws = (7, 7, 14, 7)[layer]
        # MobileSAM: offsets (|dy|, |dx|) numbered in first-seen order over all point pairs.
        points = list(itertools.product(range(ws), range(ws)))
        offsets: dict[tuple[int, int], int] = {}
        idxs = []
        for p1 in points:
            for p2 in points:
                off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
                idxs.append(offsets.setdefault(off, len(offsets)))
        expected = torch.tensor(idxs).view(len(points), len(points))
        assert torch.equal(buffers[key], expected), key
        assert buffers[key].dtype == torch.long


def test_strict_load_of_mobile_sam_shaped_state_dict():
    sd = random_state_dict(mobile_sam_encoder_shapes())
    model = TinyViT()
    result = model.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    loaded = model.state_dict()
    for key, value in sd.items():
        assert torch.equal(loaded[key], value), key
    # The full checkpoint stores them under "image_encoder."; stripping the prefix is all it takes.
    prefixed = {f"image_encoder.{k}": v for k, v in sd.items()}
    stripped = {k.removeprefix("image_encoder."): v for k, v in prefixed.items()}
    TinyViT().load_state_dict(stripped, strict=True)


@torch.no_grad()
def test_output_shape_default_config():
    model = TinyViT().eval()
    assert model.grid_size == 64
    assert model.stage_resolutions == (256, 128, 64, 64)
    out = model(torch.randn(1, 3, 1024, 1024))
    assert out.shape == (1, 256, 64, 64)
    assert torch.isfinite(out).all()


@torch.no_grad()
def test_output_shape_tiny_config():
    model = TinyViT(**TINY).eval()
    assert model.grid_size == 16
    assert model(torch.randn(1, 3, 256, 256)).shape == (1, 256, 16, 16)
    # last_merge_stride=2 halves the final grid (plain TinyViT behaviour).
    model2 = TinyViT(**TINY, last_merge_stride=2).eval()
    assert model2.grid_size == 8
    assert model2(torch.randn(1, 3, 256, 256)).shape == (1, 256, 8, 8)


@pytest.mark.parametrize("config", [TINY, TINY_PADDED], ids=["tiny", "tiny_padded"])
@torch.no_grad()
def test_eval_deterministic_and_batch_independent(config):
    torch.manual_seed(0)
    model = randomized(TinyViT(**config)).eval()
    s = config["img_size"]
    x = torch.randn(2, 3, s, s)
    out = model(x)
    assert out.shape == (2, 256, model.grid_size, model.grid_size)
    assert torch.equal(out, model(x))
    for i in range(2):
        torch.testing.assert_close(model(x[i : i + 1]), out[i : i + 1], atol=1e-5, rtol=0)
    # Changing one sample leaves the other's output untouched.
    x2 = x.clone()
    x2[1] = torch.randn(3, s, s)
    torch.testing.assert_close(model(x2)[0], out[0], atol=1e-5, rtol=0)


def test_gradients_reach_all_parameters_but_classifier():
    torch.manual_seed(0)
    model = randomized(TinyViT(**TINY_PADDED)).train()
    x = torch.randn(2, 3, 224, 224)
    model(x).square().mean().backward()
    for name, p in model.named_parameters():
        if name.startswith(("norm_head.", "head.")):
            assert p.grad is None, name
        else:
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name


def test_drop_path():
    x = torch.randn(1000, 4, 5)
    assert drop_path(x, 0.3, training=False) is x
    assert drop_path(x, 0.0, training=True) is x
    torch.manual_seed(0)
    y = drop_path(x, 0.25, training=True)
    kept = (y != 0).flatten(1).all(1)
    dropped = (y == 0).flatten(1).all(1)
    assert bool((kept | dropped).all())  # whole samples are dropped or kept
    assert 0.65 < kept.float().mean().item() < 0.85
    torch.testing.assert_close(y[kept], x[kept] / 0.75)

    torch.manual_seed(0)
    model = TinyViT(**TINY, drop_path_rate=0.5)
    rates = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.5) and min(rates) == 0.0
    randomized(model)
    x = torch.randn(2, 3, 256, 256)
    model.eval()
    with torch.no_grad():
        ref = model(x)
        assert torch.equal(model(x), ref)  # identity at inference
        model.train()
        torch.manual_seed(1)
        a = model(x)
        torch.manual_seed(2)
        b = model(x)
    assert not torch.allclose(a, b)  # stochastic in training


def test_torch_export_matches_eager():
    model = randomized(TinyViT(**TINY)).eval()
    x = torch.randn(1, 3, 256, 256)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), atol=1e-5, rtol=0)


def test_window_padding_by_concatenation_equals_zero_padding():
    """The window padding is written as concatenations (XNNPACK rejects the quantized pad op):
    it must be exactly F.pad's bottom / right zero padding, padded tokens attended to."""
    import torch.nn.functional as F

    from sam_edge.modeling.tiny_vit import TinyViTBlock

    torch.manual_seed(0)
    blk = TinyViTBlock(16, num_heads=2, window_size=5).eval()
    x = torch.randn(2, 14, 13, 16)

    def reference(x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        ws = 5
        ph, pw = (ws - h % ws) % ws, (ws - w % ws) % ws
        xp = F.pad(x, (0, 0, 0, pw, 0, ph))
        nh, nw = (h + ph) // ws, (w + pw) // ws
        t = xp.reshape(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
        t = blk.attn(t).view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, nh * ws, nw * ws, c)
        return t[:, :h, :w]

    with torch.no_grad():
        torch.testing.assert_close(blk._window_attention(x), reference(x), rtol=0, atol=0)
    assert "pad" not in str(torch.export.export(blk, (x,)).graph)  # no pad op left for XNNPACK
