"""Student image encoders (RepViT, small TinyViT): shapes, reparameterisation, checkpoints,
decoder compatibility with the demo teacher, and the predictor on a real photo."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import sam_edge
from sam_edge.checkpoint import CheckpointError, save_model
from sam_edge.modeling.repvit import RepDWMixer, RepViT, reparameterize_model
from sam_edge.registry import load_model

STUDENTS = ["repvit_demo_student", "tinyvit_demo_student", "repvit_sam"]
DEMO_STUDENTS = ["repvit_demo_student", "tinyvit_demo_student"]
TINY_REPVIT = dict(img_size=64, dims=(8, 16, 24, 32), depths=(1, 2, 3, 1), mlp_ratio=2.0, use_se=True, out_chans=16)


def _randomize_bn_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters (fresh BNs fold to the identity, which
    would hide folding bugs); zero-initialised BN scales become non-zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(0.5 + 0.5 * torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
    return module


def _features_and_output(encoder: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(backbone features entering the neck, encoder output): the neck's LayerNorms would hide
    a per-position scale error, so the features are compared too."""
    seen = {}
    handle = encoder.neck.register_forward_pre_hook(lambda _m, args: seen.setdefault("f", args[0]))
    try:
        with torch.no_grad():
            out = encoder(x)
    finally:
        handle.remove()
    return seen["f"], out


def _assert_close(a: torch.Tensor, b: torch.Tensor) -> None:
    scale = max(1.0, a.abs().max().item())
    diff = (a - b).abs().max().item()
    assert diff <= 1e-4 * scale, f"max abs diff {diff:.3g} at output scale {scale:.3g}"


