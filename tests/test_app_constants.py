"""sam_edge.export.app_constants: the mobile apps' generated ModelConstants.swift / .kt.

* generated from a tiny real ONNX export, the Swift and Kotlin text is parsed back and every
  input / output name and shape is checked against the manifest and against the ONNX graphs;
* the committed files in apps/ are what ``generate`` produces from the committed source manifest
  (apps/model_manifest.json), so they cannot drift from the generator;
* the points spec (TFLite fixed slots, Core ML / ExecuTorch ranges) and the benchmark JSON shape
  the apps write (read by benchmarks/devices/ingest.py).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from sam_edge.export import app_constants as ac
from sam_edge.runtime.manifest import ManifestError

REPO = Path(__file__).resolve().parents[1]
APPS = REPO / "apps"
REAL_EXPORT = REPO / "out" / "export" / "manifest.json"


# -- parsing the generated sources ---------------------------------------------------------------

_SWIFT_TENSOR = re.compile(r'TensorSpec\(name: "([^"]+)", shape: \[([^\]]*)\], dtype: "([^"]+)"\)')
_KT_TENSOR = re.compile(r'TensorSpec\("([^"]+)", longArrayOf\(([^)]*)\), "([^"]+)"\)')


def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",") if v.strip()]


def parse_swift(text: str) -> dict:
    out = {}
    for role in ("encoder", "decoder"):
        for kind in ("Inputs", "Outputs"):
            block = re.search(rf"static let {role}{kind}: \[TensorSpec\] = \[(.*?)\n    \]", text, re.S).group(1)
            out[f"{role}_{kind.lower()}"] = [(n, _ints(s), d) for n, s, d in _SWIFT_TENSOR.findall(block)]
    for key in ("imageSize", "maskInputSize", "embeddingSize", "embedDim", "numMaskOutputs", "singleMaskIndex",
                "pointsMin", "pointsMax"):
        out[key] = int(re.search(rf"static let {key} = (-?\d+)", text).group(1))
    out["fixedPointSlots"] = re.search(r"static let fixedPointSlots: Int\? = (\w+)", text).group(1)
    for key in ("pixelMean", "pixelStd"):
        vals = re.search(rf"static let {key}: \[Float\] = \[([^\]]*)\]", text).group(1)
        out[key] = [float(v) for v in vals.split(",")]
    out["multimaskIndices"] = _ints(re.search(r"static let multimaskIndices: \[Int\] = \[([^\]]*)\]", text).group(1))
    out["normalizeInside"] = re.search(r"static let normalizeInside = (\w+)", text).group(1) == "true"
    out["padLabel"] = float(re.search(r"static let padLabel: Float = (\S+)", text).group(1))
    for key in ("encoderFile", "decoderFile", "format", "precision"):
        out[key] = re.search(rf'static let {key} = "([^"]*)"', text).group(1)
    return out


def parse_kotlin(text: str) -> dict:
    out = {}
    for role in ("ENCODER", "DECODER"):
        for kind in ("INPUTS", "OUTPUTS"):
            block = re.search(rf"val {role}_{kind} = listOf\((.*?)\n    \)", text, re.S).group(1)
            out[f"{role.lower()}_{kind.lower()}"] = [(n, _ints(s), d) for n, s, d in _KT_TENSOR.findall(block)]
    for key in ("IMAGE_SIZE", "MASK_INPUT_SIZE", "EMBEDDING_SIZE", "EMBED_DIM", "NUM_MASK_OUTPUTS",
                "SINGLE_MASK_INDEX", "FIXED_POINT_SLOTS", "POINTS_MIN", "POINTS_MAX"):
        out[key] = int(re.search(rf"const val {key} = (-?\d+)", text).group(1))
    for key in ("PIXEL_MEAN", "PIXEL_STD"):
        vals = re.search(rf"val {key} = floatArrayOf\(([^)]*)\)", text).group(1)
        out[key] = [float(v.strip().rstrip("f")) for v in vals.split(",")]
    out["MULTIMASK_INDICES"] = _ints(re.search(r"val MULTIMASK_INDICES = intArrayOf\(([^)]*)\)", text).group(1))
    out["NORMALIZE_INSIDE"] = re.search(r"const val NORMALIZE_INSIDE = (\w+)", text).group(1) == "true"
    out["PAD_LABEL"] = float(re.search(r"const val PAD_LABEL = (\S+)f", text).group(1))
    for key in ("ENCODER_FILE", "DECODER_FILE", "FORMAT", "PRECISION"):
        out[key] = re.search(rf'const val {key} = "([^"]*)"', text).group(1)
    return out


def _manifest_tensors(specs) -> list:
    return [(s["name"], [d if isinstance(d, int) else -1 for d in s["shape"]], s["dtype"]) for s in specs]


def _onnx_tensors(values) -> list:
    from onnx import TensorProto

    out = []
    for v in values:
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        out.append((v.name, dims, TensorProto.DataType.Name(t.elem_type).lower().replace("float", "float32")
                    if t.elem_type == TensorProto.FLOAT else TensorProto.DataType.Name(t.elem_type).lower()))
    return out


# -- a tiny real export ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from sam_edge.formats.onnx import export_onnx
    from sam_edge import create_model

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("app_constants_export")
    export_onnx(create_model("sam_test_tiny"), out, ["fp32"])
    return out


def test_generated_constants_match_manifest_and_onnx_graphs(tiny_export, tmp_path):
    onnx = pytest.importorskip("onnx")
    swift_path, kt_path, copy_path = tmp_path / "M.swift", tmp_path / "M.kt", tmp_path / "m.json"
    res = ac.generate(tiny_export, swift_path, kt_path, ios_format="onnx", android_format="onnx",
                      ios_precision="fp32", android_precision="fp32", manifest_copy=copy_path)
    manifest = json.loads((tiny_export / "manifest.json").read_text())
    enc = next(a for a in manifest["artifacts"] if a["role"] == "encoder")
    dec = next(a for a in manifest["artifacts"] if a["role"] == "decoder")
    swift, kt = parse_swift(swift_path.read_text()), parse_kotlin(kt_path.read_text())
    assert swift_path.read_text() == res["swift"] and kt_path.read_text() == res["kotlin"]

    for parsed in (swift, kt):
        for role, art in (("encoder", enc), ("decoder", dec)):
            graph = onnx.load(str(tiny_export / art["file"]), load_external_data=False).graph
            assert parsed[f"{role}_inputs"] == _manifest_tensors(art["inputs"]) == _onnx_tensors(graph.input)
            assert parsed[f"{role}_outputs"] == _manifest_tensors(art["outputs"]) == _onnx_tensors(graph.output)
    names = [t[0] for t in swift["decoder_inputs"]]
    assert names == ["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input"]
    assert swift["decoder_inputs"][1][1] == [1, -1, 2]  # dynamic number of points

    s = manifest["image_size"]
    assert swift["imageSize"] == kt["IMAGE_SIZE"] == s
    assert swift["maskInputSize"] == kt["MASK_INPUT_SIZE"] == manifest["mask_input_size"] == 4 * s // 16
    assert swift["embeddingSize"] == kt["EMBEDDING_SIZE"] == manifest["embedding_size"]
    assert swift["embedDim"] == kt["EMBED_DIM"] == manifest["embed_dim"]
    assert swift["normalizeInside"] is kt["NORMALIZE_INSIDE"] is manifest["normalize_inside"]
    for key_s, key_k, key_m in (("pixelMean", "PIXEL_MEAN", "pixel_mean"), ("pixelStd", "PIXEL_STD", "pixel_std")):
        assert swift[key_s] == kt[key_k] == pytest.approx(manifest[key_m], rel=1e-6)
    assert (swift["encoderFile"], swift["decoderFile"]) == (kt["ENCODER_FILE"], kt["DECODER_FILE"]) == (
        enc["file"], dec["file"])
    assert swift["format"] == kt["FORMAT"] == "onnx" and swift["precision"] == kt["PRECISION"] == "fp32"
    # mask_outputs "all": index 0 single mask, 1..3 multimask
    assert manifest["mask_outputs"] == "all"
    assert swift["numMaskOutputs"] == kt["NUM_MASK_OUTPUTS"] == dec["outputs"][0]["shape"][1] == 4
    assert swift["singleMaskIndex"] == kt["SINGLE_MASK_INDEX"] == 0
    assert swift["multimaskIndices"] == kt["MULTIMASK_INDICES"] == [1, 2, 3]
    # ONNX: dynamic points without a recorded bound
    assert swift["fixedPointSlots"] == "nil" and kt["FIXED_POINT_SLOTS"] == 0
    assert swift["pointsMin"] == kt["POINTS_MIN"] == 1 and swift["pointsMax"] == kt["POINTS_MAX"] == 64  # the prompt rule (ONNX: free axis)
    assert swift["padLabel"] == kt["PAD_LABEL"] == -2.0
    # the trimmed manifest copy regenerates the same text, without the artifact files
    again = ac.generate(copy_path, None, None, "onnx", "onnx", ios_precision="fp32", android_precision="fp32")
    assert (again["swift"], again["kotlin"]) == (res["swift"], res["kotlin"])


def test_cli(tiny_export, tmp_path, capsys):
    swift, kt = tmp_path / "a.swift", tmp_path / "a.kt"
    rc = ac.main(["--artifacts", str(tiny_export), "--ios-format", "onnx", "--android-format", "onnx",
                  "--swift-out", str(swift), "--kotlin-out", str(kt), "--manifest-copy", ""])
    assert rc == 0 and swift.is_file() and kt.is_file()
    assert "encoder_fp32.onnx" in capsys.readouterr().out
    # a format the export does not have: a clear error, exit code 2
    rc = ac.main(["--artifacts", str(tiny_export), "--swift-out", str(swift), "--kotlin-out", str(kt),
                  "--manifest-copy", ""])
    assert rc == 2 and "coreml" in capsys.readouterr().err


def test_tampered_export_refused(tiny_export, tmp_path):
    import shutil

    d = tmp_path / "x"
    shutil.copytree(tiny_export, d)
    with open(d / "decoder_fp32.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ManifestError, match="sha256"):
        ac.generate(d, None, None, "onnx", "onnx", ios_precision="fp32", android_precision="fp32")


# -- the committed files ---------------------------------------------------------------------------

def test_committed_files_are_generated_from_committed_manifest(tmp_path):
    source = APPS / "model_manifest.json"
    manifest = json.loads(source.read_text())
    sel = manifest["app_constants"]
    copy_path = tmp_path / "m.json"
    res = ac.generate(source, None, None, sel["ios"]["format"], sel["android"]["format"],
                      ios_precision=sel["ios"]["precision"], android_precision=sel["android"]["precision"],
                      manifest_copy=copy_path)
    assert ac.DEFAULT_SWIFT.read_text() == res["swift"], "regenerate: python -m sam_edge.export.app_constants --artifacts ..."
    assert ac.DEFAULT_KOTLIN.read_text() == res["kotlin"], "regenerate: python -m sam_edge.export.app_constants --artifacts ..."
    assert json.loads(copy_path.read_text()) == manifest
    # what the apps are built for
    assert (sel["ios"]["format"], sel["android"]["format"]) == ("coreml", "executorch")
    swift, kt = parse_swift(res["swift"]), parse_kotlin(res["kotlin"])
    for parsed, key in ((swift, "ios"), (kt, "android")):
        c = res[key]
        assert parsed["encoder_inputs"] == _manifest_tensors(
            next(a for a in manifest["artifacts"] if a["file"] == c["encoder"]["file"])["inputs"])
        assert parsed["decoder_inputs"] == _manifest_tensors(
            next(a for a in manifest["artifacts"] if a["file"] == c["decoder"]["file"])["inputs"])
    assert swift["encoderFile"].endswith(".mlpackage") and kt["ENCODER_FILE"].endswith(".pte")
    # Core ML and ExecuTorch decoders: a dynamic number of points, 1..64
    assert (swift["pointsMin"], swift["pointsMax"], swift["fixedPointSlots"]) == (1, 64, "nil")
    assert (kt["POINTS_MIN"], kt["POINTS_MAX"], kt["FIXED_POINT_SLOTS"]) == (1, 64, 0)


@pytest.mark.skipif(not REAL_EXPORT.is_file(), reason="no out/export here (the export of the bundled student that the committed constants "
                           "were generated from: README 'Export and runtime')")
def test_committed_manifest_matches_real_export():
    committed = json.loads((APPS / "model_manifest.json").read_text())
    real = json.loads(REAL_EXPORT.read_text())
    by_file = {a["file"]: a for a in real["artifacts"]}
    for art in committed["artifacts"]:
        if art["file"] not in by_file or by_file[art["file"]]["sha256"] != art["sha256"]:
            pytest.skip(f"out/export was re-exported since apps/ was generated ({art['file']} differs)")
        assert by_file[art["file"]] == art
    sel = committed["app_constants"]
    res = ac.generate(REAL_EXPORT, None, None, sel["ios"]["format"], sel["android"]["format"],
                      ios_precision=sel["ios"]["precision"], android_precision=sel["android"]["precision"])
    assert res["swift"] == ac.DEFAULT_SWIFT.read_text() and res["kotlin"] == ac.DEFAULT_KOTLIN.read_text()


def test_app_sources_take_names_from_constants():
    """The predictors use ModelConstants, never literal graph names."""
    for path in (APPS / "ios" / "SamEdgeDemo" / "SamPredictor.swift",
                 APPS / "android" / "app" / "src" / "main" / "java" / "com" / "samedge" / "demo" / "SamPredictor.kt"):
        text = path.read_text()
        for name in ("image_embeddings", "point_coords", "point_labels", "mask_input", "low_res_masks",
                     "iou_predictions"):
            assert f'"{name}"' not in text, f"{path.name} hard-codes {name}"


# -- points spec -----------------------------------------------------------------------------------

def _decoder(n, **extra):
    return {"file": "decoder_x", "inputs": [{"name": "point_coords", "shape": [1, n, 2]}], **extra}


def test_points_spec():
    assert ac.points_spec(_decoder(8, max_points=8)) == {"fixed_slots": 8, "min": 1, "max": 8}
    assert ac.points_spec(_decoder("1..64")) == {"fixed_slots": None, "min": 1, "max": 64}
    notes = ["delegation: ...", "dynamic number of points: 1..64 (torch.export.Dim 'num_points')"]
    assert ac.points_spec(_decoder("num_points", exporter_notes=notes)) == {"fixed_slots": None, "min": 1, "max": 64}
    assert ac.points_spec(_decoder("num_points")) == {"fixed_slots": None, "min": 1, "max": 64}  # the prompt rule
    with pytest.raises(ManifestError):
        ac.points_spec({"file": "d", "inputs": [{"name": "point_coords", "shape": [1, 2]}]})


def test_float_literals_round_trip_float32():
    import numpy as np

    for v in (123.67500305175781, 58.39500045776367, 57.375, 0.0, -2.0):
        assert np.float32(float(ac._f32(v))) == np.float32(v)
    assert ac._f32(123.67500305175781) == "123.675"


# -- benchmark JSON ---------------------------------------------------------------------------------

def _swift_record_keys() -> set[str]:
    text = (APPS / "ios" / "SamEdgeDemo" / "Benchmark.swift").read_text()
    body = text[text.index("static func benchmarkOne"):text.index("static func pseudoRandom")]
    return set(re.findall(r'"(\w+)":', body)) | set(re.findall(r'record\["(\w+)"\]', body))


def test_ios_benchmark_json_is_ingested(tmp_path):
    from sam_edge.bench.devices.ingest import ingest

    keys = _swift_record_keys()
    assert {"file", "role", "format", "precision", "compute_units", "latency_ms", "load_s", "peak_rss_mb",
            "error"} <= keys
    # a file of the shape Benchmark.swift writes (JSONSerialization, NSNull for nil)
    doc = {"app": "sam-edge-ios", "app_version": "1.0", "created": "2026-11-21T23:00:00Z",
           "device": {"model": "iPhone15,2", "os": "iOS 17.4"}, "model_name": "repvit_demo_student", "warmup": 10,
           "results": [
               {"file": "encoder_fp16.mlpackage", "role": "encoder", "format": "coreml", "precision": "fp16",
                "compute_units": "all", "inputs": "synthetic image", "load_s": 0.4, "peak_rss_mb": 120.5,
                "error": None, "latency_ms": {"min": 3.1, "p50": 3.4, "p90": 3.9, "mean": 3.5, "std": 0.2, "n": 50}},
               {"file": "decoder_fp16.mlpackage", "role": "decoder", "format": "coreml", "precision": "fp16",
                "compute_units": "cpuAndNeuralEngine", "inputs": "...", "load_s": None, "peak_rss_mb": None,
                "error": "model failed to load", "latency_ms": None},
           ]}
    path = tmp_path / "sam-edge-ios-bench.json"
    path.write_text(json.dumps(doc))
    out = ingest(path)
    assert out["device"] == "ios:iPhone15,2"
    assert [r["file"] for r in out["artifacts"]] == ["encoder_fp16.mlpackage", "decoder_fp16.mlpackage"]
    assert out["artifacts"][0]["latency_ms"]["p50"] == 3.4 and out["artifacts"][0]["compute_units"] == "all"
    assert out["artifacts"][1]["error"] == "model failed to load"


def test_latency_stat_definitions_match_host():
    """MaskMath.latencyStats (Swift / Kotlin) implements sam_edge.bench.devices.latency_stats; check
    the definitions the ports copy: p90 nearest rank with round-half-to-even, population std."""
    from sam_edge.bench.devices import latency_stats

    s = latency_stats([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert s["p50"] == 3.5 and s["p90"] == 5.0  # index round(4.5) = 4 (half to even)
    for path, pattern in ((APPS / "ios" / "SamEdgeDemo" / "MaskMath.swift", "toNearestOrEven"),
                          (APPS / "android" / "app" / "src" / "main" / "java" / "com" / "samedge" / "demo"
                           / "MaskMath.kt", "Math.rint")):
        assert pattern in path.read_text()


# -- the apps' post-processing maths -----------------------------------------------------------------

def _resize_like_maskmath(src, in_h, in_w, out_h, out_w, crop_h=None, crop_w=None):
    """Line-by-line transliteration of MaskMath.resizeBilinear (Swift / Kotlin)."""
    import numpy as np

    def axis(in_size, out_size, count):
        scale = in_size / out_size
        i0, i1, w1 = [], [], []
        for d in range(count):
            s = max((d + 0.5) * scale - 0.5, 0.0)
            a = min(int(s), in_size - 1)
            i0.append(a)
            i1.append(a + 1 if a < in_size - 1 else a)
            w1.append(np.float32(s - a))
        return np.array(i0), np.array(i1), np.array(w1, np.float32)

    ch, cw = crop_h or out_h, crop_w or out_w
    y0, y1, wy = axis(in_h, out_h, ch)
    x0, x1, wx = axis(in_w, out_w, cw)
    src = src.reshape(in_h, in_w).astype(np.float32)
    top = src[y0][:, x0] * (1 - wx) + src[y0][:, x1] * wx
    bottom = src[y1][:, x0] * (1 - wx) + src[y1][:, x1] * wx
    return top * (1 - wy[:, None]) + bottom * wy[:, None]


def test_maskmath_postprocess_matches_artifact_predictor():
    """The apps' two-stage resize (m -> S, crop, -> H x W) equals ArtifactPredictor.postprocess_masks."""
    import numpy as np
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    m, s = 64, 256
    for (h0, w0) in ((427, 640), (640, 480), (100, 100), (1024, 300)):
        scale = s / max(h0, w0)
        ih, iw = int(h0 * scale + 0.5), int(w0 * scale + 0.5)
        low = rng.standard_normal((m, m)).astype(np.float32)
        crop = _resize_like_maskmath(low, m, m, s, s, ih, iw)
        ours = _resize_like_maskmath(crop, ih, iw, h0, w0)
        t = F.interpolate(torch.from_numpy(low)[None, None], (s, s), mode="bilinear", align_corners=False)
        t = F.interpolate(t[..., :ih, :iw], (h0, w0), mode="bilinear", align_corners=False)[0, 0].numpy()
        assert np.abs(ours - t).max() < 1e-4
        assert ((ours > 0) == (t > 0)).mean() > 0.9999
