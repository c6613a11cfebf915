"""``sam-edge bench``: latency and IoU drop of exported artifacts, per device.

For every export directory: images and ground-truth masks come from an SA-1B-format folder;
each mask gives a prompt of each requested type (``point``: one foreground pixel of the mask,
``points2``: two, ``box``: its box), in the same order for every artifact, device and teacher
(seeded). The device runs :mod:`sam_edge.bench.runner` (host: a subprocess per pipeline; ``ssh://``:
the same runner on the remote box; ``adb://``: the on-device runners, timings only); the masks
that come back are compared here, at the original image size, with

* the teacher's masks (eager PyTorch, bundled or given weights) for the same prompts,
* the fp32 pipeline of the same format (the "drop vs fp32"),
* the ground truth,

as mIoU and the share of prompts under 0.5 IoU. A point prompt takes the multimask output with
the highest predicted IoU (SAM's ambiguity rule), other prompts the single-mask output, for the
teacher and the artifacts alike.

Results are written after every export directory (a rerun with the same --out resumes: the
runner skips finished pipelines). ``--peers`` adds eager PyTorch encoder timings measured in the
same run: the teacher, and SAM ViT-H (random weights, 1024 px: latency does not depend on the
values) so the report can state (ViT-H encoder) / (best student artifact encoder).
"""
from __future__ import annotations

from sam_edge.errors import UserError

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

PROMPT_TYPES = ("point", "points2", "box")
SCHEMA = "sam-edge-bench/1"


class BenchError(UserError, RuntimeError):
    """A benchmark that cannot run: names the input and what was expected."""


# -- prompts and inputs -------------------------------------------------------------------------
def load_samples(data: str | Path, num_images: int, masks_per_image: int, seed: int) -> list[dict]:
    from sam_edge.data import SA1BDataset

    ds = SA1BDataset(data, max_masks=masks_per_image, mask_seed=seed, verify_images=False, min_area=64)
    if len(ds) == 0:
        raise BenchError(f"--data {data}: no usable SA-1B samples (sa_N.jpg + sa_N.json)")
    return [ds[i] for i in range(min(num_images, len(ds)))]


def make_prompts(samples: Sequence[dict], prompt_types: Sequence[str], seed: int) -> list[dict]:
    """One prompt per (image, mask, type): coordinates in original-image pixels."""
    rng = np.random.default_rng(seed)
    out = []
    for i, s in enumerate(samples):
        for k, mask in enumerate(s["masks"]):
            ys, xs = np.nonzero(mask)
            if len(xs) == 0:
                continue
            for t in prompt_types:
                if t == "box":
                    box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float64)
                    if box[2] == box[0] or box[3] == box[1]:
                        continue  # a one-pixel-wide mask: a zero-area box breaks the prompt rule
                    out.append({"image": i, "mask": k, "type": t, "coords": None, "labels": None, "box": box})
                else:
                    n = 1 if t == "point" else 2
                    idx = rng.choice(len(xs), size=n, replace=len(xs) < n)
                    pts = np.stack([xs[idx], ys[idx]], 1).astype(np.float64)
                    out.append({"image": i, "mask": k, "type": t, "coords": pts, "labels": np.ones(n), "box": None})
    return out