@pytest.mark.parametrize("name", STUDENTS)
def test_student_output_shape(name):
    torch.manual_seed(0)
    model = sam_edge.create_model(name)
    cfg = model.config
    batch = 1 if cfg.image_size > 256 else 2
    x = torch.randn(batch, 3, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        emb = model.image_encoder(x)
    assert emb.shape == (batch, cfg.prompt_embed_dim, cfg.embedding_size, cfg.embedding_size)
    assert torch.isfinite(emb).all()
    assert emb.shape[-2:] == model.prompt_encoder.image_embedding_size


def test_student_configs():
    teacher = sam_edge.get_config("sam_demo_teacher")
    for name in STUDENTS:
        cfg = sam_edge.get_config(name)
        assert cfg.description
        # only the demo student ships weights (distilled here by configs/demo.yaml)
        assert bool(cfg.bundled_weights) == (name == "repvit_demo_student")
    assert sam_edge.get_config("repvit_demo_student").encoder_kind == "repvit"
    assert sam_edge.get_config("tinyvit_demo_student").encoder_kind == "tiny_vit"
    big = sam_edge.get_config("repvit_sam")
    assert big.encoder_kind == "repvit" and big.image_size == 1024 and big.prompt_embed_dim == 256
    assert "sam_vit_h" in big.description
    with torch.device("meta"):
        n_big = sum(p.numel() for p in sam_edge.create_model("repvit_sam").image_encoder.parameters())
        n_demo = sum(p.numel() for p in sam_edge.create_model("repvit_demo_student", pretrained=False).image_encoder.parameters())
        n_teacher = sum(
            p.numel() for p in sam_edge.create_model("sam_demo_teacher", pretrained=False).image_encoder.parameters()
        )
    assert 4e6 <= n_big <= 10e6
    assert 0.5e6 <= n_demo <= 2e6 and n_demo < n_teacher / 2
    # each config holds only its own encoder family's fields
    assert teacher.encoder_kind == "vit" and not hasattr(teacher.encoder, "use_se") and not hasattr(teacher, "rep_dims")


def test_repvit_stays_at_stride_16():
    # five stages: the transitions after the second one keep stride 16 (no stride 32)
    enc = RepViT(img_size=128, dims=(8, 16, 16, 24, 32), depths=(1, 1, 1, 1, 1), use_se=False, out_chans=12)
    sizes = []
    hooks = [s.register_forward_hook(lambda _m, _a, out: sizes.append(out.shape[-1])) for s in enc.stages]
    with torch.no_grad():
        out = enc(torch.randn(1, 3, 128, 128))
    for h in hooks:
        h.remove()
    assert sizes == [32, 16, 8, 8, 8]
    assert out.shape == (1, 12, 8, 8)
    with pytest.raises(ValueError, match="at least 3 stages"):
        RepViT(dims=(8, 16), depths=(1, 1))
    with pytest.raises(ValueError, match="equal length"):
        RepViT(dims=(8, 16, 24), depths=(1, 1))


def test_repvit_reparameterize_equivalence():
    torch.manual_seed(0)
    enc = _randomize_bn_(RepViT(**TINY_REPVIT), seed=1).eval()
    n_mixers = sum(isinstance(m, RepDWMixer) for m in enc.modules())
    assert n_mixers == sum(TINY_REPVIT["depths"])
    x = torch.randn(2, 3, 64, 64)
    feats, out = _features_and_output(enc, x)
    assert feats.abs().max() > 1e-2  # the branches carry signal

    assert enc.reparameterize() is enc
    assert not any(isinstance(m, nn.BatchNorm2d) for m in enc.modules())
    mixers = [m for m in enc.modules() if isinstance(m, RepDWMixer)]
    assert len(mixers) == n_mixers
    for m in mixers:  # ONE 3x3 depthwise conv with bias per mixer, no branches left
        conv = m.fused
        assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.groups == m.dim
        assert conv.bias is not None and m.dw3 is None and m.dw1 is None and m.bn_id is None
    feats2, out2 = _features_and_output(enc, x)
    _assert_close(feats, feats2)
    _assert_close(out, out2)

    # idempotent: a second call changes nothing
    sd = {k: v.clone() for k, v in enc.state_dict().items()}
    reparameterize_model(enc)
    assert all(torch.equal(v, enc.state_dict()[k]) for k, v in sd.items()) and set(sd) == set(enc.state_dict())
    # a fused model may be put back in train mode (no BN left) and computes the same thing
    enc.train()
    enc.reparameterize()
    with torch.no_grad():
        _assert_close(out, enc(x))


def test_reparameterize_refuses_training_mode():
    enc = RepViT(**TINY_REPVIT).train()
    with pytest.raises(RuntimeError, match="eval mode"):
        enc.reparameterize()
    model = sam_edge.create_model("repvit_demo_student").train()
    with pytest.raises(RuntimeError, match="eval"):
        reparameterize_model(model)
    # nothing was fused
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.image_encoder.modules())


def test_reparameterize_whole_sam_and_checkpoint_order(tmp_path):
    torch.manual_seed(0)
    model = _randomize_bn_(sam_edge.create_model("repvit_demo_student"), seed=3)
    x = torch.randn(1, 3, 256, 256)
    feats, out = _features_and_output(model.image_encoder, x)
    decoder_sd = {k: v.clone() for k, v in model.mask_decoder.state_dict().items()}
    assert reparameterize_model(model) is model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    feats2, out2 = _features_and_output(model.image_encoder, x)
    _assert_close(feats, feats2)
    _assert_close(out, out2)
    assert all(torch.equal(v, model.mask_decoder.state_dict()[k]) for k, v in decoder_sd.items())
    # fused weights do not fit the (training-layout) registry model: reparameterise after loading
    torch.save(model.state_dict(), tmp_path / "fused.pth")
    with pytest.raises(CheckpointError, match="missing keys"):
        sam_edge.create_model("repvit_demo_student", checkpoint=tmp_path / "fused.pth")


@pytest.mark.parametrize("name", DEMO_STUDENTS)
def test_save_load_roundtrip(tmp_path, name):
    torch.manual_seed(0)
    src = _randomize_bn_(sam_edge.create_model(name), seed=4)
    path = save_model(src, tmp_path / f"{name}.safetensors")
    again = load_model(path)
    assert again.config == src.config
    assert isinstance(again.image_encoder, type(src.image_encoder))
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        assert torch.equal(again.image_encoder(x), src.image_encoder(x))
    by_name = sam_edge.create_model(name, checkpoint=path)
    sd = src.state_dict()
    assert set(by_name.state_dict()) == set(sd)
    assert all(torch.equal(v, sd[k]) for k, v in by_name.state_dict().items())


