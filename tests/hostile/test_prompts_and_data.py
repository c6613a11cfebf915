"""Hostile prompts and data sets (issue: hardening).

Prompts: one rule in every runtime (``sam_edge.predictor.prompt_rule_error``; README "The prompt
rule"): the eager predictor and the ONNX artifact predictor of a tiny model refuse the same
prompts with the same ``PromptError`` message, ``sam-edge segment`` answers rc 2 with one line
naming the prompt and writes nothing, and apps/web/prompt_rule.js words it identically.

Data: ``sam-edge data check`` decodes what training decodes: an SA-1B folder with one good and
one hostile sample; the check's verdict equals what the training loader
(``distill.batches.load_sa1b_sample``) actually loads when it tries every sample."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

H, W = 96, 128  # the test photo


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def photo_file(tmp_path_factory) -> Path:
    from PIL import Image
    from skimage import data

    p = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.fromarray(np.ascontiguousarray(data.astronaut()[::4, ::4][:H, :W])).save(p)
    return p


@pytest.fixture(scope="module")
def photo(photo_file) -> np.ndarray:
    from sam_edge.image import load_image

    return load_image(photo_file)


@pytest.fixture(scope="module")
def predictors(photo, onnx_dir):
    from sam_edge import SamPredictor, create_model
    from sam_edge.runtime import load_predictor

    torch.manual_seed(0)
    eager = SamPredictor(create_model("sam_test_tiny"))
    eager.set_image(photo)
    art = load_predictor(onnx_dir)
    art.set_image(photo)
    return {"eager": eager, "onnx": art}


# --------------------------------------------------------------------------- prompts: the API
def _pts(n: int) -> np.ndarray:
    return np.stack([np.linspace(1, W - 1, n), np.linspace(1, H - 1, n)], 1)


# name -> (predict kwargs, regex the PromptError message must match)
PROMPT_CASES = {
    "nan_point": (dict(point_coords=[[np.nan, 5.0]], point_labels=[1]), r"point_coords: contains NaN"),
    "inf_point": (dict(point_coords=[[5.0, np.inf]], point_labels=[1]), r"point_coords: contains NaN or infinite"),
    "point_outside": (dict(point_coords=[[W + 5.0, 5.0]], point_labels=[1]), rf"points \[\[{W + 5}\.0, 5\.0\]\] lie outside"),
    "negative_point": (dict(point_coords=[[-1.0, 5.0]], point_labels=[1]), r"points \[\[-1\.0, 5\.0\]\] lie outside"),
    "label_2": (dict(point_coords=[[5.0, 5.0]], point_labels=[2]), r"point_labels: expected 0 .* got \[2\]"),
    "label_minus_1": (dict(point_coords=[[5.0, 5.0]], point_labels=[-1]), r"point_labels: .* got \[-1\]"),
    "labels_count": (dict(point_coords=[[5.0, 5.0], [6, 6]], point_labels=[1]), r"point_labels: expected shape \(2,\)"),
    "coords_3_columns": (dict(point_coords=[[5.0, 5.0, 1.0]], point_labels=[1]), r"point_coords: expected shape N x 2"),
    "coords_empty": (dict(point_coords=np.zeros((0, 2)), point_labels=np.zeros(0)), r"N >= 1, got \(0, 2\)"),
    "coords_strings": (dict(point_coords=[["a", "b"]], point_labels=[1]), r"point_coords: expected numbers"),
    "points_without_labels": (dict(point_coords=[[5.0, 5.0]]), r"given together"),
    "box_x1_lt_x0": (dict(box=[40.0, 10.0, 10.0, 40.0]), r"box: expected x0 <= x1"),
    "box_zero_width": (dict(box=[10.0, 10.0, 10.0, 40.0]), r"^box \[10, 10, 10, 40\] has zero width or height"),
    "box_zero_height": (dict(box=[10.0, 20.5, 40.0, 20.5]), r"^box \[10, 20\.5, 40, 20\.5\] has zero width or height"),
    "box_outside": (dict(box=[10.0, 10.0, W + 1.0, 40.0]), r"extends outside the image"),
    "box_nan": (dict(box=[10.0, np.nan, 20.0, 40.0]), r"box: contains NaN"),
    "box_3_values": (dict(box=[10.0, 10.0, 20.0]), r"box: expected 4 values"),
    "too_many_points": (dict(point_coords=_pts(64), point_labels=np.ones(64, int)),
                        r"^point_coords: 64 points, at most 63 without a box \(max_points=64 "),
    "too_many_points_with_box": (dict(point_coords=_pts(63), point_labels=np.ones(63, int), box=[2.0, 2.0, 50.0, 50.0]),
                                 r"^point_coords: 63 points, at most 62 with a box \(max_points=64 "),
    "mask_input_shape": (dict(point_coords=[[5.0, 5.0]], point_labels=[1], mask_input=np.zeros((1, 8, 8))),
                         r"mask_input: expected low-res logits of shape"),
}


@pytest.mark.parametrize("runtime", ["eager", "onnx"])
@pytest.mark.parametrize("case", list(PROMPT_CASES))
def test_bad_prompt_is_refused_the_same_way_in_each_runtime(predictors, runtime, case):
    from sam_edge.predictor import PromptError

    kwargs, pattern = PROMPT_CASES[case]
    with pytest.raises(PromptError, match=pattern):
        predictors[runtime].predict(**kwargs)


@pytest.mark.parametrize("runtime", ["eager", "onnx"])
def test_prompts_at_the_limit_are_accepted(predictors, runtime):
    p = predictors[runtime]
    masks, _, _ = p.predict(_pts(63), np.ones(63, int), multimask_output=False)
    assert masks.shape == (1, H, W)
    masks, _, _ = p.predict(_pts(62), np.ones(62, int), box=np.array([2.0, 2.0, 50.0, 50.0]), multimask_output=False)
    assert masks.shape == (1, H, W)
    masks, _, _ = p.predict(box=np.array([10.0, 10.0, 11.0, 11.0]), multimask_output=False)  # 1 x 1 box: fine
    assert masks.shape == (1, H, W)


def test_artifact_predictor_uses_the_manifests_max_points(onnx_dir, photo, tmp_path):
    """A decoder entry with fixed point slots (TFLite's ``max_points``) sets the limit."""
    from sam_edge.predictor import PromptError
    from sam_edge.runtime import load_predictor

    d = tmp_path / "export"
    shutil.copytree(onnx_dir, d)
    man = json.loads((d / "manifest.json").read_text())
    for a in man["artifacts"]:
        if a["role"] == "decoder":
            a["max_points"] = 8
    (d / "manifest.json").write_text(json.dumps(man))
    p = load_predictor(d)
    assert p.max_points == 8
    p.set_image(photo)
    with pytest.raises(PromptError, match=r"^point_coords: 8 points, at most 7 without a box \(max_points=8 "):
        p.predict(_pts(8), np.ones(8, int))
    with pytest.raises(PromptError, match=r"^point_coords: 7 points, at most 6 with a box \(max_points=8 "):
        p.predict(_pts(7), np.ones(7, int), box=np.array([2.0, 2.0, 50.0, 50.0]))
    assert p.predict(_pts(7), np.ones(7, int))[0].shape == (3, H, W)


# name -> (argv after the image, text the single error line must contain)
CLI_CASES = {
    "point_three_parts_label_3": (["--point", "1,2,3"], "'1,2,3'"),
    "point_letters": (["--point", "a,b"], "'a,b'"),
    "point_empty": (["--point", ""], "''"),
    "point_one_number": (["--point", "5"], "'5'"),
    "point_nan": (["--point", "nan,5"], "'nan,5'"),
    "point_inf": (["--point", "5,inf"], "'5,inf'"),
    "point_label_2": (["--point", "5,5,2"], "got 2 in '5,5,2'"),
    "point_outside": (["--point", f"{W + 10},5"], f"[[{W + 10}.0, 5.0]]"),
    "box_three_numbers": (["--box", "1,2,3"], "'1,2,3'"),
    "box_letters": (["--box", "a,b,c,d"], "'a,b,c,d'"),
    "box_x1_lt_x0": (["--box", "40,10,10,40"], "[40.0, 10.0, 10.0, 40.0]"),
    "box_zero_area": (["--box", "10,10,10,40"], "box [10, 10, 10, 40] has zero width or height"),
    "box_nan": (["--box", "nan,10,20,40"], "box: contains NaN"),
    "box_inf": (["--box", "10,10,inf,40"], "box: contains NaN or infinite values: [10.0, 10.0, inf, 40.0]"),
    "point_overflow_to_inf": (["--point", "1e999,5"], "'1e999,5'"),
    "point_label_float": (["--point", "5,5,1.0"], "'5,5,1.0'"),
    "too_many_points": ([a for i in range(64) for a in ("--point", f"{1 + i},{1 + i % 90}")],
                        "point_coords: 64 points, at most 63 without a box"),
    "no_prompt": ([], "give at least one --point"),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_segment_cli_bad_prompt_is_one_line_rc_2(photo_file, tmp_path, capsys, case):
    from sam_edge.cli import main

    extra, needle = CLI_CASES[case]
    out = tmp_path / "out"
    try:
        rc = main(["segment", str(photo_file), "--model", "sam_test_tiny", *extra, "--out", str(out)])
    except SystemExit as exc:  # argparse refuses a malformed value before anything runs
        rc = exc.code
    captured = capsys.readouterr()
    err = captured.err
    assert rc == 2, err
    assert "Traceback" not in err + captured.out
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1 and lines[0].startswith("sam-edge segment: error:") and needle in lines[0], err
    assert not out.exists() and not list(tmp_path.glob(".out.staging-*"))  # nothing written


def _python_message(n, box, max_points=64):
    from sam_edge.predictor import prompt_rule_error

    return prompt_rule_error(n, None if box is None else np.array(box, float), max_points)


RULE_CASES = [(3, [10, 10, 10, 40], 64), (1, [10.5, 2, 30, 2], 64), (64, None, 64), (63, [0, 0, 5, 5], 64),
              (8, None, 8), (7, [1, 1, 2, 2], 8), (7, None, 8), (6, [1, 1, 2, 2], 8), (0, [1, 1, 2, 2], 2)]


def test_web_app_words_the_rule_like_python():
    """apps/web/prompt_rule.js (run by node) gives the same verdict and message, case by case."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    js = Path(__file__).resolve().parents[2] / "apps" / "web" / "prompt_rule.js"
    script = (f"import {{ promptRuleError }} from {json.dumps(js.as_uri())};\n"
              f"const cases = {json.dumps(RULE_CASES)};\n"
              "console.log(JSON.stringify(cases.map(([n, b, m]) => promptRuleError(n, b, m))));\n")
    res = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    want = [_python_message(n, b, m) for n, b, m in RULE_CASES]
    assert got == want
    assert [w is None for w in want] == [False, False, False, False, False, False, True, True, True]


def test_mobile_samples_carry_the_rule_with_the_same_words():
    """The iOS / Android samples cannot be compiled here: their rule's message templates must
    match the Python wording."""
    root = Path(__file__).resolve().parents[2] / "apps"
    swift = (root / "ios" / "SamEdgeDemo" / "SamPredictor.swift").read_text()
    kotlin = (root / "android" / "app" / "src" / "main" / "java" / "com" / "samedge" / "demo" / "SamPredictor.kt").read_text()
    for src in (swift, kotlin):
        assert "has zero width or height (x0 == x1 or y0 == y1)" in src
        assert "decoder point rows: a box fills 2, no box 1 padding row)" in src
        assert "promptRuleError(" in src and "points, at most" in src


# ------------------------------------------------------------------------------ data sets
@pytest.fixture(scope="module")
def synth2(tmp_path_factory) -> Path:
    from sam_edge.data.synth import generate_dataset

    out = tmp_path_factory.mktemp("synth") / "set"
    generate_dataset(out, 2, 64, seed=0)
    (out / "index.json").unlink()
    return out


def _ann0(rec):
    return rec["annotations"][0]


def _set(path, value):
    def edit(rec):
        obj = rec
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = value
        return rec
    return edit


SEG = ("annotations", 0, "segmentation")


def _rle_string(runs: list[int]) -> str:
    """COCO compressed RLE counts of ``runs`` (pycocotools' rleToString)."""
    out = []
    for i, x in enumerate(runs):
        if i > 2:
            x -= runs[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr((c | 0x20 if more else c) + 48))
    return "".join(out)


def _huge_rle(rec):
    """A well-formed RLE of a 50000 x 50000 mask (2.5 G pixels): must never be decoded."""
    _ann0(rec)["segmentation"] = {"size": [50_000, 50_000], "counts": _rle_string([2_499_000_000, 1_000_000])}
    return rec
# name -> (edit of sa_1.json's record, or raw text / None for the file, expected reason)
DATA_CASES = {
    "rle_counts_garbage_chars": (_set((*SEG, "counts"), "!!!!"), "invalid annotation"),
    "rle_counts_in_alphabet_wrong_total": (_set((*SEG, "counts"), "ooo0"), "invalid annotation"),
    "rle_counts_empty": (_set((*SEG, "counts"), ""), "invalid annotation"),
    "rle_counts_cut_short": (_set((*SEG, "counts"), "0P"), "invalid annotation"),
    "rle_counts_non_ascii": (_set((*SEG, "counts"), "0\u00e9"), "invalid annotation"),
    "rle_counts_uncompressed_list": (_set((*SEG, "counts"), [0, 64 * 64]), "invalid annotation"),
    "rle_counts_too_long": (lambda r: _set((*SEG, "counts"), _ann0(r)["segmentation"]["counts"] + "0P2")(r),
                            "invalid annotation"),
    "rle_size_disagrees_with_image": (_set((*SEG, "size"), [32, 64]), "rle size mismatch"),
    "rle_size_huge_and_consistent": (_huge_rle, "rle size mismatch"),
    "rle_size_not_a_pair": (_set((*SEG, "size"), "64x64"), "invalid annotation"),
    "polygon_segmentation": (_set(("annotations", 0, "segmentation"), [[1, 1, 10, 1, 10, 10]]), "invalid annotation"),
    "degenerate_polygon": (_set(("annotations", 0, "segmentation"), [[1, 1]]), "invalid annotation"),
    "segmentation_missing": (lambda r: (_ann0(r).pop("segmentation"), r)[1], "invalid annotation"),
    "bbox_three_numbers": (_set(("annotations", 0, "bbox"), [1, 2, 3]), "invalid annotation"),
    "bbox_strings": (_set(("annotations", 0, "bbox"), ["a", "b", "c", "d"]), "invalid annotation"),
    "point_coords_garbage": (_set(("annotations", 0, "point_coords"), [["x", 1]]), "invalid annotation"),
    "predicted_iou_string": (_set(("annotations", 0, "predicted_iou"), "high"), "invalid annotation"),
    "annotation_not_object": (_set(("annotations", 0), "oops"), "invalid annotation"),
    "annotations_not_list": (_set(("annotations",), {"a": 1}), "invalid json"),
    "json_is_a_list": ("[1, 2, 3]", "invalid json"),
    "json_invalid": ('{"image": {}, "annotations": [', "invalid json"),
    "json_empty_file": ("", "invalid json"),
    "image_width_mismatch": (_set(("image", "width"), 65), "image size mismatch"),
    "image_width_string": (_set(("image", "width"), "wide"), "invalid json"),
    "no_annotations": (_set(("annotations",), []), "no annotations"),
    "image_without_annotation": (None, "missing json"),
    "annotation_without_image": (("jpg", None), "missing image"),
    "image_not_an_image": (("jpg", b"not a jpeg at all"), "unreadable image"),
    "image_truncated": (("jpg", "cut"), "truncated image"),
}


def _loader_verdict(root: Path) -> dict[str, bool]:
    """Try the training loader on every candidate (no scan in front of it): id -> loaded."""
    from sam_edge.data.batches import load_sa1b_sample
    from sam_edge.data import SA1BDataset, SampleError

    ds = SA1BDataset(root, image_size=64)
    ds.ids = ds.candidates()
    out = {}
    for i, stem in enumerate(ds.ids):
        try:
            load_sa1b_sample(ds, i, 64, 4, torch.Generator().manual_seed(0))
            item = ds[i]
            assert item["masks"].dtype == bool and item["masks"].shape[1:] == (64, 64)
            out[stem] = True
        except SampleError:
            out[stem] = False
    return out


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_data_check_agrees_with_the_training_loader(synth2, tmp_path, capsys, caplog, case):
    import logging

    from sam_edge.cli import main

    root = tmp_path / "set"
    shutil.copytree(synth2, root)
    edit, reason = DATA_CASES[case]
    js = root / "sa_1.json"
    jpg = root / "sa_1.jpg"
    if edit is None:
        js.unlink()
    elif isinstance(edit, tuple):  # the image, not the JSON
        content = edit[1]
        if content is None:
            jpg.unlink()
        else:
            jpg.write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 2] if content == "cut" else content)
    elif isinstance(edit, str):
        js.write_text(edit)
    else:
        js.write_text(json.dumps(edit(json.loads(js.read_text()))))
    report = tmp_path / "report.json"
    with caplog.at_level(logging.WARNING, logger="sam_edge.data"):
        rc = main(["data", "check", str(root), "--json", str(report)])
    out = capsys.readouterr()
    assert rc == 0 and "Traceback" not in out.out + out.err
    rep = json.loads(report.read_text())
    assert rep["total"] == 2 and rep["used"] == 1, rep
    bad = jpg if isinstance(edit, tuple) else js
    assert rep["skipped_samples"] == [{"path": str(bad), "reason": reason}], rep
    logged = [r.getMessage() for r in caplog.records if r.name == "sam_edge.data"]
    assert len(logged) == 1 and "sa_1" in logged[0] and reason in logged[0]  # one line, naming the file
    assert _loader_verdict(root) == {"sa_1": False, "sa_2": True}  # what check said, the loader does


def test_garbage_rle_never_decodes_to_memory_contents():
    """pycocotools alone decodes garbage counts to uninitialised memory; the shared decode refuses."""
    from sam_edge.utils.amg import coco_counts, coco_decode_rle

    for counts in ("", "4", "ooo0", "0P", "!!"):
        with pytest.raises(ValueError, match="RLE counts"):
            coco_decode_rle({"size": [8, 8], "counts": counts})
    assert coco_counts({"size": [8, 8], "counts": "0P2"}).tolist() == [0, 64]
    assert _rle_string([0, 64]) == "0P2"
    rng = np.random.default_rng(0)
    runs = [int(v) for v in rng.integers(0, 5000, 40)]
    assert coco_counts({"size": [1, sum(runs)], "counts": _rle_string(runs)}).tolist() == runs
    assert coco_decode_rle({"size": [8, 8], "counts": b"0P2"}).sum() == 64


@pytest.mark.parametrize("case", ["missing_folder", "folder_is_a_file", "empty_folder", "only_unrelated_files"])
def test_data_check_on_a_folder_without_samples(tmp_path, capsys, case):
    from sam_edge.cli import main

    d = tmp_path / "d"
    if case == "folder_is_a_file":
        d.write_text("x")
    elif case != "missing_folder":
        d.mkdir()
        if case == "only_unrelated_files":
            (d / "notes.txt").write_text("x")
            (d / "sa_x.jpg").write_bytes(b"")
    rc = main(["data", "check", str(d)])
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    if case in ("missing_folder", "folder_is_a_file"):
        assert rc == 2 and f"SA-1B folder not found: {d}" in out.err and len(out.err.strip().splitlines()) == 1
    else:  # documented: exit code 1 when no sample is usable
        assert rc == 1 and out.out.startswith("0 samples: 0 used")
