"""The export-format registry (:mod:`sam_edge.formats`): the built-ins' facts, help texts read
from it, one-line errors, and a toy format registered from this file alone ("torchscript":
``torch.jit.trace`` of the export wrappers) that exports, verifies, runs through
``sam_edge.runtime.load_predictor`` and ``sam-edge bench`` like a built-in one."""
from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import pytest
import torch

import sam_edge
from sam_edge.formats import (
    BUILTIN_FORMATS,
    FormatError,
    FormatSpec,
    format_names,
    get_format,
    installed_formats,
    missing_toolchain,
    parse_formats,
    parse_precisions,
    precisions_for,
    register_format,
    registration_refs,
    unregister_format,
    user_precisions,
)


# -- the built-ins --------------------------------------------------------------------------------
def test_builtin_formats_and_their_facts():
    assert format_names()[:4] == list(BUILTIN_FORMATS) == ["onnx", "executorch", "tflite", "coreml"]
    onnx, et, tfl, cml = (get_format(n) for n in BUILTIN_FORMATS)
    assert onnx.precisions == ("fp32", "fp16", "int8_dynamic", "int8_static") == tfl.precisions
    assert onnx.aliases == {"int8": ("int8_dynamic", "int8_static")}
    assert et.precisions == ("fp32", "int8_static") and et.aliases == {"int8": ("int8_static",)}
    assert cml.aliases == {"int8": ("int8_weights",), "palettize": ("palettize4", "palettize6")}
    assert (onnx.suffix, et.suffix, tfl.suffix, cml.suffix) == (".onnx", ".pte", ".tflite", ".mlpackage")
    assert onnx.toolchain == ("onnx", "onnxruntime", "onnxscript") and cml.toolchain == ("coremltools",)
    assert et.toolchain == ("executorch", "torchao")
    assert tfl.toolchain == ("litert_torch", "ai_edge_litert", "ai_edge_quantizer")
    from sam_edge.predictor import MAX_POINTS

    assert onnx.max_points == et.max_points == cml.max_points == MAX_POINTS
    assert tfl.max_points == 8 and "dynamic number of points" in tfl.max_points_reason
    assert tfl.decoder_dynamic_axes == {} and onnx.decoder_dynamic_axes["point_coords"] == {1: "num_points"}
    assert cml.platforms == ("darwin",) and onnx.runs_here
    for spec in map(get_format, BUILTIN_FORMATS):
        assert spec.module == f"sam_edge.formats.{spec.name}" and callable(spec.load_convert())
    assert precisions_for("coreml", ["fp32", "palettize", "int8_dynamic"]) == (
        ["fp32", "palettize4", "palettize6"], ["int8_dynamic"])
    assert precisions_for("executorch", ["int8", "fp16"]) == (["int8_static"], ["fp16"])
    assert {"fp32", "fp16", "int8", "palettize", "int8_weights"} <= set(user_precisions())


def test_one_table_agrees_with_the_help_texts():
    from sam_edge.commands import export as export_cmd
    from sam_edge.commands import segment as segment_cmd
    from sam_edge.export import api

    parser = argparse.ArgumentParser()
    export_cmd.add_arguments(parser)
    actions = {a.dest: a for a in parser._actions}
    assert actions["formats"].default == ",".join(format_names())
    assert all(name in actions["formats"].help for name in format_names())
    assert all(word in actions["precision"].help for word in user_precisions())
    seg = argparse.ArgumentParser()
    segment_cmd.add_arguments(seg)
    assert list(next(a for a in seg._actions if a.dest == "artifact_format").choices) == format_names()
    # the former tables, now read from the registry
    assert api.FORMATS == tuple(format_names()) and api.USER_PRECISIONS == user_precisions()
    from sam_edge.runtime import get_backend
    from sam_edge.formats.onnx import OnnxRuntimeBackend

    assert isinstance(get_backend("onnx"), OnnxRuntimeBackend)


def test_unknown_format_and_precision_are_one_line_errors():
    for call, needle in ((lambda: get_format("pdf"), "'pdf'"), (lambda: parse_formats("onnx,pdf"), "pdf"),
                         (lambda: parse_precisions("fp32,int9", "--precision"), "int9"),
                         (lambda: get_format("executorch").expand(["fp16"]), "'fp16'")):
        with pytest.raises(FormatError) as info:
            call()
        msg = str(info.value)
        assert needle in msg and "\n" not in msg and isinstance(info.value, ValueError)
    assert "onnx, executorch, tflite, coreml" in str(pytest.raises(FormatError, get_format, "pdf").value)
    from sam_edge.runtime import BackendUnavailable, get_backend

    with pytest.raises(BackendUnavailable, match="'pdf'"):
        get_backend("pdf")
    with pytest.raises(FormatError, match="already registered"):
        register_format(get_format("onnx"))
    with pytest.raises(FormatError, match="alias 'int8' names unknown"):
        FormatSpec(name="bad", suffix=".x", precisions=("fp32",), aliases={"int8": ("int8_static",)})


