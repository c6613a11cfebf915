"""One ``sam-edge distill`` run: :class:`Distiller` (teacher, student, teacher-embedding cache,
process group; the cache's identity check; the teacher's embeddings from the cache or live) runs
stage 1 and stage 2 (:mod:`sam_edge.distillation.stages`) and writes ``RUN/config.json``,
``RUN/student.safetensors`` and ``RUN/summary.json``; :func:`run_distill` is the entry point."""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from sam_edge.checkpoint import save_model
from sam_edge.registry import ModelConfig, bundled_weights_path
from sam_edge.utils.device import amp_dtype, autocast_for
from sam_edge.utils.io import remove_stale_temps, write_json_atomic

from sam_edge.training import ddp
from sam_edge.training.engine import mix_seed
from sam_edge.training.sam_steps import encode

from sam_edge.distillation.config import ROOT, ConfigError, DistillConfig, check_paths, validate_config
from sam_edge.distillation.models import _model_config, build_student, build_teacher, check_decoder_compat
from sam_edge.distillation.stages import _jsonable, _Stage1, _Stage2

log = logging.getLogger("sam_edge.distillation.stages")

__all__ = ["Distiller", "run_distill"]


def _open_cache(root: str) -> Any:
    """Open the teacher-embedding cache (``distill.cache.TeacherCache``); tests replace this."""
    try:
        from sam_edge.distillation.cache import TeacherCache
    except ImportError as exc:
        raise ConfigError(f"{ROOT}.cache: the teacher-embedding cache reader (distill.cache) is not "
                          f"available ({exc}); remove cache to run the teacher live") from exc
    return TeacherCache(root)


