"""Output failures (issue: hardening): a command that cannot write its output (--out is a file, or
below one, or a folder where a file is expected; a read-only folder; a full disk; --device cuda
without CUDA) ends with one line ``sam-edge CMD: error: ...`` naming the path, rc 2, no
traceback, and leaves nothing half-written: the previous result intact, no temporary files.
Read-only and full file systems are simulated below one folder (see conftest.fs_fault): we run as
root, which ignores permissions."""
from __future__ import annotations

import errno
import hashlib
import json
import math
from pathlib import Path

import pytest
import yaml

from sam_edge.cli import main

from .conftest import _strict, assert_clean, assert_refused, snapshot

# command -> (kind of --out: "dir" or "file", argv builder (inputs folder, out path))
TINY = ["--model", "sam_test_tiny"]


def _distill_cfg(inp: Path, out: Path) -> Path:
    d = dict(teacher="sam_test_tiny", student="mobilesam_test_tiny", data=str(inp / "data"), out=str(out), seed=0,
             val_fraction=0.0, val_images=0, val_masks_per_image=1, device="cpu",
             stage1=dict(steps=1, batch_size=1, lr=2e-3, warmup_steps=1, ckpt_every=2, log_every=1, val_every=2),
             stage2=dict(steps=0, batch_size=1, masks_per_image=1, lr=1e-3, warmup_steps=1, corrections=1,
                         ckpt_every=2, log_every=1, val_every=100))
    cfg = inp / "configs" / f"distill-{hashlib.sha256(str(out).encode()).hexdigest()[:12]}.yaml"
    cfg.parent.mkdir(exist_ok=True)
    cfg.write_text(yaml.safe_dump({"distill": d}))
    return cfg


COMMANDS = {
    "segment": ("dir", lambda i, o: ["segment", str(i / "photo.png"), *TINY, "--point", "10,10", "--out", str(o)]),
    "everything": ("file", lambda i, o: ["everything", str(i / "photo.png"), *TINY, "--points-per-side", "2",
                                         "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--out", str(o)]),
    "data synth": ("dir", lambda i, o: ["data", "synth", "--num-images", "1", "--image-size", "48", "--out", str(o)]),
    "data check": ("file", lambda i, o: ["data", "check", str(i / "data"), "--json", str(o)]),
    "evaluate": ("file", lambda i, o: ["evaluate", *TINY, "--data", str(i / "data"), "--images", "1",
                                       "--masks-per-image", "1", "--corrections", "0", "--json", str(o)]),
    "eval": ("file", lambda i, o: ["eval", "--student", "sam_test_tiny", "--teacher", "sam_test_tiny", "--data",
                                   str(i / "data"), "--images", "1", "--masks-per-image", "1", "--low-res",
                                   "--device", "cpu", "--out", str(o)]),
    "cache-teacher": ("dir", lambda i, o: ["cache-teacher", "--teacher", "sam_test_tiny", "--data", str(i / "data"),
                                           "--device", "cpu", "--limit", "1", "--no-progress", "--out", str(o)]),
    "quantize": ("file", lambda i, o: ["quantize", *TINY, "--torchao", "int8_dynamic", "--repeats", "1",
                                       "--out", str(o)]),
    "bench": ("file", lambda i, o: ["bench", "--ingest", str(i / "ios.json"), "--out", str(o)]),
    "report": ("dir", lambda i, o: ["report", str(i / "bench.json"), "--out", str(o)]),
    "pretrain": ("dir", lambda i, o: ["pretrain", *TINY, "--data", str(i / "data"), "--out", str(o), "--max-steps",
                                      "1", "--batch-size", "1", "--masks-per-image", "1", "--corrections", "0",
                                      "--extra-iters", "0", "--val-images", "0", "--device", "cpu"]),
    "distill": ("dir", lambda i, o: ["distill", "--config", str(_distill_cfg(i, o)), "--no-progress"]),
    "export": ("dir", lambda i, o: ["export", *TINY, "--formats", "onnx", "--precision", "fp32", "--verify-images",
                                    "1", "--out", str(o)]),
}
#: commands whose full run is too slow here for the cases that fail only after the work
SLOW = {"export"}


@pytest.fixture(scope="module")
def inp(inputs):
    if not (inputs / "bench.json").exists():
        assert main(["bench", "--ingest", str(inputs / "ios.json"), "--out", str(inputs / "bench.json")]) == 0
    return inputs


def _out_name(cmd: str) -> str:
    kind = COMMANDS[cmd][0]
    suffix = {"quantize": ".pt"}.get(cmd, ".json")
    return "result" if kind == "dir" else "result" + suffix


