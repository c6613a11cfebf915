"""The training engine: one resumable optimisation loop that pretraining and both distillation
stages run on. A task subclasses :class:`Engine` and supplies what is its own (the data plan,
the trainable module, the loss of one micro-batch, validation); the engine owns the rest:

* optimiser (AdamW, no weight decay on norms / biases / position tables), linear warmup + cosine
  schedule, autocast (bf16 on CUDA by default; fp16 with a grad scaler), gradient accumulation
  over micro-batches, gradient clipping;
* data: each optimiser step has one global sample list (:meth:`Engine.plan`, a pure function of
  seed, epoch and step); rank ``r`` takes its slice and cuts it into ``grad_accum``
  micro-batches, loaded by a ``DataLoader`` (worker processes, pinned memory and prefetch on
  CUDA) from a keyed dataset ``items[(step, index)]``;
* DDP under ``torchrun`` (NCCL on CUDA, gloo on CPU; :mod:`training.ddp`), rank 0 writes;
* random state: ``gen`` (a CPU generator for host-side choices such as "point or box") and
  ``dev_gen`` (a generator on the training device for prompt simulation, so sampling never
  leaves the device), both captured at the step boundary and saved in checkpoints with the
  global CPU / CUDA states, so a resumed run continues bit-exactly;
* checkpoints written atomically every ``ckpt_every`` steps and on Ctrl-C / SIGTERM
  (``OUT/checkpoints/last.pt``), exact resume, log rows past the checkpoint dropped on resume;
* logs: ``OUT/metrics.csv`` and ``OUT/val.csv`` (+ TensorBoard when installed), a tqdm bar.
  Metrics stay on the device as tensors until a log step: no ``.item()`` inside a step.

Task hooks (see :class:`Engine`): ``planned_steps``, ``prepare_data``, ``trainable``,
``compute_loss``, and optionally ``validate`` / ``has_validation``, ``find_unused``,
``finished`` / ``skipped_summary``, ``finish`` and ``summary_extra``.
"""
from __future__ import annotations

from sam_edge.errors import UserError

import contextlib
import json
import logging
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
from torch import nn

from sam_edge.utils.seed import mix_seed  # noqa: F401 (re-exported)
from sam_edge.training import ddp
from sam_edge.training.runlog import append_csv, interrupt_on_sigterm, truncate_csv
from sam_edge.utils.device import amp_dtype, autocast_for
from sam_edge.utils.io import atomic_path, remove_stale_temps

#: the autocast helpers of :mod:`sam_edge.utils.device`, under the names the engine exported
autocast = autocast_for

log = logging.getLogger("sam_edge.training.engine")

__all__ = ["Engine", "RunStateError", "StepSampler", "amp_dtype", "autocast", "decay_groups", "freeze_unused",
           "lr_lambda_factory", "mix_seed"]


class RunStateError(UserError, ValueError):
    """The run folder holds state that the requested action would clobber (e.g. an unfinished
    checkpoint without ``--resume``)."""


