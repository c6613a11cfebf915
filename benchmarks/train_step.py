"""Training-step benchmark: seconds per optimiser step, images per second and (on CUDA) the share
of the step the GPU spends in kernels, for SAM-recipe pretraining (full recipe: a point or box,
``corrections`` error-region clicks, ``extra_iters`` mask-only iterations), distillation stage 1
(embedding regression) and stage 2 (prompt-in-the-loop against the teacher).

    python -m benchmarks.train_step --device cpu --out out/train_step
    python -m benchmarks.train_step --device cuda --pretrain-batch 32 --out out/train_step_cuda
    python -m benchmarks.train_step --compare-rev 7adaf2c --out out/train_step   # before/after, same run

Batches are loaded before timing (the trainers load them in DataLoader workers, overlapped with
the step); the data time per step is printed separately. ``--compare-rev REV`` also runs this
script against a git revision of the repository (checked out into a temporary worktree) on the
same data, so the table holds "before" and "after" measured back to back on one machine; it works
for revisions before the training engine existed (their ``train_step`` took one batch).

Writes ``OUT/train_step.json`` and ``OUT/train_step.md``; prints the table.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

try:
    from sam_edge.utils.io import dumps_json
except ImportError:  # --compare-rev runs this file against an older revision's package
    def dumps_json(obj):
        return json.dumps(obj, allow_nan=False)

TASKS = ("pretrain", "stage1", "stage2")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_fn(obj: Any) -> Callable[[dict], Any]:
    """``train_step`` of a trainer of this revision (an iterator of micro-batches) or of an
    older one (one batch)."""
    params = list(inspect.signature(obj.train_step).parameters)
    if params and params[0] == "batches":
        return lambda b: obj.train_step(iter([b]))
    return obj.train_step


def _gpu_share(step: Callable[[], None], device: torch.device, steps: int) -> float | None:
    """Share of the wall time of ``steps`` steps spent in CUDA kernels (torch.profiler)."""
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    _sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        wall = time.perf_counter() - t0
    busy_us = 0.0
    for evt in prof.events():
        if getattr(evt, "device_type", None) == torch.autograd.DeviceType.CUDA:
            busy_us += getattr(evt, "device_time", None) or getattr(evt, "cuda_time", 0.0) or 0.0
    return busy_us / 1e6 / wall if wall > 0 else None


def _time(step: Callable[[], None], device: torch.device, warmup: int, steps: int) -> list[float]:
    for _ in range(warmup):
        step()
    _sync(device)
    out = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return out


def _measure(trainer: Any, batches: list[dict], device: torch.device,
             args: argparse.Namespace) -> tuple[list[float], float | None]:
    """Step times and GPU busy share of ``trainer`` cycling over the preloaded ``batches``."""
    fn = _step_fn(trainer)
    it = iter(range(10**9))

    def step() -> None:
        fn(batches[next(it) % len(batches)])

    return _time(step, device, args.warmup, args.steps), _gpu_share(step, device, args.profile_steps)


# ------------------------------------------------------------------------------------- tasks
def bench_pretrain(args: argparse.Namespace, data: Path, work: Path) -> dict[str, Any]:
    try:
        from sam_edge.training.pretrain import PretrainConfig, Trainer
    except ImportError:  # a revision before the layout move (--compare-rev)
        from distill.pretrain import PretrainConfig, Trainer

    cfg = PretrainConfig(model=args.pretrain_model, data=str(data), out=str(work / "pretrain"),
                         batch_size=args.pretrain_batch, masks_per_image=args.masks_per_image,
                         corrections=args.corrections, extra_iters=args.extra_iters, max_steps=10_000,
                         val_fraction=0.0, amp=args.amp, device=args.device, point_prob=0.5, seed=0)
    if args.compile and "compile" in PretrainConfig.__dataclass_fields__:
        cfg.compile = "decoder"
    torch.manual_seed(0)
    tr = Trainer(cfg)
    t0 = time.perf_counter()
    batches = []
    for s in range(4):
        idx = tr.batch_for_step(s)
        load = tr.load_batch
        batches.append(load(idx, step=s) if "step" in inspect.signature(load).parameters else load(idx))
    data_s = (time.perf_counter() - t0) / len(batches)
    times, share = _measure(tr, batches, tr.device, args)
    return _row("pretrain", f"{cfg.model}, {cfg.batch_size} img x {cfg.masks_per_image} masks, "
                f"1+{cfg.corrections}+{cfg.extra_iters} decoder calls", cfg.batch_size, times, share, data_s, tr.device)


def _distiller(args: argparse.Namespace, data: Path, work: Path, stage: str):
    try:
        from sam_edge.distillation import config as C, distiller as R, stages as D
    except ImportError:  # a revision before the layout move (--compare-rev): one module held all three
        from distill import distill as D
        C = R = D
    d = {"teacher": args.teacher, "student": args.student, "data": str(data), "out": str(work / stage),
         "val_fraction": 0.0, "val_images": 0, "device": args.device, "amp": args.amp, "seed": 0,
         "stage1": {"steps": 10_000, "batch_size": args.stage1_batch},
         "stage2": {"steps": 10_000, "batch_size": args.stage2_batch, "masks_per_image": 4,
                    "corrections": args.stage2_corrections}}
    cfg = C.config_from_dict(d)
    torch.manual_seed(0)
    dist = R.Distiller(cfg)
    st = (D._Stage1 if stage == "stage1" else D._Stage2)(dist, getattr(cfg, stage))
    st.prepare_data()
    st.total_steps = 10_000
    st.setup_training()
    t0 = time.perf_counter()
    batches = [D._collate([st.items[(s, i)] for i in st.plan(s)]) for s in range(4)]
    data_s = (time.perf_counter() - t0) / len(batches)
    return dist, st, batches, data_s


def bench_stage(args: argparse.Namespace, data: Path, work: Path, stage: str) -> dict[str, Any]:
    dist, st, batches, data_s = _distiller(args, data, work, stage)
    times, share = _measure(st, batches, dist.device, args)
    b = st.cfg.batch_size
    what = (f"{args.student} from {args.teacher} (live), {b} img" if stage == "stage1" else
            f"{args.student} vs {args.teacher} (live), {b} img x 4 masks, 1+{args.stage2_corrections} calls")
    return _row(stage, what, b, times, share, data_s, dist.device)


def _row(task: str, what: str, batch: int, times: list[float], share: float | None, data_s: float,
         device: torch.device) -> dict[str, Any]:
    med = statistics.median(times)
    return {"task": task, "config": what, "device": str(device), "steps": len(times),
            "s_per_step": round(med, 4), "s_per_step_min": round(min(times), 4),
            "img_per_s": round(batch / med, 2), "gpu_busy": None if share is None else round(share, 3),
            "data_s_per_step": round(data_s, 4)}


# ---------------------------------------------------------------------------------- driver
def run_here(args: argparse.Namespace) -> list[dict[str, Any]]:
    torch.set_num_threads(args.threads)
    data = Path(args.data) if args.data else None
    with tempfile.TemporaryDirectory(prefix="train_step_") as tmp:
        work = Path(tmp)
        if data is None:
            try:
                from sam_edge.data.synth import generate_dataset
            except ImportError:  # a revision before the layout move
                from distill.synth import generate_dataset

            data = work / "data"
            generate_dataset(data, num_images=max(64, 4 * args.pretrain_batch), image_size=256, seed=0)
        rows = []
        for task in args.tasks.split(","):
            row = bench_pretrain(args, data, work) if task == "pretrain" else bench_stage(args, data, work, task)
            print(dumps_json(row), flush=True)
            rows.append(row)
    return rows


def _argv_for_child(args: argparse.Namespace, data: str) -> list[str]:
    out = []
    for k, v in vars(args).items():
        if k in ("compare_rev", "out", "data", "child"):
            continue
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            if v:
                out.append(flag)
        elif v is not None:
            out += [flag, str(v)]
    return out + ["--data", data, "--child"]


def run_rev(args: argparse.Namespace, rev: str, data: str) -> list[dict[str, Any]]:
    """This script, run against revision ``rev`` of the repository (a temporary worktree)."""
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="train_step_rev_") as tmp:
        wt = Path(tmp) / "wt"
        subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(wt), rev], check=True,
                       capture_output=True)
        try:
            env = {**os.environ, "PYTHONPATH": str(wt)}
            cmd = [sys.executable, str(Path(__file__).resolve()), *_argv_for_child(args, data)]
            r = subprocess.run(cmd, cwd=str(wt), env=env, capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"benchmark at {rev} failed:\n{r.stderr[-3000:]}")
            return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
        finally:
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(wt)], capture_output=True)


def markdown(rows: list[dict[str, Any]], before: list[dict[str, Any]] | None, rev: str | None) -> str:
    head = "| task | config | device | s/step | img/s | GPU busy |"
    sep = "|---|---|---|---:|---:|---:|"
    if before:
        head += f" s/step at {rev} | speed-up |"
        sep += "---:|---:|"
    lines = [head, sep]
    old = {r["task"]: r for r in before or []}
    for r in rows:
        busy = "n/a (CPU)" if r["gpu_busy"] is None else f"{100 * r['gpu_busy']:.0f}%"
        line = f"| {r['task']} | {r['config']} | {r['device']} | {r['s_per_step']:.3f} | {r['img_per_s']:.1f} | {busy} |"
        if before:
            o = old.get(r["task"])
            line += (f" {o['s_per_step']:.3f} | {o['s_per_step'] / r['s_per_step']:.2f}x |" if o else " - | - |")
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu | cuda (default cpu)")
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    p.add_argument("--data", help="SA-1B-format folder (default: synthetic scenes generated in a temp folder)")
    p.add_argument("--pretrain-model", default="sam_demo_teacher")
    p.add_argument("--pretrain-batch", type=int, default=8, help="images per pretraining step (default 8; 32 on a GPU)")
    p.add_argument("--masks-per-image", type=int, default=8)
    p.add_argument("--corrections", type=int, default=8)
    p.add_argument("--extra-iters", type=int, default=2)
    p.add_argument("--teacher", default="sam_demo_teacher")
    p.add_argument("--student", default="repvit_demo_student")
    p.add_argument("--stage1-batch", type=int, default=16)
    p.add_argument("--stage2-batch", type=int, default=8)
    p.add_argument("--stage2-corrections", type=int, default=2)
    p.add_argument("--amp", default="auto", help="auto (bf16 on CUDA, off on CPU) | bf16 | fp16 | off")
    p.add_argument("--compile", action="store_true", help="pretrain with compile: decoder (torch.compile)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--profile-steps", type=int, default=3, help="steps under torch.profiler on CUDA")
    p.add_argument("--compare-rev", help="also measure this git revision (before/after in one run)")
    p.add_argument("--out", help="folder for train_step.json and train_step.md")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    bad = [t for t in args.tasks.split(",") if t not in TASKS]
    if bad:
        p.error(f"--tasks: unknown {', '.join(bad)}; choose from {', '.join(TASKS)}")
    if args.child:
        run_here(args)
        return 0
    with tempfile.TemporaryDirectory(prefix="train_step_data_") as tmp:
        if args.data is None:
            from sam_edge.data.synth import generate_dataset

            args.data = str(Path(tmp) / "data")
            generate_dataset(args.data, num_images=max(64, 4 * args.pretrain_batch), image_size=256, seed=0)
        args.data = str(Path(args.data).resolve())
        before = run_rev(args, args.compare_rev, args.data) if args.compare_rev else None
        rows = run_here(args)
    table = markdown(rows, before, args.compare_rev)
    print(table)
    if args.out:
        from sam_edge.utils.io import write_bytes_atomic, write_json_atomic

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "train_step.json", {"rows": rows, "before": before, "before_rev": args.compare_rev,
                                                    "threads": args.threads, "torch": torch.__version__})
        write_bytes_atomic(out / "train_step.md", (table + "\n").encode())
        print(f"wrote {out / 'train_step.json'} and {out / 'train_step.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