def test_missing_toolchain_and_installed_formats():
    spec = FormatSpec(name="ghost", suffix=".g", precisions=("fp32",), toolchain=("numpy", "no_such_toolchain_x"))
    register_format(spec)
    try:
        assert missing_toolchain("ghost") == ["no_such_toolchain_x"]
        ok, missing = installed_formats(["onnx", "ghost"])
        assert ok == ["onnx"] and missing == {"ghost": "not installed: no_such_toolchain_x"}
        assert get_format("ghost").module == __name__  # recorded: the module that registered it
    finally:
        unregister_format("ghost")
    assert "ghost" not in format_names()


# -- a toy format, registered from this file alone ------------------------------------------------
def export_torchscript(model, out_dir, precisions, calib_images=None, *, verify_images=None,
                       normalize_inside=True, mask_outputs="all", accept_failures=None):
    from sam_edge.export.common import ExportDir, load_images
    from sam_edge.export.wrappers import (DECODER_INPUT_NAMES, DECODER_OUTPUT_NAMES, ENCODER_INPUT_NAMES,
                                          ENCODER_OUTPUT_NAMES, DecoderWrapper, EncoderWrapper)

    spec = get_format("torchscript")
    xd = ExportDir(out_dir, model, normalize_inside=normalize_inside, mask_outputs=mask_outputs,
                   verify_images=verify_images if verify_images is not None else load_images(calib_images),
                   accept_failures=accept_failures)
    enc = EncoderWrapper(xd.model, normalize_inside=normalize_inside).eval()
    dec = DecoderWrapper(xd.model, mask_outputs=mask_outputs).eval()
    graphs = {"encoder": (enc, enc.example_inputs(), ENCODER_INPUT_NAMES, ENCODER_OUTPUT_NAMES),
              "decoder": (dec, dec.example_inputs(3), DECODER_INPUT_NAMES, DECODER_OUTPUT_NAMES)}
    for prec in spec.expand(precisions):
        for role, (module, args, ins, outs) in graphs.items():
            file = f"{role}_{prec}{spec.suffix}"
            staged = xd.staging(file)
            with torch.no_grad():
                torch.jit.trace(module, args, check_trace=False).save(str(staged))
            xd.add(staged, file, role=role, fmt=spec.name, precision=prec,
                   inputs=[{"name": n} for n in ins], outputs=[{"name": n} for n in outs],
                   dynamic_axes=spec.decoder_dynamic_axes if role == "decoder" else {},
                   exporter="torch.jit.trace", backend_versions={"torch": torch.__version__})
    return xd.manifest


class TorchScriptSession:
    def __init__(self, path) -> None:
        from sam_edge.runtime.feeds import canonical_names

        self.module = torch.jit.load(str(path)).eval()
        ins, outs = canonical_names(len(list(self.module.graph.inputs())) - 1)  # minus self
        self.input_names, self.output_names = list(ins), list(outs)

    def run(self, inputs):
        with torch.no_grad():
            out = self.module(*(torch.from_numpy(np.ascontiguousarray(inputs[k], np.float32))
                                for k in self.input_names))
        out = out if isinstance(out, tuple) else (out,)
        return {k: o.numpy() for k, o in zip(self.output_names, out)}


class TorchScriptBackend:
    name = "torch.jit"

    def load(self, path):
        return TorchScriptSession(path)

    def versions(self):
        return {"torch": torch.__version__}


TOY = FormatSpec(name="torchscript", suffix=".pt", precisions=("fp32",), toolchain=("torch",),
                 runtime_packages=("torch",), decoder_dynamic_axes={"point_coords": {1: "num_points"},
                                                                    "point_labels": {1: "num_points"}},
                 convert=export_torchscript, backend=TorchScriptBackend, description="torch.jit.trace (test)")


def register_toy_format() -> None:
    """What the bench runner's process calls (``--import tests.test_formats_registry:register_toy_format``)."""
    register_format(dataclasses.replace(TOY, module=f"{__name__}:register_toy_format"), replace=True)


@pytest.fixture(scope="module")
def toy():
    register_toy_format()
    yield get_format("torchscript")
    unregister_format("torchscript")