@pytest.mark.parametrize("name", DEMO_STUDENTS)
def test_demo_student_takes_teacher_decoder(name):
    torch.manual_seed(0)
    teacher = sam_edge.create_model("sam_demo_teacher", pretrained=False)
    student = sam_edge.create_model(name)
    for part in ("mask_decoder", "prompt_encoder"):
        t_sd, s_sd = getattr(teacher, part).state_dict(), getattr(student, part).state_dict()
        assert {k: tuple(v.shape) for k, v in t_sd.items()} == {k: tuple(v.shape) for k, v in s_sd.items()}
        getattr(student, part).load_state_dict(t_sd)  # strict
        assert all(torch.equal(v, getattr(student, part).state_dict()[k]) for k, v in t_sd.items())
    # so the student, given the teacher's embedding, decodes exactly like the teacher
    emb = torch.randn(1, 128, 16, 16)
    pts = (torch.tensor([[[100.0, 120.0]]]), torch.tensor([[1]]))
    with torch.no_grad():
        outs = []
        for m in (teacher, student):
            sparse, dense = m.prompt_encoder(pts, None, None)
            outs.append(m.mask_decoder(emb, m.prompt_encoder.get_dense_pe(), sparse, dense, True))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()  # 512 x 512 x 3 uint8


@pytest.mark.parametrize("name", DEMO_STUDENTS)
def test_predictor_on_real_photo(name, astronaut):
    torch.manual_seed(0)
    model = sam_edge.create_model(name)
    pred = sam_edge.SamPredictor(model)
    image = astronaut[:, 64:448]  # non-square: exercises padding and the crop-back
    pred.set_image(image)
    assert pred.get_image_embedding().shape == (1, 128, 16, 16)
    masks, iou, low = pred.predict(np.array([[190.0, 110.0]]), np.array([1]))
    assert masks.shape == (3, 512, 384) and masks.dtype == bool
    assert iou.shape == (3,) and low.shape == (3, 64, 64)
    masks, iou, _ = pred.predict(box=np.array([120, 20, 300, 250]), multimask_output=False)
    assert masks.shape == (1, 512, 384) and iou.shape == (1,)
    pred.set_image(astronaut)
    masks, _, _ = pred.predict(np.array([[250.0, 250.0], [10.0, 10.0]]), np.array([1, 0]))
    assert masks.shape == (3, 512, 512)


def test_reparameterized_predictor_same_masks(astronaut):
    torch.manual_seed(0)
    model = _randomize_bn_(sam_edge.create_model("repvit_demo_student"), seed=5)
    prompts = [
        dict(point_coords=np.array([[190.0, 110.0]]), point_labels=np.array([1])),
        dict(box=np.array([120, 20, 300, 250]), multimask_output=False),
    ]

    def run() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        pred = sam_edge.SamPredictor(model)
        pred.set_image(astronaut)
        results = []
        for p in prompts:
            masks, iou, _ = pred.predict(**p)
            logits, _, _ = pred.predict(**p, return_logits=True)
            results.append((masks, iou, logits))
        return results

    before = run()
    reparameterize_model(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    after = run()
    for (m0, iou0, l0), (m1, iou1, l1) in zip(before, after):
        assert m1.shape == m0.shape and m0.shape[-2:] == (512, 512)
        scale = max(1.0, float(np.abs(l0).max()))
        assert np.abs(l1 - l0).max() <= 1e-3 * scale
        np.testing.assert_allclose(iou1, iou0, atol=1e-4)
        # identical masks, bar pixels whose logit is within rounding of the threshold
        differ = m0 != m1
        assert not differ[np.abs(l0) > 1e-3 * scale].any()
        assert differ.mean() < 1e-4
