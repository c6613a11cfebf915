"""Encoder distillation (``sam-edge distill``) and student evaluation (``sam-edge eval``) with
tiny models: teacher ``sam_test_tiny`` (ViT), student ``mobilesam_test_tiny`` (TinyViT, same
prompt encoder / mask decoder fields)."""
from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sam_edge.distillation import config as C, distiller as R, models as M, stages as D
from sam_edge.data import ImageFolderDataset, SA1BDataset
from sam_edge.distillation.config import ConfigError, config_from_dict, load_config
from sam_edge.evaluation.evaluator import evaluate_student
from sam_edge.training.engine import RunStateError
from sam_edge.data.synth import generate_dataset
from sam_edge import registry
from sam_edge.checkpoint import save_model
from sam_edge.registry import create_model

TEACHER, STUDENT = "sam_test_tiny", "mobilesam_test_tiny"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("distill_data")
    generate_dataset(out, num_images=10, image_size=96, seed=5)
    return out


def _cfg_dict(data: Path, out: Path, **kw) -> dict:
    d = dict(teacher=TEACHER, student=STUDENT, data=str(data), out=str(out), seed=0, val_fraction=0.2,
             val_images=2, val_masks_per_image=2,
             stage1=dict(steps=4, batch_size=2, lr=2e-3, warmup_steps=1, ckpt_every=2, log_every=1, val_every=2),
             stage2=dict(steps=0, batch_size=2, masks_per_image=2, lr=1e-3, warmup_steps=1, corrections=1,
                         ckpt_every=2, log_every=1, val_every=100))
    for k, v in kw.items():
        if isinstance(v, dict):
            d[k] = {**d.get(k, {}), **v}
        else:
            d[k] = v
    return d


def _cfg(data: Path, out: Path, **kw) -> C.DistillConfig:
    return config_from_dict(_cfg_dict(data, out, **kw))


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


RUNNER = textwrap.dedent('''
    """Test driver: sam-edge distill with optional slow steps and per-rank weight hashes."""
    import hashlib, os, sys, time
    from pathlib import Path
    from sam_edge.distillation import distiller as R, stages as D
    from sam_edge.commands.distill import main

    delay = float(os.environ.get("DISTILL_TEST_DELAY", "0"))
    if delay:
        _step = D._Stage.train_step
        def slow(self, batches):
            m = _step(self, batches)
            time.sleep(delay)
            return m
        D._Stage.train_step = slow
    hash_out = os.environ.get("DISTILL_TEST_HASH")
    if hash_out:
        _run = R.Distiller.run
        def run(self, *a, **k):
            s = _run(self, *a, **k)
            h = hashlib.sha256()
            for name, t in sorted(self.student.state_dict().items()):
                h.update(name.encode())
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
            Path(f"{hash_out}.rank{os.environ.get('RANK', '0')}").write_text(h.hexdigest())
            return s
        R.Distiller.run = run
    sys.exit(main(sys.argv[1:]))
''')


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("runner") / "run_distill.py"
    p.write_text(RUNNER)
    return p


def _write_cfg(path: Path, d: dict, section: bool = True) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"distill": d} if section else d))
    return path


