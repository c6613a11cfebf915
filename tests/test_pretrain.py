"""Promptable training (SAM recipe): prompt simulation, losses, overfitting, exact resume,
bad samples counted in the run summary."""
from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from sam_edge.training.losses import dice_loss, mask_iou, sam_loss, sigmoid_focal_loss
from sam_edge.training.pretrain import PretrainConfig, Trainer
from sam_edge.data.prompts import center_points, error_region_points, masks_to_boxes, noisy_boxes, sample_points_in_masks
from sam_edge.data.synth import generate_dataset
from sam_edge.cli import main


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, num_images=10, image_size=256, seed=3)
    return out


def _cfg(data: Path, out: Path, **kw) -> PretrainConfig:
    base = dict(model="sam_test_tiny", data=str(data), out=str(out), batch_size=2, masks_per_image=2,
                corrections=2, extra_iters=1, lr=2e-3, warmup_steps=2, val_images=2, val_every=1000,
                ckpt_every=1000, log_every=1, seed=0, val_fraction=0.2)
    base.update(kw)
    return PretrainConfig(**base)


def test_prompt_simulation():
    g = torch.Generator().manual_seed(0)
    gt = torch.zeros(3, 32, 32, dtype=torch.bool)
    gt[0, 4:10, 5:20] = True
    gt[1, 20:30, 0:8] = True
    gt[2, 0:32, 0:32] = True
    coords, labels = sample_points_in_masks(gt, g)
    for i in range(3):
        x, y = coords[i, 0].long().tolist()
        assert gt[i, y, x] and labels[i, 0] == 1
    assert masks_to_boxes(gt).tolist() == [[5, 4, 20, 10], [0, 20, 8, 30], [0, 0, 32, 32]]
    boxes = noisy_boxes(gt, g)
    assert (boxes[:, 0] <= boxes[:, 2]).all() and (boxes[:, 1] <= boxes[:, 3]).all()
    assert (boxes >= 0).all() and (boxes <= 32).all()
    assert (boxes - masks_to_boxes(gt)).abs().max() <= 20
    # error region: prediction misses part of gt[0] (false negative) and spills onto empty
    # pixels for gt[1] (false positive); gt[2] is predicted perfectly
    pred = gt.clone()
    pred[0, 4:10, 5:12] = False
    pred[1] = False
    pred[1, 0:5, 25:30] = True
    pred[1, 20:30, 0:8] = True
    for _ in range(20):
        c, lab = error_region_points(pred, gt, g)
        x0, y0 = c[0, 0].long().tolist()
        assert lab[0, 0] == 1 and gt[0, y0, x0] and not pred[0, y0, x0]
        x1, y1 = c[1, 0].long().tolist()
        assert lab[1, 0] == 0 and pred[1, y1, x1] and not gt[1, y1, x1]
        x2, y2 = c[2, 0].long().tolist()
        assert lab[2, 0] == 1 and gt[2, y2, x2]


def test_center_points_are_farthest_from_the_boundary():
    gt = torch.zeros(3, 40, 40, dtype=torch.bool)
    gt[0, 10:21, 5:36] = True  # 11 x 31 bar: centre row 15, centre column 20
    yy, xx = torch.meshgrid(torch.arange(40), torch.arange(40), indexing="ij")
    ring = ((yy - 20) ** 2 + (xx - 20) ** 2 <= 15**2) & ((yy - 20) ** 2 + (xx - 20) ** 2 >= 7**2)
    gt[1] = ring  # the centre of a ring is not in it: the click must land on the ring
    gt[2, 0:40, 0:6] = True  # touching the image border, which counts as boundary
    coords, labels = center_points(gt)
    assert coords.shape == (3, 1, 2) and labels.tolist() == [[1], [1], [1]]
    (x0, y0), (x1, y1), (x2, y2) = coords[:, 0].long().tolist()
    assert (x0, y0) == (20, 15)
    assert gt[1, y1, x1] and 9 <= ((x1 - 20) ** 2 + (y1 - 20) ** 2) ** 0.5 <= 13
    assert x2 in (2, 3) and gt[2, y2, x2]
    assert torch.equal(center_points(gt)[0], coords)  # deterministic


