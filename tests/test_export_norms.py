"""sam_edge.export.norms: layer norms written as linear / 1x1-conv means (ops XNNPACK delegates)
compute the same function as the modules they replace."""
from __future__ import annotations

import torch
from torch import nn

from sam_edge import create_model
from sam_edge.export.norms import ProductLayerNorm, ProductLayerNorm2d, with_product_norms
from sam_edge.modeling.common import LayerNorm2d


def test_product_layer_norms_equal_the_originals():
    torch.manual_seed(0)
    ln = nn.LayerNorm(48).double()
    nn.init.normal_(ln.weight), nn.init.normal_(ln.bias)
    x = torch.randn(2, 7, 48, dtype=torch.double) * 3 + 1
    torch.testing.assert_close(ProductLayerNorm(ln)(x), ln(x), rtol=1e-12, atol=1e-12)
    ln2 = LayerNorm2d(16).double()
    nn.init.normal_(ln2.weight), nn.init.normal_(ln2.bias)
    y = torch.randn(2, 16, 5, 6, dtype=torch.double) * 3 + 1
    torch.testing.assert_close(ProductLayerNorm2d(ln2)(y), ln2(y), rtol=1e-12, atol=1e-12)


def test_with_product_norms_copies_the_model_and_keeps_its_outputs():
    from sam_edge.export.wrappers import DecoderWrapper

    model = create_model("sam_test_tiny").eval()
    dec = DecoderWrapper(model).eval()
    new, n = with_product_norms(dec)
    # the two-way transformer's 4 norms per block + final, the upscaling's and the mask
    # downscaling's LayerNorm2d: all replaced, the original untouched
    assert n >= 4 and not any(isinstance(m, (nn.LayerNorm, LayerNorm2d)) for m in new.modules())
    assert any(isinstance(m, nn.LayerNorm) for m in dec.modules())
    g = model.prompt_encoder.image_embedding_size
    args = (torch.randn(1, model.mask_decoder.transformer_dim, *g), torch.rand(1, 3, 2) * 200, torch.ones(1, 3),
            torch.randn(1, 1, 4 * g[0], 4 * g[1]), torch.ones(1))
    with torch.no_grad():
        for a, b in zip(new(*args), dec(*args)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