def _run(cmd: str, inp: Path, out: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(COMMANDS[cmd][1](inp, out))
    return rc, capsys.readouterr().err


def _case(cmd: str, where: str) -> bool:
    return not (cmd in SLOW and where in ("read_only_previous", "full_disk"))


# -- --out where the file system cannot hold it ---------------------------------------------------
@pytest.mark.parametrize("cmd", [c for c, (k, _) in COMMANDS.items() if k == "dir"])
def test_out_folder_that_is_a_file(cmd, inp, tmp_path, capsys):
    root = tmp_path / "w"
    root.mkdir()
    out = root / "taken"
    out.write_text("mine")
    rc, err = _run(cmd, inp, out, capsys)
    line = assert_refused(rc, err, cmd.split()[0], out)
    assert "not a folder" in line
    assert out.read_text() == "mine"
    assert_clean(root)


@pytest.mark.parametrize("cmd", [c for c, (k, _) in COMMANDS.items() if k == "file"])
def test_out_file_that_is_a_folder(cmd, inp, tmp_path, capsys):
    root = tmp_path / "w"
    out = root / _out_name(cmd)
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("mine")
    rc, err = _run(cmd, inp, out, capsys)
    line = assert_refused(rc, err, cmd.split()[0], out)
    assert "folder" in line
    assert snapshot(out) == {"keep.txt": b"mine"}
    assert_clean(root)


@pytest.mark.parametrize("cmd", list(COMMANDS))
def test_out_below_a_file(cmd, inp, tmp_path, capsys):
    root = tmp_path / "w"
    root.mkdir()
    blocker = root / "afile"
    blocker.write_text("mine")
    out = blocker / "sub" / _out_name(cmd)
    rc, err = _run(cmd, inp, out, capsys)
    line = assert_refused(rc, err, cmd.split()[0], blocker)
    assert "not a folder" in line or "Not a directory" in line, line
    assert blocker.read_text() == "mine"
    assert_clean(root)


def _previous(cmd: str, inp: Path, out: Path, capsys) -> None:
    """A previous result at ``out``: a real one for segment (its result set is swapped whole),
    a stand-in file or folder for the others."""
    if cmd == "segment":
        assert _run(cmd, inp, out, capsys)[0] == 0
    elif COMMANDS[cmd][0] == "dir":
        out.mkdir(parents=True)
        (out / "previous.txt").write_text("previous")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(b'{"previous": true}\n')


@pytest.mark.parametrize("fault", ["read_only", "full_disk"])
@pytest.mark.parametrize("cmd", [c for c in COMMANDS if c not in SLOW])
def test_cannot_write(cmd, fault, inp, tmp_path, capsys, fs_fault):
    root = tmp_path / "w"
    root.mkdir()
    out = root / _out_name(cmd)
    _previous(cmd, inp, out, capsys)
    before = snapshot(out)
    fs_fault(root, errno.EROFS if fault == "read_only" else errno.ENOSPC)
    rc, err = _run(cmd, inp, out, capsys)
    line = assert_refused(rc, err, cmd.split()[0], out.with_suffix(""))  # everything: result.json or .png
    assert ("Read-only file system" if fault == "read_only" else "No space left on device") in line
    assert snapshot(out) == before
    assert_clean(root)


@pytest.mark.parametrize("cmd", ["export", "distill"])
def test_cannot_write_slow_commands_read_only(cmd, inp, tmp_path, capsys, fs_fault):
    """export / distill on a read-only folder: refused before any work."""
    root = tmp_path / "w"
    root.mkdir()
    out = root / "sub" / "result"
    argv = COMMANDS[cmd][1](inp, out)  # writes the distill config outside root
    fs_fault(root, errno.EROFS)
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    line = assert_refused(rc, err, cmd, root / "sub")
    assert "Read-only file system" in line
    assert list(root.iterdir()) == []


# -- --device cuda on a machine without CUDA ----------------------------------------------------
DEVICE_CMDS = {
    "segment": lambda i, o, d: ["segment", str(i / "photo.png"), *TINY, "--point", "10,10", "--device", d, "--out", str(o)],
    "everything": lambda i, o, d: ["everything", str(i / "photo.png"), *TINY, "--device", d, "--out", str(o)],
    "eval": lambda i, o, d: ["eval", "--student", "sam_test_tiny", "--teacher", "sam_test_tiny", "--data",
                             str(i / "data"), "--device", d, "--out", str(o)],
    "cache-teacher": lambda i, o, d: ["cache-teacher", "--teacher", "sam_test_tiny", "--data", str(i / "data"),
                                      "--device", d, "--out", str(o)],
    "pretrain": lambda i, o, d: ["pretrain", *TINY, "--data", str(i / "data"), "--out", str(o), "--device", d],
    "distill": lambda i, o, d: ["distill", "--config", str(_distill_cfg(i, o)), "--set", f"distill.device={d}"],
}


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
@pytest.mark.parametrize("cmd", list(DEVICE_CMDS))
def test_device_cuda_without_cuda(cmd, device, inp, tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    root = tmp_path / "w"
    root.mkdir()
    out = root / "result"
    capsys.readouterr()
    rc = main(DEVICE_CMDS[cmd](inp, out, device))
    err = capsys.readouterr().err
    option = "distill.device" if cmd == "distill" else "--device"
    line = assert_refused(rc, err, cmd, [f"{option} '{device}'", "CUDA is not available"])
    assert f"{option}=cpu" in line
    assert list(root.iterdir()) == []  # refused before anything was written


def test_device_unknown_name(inp, tmp_path, capsys):
    rc, err = 0, ""
    capsys.readouterr()
    rc = main(DEVICE_CMDS["segment"](inp, tmp_path / "o", "gpu0"))
    assert_refused(rc, capsys.readouterr().err, "segment", ["--device 'gpu0'", "expected cpu, cuda"])


# -- NaN / inf never reach a JSON file ----------------------------------------------------------
def test_segment_nan_score_is_null_in_result_json(inp, tmp_path, capsys, monkeypatch):
    import numpy as np

    from sam_edge.predictor import SamPredictor

    real = SamPredictor.predict

    def nan_scores(self, *a, **k):
        masks, scores, low = real(self, *a, **k)
        return masks, np.full_like(scores, np.nan), low

    monkeypatch.setattr(SamPredictor, "predict", nan_scores)
    out = tmp_path / "seg"
    rc, err = _run("segment", inp, out, capsys)
    assert rc == 0, err
    text = (out / "result.json").read_text()
    assert "NaN" not in text
    assert _strict(text)["masks"][0]["score"] is None


def test_bench_and_report_write_null_for_nan(inp, tmp_path, capsys):
    doc = json.loads((inp / "ios.json").read_text())
    doc["results"][0]["latency_ms"].update(std=float("inf"))  # (NaN is refused by the ingest)
    doc["results"][0]["peak_rss_mb"] = float("inf")
    src = tmp_path / "ios_inf.json"
    src.write_text(json.dumps(doc))  # Python writes Infinity: what a sloppy tool hands us
    assert "Infinity" in src.read_text()
    res = tmp_path / "bench.json"
    assert main(["bench", "--ingest", str(src), "--out", str(res)]) == 0
    text = res.read_text()
    assert "NaN" not in text and "Infinity" not in text
    parsed = _strict(text)
    assert parsed["rows"][0]["encoder_ms"]["std"] is None and parsed["rows"][0]["peak_rss_mb"] is None, parsed
    rep = tmp_path / "report"
    assert main(["report", str(res), "--out", str(rep)]) == 0
    _strict((rep / "merged.json").read_text())


def test_eval_nan_metric_is_null(inp, tmp_path, capsys, monkeypatch):
    import sam_edge.evaluation.evaluator as E

    real = E.evaluate_student

    def nan_metric(*a, **k):
        r = real(*a, **k)
        r["student_vs_teacher"]["box"] = float("nan")
        return r

    monkeypatch.setattr(E, "evaluate_student", nan_metric)
    out = tmp_path / "eval.json"
    rc, err = _run("eval", inp, out, capsys)
    assert rc == 0, err
    assert _strict(out.read_text())["student_vs_teacher"]["box"] is None


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -math.inf])
def test_dumps_json_never_writes_non_finite(value, tmp_path):
    import numpy as np

    from sam_edge.utils.io import dumps_json, write_json_atomic

    obj = {"a": value, "b": [1.0, np.float32(value)], "c": np.array([value, 2.0]), "d": (value,)}
    assert _strict(dumps_json(obj)) == {"a": None, "b": [1.0, None], "c": [None, 2.0], "d": [None]}
    write_json_atomic(tmp_path / "x.json", obj)
    assert _strict((tmp_path / "x.json").read_text())["a"] is None


@pytest.mark.parametrize("fault", ["read_only", "full_disk"])
def test_everything_json_and_overlay_are_one_result(fault, inp, tmp_path, capsys, fs_fault):
    """--overlay in a folder that cannot be written: the JSON beside it keeps its previous content."""
    out, shots = tmp_path / "res.json", tmp_path / "shots"
    shots.mkdir()
    out.write_text('{"previous": true}\n')
    (shots / "o.png").write_bytes(b"previous")
    fs_fault(shots, errno.EROFS if fault == "read_only" else errno.ENOSPC)
    argv = COMMANDS["everything"][1](inp, out)
    rc = main([*argv, "--overlay", str(shots / "o.png")])
    assert_refused(rc, capsys.readouterr().err, "everything", shots / "o.png")
    assert out.read_text() == '{"previous": true}\n' and (shots / "o.png").read_bytes() == b"previous"
    assert_clean(tmp_path)