def test_losses():
    target = torch.zeros(2, 8, 8)
    target[:, 2:6, 2:6] = 1
    good = (target * 2 - 1) * 10
    bad = -good
    assert sigmoid_focal_loss(good, target).max() < 1e-4 < sigmoid_focal_loss(bad, target).min()
    assert dice_loss(good, target).max() < 0.01 and dice_loss(bad, target).min() > 0.9
    logits = torch.stack([bad, good, torch.zeros_like(good)], dim=1)  # 2 x 3 x 8 x 8
    iou_pred = torch.tensor([[0.0, 1.0, 0.5], [0.0, 1.0, 0.5]])
    loss, best, parts = sam_loss(logits, iou_pred, target)
    assert best.tolist() == [1, 1]  # the minimum over the 3 masks is the one trained
    assert parts["iou"].item() == pytest.approx(1.0)
    assert mask_iou(good > 0, target > 0).tolist() == [1.0, 1.0]
    # the IoU head regresses the actual IoU of each mask: predicting 1.0 for the bad mask costs
    _, _, parts_bad = sam_loss(logits, torch.ones(2, 3), target)
    assert parts_bad["iou_mse"] > parts["iou_mse"]


def test_loss_falls_when_overfitting_a_fixed_batch(synth_dir, tmp_path):
    torch.manual_seed(0)
    tr = Trainer(_cfg(synth_dir, tmp_path, point_prob=0.0, lr=3e-3, max_steps=1000))
    batch = tr.load_batch(tr.batch_for_step(0))
    losses = [float(tr.train_step(itertools.repeat(batch))["loss"]) for _ in range(40)]
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert last < 0.5 * first, (first, last)


