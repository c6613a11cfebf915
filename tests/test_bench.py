"""`sam-edge bench` / `sam-edge report` on the host: latency records, IoU against the teacher /
fp32 / ground truth, resume after an interrupted runner, plots; bad input named."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("matplotlib")

import sam_edge  # noqa: E402
from sam_edge.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from sam_edge.data.synth import generate_dataset
    from sam_edge.formats.onnx import export_onnx

    root = tmp_path_factory.mktemp("bench")
    generate_dataset(root / "data", num_images=3, image_size=128, seed=3)
    torch.manual_seed(0)
    model = sam_edge.create_model("sam_test_tiny")
    model_file = sam_edge.save_model(model, root / "tiny.safetensors")
    export_onnx(model, root / "exp", precisions=["fp32", "int8_dynamic"])
    return root, model_file


def test_bench_and_report(setup, tmp_path):
    root, model_file = setup
    out = tmp_path / "res.json"
    rc = main(["bench", "--artifacts", str(root / "exp"), "--data", str(root / "data"), "--teacher",
               "sam_test_tiny", "--teacher-checkpoint", str(model_file), "--num-images", "2", "--masks-per-image", "2", "--runs", "3", "--warmup", "1",
               "--threads", "1", "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["schema"] == "sam-edge-bench/1" and res["num_images"] == 2
    rows = {r["precision"]: r for r in res["rows"]}
    assert set(rows) == {"fp32", "int8_dynamic"}
    for r in rows.values():
        assert r["error"] is None
        for part in ("encoder_ms", "decoder_ms"):
            st = r[part]
            assert st["min"] <= st["p50"] <= st["p90"] and st["std"] >= 0
        assert r["encoder_ms"]["n"] == 3 and r["decoder_ms"]["n"] == 15 and r["threads"] == 1
        assert r["load_s"]["encoder"] > 0 and r["peak_rss_mb"] > 10 and r["size_mb"]["encoder"] > 0
        assert set(r["iou"]) == {"point", "box", "points2"}
        for v in r["iou"].values():
            assert 0 <= v["vs_teacher"]["miou"] <= 1 and 0 <= v["vs_teacher"]["under_0_5"] <= 1
            assert v["vs_gt"]["n"] == v["vs_teacher"]["n"] > 0
    # the fp32 pipeline is its own fp32 reference; the teacher here is the same random model
    assert all(v["vs_fp32"]["miou"] == 1.0 for v in rows["fp32"]["iou"].values())
    assert rows["fp32"]["iou"]["box"]["vs_teacher"]["miou"] > 0.97
    assert res["host_env"]["cpu_count"] and res["git_commit"] is not None

    rep = tmp_path / "report"
    assert main(["report", str(out), "--out", str(rep)]) == 0
    for f in ("merged.json", "results.csv", "report.md", "pareto_host.png", "latency.png"):
        assert (rep / f).stat().st_size > 0
    assert (rep / "pareto_host.png").read_bytes()[:4] == b"\x89PNG"
    md = (rep / "report.md").read_text()
    assert "| host | onnx | fp32 |" in md and "mIoU vs teacher" in md


def test_interrupted_runner_keeps_finished_pipelines(setup, tmp_path):
    from sam_edge.bench.harness import encoder_inputs
    from sam_edge.bench.runner import write_inputs
    from sam_edge.runtime import load_manifest

    root, _ = setup
    man = load_manifest(root / "exp")
    x = encoder_inputs(man, [np.full((100, 120, 3), 90, np.uint8)])
    inputs = write_inputs(tmp_path / "in.npz", x, [0], [(np.array([[10.0, 20.0], [0, 0]]), np.array([1.0, -1.0]))])
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "sam_edge.bench.runner", "--artifacts", str(root / "exp"), "--inputs", str(inputs),
           "--out", str(out), "--runs", "200", "--warmup", "1", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "timings.json").is_file():
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # killed during the second pipeline
    proc.wait()
    first = json.loads((out / "timings.json").read_text())
    assert len(first["pipelines"]) == 1
    done = first["pipelines"][0]
    subprocess.run(cmd[:-6] + ["--runs", "2", "--warmup", "0"], check=True, capture_output=True)
    final = json.loads((out / "timings.json").read_text())
    assert len(final["pipelines"]) == 2
    assert final["pipelines"][0] == done  # kept, not re-run
    rec = {a["file"]: a for a in final["artifacts"]}
    assert rec[done["encoder"]]["latency_ms"]["n"] == 200


def test_bench_bad_inputs(setup, tmp_path, capsys):
    root, _ = setup
    base = ["bench", "--data", str(root / "data"), "--teacher", "sam_test_tiny", "--out", str(tmp_path / "r.json")]
    assert main(base + ["--artifacts", str(tmp_path)]) == 2
    assert "no manifest.json in export directory" in capsys.readouterr().err
    assert main(base + ["--artifacts", str(root / "exp"), "--prompts", "lasso"]) == 2
    assert "--prompts" in capsys.readouterr().err
    assert main(base + ["--artifacts", str(root / "exp"), "--device", "usb://phone"]) == 2
    assert "--device" in capsys.readouterr().err
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():  # CPU-only machines (CI)
        assert main(base + ["--artifacts", str(root / "exp"), "--device", "cuda"]) == 2
        assert "CUDA" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing.json"), "--out", str(tmp_path / "rep")]) == 2
    assert "does not exist" in capsys.readouterr().err