# --------------------------------------------------------------------------------------- config
def test_config_yaml_section_overrides_and_errors(data_dir, tmp_path):
    d = _cfg_dict(data_dir, tmp_path / "run")
    f = _write_cfg(tmp_path / "c.yaml", {**d, "stage1": {**d["stage1"], "lr": "1e-3"}})
    cfg = load_config(f, ["stage1.lr=5e-4", "distill.stage2.steps=3", "stage2.freeze_decoder=false"])
    assert cfg.stage1.lr == 5e-4 and cfg.stage2.steps == 3 and cfg.stage2.freeze_decoder is False
    assert cfg.teacher == TEACHER and cfg.cache is None
    # without an override, the YAML 1.1 string "1e-3" still reads as a number
    assert load_config(f).stage1.lr == 1e-3
    # a file without a distill: section is the section itself; other sections are ignored
    g = _write_cfg(tmp_path / "flat.yaml", d, section=False)
    assert load_config(g).student == STUDENT
    import yaml

    (tmp_path / "multi.yaml").write_text(yaml.safe_dump({"distill": d, "export": {"anything": 1}}))
    assert load_config(tmp_path / "multi.yaml").out == str(tmp_path / "run")

    with pytest.raises(ConfigError, match=r"distill\.stage1\.lrr"):
        load_config(f, ["stage1.lrr=1"])
    with pytest.raises(ConfigError, match=r"distill\.bogus"):
        config_from_dict({**d, "bogus": 1})
    with pytest.raises(ConfigError, match=r"distill\.stage1\.lr: expected a number, got 'fast'"):
        load_config(f, ["stage1.lr=fast"])
    with pytest.raises(ConfigError, match=r"distill\.stage2\.freeze_decoder: expected true/false"):
        load_config(f, ["stage2.freeze_decoder=maybe"])
    with pytest.raises(ConfigError, match=r"distill\.stage1\.batch_size: expected an integer"):
        load_config(f, ["stage1.batch_size=2.5"])
    with pytest.raises(ConfigError, match=r"distill\.stage1: expected a mapping"):
        load_config(f, ["stage1=3"])
    with pytest.raises(ConfigError, match=r"distill\.stage1\.loss: must be 'mse' or 'mse\+cosine'"):
        load_config(f, ["stage1.loss=l1"])
    with pytest.raises(ConfigError, match=r"distill\.teacher: required"):
        config_from_dict({k: v for k, v in d.items() if k != "teacher"})
    with pytest.raises(ConfigError, match=r"distill\.student: unknown model 'no_such_student'"):
        R.Distiller(_cfg(data_dir, tmp_path / "r", student="no_such_student"))


def test_missing_data_path_is_named(tmp_path):
    cfg = _cfg(tmp_path / "nowhere", tmp_path / "run")
    with pytest.raises(ConfigError, match=r"distill\.data: folder not found: .*nowhere"):
        R.Distiller(cfg)
    cfg = dataclasses.replace(cfg, data=str(tmp_path), teacher_checkpoint=str(tmp_path / "t.pth"))
    with pytest.raises(ConfigError, match=r"distill\.teacher_checkpoint: file not found"):
        R.Distiller(cfg)


def test_decoder_mismatch_names_the_fields(data_dir, tmp_path, monkeypatch):
    bad = dataclasses.replace(registry.get_config(STUDENT), name="student_wide_decoder", decoder_mlp_dim=256,
                              iou_head_hidden_dim=32)
    monkeypatch.setitem(registry._REGISTRY, bad.name, bad)
    with pytest.raises(ConfigError) as exc:
        R.Distiller(_cfg(data_dir, tmp_path / "run", student=bad.name))
    msg = str(exc.value)
    assert "decoder_mlp_dim: teacher 128, student 256" in msg and "iou_head_hidden_dim" in msg
    assert "prompt_embed_dim" not in msg


# --------------------------------------------------------------------------------------- cache
class FakeCache:
    """The distill.cache.TeacherCache interface: meta, ids, get, get_batch, __contains__."""

    def __init__(self, meta: dict, table: dict[str, torch.Tensor]) -> None:
        self.meta, self._table = meta, table
        self.ids = sorted(table)
        self.gets = 0

    def __contains__(self, key: str) -> bool:
        return key in self._table

    def get(self, key: str) -> torch.Tensor:
        self.gets += 1
        return self._table[key].to(torch.float16)

    def get_batch(self, ids):
        return torch.stack([self.get(i) for i in ids])


def _teacher_table(data: Path) -> dict[str, torch.Tensor]:
    from sam_edge.training.pretrain import encode

    torch.manual_seed(0)  # the teacher a Distiller with seed 0 builds
    teacher = create_model(TEACHER)
    ds = ImageFolderDataset(data, image_size=teacher.image_size)
    table = {}
    with torch.no_grad():
        for i in range(len(ds)):
            item = ds[i]
            img, hw = D._pad_image(item["image"], teacher.image_size)
            table[item["image_id"]] = encode(teacher, img[None], torch.tensor([hw]))[0]
    return table