def model_frame_prompt(p: dict, image_size: int, original_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    from sam_edge.runtime.feeds import point_inputs
    from sam_edge.transforms import ResizeLongestSide

    tr = ResizeLongestSide(image_size)
    c = tr.apply_coords(p["coords"], original_size) if p["coords"] is not None else None
    b = tr.apply_boxes(p["box"][None], original_size)[0] if p["box"] is not None else None
    pc, pl = point_inputs(c, p["labels"], b)
    return pc[0], pl[0]


def encoder_inputs(manifest: dict, images: Sequence[np.ndarray]) -> np.ndarray:
    from sam_edge.runtime.predictor import encoder_input

    return np.stack([encoder_input(img, manifest["image_size"], manifest["pixel_mean"], manifest["pixel_std"],
                                   manifest["normalize_inside"])[0] for img in images])


def upscale(low_res: np.ndarray, image_size: int, original_size: tuple[int, int]) -> np.ndarray:
    """1 x h x w logits -> H x W bool (the runtime predictor's postprocessing)."""
    from sam_edge.runtime.predictor import upscale_low_res
    from sam_edge.transforms import get_preprocess_shape

    out = upscale_low_res(np.asarray(low_res, np.float32)[None], image_size,
                          get_preprocess_shape(*original_size, image_size), original_size)
    return out[0, 0] > 0


def pick(low_res: np.ndarray, iou: np.ndarray, prompt_type: str, mask_outputs: str) -> np.ndarray:
    """The mask SAM would return: best multimask output for a single point, else the single mask."""
    if mask_outputs != "all":
        return low_res[int(np.argmax(iou))]
    if prompt_type == "point":
        return low_res[1 + int(np.argmax(iou[1:]))]
    return low_res[0]


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@torch.no_grad()
def teacher_masks(teacher, samples, prompts) -> list[np.ndarray]:
    from sam_edge import SamPredictor

    pred = SamPredictor(teacher)
    out: list[np.ndarray] = []
    current = None
    for p in prompts:
        if p["image"] != current:
            pred.set_image(samples[p["image"]]["image"])
            current = p["image"]
        multi = p["type"] == "point"
        masks, scores, _ = pred.predict(p["coords"], None if p["labels"] is None else p["labels"].astype(int),
                                        p["box"], multimask_output=multi)
        out.append(masks[int(np.argmax(scores))] if multi else masks[0])
    return out


def iou_summary(ious: Sequence[float]) -> dict[str, float]:
    a = np.asarray(ious, np.float64)
    return {"miou": float(a.mean()), "under_0_5": float((a < 0.5).mean()), "n": int(a.size)}


# -- the run ------------------------------------------------------------------------------------
def git_commit() -> Optional[str]:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except Exception:  # noqa: BLE001
        return None


def run_device(device: str, export_dir: Path, inputs_path: Path, out_dir: Path, runs: int, warmup: int,
               threads: Optional[int], formats: Optional[Sequence[str]], device_options: Optional[dict] = None) -> dict:
    device_options = dict(device_options or {})
    if device in ("host", "cuda"):
        cmd = [sys.executable, "-m", "sam_edge.bench.runner", "--artifacts", str(export_dir), "--inputs", str(inputs_path),
               "--out", str(out_dir), "--runs", str(runs), "--warmup", str(warmup)]
        if threads:
            cmd += ["--threads", str(threads)]
        if device == "cuda":
            cmd += ["--providers", ",".join(cuda_providers())]
            formats = [f for f in (formats or ["onnx"]) if f == "onnx"] or ["onnx"]
        if formats:
            cmd += ["--formats", ",".join(formats)]
        from sam_edge.bench.runner import format_imports
        from sam_edge.runtime import load_manifest

        cmd += format_imports(formats or {a["format"] for a in load_manifest(export_dir, check_hashes=False)["artifacts"]})
        proc = subprocess.run(cmd, text=True)
        if proc.returncode:
            raise BenchError(f"runner failed on {export_dir} (exit {proc.returncode})")
        return json.loads((out_dir / "timings.json").read_text())
    if device.startswith("ssh://"):
        from sam_edge.bench.devices.ssh import run_ssh

        return run_ssh(device, export_dir, inputs_path, out_dir, runs=runs, warmup=warmup, threads=threads,
                       formats=formats, **device_options)
    if device.startswith("adb://"):
        from sam_edge.bench.devices.adb import run_adb

        return run_adb(device, export_dir, out_dir, runs=runs, warmup=warmup, threads=threads, formats=formats)
    raise BenchError(f"--device {device!r}: expected host, cuda, ssh://user@host[:port] or adb://SERIAL")


def cuda_providers() -> list[str]:
    """onnxruntime GPU providers available here (TensorRT first), CPU last; a clear error if none."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BenchError("--device cuda needs onnxruntime-gpu (pip install onnxruntime-gpu)") from exc
    avail = ort.get_available_providers()
    gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in avail]
    if not gpu:
        raise BenchError(f"--device cuda: onnxruntime here has no CUDA / TensorRT execution provider "
                         f"(available: {avail}); install onnxruntime-gpu on a machine with an NVIDIA GPU")
    return gpu + ["CPUExecutionProvider"]


TORCH_VARIANTS = ("eager_fp32", "compile_fp32", "torchao_int8_weight_only", "torchao_int8_dynamic")


def torch_pipelines(model_spec: str, checkpoint: Optional[str], manifest: dict, inputs_path: Path, out_dir: Path,
                    runs: int, warmup: int, threads: Optional[int], variants: Sequence[str],
                    torch_device: str = "cpu") -> tuple[list, list]:
    """PyTorch on the host as more "formats": eager fp32, torch.compile, torchao int8 (Linear
    layers), the same model and inputs as the artifacts. Returns (pipelines, artifact records)."""
    import copy

    from sam_edge.registry import load_model_spec
    from sam_edge.export.wrappers import DecoderWrapper, EncoderWrapper
    from sam_edge.encoders import fuse_model

    from sam_edge.bench.runner import decoder_feed, peak_rss_mb, stats_ms, timed_runs

    bad = [v for v in variants if v not in TORCH_VARIANTS]
    if bad:
        raise BenchError(f"--torch-variants: unknown {bad}; expected some of {list(TORCH_VARIANTS)}")
    if threads:
        torch.set_num_threads(threads)
    with np.load(inputs_path) as z:
        inputs = {k: z[k] for k in z.files}
    base = fuse_model(load_model_spec(model_spec, checkpoint).eval())
    side = int(manifest["mask_input_size"])
    from sam_edge.runtime.feeds import DECODER_INPUT_NAMES as names

    pipes, recs = [], []
    for v in variants:
        t0 = time.perf_counter()
        err = None
        try:
            m = copy.deepcopy(base)
            if v.startswith("torchao_"):
                from sam_edge.export.quantize import torchao_quantize

                m, _ = torchao_quantize(m, v[len("torchao_"):])
            enc = EncoderWrapper(m, normalize_inside=manifest["normalize_inside"]).eval()
            dec = DecoderWrapper(m, mask_outputs=manifest["mask_outputs"]).eval()
            enc, dec = enc.to(torch_device), dec.to(torch_device)
            if v == "compile_fp32":
                enc, dec = torch.compile(enc), torch.compile(dec, dynamic=True)
            load_s = time.perf_counter() - t0
            sync = torch.cuda.synchronize if torch_device == "cuda" else (lambda: None)

            def run_sync(fn, *a):
                out = fn(*a)
                sync()
                return out

            def dev(a):
                return torch.from_numpy(a).to(torch_device)

            with torch.no_grad():
                x = dev(inputs["encoder_inputs"])
                t_enc = timed_runs(lambda: run_sync(enc, x[0]), runs, max(warmup, 1))
                emb = np.concatenate([enc(xi).cpu().numpy() for xi in x])
                f0 = decoder_feed(inputs, 0, emb, side)
                a0 = [dev(f0[k]) for k in names]
                t_dec = timed_runs(lambda: run_sync(dec, *a0), runs * 5, max(warmup, 1))
                lows, ious = [], []
                for p in range(len(inputs["prompt_image"])):
                    f = decoder_feed(inputs, p, emb, side)
                    low, iou = dec(*[dev(f[k]) for k in names])
                    lows.append(low[0].cpu().numpy())
                    ious.append(iou[0].cpu().numpy())
            name = f"outputs_torch_{v}.npz"
            np.savez_compressed(out_dir / name, low_res_masks=np.stack(lows).astype(np.float16),
                                iou_predictions=np.stack(ious))
            rss = peak_rss_mb()
            for role, t in (("encoder", t_enc), ("decoder", t_dec)):
                recs.append({"file": f"torch:{v}:{role}", "role": role, "format": "torch", "precision": v,
                             "load_s": load_s, "latency_ms": stats_ms(t), "threads": threads or torch.get_num_threads(),
                             "peak_rss_mb": rss, "error": None})
        except Exception as exc:  # noqa: BLE001 - recorded as the row's error
            name, err = None, f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
        pipes.append({"format": "torch", "precision": v, "encoder": f"torch:{v}:encoder",
                      "decoder": f"torch:{v}:decoder", "outputs": name, "error": err})
    return pipes, recs


def peers(teacher, runs: int) -> dict[str, Any]:
    from sam_edge.registry import create_model

    from sam_edge.bench.runner import stats_ms, timed_runs

    out = {}
    with torch.no_grad():
        x = torch.randn(1, 3, teacher.image_size, teacher.image_size)
        out["teacher_encoder_ms"] = stats_ms(timed_runs(lambda: teacher.image_encoder(x), runs, 1))
        torch.manual_seed(0)
        vit_h = create_model("sam_vit_h", pretrained=False).eval()
        xh = torch.randn(1, 3, 1024, 1024)
        out["sam_vit_h_encoder_ms"] = stats_ms(timed_runs(lambda: vit_h.image_encoder(xh), 1, 0))
        out["sam_vit_h_note"] = "segment-anything ViT-H image encoder architecture (sam_edge parity-tested), random weights, 1024 px, 1 timed run"
    return out


def bench(artifacts: Sequence[str | Path], device: str, data: str | Path, teacher_name: str, out: str | Path, *,
          teacher_checkpoint: Optional[str] = None, prompt_types: Sequence[str] = PROMPT_TYPES, num_images: int = 16,
          masks_per_image: int = 4, runs: int = 20, warmup: int = 3, threads: Optional[int] = None,
          formats: Optional[Sequence[str]] = None, with_peers: bool = False, seed: int = 0,
          argv: Optional[Sequence[str]] = None, device_options: Optional[dict] = None,
          torch_model: Optional[str] = None, torch_checkpoint: Optional[str] = None,
          torch_variants: Sequence[str] = ("eager_fp32", "torchao_int8_weight_only")) -> dict:
    from sam_edge.registry import create_model
    from sam_edge.runtime import load_manifest
    from sam_edge.utils.io import write_json_atomic

    from sam_edge.bench.runner import environment, write_inputs

    if not (device in ("host", "cuda") or device.startswith(("ssh://", "adb://"))):
        raise BenchError(f"--device {device!r}: expected host, cuda, ssh://user@host[:port] or adb://SERIAL")
    if device == "cuda":
        cuda_providers()  # fail before any work when there is no GPU provider
        if torch_model and not torch.cuda.is_available():
            raise BenchError("--device cuda with --torch-model: torch here has no CUDA device")
    bad = [t for t in prompt_types if t not in PROMPT_TYPES]
    if bad or not prompt_types:
        raise BenchError(f"--prompts: expected a comma-separated subset of {list(PROMPT_TYPES)}, got {list(prompt_types)}")
    manifests = {}
    for d in artifacts:
        manifests[str(d)] = load_manifest(d)  # ManifestError names a directory without manifest / a bad file
    out = Path(out)
    work = out.with_suffix("") if out.suffix == ".json" else out
    work = Path(str(work) + ".work")
    work.mkdir(parents=True, exist_ok=True)
    results_path = out if out.suffix == ".json" else out / "results.json"
    samples = load_samples(data, num_images, masks_per_image, seed)
    prompts = make_prompts(samples, prompt_types, seed)
    teacher = create_model(teacher_name, checkpoint=teacher_checkpoint).eval()
    t0 = time.perf_counter()
    t_masks = teacher_masks(teacher, samples, prompts)
    teacher_s = time.perf_counter() - t0
    gt = [samples[p["image"]]["masks"][p["mask"]] for p in prompts]
    teacher_vs_gt = {t: iou_summary([mask_iou(t_masks[i], gt[i]) for i, p in enumerate(prompts) if p["type"] == t])
                     for t in prompt_types}
    res: dict[str, Any] = {
        "schema": SCHEMA, "device": device, "command": list(argv) if argv else None, "git_commit": git_commit(),
        "host_env": environment(threads), "data": str(data), "num_images": len(samples), "num_prompts": len(prompts),
        "prompt_types": list(prompt_types), "teacher": teacher_name, "teacher_vs_gt": teacher_vs_gt,
        "teacher_masks_s": teacher_s, "rows": [], "device_env": None,
        "image_sizes": {d: m["image_size"] for d, m in manifests.items()},
    }
    if results_path.is_file():
        old = json.loads(results_path.read_text())
        if old.get("schema") == SCHEMA and old.get("device") == device:
            res["rows"] = old.get("rows", [])
    for d, man in manifests.items():
        tag = Path(d).resolve().name
        dev_out = work / tag
        dev_out.mkdir(parents=True, exist_ok=True)
        inputs_path = dev_out / "inputs.npz"
        s = man["image_size"]
        write_inputs(inputs_path, encoder_inputs(man, [x["image"] for x in samples]),
                     [p["image"] for p in prompts],
                     [model_frame_prompt(p, s, tuple(samples[p["image"]]["original_size"])) for p in prompts])
        timings = run_device(device, Path(d), inputs_path, dev_out, runs, warmup, threads, formats, device_options)
        res["device_env"] = timings.get("env")
        if torch_model and device in ("host", "cuda") and d == str(artifacts[0]):
            tp, ta = torch_pipelines(torch_model, torch_checkpoint, man, dev_out / "inputs.npz", dev_out, runs, warmup,
                                     threads, torch_variants, "cuda" if device == "cuda" else "cpu")
            timings = {**timings, "pipelines": timings.get("pipelines", []) + tp,
                       "artifacts": timings.get("artifacts", []) + ta}
        by_file = {a["file"]: a for a in timings.get("artifacts", [])}
        sizes = {a["file"]: a["size_bytes"] for a in man["artifacts"]}
        masks_of: dict[tuple[str, str], list[np.ndarray]] = {}
        for pl in timings.get("pipelines", []):
            if pl.get("outputs") and (dev_out / pl["outputs"]).is_file():
                with np.load(dev_out / pl["outputs"]) as z:
                    low, iou = z["low_res_masks"].astype(np.float32), z["iou_predictions"]
                masks_of[(pl["format"], pl["precision"])] = [
                    upscale(pick(low[i], iou[i], p["type"], man["mask_outputs"])[None], s,
                            tuple(samples[p["image"]]["original_size"]))
                    for i, p in enumerate(prompts)]
        rows = [r for r in res["rows"] if r["artifacts"] != d]
        for pl in timings.get("pipelines", []):
            key = (pl["format"], pl["precision"])
            fp32 = masks_of.get((pl["format"], "fp32")) or masks_of.get((pl["format"], "eager_fp32")) or next(
                (v for (f, p), v in masks_of.items() if p == "fp32"), None)
            mine = masks_of.get(key)
            iou: dict[str, Any] = {}
            if mine is not None:
                for t in prompt_types:
                    idx = [i for i, p in enumerate(prompts) if p["type"] == t]
                    iou[t] = {"vs_teacher": iou_summary([mask_iou(mine[i], t_masks[i]) for i in idx]),
                              "vs_gt": iou_summary([mask_iou(mine[i], gt[i]) for i in idx]),
                              "vs_fp32": iou_summary([mask_iou(mine[i], fp32[i]) for i in idx]) if fp32 else None}
            enc, dec = by_file.get(pl["encoder"], {}), by_file.get(pl["decoder"], {})
            rows.append({
                "artifacts": d, "model": man["model"]["name"], "format": pl["format"], "precision": pl["precision"],
                "encoder_file": pl["encoder"], "decoder_file": pl["decoder"],
                "encoder_ms": enc.get("latency_ms"), "decoder_ms": dec.get("latency_ms"),
                "load_s": {"encoder": enc.get("load_s"), "decoder": dec.get("load_s")},
                "peak_rss_mb": max(enc.get("peak_rss_mb") or 0, dec.get("peak_rss_mb") or 0) or None,
                "threads": enc.get("threads"), "decoder_points": dec.get("num_points"),
                "size_mb": {"encoder": sizes.get(pl["encoder"], 0) / 1e6, "decoder": sizes.get(pl["decoder"], 0) / 1e6},
                "iou": iou, "error": pl.get("error"),
            })
        res["rows"] = rows
        write_json_atomic(results_path, res)
    if with_peers:
        res["peers"] = peers(teacher, max(3, runs // 4))
        write_json_atomic(results_path, res)
    return res


def ingest_results(path: str | Path, out: str | Path, argv: Optional[Sequence[str]] = None) -> dict:
    """Results measured elsewhere (iOS app benchmark mode, Xcode Core ML report summary) as a
    results file ``sam-edge report`` merges: timings only (no masks came back, so no IoU)."""
    from sam_edge.utils.io import write_json_atomic

    from sam_edge.bench.devices.ingest import ingest

    t = ingest(path)
    recs = t.get("artifacts", [])
    rows = []
    for enc in (r for r in recs if r.get("role") == "encoder"):
        dec = next((r for r in recs if r.get("role") == "decoder" and r.get("format") == enc.get("format")
                    and r.get("precision") == enc.get("precision")
                    and r.get("compute_units") == enc.get("compute_units")), {})
        rows.append({"artifacts": str(path), "model": t.get("env", {}).get("model", "?"), "format": enc.get("format"),
                     "precision": enc.get("precision") + (f" ({enc['compute_units']})" if enc.get("compute_units") else ""),
                     "encoder_file": enc.get("file"), "decoder_file": dec.get("file"),
                     "encoder_ms": enc.get("latency_ms"), "decoder_ms": dec.get("latency_ms"),
                     "load_s": {"encoder": enc.get("load_s"), "decoder": dec.get("load_s")},
                     "peak_rss_mb": enc.get("peak_rss_mb"), "threads": None, "size_mb": {}, "iou": {},
                     "error": enc.get("error")})
    res = {"schema": SCHEMA, "device": t.get("device", "ingested"), "command": list(argv) if argv else None,
           "git_commit": git_commit(), "host_env": None, "device_env": t.get("env"), "data": None,
           "num_images": 0, "num_prompts": 0, "prompt_types": [], "teacher": None, "teacher_vs_gt": {},
           "ingested_from": str(path), "rows": rows}
    write_json_atomic(Path(out), res)
    return res
