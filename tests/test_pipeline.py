"""`sam-edge pipeline`: the whole path on a tiny budget, stages skipped when done, resume after
a kill during distillation without redoing data, cache or finished steps; config errors named."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

from sam_edge.cli import main  # noqa: E402

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _args(tmp: Path, steps: int) -> list[str]:
    sets = [
        "data.train.num_images=12", "data.heldout.num_images=3", f"distill.data={tmp}/train",
        f"eval.data={tmp}/heldout", f"distill.val_data={tmp}/heldout", f"distill.cache={tmp}/cache",
        f"distill.out={tmp}/run/distill", f"distill.stage1.steps={steps}", "distill.stage1.batch_size=2",
        "distill.stage1.ckpt_every=2", "distill.stage1.log_every=1", "distill.stage1.val_every=0",
        "distill.val_images=2", "eval.images=2", "eval.masks_per_image=2", "export.formats=onnx",
        "export.precision=fp32", "export.verify_images=1", "bench.num_images=1", "bench.masks_per_image=1",
        "bench.runs=2",
    ]
    out = ["pipeline", "--config", str(REPO / "configs/demo.yaml"), "--out", f"{tmp}/run"]
    for s in sets:
        out += ["--set", s]
    return out


def _steps(tmp: Path) -> list[int]:
    with open(tmp / "run/distill/stage1/metrics.csv") as fh:
        return [int(r["step"]) for r in csv.DictReader(fh)]


def test_pipeline_kill_during_distill_then_resume(tmp_path):
    args = _args(tmp_path, steps=60)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sam_edge.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ckpt = tmp_path / "run/distill/stage1/checkpoints/last.pt"
    deadline = time.time() + 300
    while time.time() < deadline and not ckpt.is_file() and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = json.loads((tmp_path / "run/pipeline.json").read_text())["stages"]
    assert state["data"]["status"] == "done" and state["cache"]["status"] == "done"
    assert state["distill"]["status"] == "running"
    before = _steps(tmp_path)
    assert 0 < len(before) and before[-1] < 60
    cache_mtime = {p: p.stat().st_mtime for p in (tmp_path / "cache").rglob("*.bin")}

    out = subprocess.run([sys.executable, "-m", "sam_edge.cli", *args], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "[data] done before" in out.stdout and "[cache] done before" in out.stdout
    assert "== sam-edge pipeline" in out.stdout and "mIoU/teacher" in out.stdout
    after = _steps(tmp_path)
    assert after[-1] == 60
    assert after[0] == before[0] and len(after) == len(set(after))  # continued, no step done twice
    assert {p: p.stat().st_mtime for p in (tmp_path / "cache").rglob("*.bin")} == cache_mtime
    state = json.loads((tmp_path / "run/pipeline.json").read_text())["stages"]
    assert all(state[s]["status"] == "done" for s in ("distill", "eval", "export", "bench", "report"))
    assert (tmp_path / "run/report/report.md").is_file() and (tmp_path / "run/report/pareto_host.png").is_file()
    man = json.loads((tmp_path / "run/export/manifest.json").read_text())
    assert all(a["verification"]["passed"] for a in man["artifacts"])


def test_pipeline_config_errors(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    base = (REPO / "configs/demo.yaml").read_text()
    cfg.write_text(base + "\nextras: {a: 1}\n")
    assert main(["pipeline", "--config", str(cfg), "--dry-run"]) == 2
    assert "unknown config section extras" in capsys.readouterr().err
    assert main(["pipeline", "--config", str(REPO / "configs/demo.yaml"), "--dry-run", "--set", "bench.runz=3"]) == 2
    assert "bench.runz" in capsys.readouterr().err
    assert main(["pipeline", "--config", str(REPO / "configs/demo.yaml"), "--dry-run", "--set", "bench.runs=many"]) == 2
    assert "bench.runs: expected an integer" in capsys.readouterr().err
    assert main(["pipeline", "--config", str(REPO / "configs/demo.yaml"), "--dry-run",
                 "--set", "data.train=null", "--set", f"distill.data={tmp_path}/nowhere"]) == 2
    assert "distill.data" in capsys.readouterr().err
    assert main(["pipeline", "--config", str(REPO / "configs/demo.yaml"), "--dry-run"]) == 0
    assert "toolchains:" in capsys.readouterr().out
    # the real recipe: valid config, but no ViT-H checkpoint and no SA-1B data on this machine
    assert main(["pipeline", "--config", str(REPO / "configs/vit_h_to_tinyvit.yaml"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "distill.teacher_checkpoint: checkpoints/sam_vit_h_4b8939.pth does not exist" in err
    assert "distill.data: data/sa1b_subset does not exist" in err