def test_cache_is_used_checked_and_misses_are_live(data_dir, tmp_path, monkeypatch):
    torch.manual_seed(0)  # sam_test_tiny has no bundled weights: the same seed gives the same teacher
    table = _teacher_table(data_dir)
    meta = {"teacher": TEACHER, "image_size": 256}
    caches = []

    def opener(table_, meta_):
        def _open(root):
            caches.append(FakeCache(meta_, table_))
            return caches[-1]
        return _open

    (tmp_path / "cache").mkdir()
    cfg = _cfg(data_dir, tmp_path / "run", cache=str(tmp_path / "cache"), stage1={"steps": 2})
    # a cache written for another teacher is refused, naming both
    monkeypatch.setattr(R, "_open_cache", opener(table, {"teacher": "sam_vit_h", "image_size": 1024}))
    with pytest.raises(ConfigError, match=r"distill\.cache: .*teacher 'sam_vit_h' \(config: 'sam_test_tiny'\)"):
        R.Distiller(cfg)
    # complete cache: the teacher's encoder is never run for training images
    monkeypatch.setattr(R, "_open_cache", opener(table, meta))
    torch.manual_seed(0)
    dist = R.Distiller(cfg)
    calls = []
    dist.teacher.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    s1 = D._Stage1(dist, cfg.stage1)
    s1.prepare_data()
    s1.total_steps = 2
    s1.setup_training()
    batch = D._collate([s1.items[(0, i)] for i in s1.plan(0)])
    t = dist.teacher_embeddings(batch["ids"], batch["images"], batch["input_sizes"])
    assert not calls and caches[-1].gets == 2 and t.dtype == torch.float32
    torch.testing.assert_close(t, torch.stack([table[i] for i in batch["ids"]]).half().float())
    # an image missing from the cache is computed live (counted) ...
    partial = {k: v for k, v in table.items() if k != batch["ids"][0]}
    monkeypatch.setattr(R, "_open_cache", opener(partial, meta))
    torch.manual_seed(0)
    dist = R.Distiller(cfg)
    t2 = dist.teacher_embeddings(batch["ids"], batch["images"], batch["input_sizes"])
    assert dist.cache_misses == 1
    torch.testing.assert_close(t2[0], table[batch["ids"][0]], atol=1e-4, rtol=1e-4)
    # ... or refused with cache_missing: error
    dist = R.Distiller(dataclasses.replace(cfg, cache_missing="error"))
    with pytest.raises(KeyError, match="has no embedding for"):
        dist.teacher_embeddings(batch["ids"], batch["images"], batch["input_sizes"])
    # and a whole stage-1 run from the cache
    monkeypatch.setattr(R, "_open_cache", opener(table, meta))
    summary = R.run_distill(cfg, progress=False)
    assert summary["stage1"]["cache_misses"] == 0 and summary["steps"]["stage1"] == 2


# --------------------------------------------------------------------------------------- stage 1
@pytest.mark.parametrize("loss", ["mse", "mse+cosine"])
def test_stage1_loss_falls_on_a_fixed_batch(data_dir, tmp_path, loss):
    torch.manual_seed(0)
    cfg = _cfg(data_dir, tmp_path / "run", stage1={"steps": 1000, "lr": 3e-3, "warmup_steps": 0, "loss": loss,
                                                   "cosine_weight": 0.5})
    dist = R.Distiller(cfg)
    s1 = D._Stage1(dist, cfg.stage1)
    s1.prepare_data()
    s1.total_steps = 1000
    s1.setup_training()
    batch = D._collate([s1.items[(0, i)] for i in s1.plan(0)])
    losses = [s1.train_step(itertools.repeat(batch))["loss"] for _ in range(25)]
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses


