"""kill -9 at random points for every long job, then a rerun to completion whose outputs equal an
uninterrupted run's: byte for byte where the job is deterministic, and no temporary or
half-written file left behind.

Each job runs as ``python -m sam_edge.cli ...`` in its own process group; once a condition that
the job itself makes true holds (it started, a file or progress line appeared), the test waits a
further seeded random delay and SIGKILLs the whole group (the job and any child process it
started, as a scheduler or a closed terminal would). Kill points come from
``random.Random(SAM_EDGE_KILL9_SEED + job)``; the seed is in every failure message, and setting
the variable explores other points (``SAM_EDGE_KILL9_SEED=7 pytest tests/test_kill_resume.py``).

Already covered elsewhere, not repeated here: a kill between two cache shards with a planted
stale temporary file and orphan ``.bin`` (tests/test_cache.py::test_kill_and_resume), distill
killed once a stage-1 checkpoint exists then refused without ``--resume``
(tests/test_distill.py::test_stage1_kill_resume_is_bit_identical_and_finished_stage_skips),
the pipeline killed during distillation without redoing data / cache
(tests/test_pipeline.py::test_pipeline_kill_during_distill_then_resume), the bench runner
killed between pipelines (tests/test_bench.py::test_interrupted_runner_keeps_finished_pipelines).
"""
from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest

from sam_edge.data.synth import generate_dataset

REPO = Path(__file__).resolve().parents[1]
SEED = int(os.environ.get("SAM_EDGE_KILL9_SEED", "0"))
TEACHER, STUDENT = "sam_demo_teacher", "repvit_demo_student"


def _rng(job: str) -> random.Random:
    return random.Random(f"{SEED}:{job}")


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "sam_edge.cli", *map(str, args)]


def _run(cmd: list[str], timeout: float = 120) -> str:
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"seed {SEED}: {' '.join(cmd)}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def _kill_when(cmd: list[str], ready: Callable[[], bool], extra: float, log: Path, timeout: float = 90) -> bool:
    """Start ``cmd`` (own process group, output to ``log``), wait until ``ready()`` holds, then
    ``extra`` more seconds, then SIGKILL the group. True when it was killed, False when it had
    already finished (successfully) by then."""
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=_env(), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and not ready():
            assert time.monotonic() < deadline, f"seed {SEED}: kill condition not met in {timeout} s"
            time.sleep(0.01)
        end = time.monotonic() + extra
        while proc.poll() is None and time.monotonic() < end:
            time.sleep(0.005)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # also children the job started
        except ProcessLookupError:
            pass
        proc.wait()
    if proc.returncode == -signal.SIGKILL:
        return True
    assert proc.returncode == 0, f"seed {SEED}: {' '.join(cmd)} exited {proc.returncode}\n{log.read_text()[-3000:]}"
    return False


def _log_has(log: Path, text: str) -> Callable[[], bool]:
    return lambda: log.is_file() and text in log.read_text(errors="replace")


def _leftovers(*roots: Path) -> list[str]:
    """Temporary files / folders (every name this project writes while working starts with a
    dot: ``.name.<random>.tmp``, ``.staging-*``, ``.onnx-*``, ...)."""
    return sorted(str(p) for r in roots if r.exists() for p in r.rglob(".*"))


def _tree(root: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not any(p.match(s) for s in skip)}


def _assert_same_tree(got: Path, ref: Path, skip: tuple[str, ...] = ()) -> None:
    a, b = _tree(got, skip), _tree(ref, skip)
    assert sorted(a) == sorted(b), f"seed {SEED}: files differ: {sorted(set(a) ^ set(b))}"
    differ = [k for k in a if a[k] != b[k]]
    assert not differ, f"seed {SEED}: bytes differ: {differ}"


