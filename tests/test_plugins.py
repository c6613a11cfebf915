"""A new student family and a new export format are each "one file + one line": this file alone
registers a toy encoder family (its config, builder, fuse) and a toy format (TorchScript: its spec,
converter and runtime backend), then runs the toy student through export -> runtime -> bench
without touching the package."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

import sam_edge
from sam_edge import registry
from sam_edge.encoders import check_fields, register_encoder
from sam_edge.formats import FormatSpec, get_format, register_format, unregister_format
from sam_edge.registry import ModelConfig

# -- the toy student family -----------------------------------------------------------------------
FUSED: list[str] = []


@dataclass(frozen=True)
class PatchConvConfig:
    width: int = 16

    def __post_init__(self) -> None:
        check_fields(self)


class PatchConv(nn.Module):
    """B x 3 x S x S -> B x out_chans x S/16 x S/16: a 16x16 patch conv, a 3x3 conv, a 1x1 neck."""

    def __init__(self, width: int, out_chans: int) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, width, 16, stride=16)
        self.mix = nn.Conv2d(width, width, 3, padding=1)
        self.neck = nn.Conv2d(width, out_chans, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.gelu(self.patch(x))
        return self.neck(y + torch.nn.functional.gelu(self.mix(y)))


def _fuse(model: nn.Module) -> nn.Module:
    FUSED.append(type(model).__name__)
    return model


register_encoder("plugin_patchconv", PatchConvConfig, lambda cfg, image_size, out_chans: PatchConv(cfg.width, out_chans),
                 fuse=_fuse, description="toy patch-conv student (tests/test_plugins.py)")
registry.register(ModelConfig(name="plugin_student", encoder=PatchConvConfig(width=24), image_size=64,
                              prompt_embed_dim=32, decoder_num_heads=2, decoder_mlp_dim=64, iou_head_hidden_dim=32,
                              description="toy student of tests/test_plugins.py"))


# -- the toy format ------------------------------------------------------------------------------
def convert_torchscript(model, out_dir, precisions, calib_images=None, *, verify_images=None,
                        normalize_inside=True, mask_outputs="all", accept_failures=None):
    from sam_edge.export.common import ExportDir
    from sam_edge.export.wrappers import (DECODER_INPUT_NAMES, DECODER_OUTPUT_NAMES, ENCODER_INPUT_NAMES,
                                          ENCODER_OUTPUT_NAMES, DecoderWrapper, EncoderWrapper)

    spec = get_format("plugin_ts")
    xd = ExportDir(out_dir, model, normalize_inside=normalize_inside, mask_outputs=mask_outputs,
                   verify_images=verify_images, accept_failures=accept_failures)
    enc = EncoderWrapper(xd.model, normalize_inside=normalize_inside).eval()
    dec = DecoderWrapper(xd.model, mask_outputs=mask_outputs).eval()
    for prec in spec.expand(precisions):
        for role, module, args, ins, outs in (
                ("encoder", enc, enc.example_inputs(), ENCODER_INPUT_NAMES, ENCODER_OUTPUT_NAMES),
                ("decoder", dec, dec.example_inputs(3), DECODER_INPUT_NAMES, DECODER_OUTPUT_NAMES)):
            file = f"{role}_{prec}{spec.suffix}"
            staged = xd.staging(file)
            with torch.no_grad():
                torch.jit.trace(module, args, check_trace=False).save(str(staged))
            xd.add(staged, file, role=role, fmt=spec.name, precision=prec,
                   inputs=[{"name": n} for n in ins], outputs=[{"name": n} for n in outs],
                   dynamic_axes=spec.decoder_dynamic_axes if role == "decoder" else {},
                   exporter="torch.jit.trace", backend_versions={"torch": torch.__version__})
    return xd.manifest


class _Session:
    def __init__(self, path) -> None:
        from sam_edge.runtime.feeds import canonical_names

        self.module = torch.jit.load(str(path)).eval()
        ins, outs = canonical_names(len(list(self.module.graph.inputs())) - 1)
        self.input_names, self.output_names = list(ins), list(outs)

    def run(self, inputs):
        with torch.no_grad():
            out = self.module(*(torch.from_numpy(np.ascontiguousarray(inputs[k], np.float32)) for k in self.input_names))
        out = out if isinstance(out, tuple) else (out,)
        return {k: o.numpy() for k, o in zip(self.output_names, out)}


class TorchScriptBackend:
    name = "torch.jit"

    def load(self, path):
        return _Session(path)

    def versions(self):
        return {"torch": torch.__version__}


def register_plugin_format() -> None:
    """Registers the toy format; the bench runner's own process calls it too (the spec's ``module``)."""
    register_format(FormatSpec(
        name="plugin_ts", suffix=".pt", precisions=("fp32",), toolchain=("torch",), runtime_packages=("torch",),
        decoder_dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
        convert=convert_torchscript, backend=TorchScriptBackend, description="TorchScript (tests/test_plugins.py)",
        module=f"{__name__}:register_plugin_format"), replace=True)


@pytest.fixture(scope="module")
def plugin_format():
    register_plugin_format()
    yield get_format("plugin_ts")
    unregister_format("plugin_ts")


def test_toy_student_through_toy_format_runtime_and_bench(plugin_format, tmp_path):
    from sam_edge.cli import main
    from sam_edge.data.synth import generate_dataset
    from sam_edge.export.api import export_model
    from sam_edge.runtime import load_predictor
    from tests.export_helpers import calibration_photos

    torch.manual_seed(0)
    model = sam_edge.create_model("plugin_student").eval()
    assert isinstance(model.image_encoder, PatchConv) and model.config.encoder_kind == "plugin_patchconv"
    FUSED.clear()
    out = tmp_path / "export"
    man = export_model(model, out, formats=["plugin_ts"], precisions="fp32", verify_images=calibration_photos()[:2])
    assert FUSED, "the export did not fuse the student through its family's fuse()"
    assert {a["file"] for a in man["artifacts"]} == {"encoder_fp32.pt", "decoder_fp32.pt"}
    assert all(a["verification"]["passed"] for a in man["artifacts"])

    # runtime: the exported toy student answers like the eager one on a real photo
    photo = np.asarray(sam_edge.load_image("sam_edge/assets/astronaut.jpg"))
    pred, eager = load_predictor(out, fmt="plugin_ts"), sam_edge.SamPredictor(model)
    pred.set_image(photo)
    eager.set_image(photo)
    h, w = photo.shape[:2]
    for p in (dict(point_coords=np.array([[w / 2, h / 3]]), point_labels=np.array([1])),
              dict(box=np.array([w / 5, h / 5, 3 * w / 4, 4 * h / 5]))):
        m1, s1, _ = pred.predict(**p)
        m2, s2, _ = eager.predict(**p)
        assert (m1 == m2).mean() > 0.999
        np.testing.assert_allclose(s1, s2, atol=1e-4)

    # bench: the runner process registers the format through the spec's module reference
    generate_dataset(tmp_path / "data", num_images=2, image_size=128, seed=3)
    weights = sam_edge.save_model(model, tmp_path / "student.safetensors")
    res = tmp_path / "bench.json"
    rc = main(["bench", "--artifacts", str(out), "--data", str(tmp_path / "data"), "--teacher", "plugin_student",
               "--teacher-checkpoint", str(weights), "--num-images", "1", "--masks-per-image", "2",
               "--runs", "2", "--warmup", "1", "--threads", "1", "--out", str(res)])
    assert rc == 0
    rows = json.loads(res.read_text())["rows"]
    assert [(r["format"], r["precision"], r["error"]) for r in rows] == [("plugin_ts", "fp32", None)]
    assert all(v["vs_teacher"]["miou"] > 0.97 for v in rows[0]["iou"].values())


def test_a_second_registration_of_either_is_refused(plugin_format):
    with pytest.raises(ValueError, match="plugin_patchconv"):
        register_encoder("plugin_patchconv", PatchConvConfig, lambda c, s, o: PatchConv(c.width, o))
    with pytest.raises(ValueError, match="plugin_ts"):
        register_format(dataclasses.replace(plugin_format))
