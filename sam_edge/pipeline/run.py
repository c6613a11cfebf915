"""``sam-edge pipeline``: teacher -> verified mobile artifacts -> benchmark report, one command.

Stages, in order (each records a key made of its config and its inputs' hashes in
``RUN/pipeline.json`` and is skipped when done with the same key, so a rerun after a crash resumes
at the stage that failed; the stages themselves resume inside: data generation and the teacher
cache skip finished files / shards, distillation continues from its last checkpoint):

``data`` (synthesise the SA-1B-format train / held-out sets the config asks for) -> ``cache``
(teacher embeddings) -> ``distill`` (stage 1, stage 2) -> ``eval`` (student vs teacher on held-out
data) -> ``export`` (every format whose toolchain is installed, each artifact verified) ->
``quantize`` (optional QAT encoder) -> ``bench`` (host) -> ``report`` (Markdown, JSON, CSV, plots),
then a summary.

Config (YAML, every section strict: an unknown key or a wrong type is an error naming the key)::

    pipeline: {out: runs/demo}
    data:     {train: {num_images, image_size, seed} | null, heldout: {...} | null, workers: 2}
    cache:    {dtype: fp16, batch_size: 8}
    distill:  {... the distillation config (sam_edge/distillation/config.py); its data / cache / teacher are used ...}
    eval:     {data: data/heldout256, images: 200, masks_per_image: 8}
    export:   {formats: "onnx,executorch,tflite,coreml", precision: "fp32,fp16,int8", calib_images: 16,
               verify_images: 8, accept: {"tflite:int8_static": "reason"}}
    quantize: {qat_steps: 0, qat_lr: 2.0e-5, qat_images: 256}
    bench:    {num_images: 16, masks_per_image: 4, prompts: "point,box,points2", runs: 10, threads: 2,
               torch_variants: "eager_fp32", peers: false}
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from sam_edge.distillation.config import DistillConfig, config_from_dict
from sam_edge.utils.config import ConfigError, apply_override, parse_section, read_yaml_mapping


@dataclass
class SynthSpec:
    num_images: int
    image_size: int = 256
    seed: int = 0


@dataclass
class PipelineSection:
    out: str = "runs/demo"


@dataclass
class DataSection:
    train: Optional[SynthSpec] = None    # generate distill.data if set
    heldout: Optional[SynthSpec] = None  # generate eval.data if set
    workers: int = 2


@dataclass
class CacheSection:
    dtype: str = "fp16"
    batch_size: int = 8


@dataclass
class EvalSection:
    data: str = "data/heldout256"
    images: int = 200
    masks_per_image: int = 8


@dataclass
class ExportSection:
    formats: str = "onnx,executorch,tflite,coreml"
    precision: str = "fp32,fp16,int8"
    calib_images: int = 16
    verify_images: int = 8


@dataclass
class QuantizeSection:
    qat_steps: int = 0
    qat_lr: float = 2.0e-5
    qat_images: int = 256


@dataclass
class BenchSection:
    num_images: int = 16
    masks_per_image: int = 4
    prompts: str = "point,box,points2"
    runs: int = 10
    threads: int = 2
    torch_variants: str = "eager_fp32"
    peers: bool = False


SECTIONS = {"pipeline": PipelineSection, "data": DataSection, "cache": CacheSection, "eval": EvalSection,
            "export": ExportSection, "quantize": QuantizeSection, "bench": BenchSection}


@dataclass
class PipelineConfig:
    pipeline: PipelineSection
    data: DataSection
    cache: CacheSection
    distill: DistillConfig
    eval: EvalSection
    export: ExportSection
    quantize: QuantizeSection
    bench: BenchSection
    accept: dict[str, str] = field(default_factory=dict)
    source: Optional[str] = None


def load_pipeline_config(path: str | Path, overrides: Sequence[str] = (), out: Optional[str] = None) -> PipelineConfig:
    raw = read_yaml_mapping(path)
    try:
        return _pipeline_config(raw, path, overrides, out)
    except ConfigError as exc:  # name the file, unless a --set override holds the bad value
        msg = str(exc)
        keys = [item.split("=", 1)[0].strip() for item in overrides]
        if msg.startswith((str(path), "--set")) or any(k and k in msg for k in keys):
            raise
        raise ConfigError(f"{path}: {msg}") from None


def _pipeline_config(raw: dict, path: str | Path, overrides: Sequence[str], out: Optional[str]) -> PipelineConfig:
    known = set(SECTIONS) | {"distill"}
    unknown = [k for k in raw if k not in known]
    if unknown:
        raise ConfigError(f"unknown config section{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(known))}")
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        section = key.split(".", 1)[0]
        if section not in known or "." not in key:
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE with SECTION one of {sorted(known)}")
        node = raw.setdefault(section, {})
        if node is None:
            node = raw[section] = {}
        apply_override(node, item.split(".", 1)[1], root=section)
    export_raw = dict(raw.get("export") or {})
    accept = export_raw.pop("accept", None) or {}
    if not isinstance(accept, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in accept.items()):
        raise ConfigError("export.accept: expected a mapping of [format:]precision -> reason (strings)")
    raw["export"] = export_raw
    parsed = {name: parse_section(cls, raw.get(name) or {}, name) for name, cls in SECTIONS.items()}
    if "distill" not in raw:
        raise ConfigError("distill: required section (teacher, student, data, cache, out, stage1, stage2)")
    distill = config_from_dict(raw["distill"] or {})
    cfg = PipelineConfig(distill=distill, accept=accept, source=str(path), **parsed)
    if out:
        cfg.pipeline.out = out
    _validate(cfg)
    return cfg


def _validate(cfg: PipelineConfig) -> None:
    from sam_edge.formats import format_names, parse_list, user_precisions

    for name, spec in (("data.train", cfg.data.train), ("data.heldout", cfg.data.heldout)):
        if spec is not None and (spec.num_images < 1 or spec.image_size < 16):
            raise ConfigError(f"{name}: num_images must be >= 1 and image_size >= 16")
    if cfg.cache.dtype not in ("fp16", "bf16", "fp32"):
        raise ConfigError(f"cache.dtype: must be fp16, bf16 or fp32, got {cfg.cache.dtype!r}")
    for key in ("eval.images", "eval.masks_per_image", "export.verify_images", "bench.num_images",
                "bench.masks_per_image", "bench.runs", "bench.threads", "cache.batch_size"):
        sec, name = key.split(".")
        if getattr(getattr(cfg, sec), name) < 1:
            raise ConfigError(f"{key}: must be >= 1")
    try:
        parse_list(cfg.export.formats, "export.formats", list(format_names()))
        parse_list(cfg.export.precision, "export.precision", list(user_precisions()))
        parse_list(cfg.bench.prompts, "bench.prompts", ["point", "box", "points2"])
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


# -- toolchains ---------------------------------------------------------------------------------
def installed_formats(requested: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """(formats whose export toolchain is installed, {format: what is missing}) from each
    format's spec (:func:`sam_edge.formats.installed_formats`)."""
    from sam_edge.formats import installed_formats as _installed

    return _installed(requested)


