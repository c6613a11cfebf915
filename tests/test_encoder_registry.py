"""The encoder-family registry (sam_edge.encoders): a family registered from this file alone, the
built-in families' variants (same values as the old flat ModelConfig), both config layouts, fusing,
key filters for foreign checkpoints, and the checkpoint module staying free of the registry."""
from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data as skdata
from torch import nn

import sam_edge
from sam_edge import encoders, registry
from sam_edge.checkpoint import save_model
from sam_edge.encoders import check_fields, fuse_model, get_encoder, register_encoder
from sam_edge.modeling.sam import PIXEL_MEAN, PIXEL_STD
from sam_edge.registry import ModelConfig, create_model, get_config, load_model, load_model_spec

ROOT = Path(__file__).resolve().parents[1]

# -- a toy encoder family, registered from this file alone ----------------------------------------
FUSED: list[str] = []  # what the toy fuse was called on
FOREIGN_KEY = "backbone.stem.weight"  # tell-tale key of the toy's "foreign" checkpoint layout


@dataclass(frozen=True)
class ToyConfig:
    width: int = 8
    kernel: int = 4

    def __post_init__(self) -> None:
        check_fields(self)
        if 16 % self.kernel:
            raise ValueError(f"kernel must divide 16, got {self.kernel}")


class ToyEncoder(nn.Module):
    """B x 3 x S x S -> B x out_chans x S/16 x S/16: two strided convs and a 1x1."""

    def __init__(self, width: int, kernel: int, out_chans: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, kernel, stride=kernel)
        self.body = nn.Conv2d(width, width, 16 // kernel, stride=16 // kernel)
        self.neck = nn.Conv2d(width, out_chans, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(torch.nn.functional.gelu(self.body(torch.nn.functional.gelu(self.stem(x)))))


def _toy_build(cfg: ToyConfig, image_size: int, out_chans: int) -> nn.Module:
    return ToyEncoder(cfg.width, cfg.kernel, out_chans)


def _toy_fuse(model: nn.Module) -> nn.Module:
    FUSED.append(getattr(getattr(model, "config", None), "name", type(model).__name__))
    return model


def _toy_filter(sd: dict) -> dict:
    """The toy's foreign layout names the encoder ``backbone.``."""
    if FOREIGN_KEY not in sd:
        return sd
    return {("image_encoder." + k[len("backbone."):] if k.startswith("backbone.") else k): v for k, v in sd.items()}


TOY = register_encoder("toy", ToyConfig, _toy_build, fuse=_toy_fuse, filter_keys=_toy_filter,
                       approx_params=lambda c: 3 * 16 * c.width + c.width ** 2 * 16,
                       legacy_names={"toy_width": "width"}, description="a toy conv net (tests)")
TOY_MODEL = registry.register(ModelConfig(
    name="toy_test_model", encoder=ToyConfig(width=12), image_size=64, prompt_embed_dim=32,
    decoder_num_heads=2, decoder_mlp_dim=64, iou_head_hidden_dim=32, description="toy family (tests)",
))


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_toy_family_builds_and_segments_a_photo():
    cfg = get_config("toy_test_model")
    assert cfg.encoder_kind == "toy" and cfg.encoder == ToyConfig(width=12) and cfg.family is TOY
    assert "toy" in encoders.encoder_kinds() and get_encoder("toy") is TOY
    torch.manual_seed(0)
    model = create_model("toy_test_model")
    assert isinstance(model.image_encoder, ToyEncoder) and model.config == cfg and not model.training
    with torch.no_grad():
        emb = model.image_encoder(torch.randn(2, 3, 64, 64))
    assert emb.shape == (2, 32, 4, 4)
    image = skdata.astronaut()  # 512 x 512 RGB photo
    pred = sam_edge.SamPredictor(model)
    pred.set_image(image)
    masks, scores, low = pred.predict(box=np.array([100.0, 20.0, 400.0, 500.0]), multimask_output=True)
    assert masks.shape == (3, 512, 512) and masks.dtype == bool
    assert scores.shape == (3,) and np.isfinite(scores).all() and low.shape == (3, 16, 16)
    # overrides by field name and by the family's old-style name
    assert get_config("toy_test_model", width=6).encoder.width == 6
    assert get_config("toy_test_model", toy_width=6) == get_config("toy_test_model", width=6)
    assert get_config("toy_test_model", width=6).toy_width == 6  # old-style name reads too


def test_toy_save_load_round_trip(tmp_path):
    torch.manual_seed(1)
    model = create_model("toy_test_model")
    path = save_model(model, tmp_path / "toy.safetensors")
    stored = json.loads((tmp_path / "toy.json").read_text())
    assert stored["encoder_kind"] == "toy" and stored["encoder"] == {"width": 12, "kernel": 4}
    again = load_model(path)
    assert again.config == model.config and _same_weights(again, model)
    assert load_model_spec(str(path)).config == model.config
    assert sam_edge.load_model(path).config == model.config  # the package-level name
    # by name + checkpoint, too
    assert _same_weights(create_model("toy_test_model", checkpoint=path), model)


def test_toy_key_filter_reads_a_foreign_layout(tmp_path):
    torch.manual_seed(2)
    model = create_model("toy_test_model")
    foreign = {("backbone." + k[len("image_encoder."):] if k.startswith("image_encoder.") else k): v
               for k, v in model.state_dict().items()}
    assert FOREIGN_KEY in foreign
    torch.save({"model": foreign}, tmp_path / "foreign.pth")
    assert _same_weights(create_model("toy_test_model", checkpoint=tmp_path / "foreign.pth"), model)
    # another family does not apply the toy's filter: the keys are named as missing
    with pytest.raises(sam_edge.CheckpointError, match="missing keys"):
        create_model("sam_test_tiny", checkpoint=tmp_path / "foreign.pth")


def test_fuse_model_calls_the_familys_fuse():
    FUSED.clear()
    model = create_model("toy_test_model")
    assert fuse_model(model) is model and FUSED == ["toy_test_model"]
    # a ViT has no fuse: the toy's is not called for it
    FUSED.clear()
    vit = create_model("sam_test_tiny")
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    fuse_model(vit)
    assert FUSED == [] and all(torch.equal(before[k], v) for k, v in vit.state_dict().items())
    # RepViT: its BatchNorms fold away
    rep = create_model("repvit_demo_student", pretrained=False)
    assert any(isinstance(m, nn.BatchNorm2d) for m in rep.modules())
    fuse_model(rep)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in rep.modules())
    # a module without a config gets every family's fuse
    FUSED.clear()
    fuse_model(nn.Sequential(nn.Conv2d(3, 3, 1)))
    assert FUSED == ["Sequential"]


def test_duplicates_are_refused():
    with pytest.raises(ValueError, match="'toy' is already registered"):
        register_encoder("toy", ToyConfig, _toy_build)
    with pytest.raises(ValueError, match="'repvit' is already registered"):
        register_encoder("repvit", ToyConfig, _toy_build)
    with pytest.raises(ValueError, match="'toy_test_model' is already registered"):
        registry.register(TOY_MODEL)
    with pytest.raises(ValueError, match="'sam_vit_b' is already registered"):
        registry.register(dataclasses.replace(get_config("sam_test_tiny"), name="sam_vit_b"))


def test_bad_fields_are_refused_naming_them():
    with pytest.raises(ValueError, match="width must be an integer"):
        ToyConfig(width=0)
    with pytest.raises(ValueError, match="width must be an integer"):
        get_config("toy_test_model", width=-1)
    with pytest.raises(ValueError, match="kernel must divide 16"):
        get_config("toy_test_model", kernel=3)
    with pytest.raises(TypeError, match="widht"):
        get_config("toy_test_model", widht=3)
    with pytest.raises(TypeError, match="rep_dims"):  # another family's field
        get_config("toy_test_model", rep_dims=(8, 8))
    with pytest.raises(TypeError, match="embed_dims"):  # TinyViT's name, not ViT's
        create_model("sam_test_tiny", embed_dims=(8, 8))
    with pytest.raises(ValueError, match="tiny_window_sizes must be"):
        get_config("mobilesam_test_tiny", tiny_window_sizes=(4, 0, 4, 4))
    with pytest.raises(ValueError, match="encoder_kind must be one of"):
        ModelConfig(name="x", encoder_kind="nope")
    with pytest.raises(ValueError, match="does not configure encoder_kind 'vit'"):
        ModelConfig(name="x", encoder_kind="vit", encoder=ToyConfig())
    with pytest.raises(ValueError, match=r"unknown model config keys \['bogus'\]"):
        ModelConfig.from_dict({"name": "x", "bogus": 1})
    with pytest.raises(ValueError, match=r"unknown model config keys \['encoder.depthh'\]"):
        ModelConfig.from_dict({"name": "x", "encoder_kind": "repvit", "encoder": {"depthh": [1, 1]}})
    with pytest.raises(ValueError, match="rep_use_se must be true or false"):  # old flat, other family
        ModelConfig.from_dict({"name": "x", "encoder_kind": "vit", "rep_use_se": "yes"})
    with pytest.raises(ValueError, match="rep_dims must be"):  # old flat, own family
        ModelConfig.from_dict({"name": "x", "encoder_kind": "repvit", "rep_dims": [8, -1]})
    with pytest.raises(ValueError, match="global_attn_indexes"):
        ModelConfig.from_dict({**get_config("sam_test_tiny").to_dict(), "global_attn_indexes": [2, 99]})
    # a family whose config cannot be checked is refused when registered
    @dataclass(frozen=True)
    class Untyped:
        sizes: list = dataclasses.field(default_factory=list)

    with pytest.raises(TypeError, match="sizes"):
        register_encoder("untyped", Untyped, _toy_build)


# -- built-in variants: the values of the old flat ModelConfig (sam_edge/registry.py before the
# encoder registry), every family's fields by their old flat names --------------------------------
OLD_VALUES = {
    'mobilesam_test_tiny': dict(encoder_kind='tiny_vit', tiny_embed_dims=(16, 32, 48, 64),
                              tiny_depths=(1, 1, 1, 1), tiny_num_heads=(1, 2, 3, 4),
                              tiny_window_sizes=(4, 4, 8, 4), mlp_ratio=4.0, image_size=256,
                              prompt_embed_dim=64, mask_in_chans=16, decoder_depth=2, decoder_num_heads=4,
                              decoder_mlp_dim=128, iou_head_hidden_dim=64, num_multimask_outputs=3,
                              checkpoint_hint='', bundled_weights=''),
    'mobilesam_tinyvit': dict(encoder_kind='tiny_vit', tiny_embed_dims=(64, 128, 160, 320),
                            tiny_depths=(2, 2, 6, 2), tiny_num_heads=(2, 4, 5, 10),
                            tiny_window_sizes=(7, 7, 14, 7), mlp_ratio=4.0, image_size=1024,
                            prompt_embed_dim=256, mask_in_chans=16, decoder_depth=2, decoder_num_heads=8,
                            decoder_mlp_dim=2048, iou_head_hidden_dim=256, num_multimask_outputs=3,
                            checkpoint_hint='mobile_sam.pt', bundled_weights=''),
    'repvit_demo_student': dict(encoder_kind='repvit', rep_dims=(24, 48, 128, 192), rep_depths=(1, 2, 4, 2),
                              rep_use_se=True, mlp_ratio=2.0, image_size=256, prompt_embed_dim=128,
                              mask_in_chans=16, decoder_depth=2, decoder_num_heads=4, decoder_mlp_dim=1024,
                              iou_head_hidden_dim=128, num_multimask_outputs=3, checkpoint_hint='',
                              bundled_weights='repvit_demo_student.safetensors'),
    'repvit_sam': dict(encoder_kind='repvit', rep_dims=(48, 96, 192, 384), rep_depths=(2, 2, 14, 2),
                     rep_use_se=True, mlp_ratio=2.0, image_size=1024, prompt_embed_dim=256, mask_in_chans=16,
                     decoder_depth=2, decoder_num_heads=8, decoder_mlp_dim=2048, iou_head_hidden_dim=256,
                     num_multimask_outputs=3, checkpoint_hint='', bundled_weights=''),
    'sam_demo_teacher': dict(encoder_kind='vit', patch_size=16, patch_embed='patch', embed_dim=192, depth=6,
                           num_heads=3, global_attn_indexes=(2, 5), window_size=8, mlp_ratio=4.0,
                           image_size=256, prompt_embed_dim=128, mask_in_chans=16, decoder_depth=2,
                           decoder_num_heads=4, decoder_mlp_dim=1024, iou_head_hidden_dim=128,
                           num_multimask_outputs=3, checkpoint_hint='',
                           bundled_weights='sam_demo_teacher.safetensors'),
    'sam_test_tiny': dict(encoder_kind='vit', patch_size=16, patch_embed='patch', embed_dim=64, depth=4,
                        num_heads=2, global_attn_indexes=(1, 3), window_size=4, mlp_ratio=4.0, image_size=256,
                        prompt_embed_dim=64, mask_in_chans=16, decoder_depth=2, decoder_num_heads=4,
                        decoder_mlp_dim=128, iou_head_hidden_dim=64, num_multimask_outputs=3,
                        checkpoint_hint='', bundled_weights=''),
    'sam_vit_b': dict(encoder_kind='vit', patch_size=16, patch_embed='patch', embed_dim=768, depth=12,
                    num_heads=12, global_attn_indexes=(2, 5, 8, 11), window_size=14, mlp_ratio=4.0,
                    image_size=1024, prompt_embed_dim=256, mask_in_chans=16, decoder_depth=2,
                    decoder_num_heads=8, decoder_mlp_dim=2048, iou_head_hidden_dim=256,
                    num_multimask_outputs=3, checkpoint_hint='sam_vit_b_01ec64.pth', bundled_weights=''),
    'sam_vit_h': dict(encoder_kind='vit', patch_size=16, patch_embed='patch', embed_dim=1280, depth=32,
                    num_heads=16, global_attn_indexes=(7, 15, 23, 31), window_size=14, mlp_ratio=4.0,
                    image_size=1024, prompt_embed_dim=256, mask_in_chans=16, decoder_depth=2,
                    decoder_num_heads=8, decoder_mlp_dim=2048, iou_head_hidden_dim=256,
                    num_multimask_outputs=3, checkpoint_hint='sam_vit_h_4b8939.pth', bundled_weights=''),
    'sam_vit_l': dict(encoder_kind='vit', patch_size=16, patch_embed='patch', embed_dim=1024, depth=24,
                    num_heads=16, global_attn_indexes=(5, 11, 17, 23), window_size=14, mlp_ratio=4.0,
                    image_size=1024, prompt_embed_dim=256, mask_in_chans=16, decoder_depth=2,
                    decoder_num_heads=8, decoder_mlp_dim=2048, iou_head_hidden_dim=256,
                    num_multimask_outputs=3, checkpoint_hint='sam_vit_l_0b3195.pth', bundled_weights=''),
    'tinyvit_demo_student': dict(encoder_kind='tiny_vit', tiny_embed_dims=(24, 48, 96, 160),
                               tiny_depths=(1, 2, 3, 1), tiny_num_heads=(1, 2, 3, 5),
                               tiny_window_sizes=(8, 8, 16, 8), mlp_ratio=4.0, image_size=256,
                               prompt_embed_dim=128, mask_in_chans=16, decoder_depth=2, decoder_num_heads=4,
                               decoder_mlp_dim=1024, iou_head_hidden_dim=128, num_multimask_outputs=3,
                               checkpoint_hint='', bundled_weights=''),
}
TINY = ["sam_test_tiny", "mobilesam_test_tiny", "sam_demo_teacher", "repvit_demo_student", "tinyvit_demo_student"]


def test_builtin_variants_keep_their_old_values():
    assert set(OLD_VALUES) <= set(sam_edge.list_models())
    for name, old in OLD_VALUES.items():
        cfg = get_config(name)
        got = {k: getattr(cfg, k) for k in old}
        assert got == old, name
        assert cfg.pixel_mean == PIXEL_MEAN and cfg.pixel_std == PIXEL_STD
        assert cfg.description
    # the demo students copy the demo teacher's decoder
    teacher = get_config("sam_demo_teacher").decoder_fields()
    for name in ("repvit_demo_student", "tinyvit_demo_student"):
        assert get_config(name).decoder_fields() == teacher


@pytest.mark.parametrize("name", TINY)
def test_every_tiny_builtin_builds(name):
    cfg = get_config(name)
    torch.manual_seed(0)
    model = create_model(name, pretrained=False)
    x = torch.randn(1, 3, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        emb = model.image_encoder(x)
    assert emb.shape == (1, cfg.prompt_embed_dim, cfg.embedding_size, cfg.embedding_size)
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_big_builtins_build_on_the_meta_device():
    for name in ("sam_vit_b", "sam_vit_l", "sam_vit_h", "mobilesam_tinyvit", "repvit_sam"):
        cfg = get_config(name)
        with torch.device("meta"):
            model = create_model(name)
        n = sum(p.numel() for p in model.parameters())
        assert 0.3 * cfg.approx_params() < n < 3 * cfg.approx_params() + 5e6, name
        assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def _old_flat(name: str) -> dict:
    """The dict the old flat ModelConfig.to_dict() gave: every family's fields side by side."""
    defaults = dict(patch_size=16, patch_embed="patch", embed_dim=768, depth=12, num_heads=12,
                    global_attn_indexes=[2, 5, 8, 11], window_size=14, mlp_ratio=4.0,
                    tiny_embed_dims=[64, 128, 160, 320], tiny_depths=[2, 2, 6, 2], tiny_num_heads=[2, 4, 5, 10],
                    tiny_window_sizes=[7, 7, 14, 7], rep_dims=[48, 96, 192, 384], rep_depths=[2, 2, 14, 2],
                    rep_use_se=True)
    old = {k: list(v) if isinstance(v, tuple) else v for k, v in OLD_VALUES[name].items()}
    return {"name": name, **defaults, **old, "pixel_mean": list(PIXEL_MEAN), "pixel_std": list(PIXEL_STD),
            "description": "old"}


@pytest.mark.parametrize("name", sorted(OLD_VALUES))
def test_old_flat_dicts_load(name):
    cfg = ModelConfig.from_dict(_old_flat(name))
    assert cfg == dataclasses.replace(get_config(name), description="old")
    assert ModelConfig.normalize_dict(_old_flat(name)) == cfg.to_dict()


def test_bundled_files_store_the_old_layout_and_load():
    for stem in ("sam_demo_teacher", "repvit_demo_student"):
        flat = json.loads((registry.WEIGHTS_DIR / f"{stem}.json").read_text())
        assert "tiny_embed_dims" in flat and "encoder" not in flat  # written by the old layout
        cfg = ModelConfig.from_dict(flat)
        ref = get_config(stem)
        assert dataclasses.replace(cfg, description=ref.description, bundled_weights=ref.bundled_weights) == ref
        model = load_model(registry.WEIGHTS_DIR / f"{stem}.safetensors")  # config from the metadata
        assert _same_weights(model, create_model(stem))
    manifest = json.loads((ROOT / "apps" / "model_manifest.json").read_text())
    assert ModelConfig.from_dict(manifest["model"]["config"]).encoder == get_config("repvit_demo_student").encoder


def test_overrides_by_old_and_new_names():
    assert get_config("mobilesam_test_tiny", tiny_window_sizes=(5, 5, 7, 5)) == \
        get_config("mobilesam_test_tiny", window_sizes=(5, 5, 7, 5))
    assert get_config("repvit_sam", rep_dims=(16, 32, 48, 64)).encoder.dims == (16, 32, 48, 64)
    assert get_config("sam_test_tiny", embed_dim=32).encoder.embed_dim == 32
    cfg = get_config("sam_test_tiny", image_size=512, window_size=5)
    assert cfg.image_size == 512 and cfg.window_size == 5 and cfg.encoder.window_size == 5
    # switching family: the new family's defaults
    assert get_config("sam_test_tiny", encoder_kind="repvit").encoder == get_encoder("repvit").config_cls()
    # the mixed form the hostile tests use: nested dict + old flat names on top
    mixed = {**get_config("sam_test_tiny").to_dict(), "embed_dim": 96}
    assert ModelConfig.from_dict(mixed).encoder.embed_dim == 96


def test_checkpoint_module_does_not_import_the_registry():
    tree = ast.parse((ROOT / "sam_edge" / "checkpoint.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported.add(("." * node.level) + (node.module or ""))
            imported.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    assert not any("registry" in m or "encoders" in m for m in imported), imported


def test_builtin_families_load_lazily():
    code = ("import sys, sam_edge; assert 'sam_edge.encoders.vit' not in sys.modules; "
            "from sam_edge.encoders import get_encoder; get_encoder('tiny_vit'); "
            "assert 'sam_edge.encoders.vit' in sys.modules and 'sam_edge.encoders.repvit' not in sys.modules; "
            "sam_edge.get_config('repvit_sam'); assert 'sam_edge.encoders.repvit' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_models_command_shows_the_family(capsys):
    from sam_edge.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("repvit_sam "))
    assert " repvit " in line
    assert "encoder family" in out and "toy: a toy conv net (tests)" in out