def test_stage1_kill_resume_is_bit_identical_and_finished_stage_skips(data_dir, tmp_path, runner):
    d = _cfg_dict(data_dir, tmp_path / "a", stage1={"steps": 6, "ckpt_every": 2, "val_every": 3})
    cfg_a = _write_cfg(tmp_path / "a.yaml", d)
    cfg_b = _write_cfg(tmp_path / "b.yaml", {**d, "out": str(tmp_path / "b")})
    base = [sys.executable, str(runner), "--no-progress", "--config"]
    # uninterrupted reference
    r = subprocess.run(base + [str(cfg_a)], env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    # slowed-down run, SIGKILLed once a checkpoint exists
    ckpt = tmp_path / "b" / "stage1" / "checkpoints" / "last.pt"
    p = subprocess.Popen(base + [str(cfg_b)], env={**_env(), "DISTILL_TEST_DELAY": "0.4"},
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 90
    while not ckpt.exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    assert ckpt.exists(), p.stderr.read().decode()[-2000:]
    killed_at = torch.load(ckpt, weights_only=True)["step"]
    assert 2 <= killed_at < 6 and not (tmp_path / "b" / "stage1" / "summary.json").exists()
    # a plain rerun refuses to clobber the unfinished stage
    with pytest.raises(RunStateError, match="--resume"):
        R.run_distill(load_config(cfg_b), progress=False)
    r = subprocess.run(base + [str(cfg_b), "--resume"], env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    wa, wb = _load_weights(tmp_path / "a" / "student.safetensors"), _load_weights(tmp_path / "b" / "student.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ma, mb = _read_csv(tmp_path / "a" / "stage1" / "metrics.csv"), _read_csv(tmp_path / "b" / "stage1" / "metrics.csv")
    assert [r["step"] for r in mb] == [str(i) for i in range(1, 7)]  # no duplicated rows
    assert [r["loss"] for r in ma] == [r["loss"] for r in mb]
    # rerunning a finished run skips the stage (no training, same weights)
    mtime = ckpt.stat().st_mtime_ns
    summary = R.run_distill(load_config(cfg_b), progress=False)
    assert summary["stage1"]["skipped_on_rerun"] is True and ckpt.stat().st_mtime_ns == mtime
    wc = _load_weights(tmp_path / "b" / "student.safetensors")
    assert all(torch.equal(wb[k], wc[k]) for k in wb)
    assert set(json.loads((tmp_path / "b" / "summary.json").read_text())) >= {"steps", "stage1", "stage2", "validation"}


def test_ddp_two_processes_end_with_identical_weights(data_dir, tmp_path, runner):
    d = _cfg_dict(data_dir, tmp_path / "ddp", stage1={"steps": 3, "batch_size": 4, "grad_accum": 2},
                  stage2={"steps": 2, "batch_size": 2, "freeze_decoder": False, "corrections": 1})
    cfg = _write_cfg(tmp_path / "ddp.yaml", d)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(runner), "--no-progress", "--config", str(cfg)]
    r = subprocess.run(cmd, env={**_env(), "DISTILL_TEST_HASH": str(tmp_path / "w")}, capture_output=True,
                       text=True, timeout=180, cwd=REPO)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    h0, h1 = (tmp_path / "w.rank0").read_text(), (tmp_path / "w.rank1").read_text()
    assert h0 == h1
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == {"stage1": 3, "stage2": 2}
    # only rank 0 wrote: one header + one row per step
    assert len(_read_csv(tmp_path / "ddp" / "stage1" / "metrics.csv")) == 3
    import sam_edge

    assert sam_edge.load_model(tmp_path / "ddp" / "student.safetensors").config.name == STUDENT


# --------------------------------------------------------------------------------------- stage 2
def _decoder_state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("image_encoder.")}


@pytest.mark.parametrize("freeze", [True, False])
def test_stage2_frozen_or_finetuned_decoder(data_dir, tmp_path, freeze):
    cfg = _cfg(data_dir, tmp_path / "run", stage1={"steps": 1},
               stage2={"steps": 2, "freeze_decoder": freeze, "corrections": 2, "point_prob": 0.5, "val_every": 2})
    dist = R.Distiller(cfg)
    teacher_dec = _decoder_state(dist.teacher)
    start = _decoder_state(dist.student)
    assert all(torch.equal(start[k], teacher_dec[k]) for k in start)  # decoder initialised from the teacher
    enc0 = {k: v.clone() for k, v in dist.student.image_encoder.state_dict().items()}
    summary = dist.run(progress=False)
    end = _decoder_state(dist.student)
    changed = [k for k in start if not torch.equal(start[k], end[k])]
    if freeze:
        assert not changed
    else:
        assert any(k.startswith("mask_decoder.") for k in changed)
    assert any(not torch.equal(v, dist.student.image_encoder.state_dict()[k]) for k, v in enc0.items())
    rows = _read_csv(tmp_path / "run" / "stage2" / "metrics.csv")
    assert len(rows) == 2 and {"mask_loss", "iou_mse", "emb_mse", "iou_first", "iou_last"} <= set(rows[0])
    val = summary["stage2"]["validation"]
    assert set(val) == {"emb_mse", "point1_vs_teacher", "point1_oracle_vs_teacher", "box_vs_teacher"}
    assert (tmp_path / "run" / "stage2" / "student.safetensors").is_file()


def test_stage2_interrupt_and_resume_matches(data_dir, tmp_path):
    def cfg(out):
        return _cfg(data_dir, out, stage1={"steps": 0},
                    stage2={"steps": 4, "corrections": 2, "ckpt_every": 100, "freeze_decoder": False})

    R.run_distill(cfg(tmp_path / "a"), progress=False)
    dist = R.Distiller(cfg(tmp_path / "b"))
    real = D._Stage2.train_step

    def interrupted(self, batches):
        if self.step == 2:  # interrupted inside step 3, after its random draws started
            torch.rand(5)
            torch.rand(1, generator=self.gen)
            raise KeyboardInterrupt
        return real(self, batches)

    D._Stage2.train_step = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            dist.run(progress=False)
    finally:
        D._Stage2.train_step = real
    assert torch.load(tmp_path / "b" / "stage2" / "checkpoints" / "last.pt", weights_only=True)["step"] == 2
    R.run_distill(cfg(tmp_path / "b"), resume=True, progress=False)
    wa, wb = _load_weights(tmp_path / "a" / "student.safetensors"), _load_weights(tmp_path / "b" / "student.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_stage2_needs_sa1b_data(tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((64, 64, 3), 40 * i, np.uint8)).save(folder / f"img{i}.png")
    cfg = _cfg(folder, tmp_path / "run", val_fraction=0.0, stage1={"steps": 1}, stage2={"steps": 1})
    with pytest.raises(ConfigError, match="stage 2 needs SA-1B-format data"):
        R.run_distill(cfg, progress=False)
    # stage 1 alone works on a plain image folder
    assert (tmp_path / "run" / "stage1" / "student.safetensors").is_file()


# --------------------------------------------------------------------------------------- eval
def test_eval_keys_and_a_copy_of_the_teacher_scores_one(data_dir, tmp_path):
    torch.manual_seed(0)
    teacher = create_model(TEACHER)
    copy_path = save_model(teacher, tmp_path / "copy.safetensors")
    student = M.load_model_spec(str(copy_path))
    ds = SA1BDataset(data_dir, image_size=teacher.image_size)
    res = evaluate_student(student, teacher, ds, images=3, masks_per_image=3, seed=0)
    keys = {"point1", "point1_oracle", "point2", "box"}
    for name in ("student_vs_teacher", "student_vs_gt", "teacher_vs_gt"):
        assert set(res[name]) == keys
    assert all(v == 1.0 for v in res["student_vs_teacher"].values())
    assert res["student_vs_gt"] == res["teacher_vs_gt"]
    assert res["images"] == 3 and res["masks"] == 9 and len(res["image_ids"]) == 3
    # another student sees the same images, masks and prompts
    other = create_model(STUDENT)
    res2 = evaluate_student(other, teacher, ds, images=3, masks_per_image=3, seed=0)
    assert res2["image_ids"] == res["image_ids"] and res2["teacher_vs_gt"] == res["teacher_vs_gt"]
    assert res2["student_vs_teacher"]["box"] < 1.0
    # the CLI module: table + JSON
    from sam_edge.commands import eval as cli_eval
    parser = argparse.ArgumentParser()
    cli_eval.add_arguments(parser)
    out = tmp_path / "eval.json"
    args = parser.parse_args(["--student", str(copy_path), "--teacher", TEACHER, "--teacher-checkpoint",
                              str(copy_path), "--data", str(data_dir), "--images", "2", "--masks-per-image", "2",
                              "--low-res", "--out", str(out)])
    assert cli_eval.run(args) == 0
    saved = json.loads(out.read_text())
    assert saved["images"] == 2 and saved["student_vs_teacher"]["point2"] == 1.0


def test_evaluate_against_teacher_is_eval_and_against_gt_is_the_default(data_dir, tmp_path, capsys):
    """`sam-edge eval ...` is an alias of `sam-edge evaluate --against teacher ...`: same table,
    same JSON (but the seconds); `evaluate` without --against scores against the ground truth."""
    from sam_edge.cli import main

    common = ["--teacher", TEACHER, "--data", str(data_dir), "--images", "2", "--masks-per-image", "2", "--low-res",
              "--device", "cpu"]
    torch.manual_seed(0)  # the student has no bundled weights: the same random ones both times
    assert main(["eval", "--student", STUDENT, *common, "--out", str(tmp_path / "a.json")]) == 0
    table_a = capsys.readouterr().out
    torch.manual_seed(0)
    assert main(["evaluate", "--against", "teacher", "--student", STUDENT, *common,
                 "--out", str(tmp_path / "b.json")]) == 0
    table_b = capsys.readouterr().out
    assert table_a.replace("a.json", "b.json") == table_b and "student vs teacher" in table_a
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    a.pop("seconds"), b.pop("seconds")
    assert a == b
    assert main(["evaluate", "--against", "teacher", "--model", STUDENT, "--data", str(data_dir)]) == 2
    assert "--against teacher needs --teacher" in capsys.readouterr().err
    assert main(["evaluate", "--model", TEACHER, "--data", str(data_dir), "--images", "1", "--masks-per-image", "1",
                 "--corrections", "1", "--json", str(tmp_path / "gt.json")]) == 0
    gt = json.loads((tmp_path / "gt.json").read_text())
    assert {"point1", "point1_corr", "box", "point1_center", "box_exact"} <= set(gt) and gt["images"] == 1


def test_distill_cli_module(data_dir, tmp_path, capsys):
    from sam_edge.commands import distill as cli_distill
    cfg = _write_cfg(tmp_path / "c.yaml", _cfg_dict(data_dir, tmp_path / "run"))
    rc = cli_distill.main(["--config", str(cfg), "--no-progress", "--set", "stage1.steps=2",
                           "--set", "stage2.steps=1"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["steps"] == {"stage1": 2, "stage2": 1}
    model = create_model(STUDENT, checkpoint=tmp_path / "run" / "student.safetensors")
    assert model.image_size == 256
    assert cli_distill.main(["--config", str(cfg), "--set", "stage1.lrr=1"]) == 2
    assert "distill.stage1.lrr" in capsys.readouterr().err


def test_worker_processes_give_the_same_run(data_dir, tmp_path):
    def run(out, workers):
        R.run_distill(_cfg(data_dir, out, workers=workers, stage1={"steps": 2, "ckpt_every": 100},
                           stage2={"steps": 1, "corrections": 1}), progress=False)
        return _load_weights(out / "student.safetensors")

    a, b = run(tmp_path / "w0", 0), run(tmp_path / "w2", 2)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_validation_on_a_separate_folder_never_reads_the_cache(data_dir, tmp_path, monkeypatch):
    # held-out images share relative names (sa_1.jpg ...) with the training set: a cache lookup
    # would return the embedding of a different image
    val = tmp_path / "heldout"
    generate_dataset(val, num_images=3, image_size=96, seed=99)
    poisoned = FakeCache({"teacher": TEACHER, "image_size": 256},
                         {f"sa_{i}.jpg": torch.full((64, 16, 16), 100.0) for i in range(1, 11)})
    monkeypatch.setattr(R, "_open_cache", lambda root: poisoned)
    (tmp_path / "cache").mkdir()
    summary = R.run_distill(_cfg(data_dir, tmp_path / "run", cache=str(tmp_path / "cache"), val_data=str(val),
                                 val_images=3, stage1={"steps": 1}), progress=False)
    assert summary["stage1"]["validation"]["emb_mse"] < 100


def test_stage1_and_stage2_with_a_real_teacher_cache(data_dir, tmp_path):
    from sam_edge.distillation.cache import TeacherCache, cache_teacher

    torch.manual_seed(0)  # the Distiller builds its (weightless) teacher after the same seed
    teacher = create_model(TEACHER)
    cache_teacher(TEACHER, data_dir, tmp_path / "cache", dtype="fp16", model=teacher, progress=False, device="cpu")
    cfg = _cfg(data_dir, tmp_path / "run", cache=str(tmp_path / "cache"), stage1={"steps": 2},
               stage2={"steps": 1})
    dist = R.Distiller(cfg)
    calls = []
    dist.teacher.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    summary = dist.run(progress=False)
    assert summary["stage1"]["cache_misses"] == 0 and summary["stage2"]["cache_misses"] == 0
    assert not calls  # neither stage ran the teacher's encoder (validation is on a split of `data`)
    cache = TeacherCache(tmp_path / "cache")
    live = _teacher_table(data_dir)
    sid = cache.ids[0]
    torch.testing.assert_close(cache.get(sid).float(), live[sid], atol=2e-2, rtol=1e-2)
    # a cache made with other weights is refused
    ckpt = save_model(create_model(TEACHER), tmp_path / "other_teacher.safetensors")
    with pytest.raises(ConfigError, match=r"distill\.cache: .*teacher weights"):
        R.Distiller(dataclasses.replace(cfg, teacher_checkpoint=str(ckpt)))


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_stage2_keeps_batchnorm_statistics_when_asked(data_dir, tmp_path, monkeypatch, freeze_bn):
    # a convolutional (BatchNorm) student with the tiny teacher's decoder fields
    base = registry.get_config(TEACHER)
    dec = {f: getattr(base, f) for f in ("prompt_embed_dim", "mask_in_chans", "decoder_depth", "decoder_num_heads",
                                         "decoder_mlp_dim", "iou_head_hidden_dim", "num_multimask_outputs")}
    cfg_rep = dataclasses.replace(registry.get_config("repvit_demo_student"), name="repvit_test_student",
                                  image_size=base.image_size, rep_dims=(8, 16, 24, 32), rep_depths=(1, 1, 1, 1), **dec)
    monkeypatch.setitem(registry._REGISTRY, "repvit_test_student", cfg_rep)
    cfg = _cfg(data_dir, tmp_path / "run", student="repvit_test_student", stage1={"steps": 1},
               stage2={"steps": 2, "freeze_bn": freeze_bn})
    dist = R.Distiller(cfg)
    before = {}
    for name, m in dist.student.image_encoder.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            before[name] = m.running_mean.clone()
    dist.run(progress=False)  # stage 1 trains the BN statistics, then stage 2 keeps or moves them
    mods = dict(dist.student.image_encoder.named_modules())
    stage1_file = tmp_path / "run" / "stage1" / "student.safetensors"
    from sam_edge.checkpoint import read_state_dict

    sd1, _ = read_state_dict(stage1_file)
    same = [torch.equal(sd1[f"image_encoder.{n}.running_mean"], mods[n].running_mean) for n in before]
    assert before and (all(same) if freeze_bn else not all(same))


def test_sigterm_checkpoints_like_ctrl_c(data_dir, tmp_path, runner):
    """A pre-empted job (SIGTERM) writes a checkpoint at the step it reached, and --resume ends
    where an uninterrupted run ends."""
    d = _cfg_dict(data_dir, tmp_path / "t", stage1={"steps": 8, "ckpt_every": 100, "val_every": 100})
    cfg = _write_cfg(tmp_path / "t.yaml", d)
    base = [sys.executable, str(runner), "--no-progress", "--config", str(cfg)]
    metrics = tmp_path / "t" / "stage1" / "metrics.csv"
    p = subprocess.Popen(base, env={**_env(), "DISTILL_TEST_DELAY": "0.4"},
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 90
    while (not metrics.exists() or len(_read_csv(metrics)) < 2) and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)
    assert p.returncode != 0
    ckpt = tmp_path / "t" / "stage1" / "checkpoints" / "last.pt"
    assert ckpt.exists(), p.stderr.read().decode()[-2000:]  # ckpt_every=100: only the signal wrote it
    assert 2 <= torch.load(ckpt, weights_only=True)["step"] < 8
    r = subprocess.run(base + ["--resume"], env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert [row["step"] for row in _read_csv(metrics)] == [str(i) for i in range(1, 9)]


def test_interrupt_on_sigterm_restores_the_previous_handler():
    from sam_edge.training.runlog import interrupt_on_sigterm

    before = signal.getsignal(signal.SIGTERM)
    restore = interrupt_on_sigterm()
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    restore()
    assert signal.getsignal(signal.SIGTERM) == before