# -- state --------------------------------------------------------------------------------------
def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class State:
    def __init__(self, run: Path) -> None:
        self.path = run / "pipeline.json"
        self.data = json.loads(self.path.read_text()) if self.path.is_file() else {"stages": {}}

    def done(self, stage: str, key: str) -> bool:
        s = self.data["stages"].get(stage)
        return bool(s and s.get("status") == "done" and s.get("key") == key)

    def set(self, stage: str, **kw: Any) -> None:
        from sam_edge.utils.io import write_json_atomic

        self.data["stages"][stage] = {**self.data["stages"].get(stage, {}), **kw}
        write_json_atomic(self.path, self.data)


def _file_sha(path: Path) -> Optional[str]:
    from sam_edge.runtime.manifest import sha256_file

    return sha256_file(path) if path.exists() else None


# -- the run ------------------------------------------------------------------------------------
def run_pipeline(cfg: PipelineConfig, dry_run: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    run = Path(cfg.pipeline.out)
    d = cfg.distill
    student_file = Path(d.out) / "student.safetensors"
    fmts, missing = installed_formats([f for f in cfg.export.formats.split(",") if f])
    plan = ["data", "cache", "distill", "eval", f"export ({', '.join(fmts) or 'none'})", "quantize", "bench", "report"]
    if dry_run:
        return _dry_run(cfg, plan, fmts, missing, log)
    run.mkdir(parents=True, exist_ok=True)
    state = State(run)
    state.data["config"] = cfg.source
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def stage(name: str, key_obj: Any, fn: Callable[[], Any]) -> None:
        key = _hash(key_obj)
        if state.done(name, key):
            log(f"[{name}] done before (key {key}): skipped")
            return
        log(f"[{name}] running")
        state.set(name, status="running", key=key)
        t0 = time.perf_counter()
        out = fn()
        timings[name] = time.perf_counter() - t0
        state.set(name, status="done", key=key, seconds=round(timings[name], 1), outputs=out)
        log(f"[{name}] done in {timings[name]:.0f} s")

    # data
    def data_stage():
        from sam_edge.data.synth import generate_dataset

        made = {}
        for label, spec, dest in (("train", cfg.data.train, d.data), ("heldout", cfg.data.heldout, cfg.eval.data)):
            if spec is None:
                if not Path(dest).is_dir():
                    raise FileNotFoundError(f"{dest} does not exist and data.{label} does not ask to generate it")
                continue
            generate_dataset(dest, num_images=spec.num_images, image_size=spec.image_size, seed=spec.seed,
                             workers=cfg.data.workers)
            made[label] = str(dest)
        return made

    stage("data", {"data": asdict(cfg.data), "train": d.data, "heldout": cfg.eval.data}, data_stage)

    # teacher cache
    def cache_stage():
        from sam_edge.distillation.cache import cache_teacher

        s = cache_teacher(d.teacher, d.data, d.cache, checkpoint=d.teacher_checkpoint, dtype=cfg.cache.dtype,
                          batch_size=cfg.cache.batch_size, progress=False)
        return {k: s[k] for k in ("num_keys", "encoded", "seconds", "complete") if k in s}

    cache_key = {"teacher": d.teacher, "ckpt": d.teacher_checkpoint, "data": state.data["stages"].get("data", {}).get("key"),
                 "cache": asdict(cfg.cache), "out": d.cache}
    stage("cache", cache_key, cache_stage)

    # distillation (resumes from its checkpoint after a crash)
    def distill_stage():
        from sam_edge.distillation.distiller import run_distill

        s = run_distill(d, resume=True, progress=False)
        return {"student": str(student_file), "sha256": _file_sha(student_file),
                "summary": {k: v for k, v in s.items() if isinstance(v, (int, float, str))}}

    stage("distill", {"distill": asdict(d), "cache": state.data["stages"]["cache"]["key"]}, distill_stage)
    student_sha = _file_sha(student_file)

    # evaluation
    def eval_stage():
        from sam_edge.registry import create_model
        from sam_edge.utils.io import write_json_atomic

        from sam_edge.registry import load_model_spec
        from sam_edge.data import SA1BDataset
        from sam_edge.evaluation.evaluator import evaluate, format_eval_table

        teacher = create_model(d.teacher, checkpoint=d.teacher_checkpoint).eval()
        student = load_model_spec(str(student_file)).eval()
        res = evaluate(student, SA1BDataset(cfg.eval.data, image_size=teacher.image_size), against="teacher",
                       teacher=teacher, images=cfg.eval.images, masks_per_image=cfg.eval.masks_per_image)
        write_json_atomic(run / "eval.json", res)
        log(format_eval_table(res))
        return {"eval": str(run / "eval.json"), "student_vs_teacher": res["student_vs_teacher"]}

    stage("eval", {"eval": asdict(cfg.eval), "student": student_sha}, eval_stage)

    # export (+ verification: every artifact is checked against eager PyTorch as it is written)
    export_dir = run / "export"

    def export_stage():
        from sam_edge.export.api import export_model
        from sam_edge.export.common import load_images

        if not fmts:
            raise RuntimeError(f"no export toolchain installed ({missing}); pip install 'sam-edge[export]'")
        n_cal, n_ver = cfg.export.calib_images, cfg.export.verify_images
        calib = load_images(d.data, limit=n_cal) if n_cal else []
        verify = load_images(cfg.eval.data, limit=n_ver)
        if export_dir.exists():
            shutil.rmtree(export_dir)  # a new student: no stale artifacts
        # isolate=True: each format's converter runs in its own process (a failed dynamo export
        # can poison later exports in the same process; converters' memory is returned)
        export_model(str(student_file), export_dir, fmts, cfg.export.precision, calib or None, verify_images=verify, accept_failures=dict(cfg.accept), isolate=True)
        return {"export_dir": str(export_dir), "formats": fmts, "skipped_formats": missing}

    stage("export", {"export": asdict(cfg.export), "accept": cfg.accept, "formats": fmts, "student": student_sha},
          export_stage)

    def quantize_stage():
        from sam_edge.export.qat import export_qat

        if cfg.quantize.qat_steps <= 0 or "executorch" not in fmts:
            return {"skipped": "quantize.qat_steps = 0" if cfg.quantize.qat_steps <= 0 else "executorch not installed"}
        from sam_edge.registry import load_model_spec

        export_qat(load_model_spec(str(student_file)).eval(), str(export_dir), teacher=d.teacher, data=d.data,
                   images=cfg.quantize.qat_images, steps=cfg.quantize.qat_steps, lr=cfg.quantize.qat_lr)
        return {"qat": str(export_dir / "encoder_int8_qat.pte")}

    stage("quantize", {"quantize": asdict(cfg.quantize), "export": state.data["stages"]["export"]["key"]},
          quantize_stage)

    bench_json = run / "bench.json"

    def bench_stage():
        from sam_edge.bench.harness import bench
        from sam_edge.bench.report import markdown_table

        b = cfg.bench
        runnable = [f for f in fmts if f != "coreml"]
        if bench_json.exists():
            bench_json.unlink()
        # what `sam-edge bench --device host` runs with these options (warm-up and seed: its defaults)
        res = bench([str(export_dir)], "host", cfg.eval.data, d.teacher, str(bench_json),
                    teacher_checkpoint=d.teacher_checkpoint or None,
                    prompt_types=[t for t in b.prompts.split(",") if t], num_images=b.num_images,
                    masks_per_image=b.masks_per_image, runs=b.runs, warmup=3, threads=b.threads,
                    formats=runnable or None, with_peers=b.peers, seed=0, argv=None, device_options={},
                    torch_model=str(student_file), torch_checkpoint=None,
                    torch_variants=[v for v in b.torch_variants.split(",") if v])
        log(markdown_table([res]))
        log(f"results: {bench_json}")
        return {"results": str(bench_json)}

    stage("bench", {"bench": asdict(cfg.bench), "export": state.data["stages"]["export"]["key"],
                    "quantize": state.data["stages"]["quantize"]["key"]}, bench_stage)

    def report_stage():
        from sam_edge.bench.report import report

        r = report([bench_json], run / "report")
        return {"report": str(run / "report" / "report.md"), "plots": r["plots"]}

    stage("report", {"bench": state.data["stages"]["bench"]["key"]}, report_stage)
    total = time.perf_counter() - t_start
    summary = _summary(cfg, run, student_file, total)
    state.set("summary", status="done", **summary)
    log(summary["text"])
    return summary


def _dry_run(cfg: PipelineConfig, plan: list[str], fmts, missing, log) -> dict[str, Any]:
    """Config, paths, disk space and toolchains, without training."""
    from sam_edge.registry import get_config

    d = cfg.distill
    problems = []
    for name in (d.teacher, d.student):
        try:
            get_config(name)
        except KeyError as exc:
            problems.append(f"distill: model {name!r} is not registered ({exc})")
    for key, p in (("distill.teacher_checkpoint", d.teacher_checkpoint), ("distill.student_init", d.student_init)):
        if p and not Path(p).is_file():
            problems.append(f"{key}: {p} does not exist")
    for key, p, spec in (("distill.data", d.data, cfg.data.train), ("eval.data", cfg.eval.data, cfg.data.heldout)):
        if spec is None and not Path(p).is_dir():
            problems.append(f"{key}: {p} does not exist (and data.{'train' if key.startswith('distill') else 'heldout'} is null)")
    n = cfg.data.train.num_images if cfg.data.train else sum(1 for _ in Path(d.data).glob("*.jpg")) if Path(d.data).is_dir() else 0
    t = get_config(d.teacher)
    grid = t.image_size // 16
    per = t.prompt_embed_dim * grid * grid * {"fp16": 2, "bf16": 2, "fp32": 4}[cfg.cache.dtype]
    need = n * per + (n * 3 * (cfg.data.train.image_size ** 2) // 10 if cfg.data.train else 0) + 500 * 2**20
    probe = Path(cfg.pipeline.out).resolve()
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need:
        problems.append(f"disk: {need / 2**30:.1f} GiB needed (cache {n} x {per / 2**20:.2f} MiB + data + artifacts), "
                        f"{free / 2**30:.1f} GiB free under {probe}")
    lines = [f"config {cfg.source}: valid", f"stages: {' -> '.join(plan)}",
             f"toolchains: {', '.join(fmts) or 'none'} installed" + (f"; missing: {missing}" if missing else ""),
             f"teacher cache: {n} images x {per / 2**20:.2f} MiB = {n * per / 2**30:.2f} GiB ({cfg.cache.dtype}); "
             f"disk free {free / 2**30:.1f} GiB"]
    lines += [f"PROBLEM: {p}" for p in problems]
    for ln in lines:
        log(ln)
    if problems:
        raise ConfigError("dry run found problems: " + "; ".join(problems))
    return {"dry_run": True, "plan": plan, "formats": fmts, "missing": missing}


def _stage_times(run: Path) -> str:
    """``data 35 s, cache 42 s, ...`` from RUN/pipeline.json (the time each stage took when it ran;
    a stage skipped on a rerun keeps the time of the run that did it)."""
    try:
        stages = json.loads((run / "pipeline.json").read_text()).get("stages", {})
    except (OSError, ValueError):
        return "unknown"
    return ", ".join(f"{name} {st['seconds']:.0f} s" for name, st in stages.items()
                     if isinstance(st, dict) and isinstance(st.get("seconds"), (int, float)))


def _summary(cfg: PipelineConfig, run: Path, student_file: Path, total: float) -> dict[str, Any]:
    from sam_edge.bench.report import flat_rows

    bench = json.loads((run / "bench.json").read_text())
    ev = json.loads((run / "eval.json").read_text())
    size = student_file.stat().st_size / 1e6
    from sam_edge.registry import load_model

    m = load_model(student_file)
    enc_params = sum(p.numel() for p in m.image_encoder.parameters())
    lines = [f"== sam-edge pipeline: {run} ({total / 60:.1f} min) ==",
             f"student {m.config.name}: image encoder {enc_params / 1e6:.2f} M params; {student_file} {size:.1f} MB",
             "stage seconds: " + _stage_times(run),
             "held-out student vs teacher mIoU: " + ", ".join(f"{k} {v:.3f}" for k, v in ev["student_vs_teacher"].items()),
             f"{'format':10s} {'precision':24s} {'enc ms':>7s} {'dec ms':>7s} {'MB':>6s} {'mIoU/teacher':>12s} {'drop':>7s}"]
    for r in sorted(flat_rows([bench]), key=lambda r: (r["format"], r["encoder_ms_p50"] or 1e9)):
        f = (lambda v, s: "-" if v is None else format(v, s))
        lines.append(f"{r['format']:10s} {r['precision']:24s} {f(r['encoder_ms_p50'], '7.2f')} {f(r['decoder_ms_p50'], '7.2f')} "
                     f"{r['size_mb']:6.2f} {f(r['miou_vs_teacher'], '12.4f')} {f(r['miou_drop_vs_fp32'], '+7.4f')}")
    lines.append(f"report: {run / 'report' / 'report.md'}")
    return {"minutes": round(total / 60, 2), "text": "\n".join(lines)}
