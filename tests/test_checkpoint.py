"""Registry and checkpoint loading: official layouts, wrapping, safetensors, strictness."""
from __future__ import annotations

import pickle

import pytest
import torch

import sam_edge
from sam_edge.checkpoint import CheckpointError, read_state_dict, save_model
from sam_edge.registry import load_model
from tests.ref_modeling import build_reference_sam, randomize_
from tests.test_tiny_vit import mobile_sam_encoder_shapes


@pytest.mark.parametrize("name", ["sam_vit_b", "sam_vit_l", "sam_vit_h"])
def test_official_variants_have_reference_layout(name):
    """Key names and shapes equal the reference build of the same variant (official .pth layout)."""
    with torch.device("meta"):
        ours = sam_edge.create_model(name)
        ref = build_reference_sam(ours.config)
    ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert ours_shapes == ref_shapes
    expected = {"sam_vit_b": (768, 12), "sam_vit_l": (1024, 24), "sam_vit_h": (1280, 32)}[name]
    assert ours_shapes["image_encoder.patch_embed.proj.weight"][0] == expected[0]
    assert sum(k.endswith("attn.qkv.weight") for k in ours_shapes) == expected[1]


def _mobile_sam_full_shapes() -> dict[str, tuple[int, ...]]:
    """mobile_sam.pt's layout: TinyViT encoder keys (from MobileSAM's source, see
    test_tiny_vit) + SAM's prompt encoder and mask decoder keys (from the reference build)."""
    shapes = {f"image_encoder.{k}": v for k, v in mobile_sam_encoder_shapes().items()}
    with torch.device("meta"):
        ref = build_reference_sam(sam_edge.get_config("sam_vit_b"))
    for k, v in ref.state_dict().items():
        if not k.startswith("image_encoder."):
            shapes[k] = tuple(v.shape)
    return shapes


def test_mobile_sam_checkpoint_loads_strictly(tmp_path):
    shapes = _mobile_sam_full_shapes()
    assert len(shapes) == 439
    g = torch.Generator().manual_seed(0)
    sd = {
        k: (torch.randint(0, 100, s, generator=g) if k.endswith("num_batches_tracked") else torch.randn(s, generator=g))
        for k, s in shapes.items()
    }
    path = tmp_path / "mobile_sam.pt"
    torch.save(sd, path)
    model = sam_edge.create_model("mobilesam_tinyvit", checkpoint=path)
    loaded = model.state_dict()
    assert set(loaded) == set(sd)
    for k in ("image_encoder.patch_embed.seq.0.c.weight", "image_encoder.neck.0.weight",
              "mask_decoder.iou_token.weight", "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"):
        assert torch.equal(loaded[k], sd[k])


@pytest.mark.parametrize("wrap", ["plain", "model", "state_dict", "ddp"])
def test_wrapped_torch_checkpoints_load(tmp_path, wrap):
    torch.manual_seed(0)
    src = randomize_(sam_edge.create_model("sam_test_tiny"), seed=5)
    sd = src.state_dict()
    obj = {
        "plain": sd,
        "model": {"model": sd, "step": 10},
        "state_dict": {"state_dict": sd, "epoch": 1},
        "ddp": {"model": {f"module.{k}": v for k, v in sd.items()}},
    }[wrap]
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    model = sam_edge.create_model("sam_test_tiny", checkpoint=path)
    for k, v in sd.items():
        assert torch.equal(model.state_dict()[k], v), k


def test_safetensors_roundtrip_with_config(tmp_path):
    src = randomize_(sam_edge.create_model("mobilesam_test_tiny"), seed=2)
    path = save_model(src, tmp_path / "w.safetensors")
    assert (tmp_path / "w.json").is_file()
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temporary behind
    again = load_model(path)
    assert again.config == src.config
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        assert torch.equal(again.image_encoder(x), src.image_encoder(x))
    by_name = sam_edge.create_model("mobilesam_test_tiny", checkpoint=path)
    assert all(torch.equal(a, b) for a, b in zip(by_name.state_dict().values(), src.state_dict().values()))


def test_wrong_architecture_names_keys(tmp_path):
    torch.save(sam_edge.create_model("sam_test_tiny").state_dict(), tmp_path / "vit.pth")
    with pytest.raises(CheckpointError) as err:
        sam_edge.create_model("mobilesam_test_tiny", checkpoint=tmp_path / "vit.pth")
    msg = str(err.value)
    assert "ViT image encoder" in msg and "TinyViT" in msg
    assert "missing keys" in msg and "image_encoder.patch_embed.seq.0.c.weight" in msg
    assert "unexpected keys" in msg and "image_encoder.blocks.0.attn.qkv.weight" in msg


def test_mis_shaped_keys_named(tmp_path):
    sd = sam_edge.create_model("sam_test_tiny").state_dict()
    torch.save(sd, tmp_path / "tiny.pth")
    with pytest.raises(CheckpointError) as err:
        sam_edge.create_model("sam_test_tiny", checkpoint=tmp_path / "tiny.pth", image_size=512)
    msg = str(err.value)
    assert "mis-shaped keys" in msg and "image_encoder.pos_embed" in msg and "(1, 16, 16, 64)" in msg