class Distiller:
    """Everything one ``sam-edge distill`` run needs: teacher, student, cache, process group.
    ``run()`` executes the stages in order (skipping finished ones) and writes the outputs."""

    def __init__(self, cfg: DistillConfig) -> None:
        validate_config(cfg)
        check_paths(cfg)
        tcfg = _model_config(cfg.teacher, "teacher")
        scfg = _model_config(cfg.student, "student")
        check_decoder_compat(tcfg, scfg)
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.image_size = tcfg.image_size
        self.cache = None
        if cfg.cache is not None:
            self.cache = _open_cache(cfg.cache)
            self._check_cache(tcfg)
        self.env = ddp.setup(cfg.device, option="distill.device")
        try:
            self.device = self.env.device
            self.amp_dtype = amp_dtype(self.device, cfg.amp)
            torch.manual_seed(cfg.seed)  # a teacher without weights (tests) is the same on every rank and run
            self.teacher = build_teacher(cfg).to(self.device)
            torch.manual_seed(cfg.seed)  # identical student init on every rank
            self.student = build_student(cfg, self.teacher).to(self.device)
            torch.manual_seed(mix_seed(cfg.seed, 5, self.env.rank))  # per-rank training randomness
        except BaseException:
            ddp.cleanup(self.env)
            raise
        self.cache_misses = 0
        self._emb_shape = (tcfg.prompt_embed_dim, tcfg.embedding_size, tcfg.embedding_size)

    def _check_cache(self, tcfg: ModelConfig) -> None:
        """The cache must hold this teacher's embeddings: same name, image size, embedding shape,
        model config and weights (sha256 of the checkpoint file, when the cache records one)."""
        meta = dict(getattr(self.cache, "meta", {}) or {})
        problems = []
        if meta.get("teacher") != self.cfg.teacher:
            problems.append(f"teacher {meta.get('teacher')!r} (config: {self.cfg.teacher!r})")
        if meta.get("image_size") is not None and int(meta["image_size"]) != tcfg.image_size:
            problems.append(f"image_size {meta.get('image_size')} (teacher {self.cfg.teacher!r}: {tcfg.image_size})")
        want_shape = [tcfg.prompt_embed_dim, tcfg.embedding_size, tcfg.embedding_size]
        if meta.get("embedding_shape") is not None and list(meta["embedding_shape"]) != want_shape:
            problems.append(f"embedding_shape {list(meta['embedding_shape'])} (teacher gives {want_shape})")
        if not problems and isinstance(meta.get("model_config"), dict):
            old, new = _jsonable(ModelConfig.normalize_dict(meta["model_config"])), _jsonable(tcfg.to_dict())
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k != "description")
            if diff:
                problems.append(f"a {self.cfg.teacher!r} whose config differs in {diff}")
        if not problems and "checkpoint" in meta:
            problems += self._cache_weights_problem(meta["checkpoint"], tcfg)
        if problems:
            raise ConfigError(f"{ROOT}.cache: {self.cfg.cache} holds embeddings of " + " and ".join(problems)
                              + "; rebuild it with `sam-edge cache-teacher` or point cache at the right folder")
        root = meta.get("data_root")
        if root and Path(root).resolve() != Path(self.cfg.data).resolve():
            log.warning("cache %s was computed from %s, distilling on %s: entries are matched by relative path",
                        self.cfg.cache, root, self.cfg.data)

    def _cache_weights_problem(self, recorded: Any, tcfg: ModelConfig) -> list[str]:
        import hashlib

        ours = Path(self.cfg.teacher_checkpoint) if self.cfg.teacher_checkpoint else bundled_weights_path(tcfg)
        if ours is not None and not ours.is_file():
            ours = None
        if recorded is None and ours is None:
            return []
        if recorded is None or ours is None:
            theirs = "the registry default weights" if recorded is None else f"checkpoint {recorded.get('path')}"
            mine = "the registry default weights" if ours is None else f"checkpoint {ours}"
            return [f"teacher weights from {theirs} (config: {mine})"]
        sha = recorded.get("sha256") if isinstance(recorded, dict) else None
        if not sha:
            return []
        h = hashlib.sha256()
        with open(ours, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 24), b""):
                h.update(chunk)
        if h.hexdigest() != sha:
            return [f"other teacher weights ({recorded.get('path')}, sha256 {sha[:12]}...; config: {ours}, "
                    f"sha256 {h.hexdigest()[:12]}...)"]
        return []

    def teacher_embeddings(self, ids: Sequence[Optional[str]], images_u8: torch.Tensor,
                           input_sizes: torch.Tensor, use_cache: bool = True) -> torch.Tensor:
        """B x C x h x w float32 on the training device: from the cache when it holds the image,
        else computed by the teacher (or refused, with ``cache_missing: error``). ``ids`` are
        image paths relative to ``data`` (the cache's keys); ``use_cache=False`` for images of
        another folder (``val_data``), whose relative paths may collide with the cache's."""
        out: list[Optional[torch.Tensor]] = [None] * len(ids)
        live = list(range(len(ids)))
        if self.cache is not None and use_cache:
            live = []
            for i, sid in enumerate(ids):
                if sid is not None and sid in self.cache:
                    t = self.cache.get(sid).float()
                    if tuple(t.shape) != self._emb_shape:
                        raise ValueError(f"{ROOT}.cache: entry {sid!r} has shape {tuple(t.shape)}, teacher "
                                         f"{self.cfg.teacher!r} gives {self._emb_shape}")
                    out[i] = t.to(self.device, non_blocking=True)
                else:
                    live.append(i)
            missing = [ids[i] for i in live if ids[i] is not None]
            if missing:
                if self.cfg.cache_missing == "error":
                    raise KeyError(f"{ROOT}.cache: {self.cfg.cache} has no embedding for {missing[:5]}"
                                   f"{' ...' if len(missing) > 5 else ''} (set cache_missing: live to compute them)")
                if self.cache_misses == 0:
                    log.warning("images missing from the cache %s (e.g. %s): computing their embeddings live",
                                self.cfg.cache, missing[0])
                self.cache_misses += len(missing)
        if live:
            sel = torch.tensor(live)
            with torch.no_grad(), autocast_for(self.device, self.amp_dtype):
                emb = encode(self.teacher, images_u8[sel.to(images_u8.device)], input_sizes[sel]).float()
            for j, i in enumerate(live):
                out[i] = emb[j]
        return torch.stack(out)  # type: ignore[arg-type]

    def run(self, resume: bool = False, progress: bool = True) -> dict[str, Any]:
        cfg = self.cfg
        try:
            if self.env.is_main:
                self.out.mkdir(parents=True, exist_ok=True)
                remove_stale_temps(self.out)  # left by a killed run
                write_json_atomic(self.out / "config.json", dataclasses.asdict(cfg))
            t0 = time.perf_counter()
            s1 = _Stage1(self, cfg.stage1).run(resume, progress)
            s2 = _Stage2(self, cfg.stage2).run(resume, progress)
            final = self.out / "student.safetensors"
            validation = s2.get("validation") or s1.get("validation") or {}
            summary = {
                "teacher": cfg.teacher, "student": cfg.student, "model": str(final),
                "device": str(self.device), "world_size": self.env.world_size,
                "seconds_this_run": round(time.perf_counter() - t0, 2),
                "steps": {"stage1": s1.get("steps", 0), "stage2": s2.get("steps", 0)},
                "stage1": s1, "stage2": s2, "validation": validation,
            }
            if self.env.is_main:
                save_model(self.student, final)
                write_json_atomic(self.out / "summary.json", summary)
            ddp.barrier(self.env)
            return summary
        finally:
            ddp.cleanup(self.env)


def run_distill(cfg: DistillConfig, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Build a :class:`Distiller` and run it; returns the summary (also in ``RUN/summary.json``)."""
    return Distiller(cfg).run(resume=resume, progress=progress)