def _csv(path: Path, drop: tuple[str, ...] = ("steps_per_s", "img_per_s", "elapsed_s")) -> list[dict]:
    with open(path, newline="") as fh:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """16 synthetic SA-1B images at 128 px (training, cache, calibration and bench data)."""
    out = tmp_path_factory.mktemp("k9data") / "data"
    generate_dataset(out, num_images=16, image_size=128, seed=11)
    return out


# ------------------------------------------------------------------------------ data synth
def test_data_synth_killed_at_random_points(tmp_path):
    rng = _rng("synth")
    n = 160
    ref = tmp_path / "ref"
    generate_dataset(ref, num_images=n, image_size=96, seed=4)  # the uninterrupted run (in-process: same code)
    out = tmp_path / "out"
    cmd = _cli("data", "synth", "--out", out, "--num-images", n, "--image-size", 96, "--seed", 4, "--workers", 2)
    done = lambda k: (lambda: len(list(out.glob("sa_*.json"))) >= k)  # noqa: E731
    kills = [
        (lambda: True, rng.uniform(0.0, 1.0)),  # during start-up / the first images
        (done(rng.randint(10, n // 2)), rng.uniform(0.0, 0.05)),  # while images are being written
        (done(rng.randint(n // 4, n // 2)), rng.uniform(0.0, 0.05)),
        (done(rng.randint(n // 2, n - 10)), rng.uniform(0.0, 0.05)),
        (done(rng.randint(n // 2, n - 10)), rng.uniform(0.0, 0.05)),
    ]
    killed = [_kill_when(cmd, ready, extra, tmp_path / f"kill{i}.log") for i, (ready, extra) in enumerate(kills)]
    assert any(killed[1:]), f"seed {SEED}: the job finished before every mid-run kill"
    assert not (out / "index.json").is_file() or not json.loads((out / "index.json").read_bytes())["complete"]
    _run(cmd)
    assert _leftovers(out) == [], f"seed {SEED}"
    _assert_same_tree(out, ref)


# ------------------------------------------------------------------------------ cache-teacher
def test_cache_teacher_killed_at_random_points(data, tmp_path):
    rng = _rng("cache")

    def cmd(out):
        return _cli("cache-teacher", "--teacher", TEACHER, "--data", data, "--out", out, "--shard-size", 2,
                    "--batch-size", 1, "--device", "cpu", "--no-progress")

    ref = tmp_path / "ref"
    _run(cmd(ref))
    out = tmp_path / "out"
    shards = lambda k: (lambda: len(list((out / "shards").glob("0*.json"))) >= k)  # noqa: E731
    kills = [(lambda: True, rng.uniform(0.0, 1.5)),  # start-up, model loading, the first shard
             (shards(rng.randint(1, 3)), rng.uniform(0.0, 0.3)),  # between or inside shards
             (shards(rng.randint(4, 6)), rng.uniform(0.0, 0.3))]
    killed = [_kill_when(cmd(out), ready, extra, tmp_path / f"kill{i}.log") for i, (ready, extra) in enumerate(kills)]
    assert any(killed[1:]), f"seed {SEED}: the job finished before every mid-run kill"
    _run(cmd(out))
    assert _leftovers(out) == [], f"seed {SEED}"
    _assert_same_tree(out, ref)  # meta.json, index.json, every shard .json / .bin


# ------------------------------------------------------------------------------ pretrain
def test_pretrain_killed_at_random_points_resumes_exactly(data, tmp_path):
    from safetensors.torch import load_file

    rng = _rng("pretrain")
    steps = 14

    def cmd(out, *extra):
        return _cli("pretrain", "--model", "sam_test_tiny", "--data", data, "--out", out, "--max-steps", steps,
                    "--batch-size", 2, "--masks-per-image", 2, "--corrections", 1, "--extra-iters", 1,
                    "--val-images", 2, "--val-every", 5, "--ckpt-every", 3, "--log-every", 1, "--warmup-steps", 2,
                    *extra)

    ref = tmp_path / "ref"
    _run(cmd(ref))
    out = tmp_path / "out"
    rows = lambda k: (lambda: (out / "metrics.csv").is_file()  # noqa: E731
                      and (out / "metrics.csv").read_text().count("\n") > k)
    kills = [(lambda: True, rng.uniform(0.0, 1.0)),
             (rows(rng.randint(1, 6)), rng.uniform(0.0, 0.3)),  # between checkpoints, or while writing one
             (rows(rng.randint(7, steps - 2)), rng.uniform(0.0, 0.3))]
    killed = []
    for i, (ready, extra) in enumerate(kills):
        resume = ("--resume",) if (out / "checkpoints" / "last.pt").is_file() else ()
        killed.append(_kill_when(cmd(out, *resume), ready, extra, tmp_path / f"kill{i}.log"))
    assert any(killed[1:]), f"seed {SEED}: the job finished before every mid-run kill"
    # a kill inside torch.save leaves this (the write takes milliseconds here: planted, not hit by chance)
    (out / "checkpoints").mkdir(exist_ok=True)
    (out / "checkpoints" / ".last.pt.killed.tmp").write_bytes(os.urandom(1000))
    _run(cmd(out, "--resume"))
    assert _leftovers(out) == [], f"seed {SEED}"
    assert (out / "model.safetensors").read_bytes() == (ref / "model.safetensors").read_bytes(), f"seed {SEED}"
    wa, wb = load_file(str(out / "model.safetensors")), load_file(str(ref / "model.safetensors"))
    assert wa.keys() == wb.keys()
    # every logged row (losses, lr, gradient norm) as in the uninterrupted run, none twice
    assert _csv(out / "metrics.csv") == _csv(ref / "metrics.csv"), f"seed {SEED}"
    assert _csv(out / "val.csv") == _csv(ref / "val.csv"), f"seed {SEED}"


# ------------------------------------------------------------------------------ distill
def test_distill_killed_at_random_points_in_both_stages(data, tmp_path):
    import yaml

    rng = _rng("distill")

    def cfg(out: Path) -> Path:
        d = {"teacher": TEACHER, "student": STUDENT, "data": str(data), "out": str(out), "seed": 0,
             "val_images": 2, "val_masks_per_image": 1, "workers": 0,
             "stage1": {"steps": 10, "batch_size": 2, "lr": 2e-3, "warmup_steps": 1, "ckpt_every": 3,
                        "log_every": 1, "val_every": 4},
             "stage2": {"steps": 6, "batch_size": 2, "masks_per_image": 2, "lr": 1e-4, "warmup_steps": 1,
                        "corrections": 1, "ckpt_every": 2, "log_every": 1, "val_every": 3}}
        path = out.with_suffix(".yaml")
        path.write_text(yaml.safe_dump({"distill": d}))
        return path

    ref, out = tmp_path / "ref", tmp_path / "out"
    _run(_cli("distill", "--config", cfg(ref), "--no-progress"))
    cmd = _cli("distill", "--config", cfg(out), "--no-progress", "--resume")

    def rows(stage, k):
        f = out / stage / "metrics.csv"
        return lambda: f.is_file() and f.read_text().count("\n") > k

    kills = [(lambda: True, rng.uniform(0.0, 1.5)),
             (rows("stage1", rng.randint(1, 8)), rng.uniform(0.0, 0.3)),
             (rows("stage2", rng.randint(0, 4)), rng.uniform(0.0, 0.3))]
    killed = [_kill_when(cmd, ready, extra, tmp_path / f"kill{i}.log") for i, (ready, extra) in enumerate(kills)]
    assert any(killed[1:]), f"seed {SEED}: the job finished before every mid-run kill"
    # what kills inside a checkpoint / weights write leave (too short a window to hit by chance here)
    for f in ("stage1/checkpoints/.last.pt.killed.tmp", ".student.safetensors.killed.tmp"):
        (out / f).parent.mkdir(parents=True, exist_ok=True)
        (out / f).write_bytes(os.urandom(1000))
    _run(cmd)
    assert _leftovers(out) == [], f"seed {SEED}"
    for f in ("student.safetensors", "stage1/student.safetensors", "stage2/student.safetensors"):
        assert (out / f).read_bytes() == (ref / f).read_bytes(), f"seed {SEED}: {f}"
    for stage in ("stage1", "stage2"):
        for name in ("metrics.csv", "val.csv"):
            assert _csv(out / stage / name) == _csv(ref / stage / name), f"seed {SEED}: {stage}/{name}"


# ------------------------------------------------------------------------------ export
def _export_cmd(out: Path) -> list[str]:
    return _cli("export", "--model", STUDENT, "--formats", "onnx", "--precision", "fp32", "--verify-images", 1,
                "--out", out)


@pytest.fixture(scope="module")
def export_ref(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("k9export") / "export"
    _run(_export_cmd(out))
    return out


def test_export_onnx_killed_at_random_point(export_ref, tmp_path):
    """The ONNX exporter is byte-deterministic here (same torch / onnx versions, no timestamps),
    and the manifest records sha256, sizes and verification metrics only: every byte of the
    export folder must match. (Other formats are not exported here to keep the test short.)"""
    rng = _rng("export")
    out = tmp_path / "export"
    cmd = _export_cmd(out)
    scratch = lambda: out.is_dir() and any(out.iterdir())  # noqa: E731 - the exporter has started writing
    kills = [(lambda: True, rng.uniform(0.0, 2.0)),  # imports, model load, tracing
             (scratch, rng.uniform(0.0, 2.0)),  # exporting, staging, verifying
             ((lambda: (out / "manifest.json").is_file()), rng.uniform(0.0, 1.0))]  # after the first artifact
    killed = [_kill_when(cmd, ready, extra, tmp_path / f"kill{i}.log") for i, (ready, extra) in enumerate(kills)]
    assert any(killed[1:]), f"seed {SEED}: the job finished before every mid-run kill"
    _run(cmd)
    assert _leftovers(out) == [], f"seed {SEED}"
    _assert_same_tree(out, export_ref)


# ------------------------------------------------------------------------------ bench
#: fields that measure time or memory (they differ between any two runs)
TIMING_KEYS = {"encoder_ms", "decoder_ms", "load_s", "peak_rss_mb", "teacher_masks_s", "latency_ms",
               "command"}  # command: the --out path differs between the two runs


def _untimed(obj):
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def test_bench_killed_at_random_point(export_ref, data, tmp_path):
    rng = _rng("bench")

    def cmd(out):
        return _cli("bench", "--artifacts", export_ref, "--data", data, "--teacher", TEACHER, "--num-images", 3,
                    "--masks-per-image", 2, "--runs", 2, "--warmup", 0, "--threads", 1, "--torch-model", STUDENT,
                    "--torch-variants", "eager_fp32", "--out", out)

    ref = tmp_path / "ref" / "bench.json"
    _run(cmd(ref))
    out = tmp_path / "out" / "bench.json"
    work = tmp_path / "out" / "bench.work"
    log1 = tmp_path / "kill1.log"
    kills = [(lambda: True, rng.uniform(0.5, 2.5), tmp_path / "kill0.log"),  # teacher masks, the runner
             (_log_has(log1, "runner: onnx fp32"), rng.uniform(0.0, 1.0), log1)]  # in the ONNX / torch pipelines
    killed = [_kill_when(cmd(out), ready, extra, log) for ready, extra, log in kills]
    assert any(killed), f"seed {SEED}: the job finished before every kill"
    _run(cmd(out))
    assert _leftovers(tmp_path / "out") == [], f"seed {SEED}"
    a, b = json.loads(out.read_text()), json.loads(ref.read_text())
    for r in a["rows"]:  # the timings are there, only their values may differ
        assert r["encoder_ms"]["n"] == 2 and r["decoder_ms"]["n"] == 10 and r["error"] is None
    for r in a["rows"] + b["rows"]:
        r["artifacts"] = os.path.basename(r["artifacts"])
    assert _untimed(a) == _untimed(b), f"seed {SEED}"
    # the masks that came back, array for array (npz files carry zip timestamps: not the bytes)
    for name in ("inputs.npz", "outputs_onnx_fp32.npz", "outputs_torch_eager_fp32.npz"):
        with np.load(work / export_ref.name / name) as za, \
                np.load(tmp_path / "ref" / "bench.work" / export_ref.name / name) as zb:
            assert za.files == zb.files and all(np.array_equal(za[k], zb[k]) for k in za.files), name


# ------------------------------------------------------------------------------ pipeline
PIPELINE_STAGES = ("data", "cache", "distill", "eval", "export", "bench", "report")


def _pipeline_cmd(tmp: Path) -> list[str]:
    sets = [
        "data.train.num_images=8", "data.train.image_size=128", "data.heldout.num_images=2",
        "data.heldout.image_size=128", "data.workers=1", f"distill.data={tmp}/train", f"eval.data={tmp}/heldout",
        f"distill.val_data={tmp}/heldout", f"distill.cache={tmp}/cache", f"distill.out={tmp}/run/distill",
        "distill.stage1.steps=6", "distill.stage1.batch_size=2", "distill.stage1.ckpt_every=2",
        "distill.stage1.log_every=1", "distill.stage1.val_every=0", "distill.val_images=1", "eval.images=1",
        "eval.masks_per_image=1", "export.formats=onnx", "export.precision=fp32", "export.verify_images=1",
        "export.calib_images=0", "bench.num_images=1", "bench.masks_per_image=1", "bench.runs=1", "bench.threads=1",
    ]
    cmd = _cli("pipeline", "--config", REPO / "configs/demo.yaml", "--out", f"{tmp}/run")
    for s in sets:
        cmd += ["--set", s]
    return cmd


@pytest.mark.slow
def test_pipeline_killed_in_a_random_stage(tmp_path):
    pytest.importorskip("onnxruntime")
    rng = _rng("pipeline")
    ref, got = tmp_path / "ref", tmp_path / "got"
    _run(_pipeline_cmd(ref), timeout=300)
    # killed in one stage, rerun and killed in a later one (the rerun skips what was done)
    stages = sorted(rng.sample(PIPELINE_STAGES, 2), key=PIPELINE_STAGES.index)
    stage = "/".join(stages)
    killed = []
    for i, st in enumerate(stages):
        log = tmp_path / f"kill{i}.log"
        killed.append(_kill_when(_pipeline_cmd(got), _log_has(log, f"[{st}] running"), rng.uniform(0.0, 1.0), log,
                                 timeout=120))
    assert killed[0], f"seed {SEED}: finished before the kill in stage {stages[0]}"
    out = _run(_pipeline_cmd(got), timeout=300)
    assert "mIoU/teacher" in out
    assert _leftovers(got) == [], f"seed {SEED} (killed in {stage})"
    state = json.loads((got / "run/pipeline.json").read_text())["stages"]
    assert all(state[s]["status"] == "done" for s in PIPELINE_STAGES)
    # deterministic outputs: the data, the cache, the student, the evaluation, the artifacts
    for sub in ("train", "heldout", "cache/shards", "run/export"):
        _assert_same_tree(got / sub, ref / sub)
    for f in ("run/distill/student.safetensors", "run/eval.json"):
        assert (got / f).read_bytes() == (ref / f).read_bytes(), f"seed {SEED} (killed in {stage}): {f}"
    # paths name each run's folder
    a, b = (json.loads((d / "run/bench.json").read_text().replace(str(d), "<tmp>")) for d in (got, ref))
    assert _untimed(a) == _untimed(b), f"seed {SEED} (killed in {stage})"
