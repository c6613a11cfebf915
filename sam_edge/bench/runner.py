"""The device-side runner: times every artifact of an export directory through its runtime and
runs each (format, precision) pipeline end to end on prepared inputs. It needs numpy, the
runtime libraries and the pure-Python ``sam_edge`` package only, so it is what a remote device
(``ssh://``) runs too.

    python -m sam_edge.bench.runner --artifacts DIR --inputs INPUTS.npz --out OUTDIR [--runs 20]
        [--warmup 3] [--threads N] [--formats onnx,executorch,tflite] [--no-isolate] [--import MODULE]

``--import MODULE[:FUNCTION]`` (repeatable) imports a module first (and calls FUNCTION): one that
registers an export format with :func:`sam_edge.formats.register_format` (the harness passes
what each format's spec records as ``module``), so a format registered in the host process runs
here too.

INPUTS.npz (written by :func:`write_inputs`): ``encoder_inputs`` I x 1 x 3 x S x S float32 (as
the manifest's encoder expects them), ``prompt_image`` P int (image of each prompt),
``point_coords`` P x K x 2 and ``point_labels`` P x K float32 in the model frame, slots with label
``ABSENT`` (-10) unused (each prompt has its own number of points).

OUTDIR/timings.json: ``env`` (machine, threads, versions) and per artifact ``file``, ``role``,
``format``, ``precision``, ``load_s``, ``latency_ms`` {min, p50, p90, mean, std, n}, ``threads``,
``peak_rss_mb`` (of the process that ran it: one process per pipeline unless --no-isolate),
``error``; per pipeline (format, precision, encoder file, decoder file) the outputs file
``outputs_<format>_<precision>.npz`` with ``low_res_masks`` P x M x h x w (float16 logits) and
``iou_predictions`` P x M. The file is rewritten after every pipeline, and a rerun skips the
pipelines already in it: an interrupted run keeps what it finished.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from sam_edge.utils.io import dumps_json, write_bytes_atomic

ABSENT = -10.0


def stats_ms(seconds: Sequence[float]) -> dict[str, float]:
    """{min, p50 (median), p90 (nearest rank), mean, std (population), n} in ms of run times in s."""
    return stats_of_ms([1e3 * s for s in seconds])


def stats_of_ms(values_ms: Sequence[float]) -> dict[str, float]:
    ms = sorted(float(v) for v in values_ms)
    n = len(ms)
    return {"min": ms[0], "p50": statistics.median(ms), "p90": ms[min(n - 1, int(round(0.9 * (n - 1))))],
            "mean": statistics.fmean(ms), "std": statistics.pstdev(ms) if n > 1 else 0.0, "n": n}


def timed_runs(fn, runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def environment(threads: Optional[int]) -> dict[str, Any]:
    import importlib.metadata as md

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for dist in ("numpy", "torch", "onnxruntime", "executorch", "ai-edge-litert", "coremltools", "sam-edge"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return {"hostname": platform.node(), "machine": platform.machine(), "system": platform.system(),
            "cpu": cpu, "cpu_count": os.cpu_count(), "threads": threads, "python": platform.python_version(),
            "versions": versions}


def decoder_feed(inputs: dict, p: int, embeddings: np.ndarray, side: Optional[int] = None) -> dict[str, np.ndarray]:
    """The decoder inputs of prompt ``p`` of INPUTS.npz (``side`` is implied by the embeddings)."""
    from sam_edge.runtime.feeds import decoder_feed as feed

    keep = inputs["point_labels"][p] != ABSENT
    return feed(embeddings[int(inputs["prompt_image"][p])], inputs["point_coords"][p][keep],
                inputs["point_labels"][p][keep])


PROVIDERS: Optional[list[str]] = None  # onnxruntime execution providers (--providers)


def _load(art: dict, export_dir: Path, threads: Optional[int]):
    from sam_edge.runtime import get_backend
    from sam_edge.runtime.manifest import artifact_path

    backend = get_backend(art["format"])
    if PROVIDERS and hasattr(backend, "providers"):
        backend.providers = PROVIDERS
    for attr in ("threads", "num_threads"):
        if threads and hasattr(backend, attr):
            setattr(backend, attr, threads)
    t = time.perf_counter()
    session = backend.load(artifact_path(export_dir, art))
    return session, time.perf_counter() - t


def run_pipeline(export_dir: Path, manifest: dict, enc: dict, dec: dict, inputs: dict, runs: int, warmup: int,
                 threads: Optional[int], out_dir: Path) -> dict[str, Any]:
    """Time ``enc`` and ``dec`` and run every prompt through the pair; returns the records."""
    side = int(manifest["mask_input_size"])
    records = []
    result: dict[str, Any] = {"format": enc["format"], "precision": enc["precision"], "encoder": enc["file"],
                              "decoder": dec["file"], "outputs": None, "error": None}
    try:
        esess, eload = _load(enc, export_dir, threads)
        name_in, name_out = esess.input_names[0], esess.output_names[0]
        x = inputs["encoder_inputs"]
        lat = timed_runs(lambda: esess.run({name_in: x[0]}), runs, warmup)
        embeddings = np.concatenate([np.asarray(esess.run({name_in: xi})[name_out], np.float32) for xi in x])
        records.append({"file": enc["file"], "role": "encoder", "format": enc["format"], "precision": enc["precision"],
                        "load_s": eload, "latency_ms": stats_ms(lat), "threads": threads,
                        "peak_rss_mb": peak_rss_mb(), "error": None})
        dsess, dload = _load(dec, export_dir, threads)
        feed0 = decoder_feed(inputs, 0, embeddings, side)
        lat = timed_runs(lambda: dsess.run(feed0), runs * 5, warmup)
        masks, ious = [], []
        for p in range(len(inputs["prompt_image"])):
            out = dsess.run(decoder_feed(inputs, p, embeddings, side))
            masks.append(np.asarray(out["low_res_masks"], np.float32)[0])
            ious.append(np.asarray(out["iou_predictions"], np.float32)[0])
        records.append({"file": dec["file"], "role": "decoder", "format": dec["format"], "precision": dec["precision"],
                        "load_s": dload, "latency_ms": stats_ms(lat), "threads": threads,
                        "peak_rss_mb": peak_rss_mb(), "error": None,
                        "num_points": int((feed0["point_labels"] != -1).sum())})
        name = f"outputs_{enc['format']}_{enc['precision']}.npz"
        np.savez_compressed(out_dir / name, low_res_masks=np.stack(masks).astype(np.float16),
                            iou_predictions=np.stack(ious))
        result["outputs"] = name
    except Exception as exc:  # noqa: BLE001 - recorded, the other pipelines still run
        result["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    result["records"] = records
    return result


def pipelines(manifest: dict, formats: Optional[Sequence[str]]) -> list[tuple[dict, dict]]:
    """(encoder, decoder) per (format, encoder precision); a precision without its own decoder
    uses the format's fp32 decoder (as the runtime predictor does)."""
    from sam_edge.runtime.manifest import select_artifacts

    out = []
    for a in manifest["artifacts"]:
        if a["role"] != "encoder" or (formats and a["format"] not in formats):
            continue
        try:
            out.append(select_artifacts(manifest, a["precision"], a["format"]))
        except Exception:  # noqa: BLE001 - a format with no decoder: encoder-only pipelines are skipped
            continue
    return out