def test_resume_gives_the_same_next_step_loss(synth_dir, tmp_path):
    def losses(run: Path) -> dict[int, float]:
        import csv

        with open(run / "metrics.csv") as fh:
            return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(fh)}

    Trainer(_cfg(synth_dir, tmp_path / "a", max_steps=5)).fit(progress=False)

    cfg = _cfg(synth_dir, tmp_path / "b", max_steps=5, ckpt_every=2)
    tr = Trainer(cfg)
    real_step = tr.train_step

    def interrupted(batches):
        if tr.step == 3:  # killed while working on step 4, after the step-2 checkpoint
            raise KeyboardInterrupt
        return real_step(batches)

    tr.train_step = interrupted
    with pytest.raises(KeyboardInterrupt):
        tr.fit(progress=False)
    assert tr.ckpt_path.exists()
    # the interrupt saved step 3; a crash would leave step 2: resume from the periodic one
    state = torch.load(tr.ckpt_path, weights_only=True)
    assert state["step"] == 3

    resumed = Trainer(cfg)
    resumed.fit(resume=True, progress=False)
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert sorted(b) == [1, 2, 3, 4, 5]  # no duplicated rows after the resume
    for step in (4, 5):
        assert b[step] == a[step], (step, a[step], b[step])
    wa = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_bad_samples_are_skipped_and_counted(synth_dir, tmp_path, caplog):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    # RLE size disagreeing with the image
    js = json.loads((data / "sa_1.json").read_text())
    js["annotations"][0]["segmentation"]["size"] = [100, 100]
    (data / "sa_1.json").write_text(json.dumps(js))
    # empty annotation list
    js = json.loads((data / "sa_2.json").read_text())
    js["annotations"] = []
    (data / "sa_2.json").write_text(json.dumps(js))
    # truncated JPEG
    raw = (data / "sa_3.jpg").read_bytes()
    (data / "sa_3.jpg").write_bytes(raw[: len(raw) // 2])
    with caplog.at_level(logging.WARNING, logger="sam_edge.data"):
        summary = Trainer(_cfg(data, tmp_path / "run", max_steps=2)).fit(progress=False)
    counts = summary["data"]["counts"]
    assert counts == {"rle size mismatch": 1, "no annotations": 1, "truncated image": 1}
    assert "3 skipped" in summary["data_summary"]
    logged = caplog.text
    assert "sa_1" in logged and "sa_2" in logged and "sa_3" in logged
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["data"]["counts"] == counts


def test_pretrain_cli_and_resume(synth_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["pretrain", "--model", "sam_test_tiny", "--data", str(synth_dir), "--out", str(out),
            "--max-steps", "2", "--batch-size", "2", "--masks-per-image", "2", "--corrections", "1",
            "--extra-iters", "1", "--val-images", "2", "--val-every", "2"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["steps"] == 2
    assert set(printed["validation"]) >= {"point1", "point1_corr", "box"}
    assert (out / "model.safetensors").is_file() and (out / "metrics.csv").is_file()
    import sam_edge

    model = sam_edge.load_model(out / "model.safetensors")
    assert model.config.name == "sam_test_tiny"
    # resume with a larger budget continues from step 2
    assert main([*args[:-8], "--max-steps", "3", "--batch-size", "2", "--masks-per-image", "2",
                 "--corrections", "1", "--extra-iters", "1", "--val-images", "2", "--val-every", "2", "--resume"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 3
    assert main(["pretrain", "--model", "sam_test_tiny", "--out", str(out)]) == 2
    assert "--data" in capsys.readouterr().err


def test_evaluate_cli(synth_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--model", "sam_test_tiny", "--data", str(synth_dir), "--images", "2",
                 "--masks-per-image", "2", "--corrections", "1", "--by-area", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["images"] == 2 and result["masks"] == 4
    for key in ("point1", "point1_corr", "box", "point1_center", "box_exact"):
        assert 0.0 <= result[key] <= 1.0
    buckets = result["by_area"]
    assert sum(b["masks"] for b in buckets.values()) == 4
    # the buckets split the same masks: their weighted mean is the overall mean
    assert abs(sum(b["box"] * b["masks"] for b in buckets.values()) / 4 - result["box"]) < 1e-5


PRETRAIN_RUNNER = '''
import hashlib, os, sys
from pathlib import Path
from sam_edge.training.pretrain import PretrainConfig, Trainer

out, data, hash_out = sys.argv[1:4]
cfg = PretrainConfig(model="sam_test_tiny", data=data, out=out, batch_size=4, masks_per_image=2, corrections=1,
                     extra_iters=1, max_steps=3, grad_accum=2, val_fraction=0.2, val_images=2, val_every=1000,
                     ckpt_every=2, log_every=1, seed=0)
tr = Trainer(cfg)
tr.fit(progress=False)
h = hashlib.sha256()
for name, t in sorted(tr.model.state_dict().items()):
    h.update(name.encode())
    h.update(t.detach().cpu().contiguous().numpy().tobytes())
Path(f"{hash_out}.rank{os.environ.get('RANK', '0')}").write_text(h.hexdigest())
'''


def test_pretrain_ddp_two_processes_end_with_identical_weights(synth_dir, tmp_path):
    """Pretraining on the engine under torchrun: 2 gloo processes, gradient accumulation, one
    writer; both ranks end with the same weights."""
    import csv
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    runner = tmp_path / "run_pretrain.py"
    runner.write_text(PRETRAIN_RUNNER)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                              "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(repo))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(runner),
           str(tmp_path / "run"), str(synth_dir), str(tmp_path / "w")]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=repo)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tmp_path / "w.rank0").read_text() == (tmp_path / "w.rank1").read_text()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3
    with open(tmp_path / "run" / "metrics.csv") as fh:
        assert [int(row["step"]) for row in csv.DictReader(fh)] == [1, 2, 3]  # rank 0 alone logged


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run by benchmarks/gpu_train_step.sh)")
def test_pretrain_step_never_waits_for_the_gpu(synth_dir, tmp_path):
    """A full-recipe step on CUDA makes no synchronising call (no .item(), no device-to-host
    copy): torch's sync debug mode turns any into an error."""
    tr = Trainer(_cfg(synth_dir, tmp_path, device="cuda", corrections=3, extra_iters=1, max_steps=4))
    batches = iter(tr.loader(0))
    tr.train_step(batches)  # warm-up (allocations, cuDNN / cuBLAS handles)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            m = tr.train_step(batches)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(m["loss"]).item()