@pytest.fixture(scope="module")
def toy_export(toy, tmp_path_factory):
    from sam_edge.export.api import export_model
    from tests.export_helpers import calibration_photos

    torch.manual_seed(0)
    model = sam_edge.create_model("sam_test_tiny").eval()
    out = tmp_path_factory.mktemp("toy") / "exp"
    # fp16 / int8 are skipped with a note, like a built-in format's missing precisions
    man = export_model(model, out, formats=["torchscript"], precisions="fp32,fp16,int8",
                       verify_images=calibration_photos()[:2])
    return model, out, man


def test_toy_format_exports_verifies_and_runs_like_eager(toy, toy_export):
    from sam_edge.runtime import load_predictor

    assert "torchscript" in format_names()
    assert toy.module == f"{__name__}:register_toy_format"
    assert registration_refs(["onnx", "torchscript"]) == [toy.module]
    model, out, man = toy_export
    assert {a["file"] for a in man["artifacts"]} == {"encoder_fp32.pt", "decoder_fp32.pt"}
    for a in man["artifacts"]:
        assert a["format"] == "torchscript" and a["verification"]["passed"] is True
    photo = np.asarray(sam_edge.load_image("sam_edge/assets/astronaut.jpg"))
    pred = load_predictor(out, fmt="torchscript")
    eager = sam_edge.SamPredictor(model)
    pred.set_image(photo)
    eager.set_image(photo)
    h, w = photo.shape[:2]
    prompts = [dict(point_coords=np.array([[w / 2, h / 3]]), point_labels=np.array([1])),
               dict(box=np.array([w / 5, h / 5, 3 * w / 4, 4 * h / 5])),
               dict(point_coords=np.array([[w / 3, h / 2], [w / 2, h / 2], [w / 4, h / 4]]),
                    point_labels=np.array([1, 0, 1]), multimask_output=False)]
    for p in prompts:
        m1, s1, _ = pred.predict(**p)
        m2, s2, _ = eager.predict(**p)
        assert m1.shape == m2.shape
        agree = (m1 == m2).mean()
        assert agree > 0.999, agree
        np.testing.assert_allclose(s1, s2, atol=1e-4)


def test_toy_format_through_sam_edge_bench(toy, toy_export, tmp_path):
    from sam_edge.cli import main
    from sam_edge.data.synth import generate_dataset

    model, out, _ = toy_export
    generate_dataset(tmp_path / "data", num_images=2, image_size=128, seed=3)
    teacher = sam_edge.save_model(model, tmp_path / "tiny.safetensors")
    res_path = tmp_path / "res.json"
    # the runner runs in another process: it registers the toy format through --import
    rc = main(["bench", "--artifacts", str(out), "--data", str(tmp_path / "data"), "--teacher", "sam_test_tiny",
               "--teacher-checkpoint", str(teacher), "--num-images", "1", "--masks-per-image", "2",
               "--runs", "2", "--warmup", "1", "--threads", "1", "--out", str(res_path)])
    assert rc == 0
    rows = json.loads(res_path.read_text())["rows"]
    assert [(r["format"], r["precision"], r["error"]) for r in rows] == [("torchscript", "fp32", None)]
    # the same random model as teacher: the artifact reproduces it
    assert all(v["vs_teacher"]["miou"] > 0.97 for v in rows[0]["iou"].values())


def test_isolated_export_runs_each_format_in_its_own_process(toy, tmp_path, capfd):
    """``export_model(..., isolate=True)`` (the CLI's default): one process per format, the model
    object and images passed along, the toy format registered there too; one merged manifest."""
    from sam_edge.export.api import FormatProcessError, export_model
    from sam_edge.runtime import load_manifest
    from tests.export_helpers import calibration_photos

    torch.manual_seed(0)
    model = sam_edge.create_model("sam_test_tiny").eval()
    man = export_model(model, tmp_path, formats="torchscript,onnx", precisions="fp32,int8_weights",
                       verify_images=calibration_photos()[:1], isolate=True)
    out = capfd.readouterr().out
    assert "== torchscript ==" in out and "== onnx ==" in out and "skipping precision(s) int8_weights" in out
    assert {(a["format"], a["file"]) for a in load_manifest(tmp_path)["artifacts"]} == {
        ("torchscript", "encoder_fp32.pt"), ("torchscript", "decoder_fp32.pt"),
        ("onnx", "encoder_fp32.onnx"), ("onnx", "decoder_fp32.onnx")} == {(a["format"], a["file"]) for a in
                                                                          man["artifacts"]}
    # a failing format: the error names it, what came before is kept
    with pytest.raises(FormatProcessError, match="format onnx failed") as info:
        export_model(model, tmp_path, formats="torchscript,onnx", precisions="fp32,int8_static", isolate=True)
    assert info.value.returncode == 2 and "calibration images" in capfd.readouterr().err
    assert {a["format"] for a in load_manifest(tmp_path)["artifacts"]} >= {"torchscript"}