# ------------------------------------------------------------------------------ small pieces
def lr_lambda_factory(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    """Linear warmup over ``warmup`` steps, then cosine decay to ``min_ratio`` at ``total``."""
    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return fn


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups of the trainable parameters: weight decay on matrices and
    kernels, none on biases, norms, position embeddings and relative-position tables."""
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "pos_embed" in n or "rel_pos" in n else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def _same_layout(config: Any, stored: Any) -> Any:
    """``stored`` (a config dict saved by an older version: maybe the old flat ModelConfig layout)
    in ``config.to_dict()``'s layout, when ``config``'s class can convert it."""
    normalize = getattr(type(config), "normalize_dict", None)
    return normalize(stored) if callable(normalize) else stored


class StepSampler:
    """Batch sampler: for each step from ``start``, this rank's slice of the step's global sample
    list, cut into ``accum`` micro-batches of ``(step, index)`` keys (possibly empty)."""

    def __init__(self, plan: Callable[[int], list[int]], start: int, total: int, rank: int, world: int,
                 accum: int) -> None:
        self.plan, self.start, self.total = plan, start, total
        self.rank, self.world, self.accum = rank, world, accum

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.total):
            mine = ddp.shard(self.plan(step), self.rank, self.world)
            for j in range(self.accum):
                yield [(step, i) for i in ddp.shard(mine, j, self.accum)]

    def __len__(self) -> int:
        return max(0, self.total - self.start) * self.accum


# --------------------------------------------------------------------------------- the engine
class Engine:
    """One resumable training run of one task (see the module docstring).

    Constructor arguments: ``out`` (log and checkpoint folder), ``cfg`` (an object with the
    optimisation fields ``batch_size, grad_accum, lr, weight_decay, warmup_steps, min_lr_ratio,
    grad_clip, ckpt_every, log_every, val_every``), ``model`` (the module whose weights are
    trained and checkpointed), ``env`` (:class:`training.ddp.DistEnv`), ``seed``, ``amp``
    (``auto|bf16|fp16|off``), ``workers`` (DataLoader worker processes per rank) and
    ``run_config`` (a dict stored in checkpoints; a resume with other values is reported).
    """

    #: checkpoint tag and progress-bar name
    name = "train"
    #: mixed into seeds so that tasks sharing a seed draw different streams
    number = 0
    #: config keys that may change between a run and its resume without a warning
    benign_keys = ("ckpt_every", "log_every", "val_every", "workers", "device", "val_images")
    #: ``resume=True`` without a checkpoint: error (True) or start from step 0 (False)
    resume_requires_checkpoint = False
    #: CSV column holding the epoch
    log_epoch = True

    def __init__(self, *, out: Path, cfg: Any, model: nn.Module, env: "ddp.DistEnv", seed: int, amp: str = "auto",
                 workers: int = 0, run_config: dict[str, Any] | None = None) -> None:
        self.out = Path(out)
        self.cfg = cfg
        self.model = model
        self.env = env
        self.device = env.device
        self.seed = int(seed)
        self.amp_dtype = amp_dtype(self.device, amp)
        self.workers = int(workers)
        self.run_config = run_config or {}
        self.ckpt_path = self.out / "checkpoints" / "last.pt"
        self.step = 0
        self.train_seconds = 0.0
        self.total_steps = 0
        self._boundary_rng: Optional[dict[str, Any]] = None
        self._order_cache: tuple[int, list[int]] = (-1, [])
        self.tb = None
        self.last_metrics: dict[str, float] = {}

    # -- task hooks ------------------------------------------------------------------------------
    def planned_steps(self) -> int:
        raise NotImplementedError

    def prepare_data(self) -> None:
        """Set ``self.items`` (``items[(step, index)]`` -> sample dict or ``{"skip": (path, reason,
        detail)}``), ``self.collate`` (list of items -> batch with ``n`` and ``skips``) and the
        training indices via :meth:`set_train`."""
        raise NotImplementedError

    def trainable(self) -> nn.Module:
        """Set ``requires_grad`` and return the module whose forward the loss calls (DDP wraps it)."""
        raise NotImplementedError

    def compute_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss, metrics) of one micro-batch; metrics are detached 0-d tensors (or floats)."""
        raise NotImplementedError

    def has_validation(self) -> bool:
        return False

    def validate(self) -> dict[str, float]:
        return {}

    def find_unused(self, module: nn.Module) -> bool:
        return False

    def finished(self) -> bool:
        return False

    def skipped_summary(self) -> dict[str, Any]:  # pragma: no cover - tasks with finished()
        return {}

    def finish(self, summary: dict[str, Any]) -> None:
        """Rank 0, after the last step: write the task's outputs."""

    def summary_extra(self) -> dict[str, Any]:
        return {}

    def dummy_batch(self) -> dict[str, Any]:
        """A zero-weight stand-in when a rank's micro-batch lost all its samples (DDP needs every
        rank to run forward/backward)."""
        raise NotImplementedError

    def report_skip(self, path: str, reason: str, detail: str) -> None:
        rep = getattr(self, "report", None)
        if rep is not None:
            rep.skip(path, reason, detail)

    # -- data ------------------------------------------------------------------------------------
    def set_train(self, train_idx: list[int], what: str) -> None:
        self.train_idx = list(train_idx)
        b = self.cfg.batch_size
        if len(self.train_idx) < b:
            raise ValueError(f"batch_size {b} is more than the {len(self.train_idx)} training images in {what}")
        self.steps_per_epoch = len(self.train_idx) // b

    def epoch_order(self, epoch: int) -> list[int]:
        if self._order_cache[0] != epoch:
            g = torch.Generator().manual_seed(self.order_seed(epoch))
            perm = torch.randperm(len(self.train_idx), generator=g).tolist()
            self._order_cache = (epoch, [self.train_idx[i] for i in perm])
        return self._order_cache[1]

    def order_seed(self, epoch: int) -> int:
        return mix_seed(self.seed, self.number, 1, epoch)

    def plan(self, step: int) -> list[int]:
        """The global sample list (dataset indices) of optimiser step ``step``."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        b = self.cfg.batch_size
        return self.epoch_order(epoch)[pos * b:(pos + 1) * b]

    def loader(self, start: int):
        from torch.utils.data import DataLoader

        sampler = StepSampler(self.plan, start, self.total_steps, self.env.rank, self.env.world_size,
                              self.cfg.grad_accum)
        kw: dict[str, Any] = {}
        if self.workers > 0:
            kw.update(prefetch_factor=4, persistent_workers=False)
        # an explicit generator: the iterator's base seed must not come from the global RNG,
        # which belongs to the (checkpointed) training state
        return DataLoader(self.items, batch_sampler=sampler, collate_fn=self.collate, num_workers=self.workers,
                          pin_memory=self.device.type == "cuda", generator=torch.Generator().manual_seed(0), **kw)

    # -- random state ----------------------------------------------------------------------------
    def make_generators(self) -> None:
        self.gen = torch.Generator().manual_seed(mix_seed(self.seed, self.number, 3, self.env.rank))
        self.dev_gen = torch.Generator(device=self.device).manual_seed(mix_seed(self.seed, self.number, 4, self.env.rank))

    def rng_now(self) -> dict[str, Any]:
        st = {"prompt": self.gen.get_state(), "device_prompt": self.dev_gen.get_state(),
              "torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            st["cuda"] = torch.cuda.get_rng_state(self.device)
        return st

    def set_rng(self, rng: dict[str, Any]) -> None:
        self.gen.set_state(rng["prompt"])
        if "device_prompt" in rng:
            self.dev_gen.set_state(rng["device_prompt"].cpu() if self.device.type == "cuda" else rng["device_prompt"])
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self, rngs: list[dict[str, Any]]) -> dict[str, Any]:
        model_config = getattr(self.model, "config", None)
        return {
            "stage": self.name,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "total_steps": self.total_steps,
            "train_seconds": self.train_seconds,
            "rng": rngs,
            "world_size": self.env.world_size,
            "config": self.run_config,
            "model_config": model_config.to_dict() if model_config is not None else None,
        }

    def save_checkpoint(self) -> None:
        rngs = ddp.gather_objects(self._boundary_rng or self.rng_now(), self.env)
        if self.env.is_main:
            with atomic_path(self.ckpt_path) as tmp:
                torch.save(self.state_dict(rngs), tmp)
            log.info("%s: checkpoint at step %d -> %s", self.name, self.step, self.ckpt_path)
        ddp.barrier(self.env)

    def load_checkpoint(self) -> None:
        state = torch.load(self.ckpt_path, map_location="cpu", weights_only=True)
        if state.get("stage", self.name) != self.name:
            raise RunStateError(f"{self.ckpt_path}: holds {state.get('stage')!r}, not {self.name}")
        model_config = getattr(self.model, "config", None)
        if model_config is not None and state.get("model_config") is not None and \
                _jsonable(_same_layout(model_config, state["model_config"])) != _jsonable(model_config.to_dict()):
            raise RunStateError(f"{self.ckpt_path}: was written for model {state['model_config'].get('name')!r}, "
                                f"this run trains {model_config.name!r}; use another out folder")
        self._warn_config_changes(state.get("config") or {})
        self.model.load_state_dict(state["model"], strict=True)
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
        rngs = state["rng"]
        if isinstance(rngs, dict):  # written by a single-process trainer of an older version
            rngs = [rngs]
        if len(rngs) != self.env.world_size:
            log.warning("%s: checkpoint written by %d process(es), resuming with %d: data order and schedule are "
                        "kept, random draws are not bit-identical", self.name, len(rngs), self.env.world_size)
        self.set_rng(rngs[self.env.rank % len(rngs)])
        if self.env.is_main:
            log.info("%s: resumed from %s at step %d of %d", self.name, self.ckpt_path, self.step, self.total_steps)

    def config_scope(self, key: str) -> bool:
        """Whether a changed run-config key (dotted) concerns this task."""
        return True

    def _warn_config_changes(self, old: dict[str, Any]) -> None:
        def flat(d: dict[str, Any], pre: str = "") -> dict[str, Any]:
            out = {}
            for k, v in d.items():
                out.update(flat(v, f"{pre}{k}.") if isinstance(v, dict) else {f"{pre}{k}": v})
            return out

        fo, fn = flat(_jsonable(old)), flat(_jsonable(self.run_config))
        changed = [k for k in sorted(set(fo) | set(fn)) if fo.get(k) != fn.get(k)
                   and k.rsplit(".", 1)[-1] not in self.benign_keys and self.config_scope(k)]
        if changed and self.env.is_main:
            log.warning("%s: resuming with a changed config: %s", self.name,
                        ", ".join(f"{k}: {fo.get(k)!r} -> {fn.get(k)!r}" for k in changed))

    # -- setup -----------------------------------------------------------------------------------
    def setup_training(self) -> None:
        trainable = self.trainable()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(decay_groups(self.model, self.cfg.weight_decay), lr=self.cfg.lr,
                                     betas=(0.9, 0.999))
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lr_lambda_factory(self.cfg.warmup_steps, self.total_steps, self.cfg.min_lr_ratio))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.make_generators()
        self.module = ddp.wrap(trainable, self.env, find_unused=self.find_unused(trainable))

    # -- one optimiser step ----------------------------------------------------------------------
    def set_train_mode(self) -> None:
        self.module.train()

    def train_step(self, batches: Iterator[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """One optimiser step over ``grad_accum`` micro-batches from ``batches``. Returns the
        step's metrics (sample-weighted means) as tensors on the device: nothing here waits for
        the device."""
        self.set_train_mode()
        self.opt.zero_grad(set_to_none=True)
        planned = max(1, len(self.plan(self.step)))
        world = self.env.world_size
        sums: dict[str, Any] = defaultdict(float)
        n_imgs = 0
        for j in range(self.cfg.grad_accum):
            batch = next(batches)
            for path, reason, detail in batch.get("skips", ()):
                self.report_skip(path, reason, detail)
            n = batch["n"]
            if n == 0:
                if not self.env.distributed:
                    continue
                batch = self.dummy_batch()
            weight = n * world / planned
            last = j == self.cfg.grad_accum - 1
            sync = contextlib.nullcontext() if (last or not self.env.distributed) else self.module.no_sync()
            with sync:
                loss, parts = self.compute_loss(batch)
                self.scaler.scale(loss * weight).backward()
            for k, v in parts.items():  # every rank logs the same keys (a dummy batch adds 0)
                sums[k] = sums[k] + (v.detach().float() if torch.is_tensor(v) else float(v)) * n
            n_imgs += n
        self.scaler.unscale_(self.opt)
        clip = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        gnorm = torch.nn.utils.clip_grad_norm_(self.params, clip) if self.params else torch.zeros(())
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        self.step += 1
        metrics = {k: v / max(1, n_imgs) for k, v in sums.items()}
        metrics["grad_norm"] = gnorm.detach()
        metrics["images"] = float(n_imgs)
        return metrics

    # -- logs ------------------------------------------------------------------------------------
    def csv(self, name: str, row: dict[str, Any]) -> None:
        if self.env.is_main:
            append_csv(self.out / name, row, self.tb, self.tb_prefix())

    def tb_prefix(self) -> str:
        return ""

    def truncate_logs(self) -> None:
        """Drop log rows past the current step (a resumed or restarted run rewrites them)."""
        for name in ("metrics.csv", "val.csv"):
            truncate_csv(self.out / name, self.step)

    # -- the run ---------------------------------------------------------------------------------
    def run(self, resume: bool = False, progress: bool = True) -> dict[str, Any]:
        if self.env.is_main:  # what a killed run of this task left half-written
            for folder in (self.out, self.ckpt_path.parent):
                remove_stale_temps(folder)
        if self.finished():
            return self.skipped_summary()
        self.prepare_data()
        self.total_steps = self.planned_steps()
        if self.total_steps == 0:
            return {"stage": self.name, "steps": 0, "finished": True, "skipped": "steps = 0"}
        self.setup_training()
        if self.ckpt_path.exists():
            if not resume:
                raise RunStateError(
                    f"{self.ckpt_path} holds a checkpoint of {self.name}: pass --resume to continue it, "
                    f"or choose another out folder")
            self.load_checkpoint()
        elif resume:
            if self.resume_requires_checkpoint:
                raise FileNotFoundError(f"--resume: no checkpoint at {self.ckpt_path}")
            if self.env.is_main:
                log.info("%s: no checkpoint at %s, starting from step 0", self.name, self.ckpt_path)
        if self.env.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            self.truncate_logs()
            try:
                from torch.utils.tensorboard import SummaryWriter  # optional

                self.tb = SummaryWriter(str(self.out / "tb"))
            except Exception:  # noqa: BLE001 - tensorboard not installed
                self.tb = None
        ddp.barrier(self.env)
        return self._loop(progress)

    def floats(self, m: dict[str, Any]) -> dict[str, float]:
        """Step metrics (device tensors or floats) -> floats, in one transfer."""
        keys = list(m)
        vals = torch.stack([torch.as_tensor(m[k], dtype=torch.float32).to(self.device).reshape(()) for k in keys])
        return dict(zip(keys, vals.cpu().tolist()))

    def _loop(self, progress: bool) -> dict[str, Any]:
        from tqdm import tqdm

        start_step = self.step
        bar = tqdm(total=self.total_steps, initial=self.step, desc=f"{self.name}", unit="step",
                   disable=None if (progress and self.env.is_main) else True, dynamic_ncols=True)
        batches = iter(self.loader(self.step))
        last_val: dict[str, float] = {}
        wall0 = time.perf_counter()
        run_seconds = 0.0
        window_t, window_steps = 0.0, 0
        restore_sigterm = interrupt_on_sigterm()
        try:
            while self.step < self.total_steps:
                self._boundary_rng = self.rng_now()
                t0 = time.perf_counter()
                m = self.train_step(batches)
                self._boundary_rng = None
                window_steps += 1
                bar.update(1)
                at_log = self.step % self.cfg.log_every == 0 or self.step == self.total_steps
                if at_log:
                    row = self.floats(m)  # waits for the device: the window's time is real
                    dt = time.perf_counter() - t0
                    window_t += dt
                    run_seconds += window_t
                    self.train_seconds += window_t
                    rate = window_steps / window_t if window_t > 0 else 0.0
                    row = ddp.all_reduce_mean(row, self.env)
                    self.last_metrics = row
                    bar.set_postfix(loss=f"{row.get('loss', float('nan')):.4f}",
                                    img_s=f"{rate * self.cfg.batch_size:.1f}")
                    extra = {"epoch": self.step // self.steps_per_epoch} if self.log_epoch else {}
                    self.csv("metrics.csv", {"step": self.step, **extra, "lr": self.sched.get_last_lr()[0], **row,
                                             "steps_per_s": round(rate, 4),
                                             "img_per_s": round(rate * self.cfg.batch_size, 2),
                                             "elapsed_s": round(self.train_seconds, 2)})
                    window_t, window_steps = 0.0, 0
                else:
                    window_t += time.perf_counter() - t0
                if self.step % self.cfg.ckpt_every == 0 and self.step < self.total_steps:
                    self.save_checkpoint()
                if self.has_validation() and (
                        (self.cfg.val_every and self.step % self.cfg.val_every == 0) or self.step == self.total_steps):
                    if self.env.is_main:
                        last_val = self.validate()
                        self.csv("val.csv", {"step": self.step, **last_val})
                        log.info("%s step %d validation: %s", self.name, self.step, last_val)
                    ddp.barrier(self.env)
        except KeyboardInterrupt:
            if not self.env.distributed:
                log.warning("%s interrupted at step %d: saving a checkpoint (rerun with --resume)", self.name, self.step)
                self.save_checkpoint()
            raise
        finally:
            restore_sigterm()
            bar.close()
            del batches
            if self.tb is not None:
                self.tb.close()
        ddp.sync_buffers(self.model, self.env)
        self.save_checkpoint()
        steps_run = self.step - start_step
        summary = {
            "stage": self.name, "finished": True, "steps": self.total_steps, "steps_this_run": steps_run,
            "batch_size": self.cfg.batch_size, "world_size": self.env.world_size,
            "train_seconds": round(self.train_seconds, 2), "wall_seconds_this_run": round(time.perf_counter() - wall0, 2),
            "steps_per_s": round(steps_run / run_seconds, 4) if run_seconds else None,
            "img_per_s": round(steps_run * self.cfg.batch_size / run_seconds, 2) if run_seconds else None,
            "validation": last_val, **self.summary_extra(),
        }
        if self.env.is_main:
            self.finish(summary)
        ddp.barrier(self.env)
        return summary


def freeze_unused(encoder: nn.Module, size: int, device: torch.device) -> list[str]:
    """Freeze parameters of ``encoder`` that never receive a gradient (e.g. TinyViT's
    classification head, kept for checkpoint compatibility): DDP without
    ``find_unused_parameters`` refuses them, and the optimiser would never move them anyway.
    Probed with one forward/backward in eval mode (no BatchNorm statistics touched) under a
    forked RNG (no training draws used)."""
    was = encoder.training
    encoder.eval()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        out = encoder(torch.zeros(1, 3, size, size, device=device))
        out.float().sum().backward()
    unused = [n for n, p in encoder.named_parameters() if p.requires_grad and p.grad is None]
    for n, p in encoder.named_parameters():
        p.grad = None
        if n in unused:
            p.requires_grad_(False)
    encoder.train(was)
    if unused:
        log.info("image-encoder parameters outside the forward pass, kept frozen: %s", ", ".join(unused))
    return unused