class _Evil:
    def __reduce__(self):
        return (print, ("this would run arbitrary code",))


def test_pickle_needing_code_execution_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        torch.save({"model": _Evil()}, fh)
    with pytest.raises(CheckpointError, match="needs code execution"):
        read_state_dict(path)


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        sam_edge.create_model("sam_test_tiny", checkpoint=tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="bad.pth"):
        sam_edge.create_model("sam_test_tiny", checkpoint=bad)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="safetensors"):
        read_state_dict(bad_st)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="expected a state dict"):
        read_state_dict(tmp_path / "list.pth")


def test_registry_errors_and_overrides():
    with pytest.raises(KeyError, match="sam_vit_h"):
        sam_edge.get_config("sam_vit_x")
    cfg = sam_edge.get_config("sam_vit_b", image_size=512)
    assert cfg.embedding_size == 32 and sam_edge.get_config("sam_vit_b").image_size == 1024
    with pytest.raises(ValueError, match="multiple of 16"):
        sam_edge.get_config("sam_vit_b", image_size=500)
    with pytest.raises(ValueError, match="unknown model config keys"):
        sam_edge.ModelConfig.from_dict({"name": "x", "bogus": 1})
    assert {"sam_vit_h", "sam_vit_l", "sam_vit_b", "mobilesam_tinyvit"} <= set(sam_edge.list_models())


def test_conv_stem_vit_option():
    from sam_edge.modeling.image_encoder import ConvStemEmbed, ImageEncoderViT, PatchEmbed

    cfg = sam_edge.get_config("sam_test_tiny", patch_embed="conv")
    model = sam_edge.create_model("sam_test_tiny", patch_embed="conv", pretrained=False)
    assert isinstance(model.image_encoder.patch_embed, ConvStemEmbed)
    assert isinstance(sam_edge.create_model("sam_test_tiny").image_encoder.patch_embed, PatchEmbed)
    x = torch.randn(2, 3, cfg.image_size, cfg.image_size)
    emb = model.image_encoder(x)
    assert emb.shape == (2, cfg.prompt_embed_dim, cfg.embedding_size, cfg.embedding_size)
    # the stem is overlapping: a one-pixel change leaks into the neighbouring patch, unlike patchify
    x2 = x.clone()
    x2[:, :, 15, 15] += 5.0
    tokens = model.image_encoder.patch_embed(x2) - model.image_encoder.patch_embed(x)
    assert tokens[:, 1, 1].abs().max() > 0
    with pytest.raises(ValueError, match="patch_embed must be"):
        ImageEncoderViT(img_size=64, patch_embed="pixel")
    with pytest.raises(ValueError, match="patch_size=16 only"):
        ConvStemEmbed(patch_size=8)


@pytest.mark.parametrize("name", ["sam_test_tiny", "mobilesam_test_tiny", "sam_demo_teacher"])
def test_every_tiny_variant_runs_end_to_end(name):
    model = sam_edge.create_model(name)
    pred = sam_edge.SamPredictor(model)
    import numpy as np

    img = (np.random.default_rng(0).random((200, 300, 3)) * 255).astype(np.uint8)
    pred.set_image(img)
    masks, iou, low = pred.predict(np.array([[10.0, 20.0]]), np.array([1]))
    assert masks.shape == (3, 200, 300) and masks.dtype == bool
    assert iou.shape == (3,) and low.shape == (3, 64, 64)


def test_bundled_weights_load_by_default(tmp_path, monkeypatch):
    import dataclasses

    from sam_edge import registry

    src = randomize_(sam_edge.create_model("sam_test_tiny"), seed=9)
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    save_model(src, tmp_path / "tiny.safetensors")
    cfg = dataclasses.replace(sam_edge.get_config("sam_test_tiny"), name="tiny_bundled", bundled_weights="tiny.safetensors")
    monkeypatch.setitem(registry._REGISTRY, "tiny_bundled", cfg)
    loaded = sam_edge.create_model("tiny_bundled")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), src.state_dict().values()))
    torch.manual_seed(0)
    fresh = sam_edge.create_model("tiny_bundled", pretrained=False)
    assert not torch.equal(fresh.state_dict()["image_encoder.pos_embed"], src.state_dict()["image_encoder.pos_embed"])
    (tmp_path / "tiny.safetensors").unlink()
    with pytest.raises(CheckpointError, match="not found"):
        sam_edge.create_model("tiny_bundled")


def test_atomic_writes_get_normal_permissions(tmp_path):
    import os

    from sam_edge.utils.io import write_json_atomic

    write_json_atomic(tmp_path / "a.json", {"x": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~umask
    save_model(sam_edge.create_model("sam_test_tiny"), tmp_path / "w.safetensors")  # safetensors rewrites the file
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