def _write(path: Path, data: dict) -> None:
    write_bytes_atomic(path, dumps_json(data, indent=1).encode())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", required=True)
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--formats", default=None, help="only these formats, comma-separated (default: every one "
                                                    "in the manifest)")
    ap.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE[:FUNCTION]",
                    help="import MODULE first (and call FUNCTION): it registers an export format; repeatable")
    ap.add_argument("--no-isolate", action="store_true", help="run every pipeline in this process")
    ap.add_argument("--providers", default=None, help="onnxruntime execution providers, comma-separated")
    ap.add_argument("--only", default=None, help=argparse.SUPPRESS)  # FORMAT:PRECISION, used by isolation
    args = ap.parse_args(argv)
    from sam_edge.formats import load_registrations
    from sam_edge.runtime import load_manifest

    load_registrations(args.imports)

    global PROVIDERS
    PROVIDERS = args.providers.split(",") if args.providers else None
    export_dir, out_dir = Path(args.artifacts), Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(export_dir)
    if args.threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
        os.environ.setdefault("SAM_EDGE_THREADS", str(args.threads))
    with np.load(args.inputs) as z:
        inputs = {k: z[k] for k in z.files}
    formats = args.formats.split(",") if args.formats else None
    todo = pipelines(manifest, formats)
    if args.only:
        fmt, prec = args.only.split(":", 1)
        todo = [(e, d) for e, d in todo if (e["format"], e["precision"]) == (fmt, prec)]
        res = run_pipeline(export_dir, manifest, *todo[0], inputs, args.runs, args.warmup, args.threads, out_dir)
        print("RESULT " + dumps_json(res))
        return 0
    path = out_dir / "timings.json"
    data = json.loads(path.read_text()) if path.is_file() else {"artifacts": [], "pipelines": []}
    data["env"] = environment(args.threads)
    data["export_dir"] = str(export_dir)
    done = {(p["format"], p["precision"]) for p in data["pipelines"] if not p.get("error")}
    data["pipelines"] = [p for p in data["pipelines"] if (p["format"], p["precision"]) in done]
    for enc, dec in todo:
        key = (enc["format"], enc["precision"])
        if key in done:
            continue
        print(f"runner: {key[0]} {key[1]} ({enc['file']} + {dec['file']})", flush=True)
        if args.no_isolate:
            res = run_pipeline(export_dir, manifest, enc, dec, inputs, args.runs, args.warmup, args.threads, out_dir)
        else:
            cmd = [sys.executable, "-m", "sam_edge.bench.runner", "--artifacts", str(export_dir), "--inputs", args.inputs,
                   "--out", str(out_dir), "--runs", str(args.runs), "--warmup", str(args.warmup),
                   "--only", f"{key[0]}:{key[1]}"] + (["--threads", str(args.threads)] if args.threads else []) \
                + (["--providers", args.providers] if args.providers else []) \
                + [a for m in args.imports for a in ("--import", m)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            res = json.loads(line[7:]) if line else {
                "format": key[0], "precision": key[1], "encoder": enc["file"], "decoder": dec["file"],
                "outputs": None, "records": [],
                "error": f"runner process exited {proc.returncode}: {(proc.stderr.strip().splitlines() or [''])[-1]}"}
        if res.get("error"):
            print(f"runner: {key[0]} {key[1]} failed: {res['error']}", flush=True)
        records = res.pop("records", [])
        data["pipelines"].append(res)
        seen = {a["file"] for a in data["artifacts"]}
        data["artifacts"].extend(r for r in records if r["file"] not in seen)
        _write(path, data)
    _write(path, data)
    return 0


def write_inputs(path: str | Path, encoder_inputs: np.ndarray, prompt_image: Sequence[int],
                 prompts: Sequence[tuple[np.ndarray, np.ndarray]]) -> Path:
    """Write INPUTS.npz; ``prompts``: per prompt (coords n x 2, labels n) in the model frame."""
    k = max(len(c) for c, _ in prompts)
    coords = np.zeros((len(prompts), k, 2), np.float32)
    labels = np.full((len(prompts), k), ABSENT, np.float32)
    for i, (c, lab) in enumerate(prompts):
        coords[i, : len(c)] = c
        labels[i, : len(lab)] = lab
    path = Path(path)
    np.savez_compressed(path, encoder_inputs=np.asarray(encoder_inputs, np.float32),
                        prompt_image=np.asarray(prompt_image, np.int64), point_coords=coords, point_labels=labels)
    return path


if __name__ == "__main__":
    sys.exit(main())


def format_imports(formats) -> list[str]:
    """``--import`` arguments for the formats (names) registered outside ``sam_edge.formats``: the
    module (or ``module:function``) their specs record, so the runner process registers them too."""
    from sam_edge.formats import registration_refs

    return [a for ref in registration_refs(list(formats)) for a in ("--import", ref)]
