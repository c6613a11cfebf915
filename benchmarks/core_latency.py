"""Encoder vs decoder latency per model variant on this machine (eager PyTorch).

Shows where the time goes: ``set_image`` runs the image encoder once; every ``predict`` after it
runs only the prompt encoder + mask decoder. Prints, per variant: encoder GFLOP, encoder time and
achieved GFLOP/s as a share of this machine's fp32 GEMM peak (measured in the same run), decoder
time per prompt measured on the modules directly, ``predict`` time after ``set_image``, and the
ratios predict/decoder (about 1: predict adds no encoder work) and encoder/baseline (SAM ViT-B
measured in the same run). Random weights: latency does not depend on the values.

    python -m benchmarks.core_latency                       # vit_b, mobilesam_tinyvit, tiny test models
    python -m benchmarks.core_latency --models sam_vit_h sam_vit_b --repeats 2
    python -m benchmarks.core_latency --json out/core_latency.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sam_edge.utils.timing import timed

DEFAULT_MODELS = ["sam_vit_b", "mobilesam_tinyvit", "sam_test_tiny", "mobilesam_test_tiny"]
BASELINE = "sam_vit_b"


def gemm_peak_gflops(n: int = 2048, seconds: float = 3.0) -> float:
    """Best fp32 n x n matmul throughput over ~``seconds``."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def encoder_gflop(model, size: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, 3, size, size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.image_encoder(x)
    return counter.get_total_flops() / 1e9


def bench_model(name: str, image: np.ndarray, repeats: int, prompts: int) -> dict:
    from sam_edge import SamPredictor, create_model

    torch.manual_seed(0)
    model = create_model(name)
    size = model.image_size
    pred = SamPredictor(model)
    gflop = encoder_gflop(model, size)
    x = model.preprocess(torch.randn(1, 3, size, size) * 50 + 120)
    with torch.no_grad():
        t_enc = timed(lambda: model.image_encoder(x), repeats)
    t_set = timed(lambda: pred.set_image(image), repeats)
    h, w = image.shape[:2]
    rng = np.random.default_rng(0)
    pts = rng.uniform([0, 0], [w, h], size=(prompts, 2))

    pe = model.prompt_encoder
    coords = torch.as_tensor(pred.transform.apply_coords(pts[:1], (h, w)), dtype=torch.float)[None]
    labels = torch.ones(1, 1, dtype=torch.int)

    def decoder_only():
        with torch.no_grad():
            sparse, dense = pe((coords, labels), None, None)
            model.mask_decoder(pred.features, pe.get_dense_pe(), sparse, dense, True)

    t_dec = timed(decoder_only, prompts, warmup=3)
    it = iter(range(10**9))

    def one_predict():
        i = next(it) % prompts
        pred.predict(point_coords=pts[i : i + 1], point_labels=np.array([1]), multimask_output=True)

    t_pred = timed(one_predict, prompts, warmup=3)
    return {
        "model": name,
        "image_size": size,
        "encoder_gflop": round(gflop, 2),
        "encoder_s": t_enc,
        "set_image_s": t_set,
        "decoder_ms": 1000 * t_dec,
        "predict_ms": 1000 * t_pred,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--repeats", type=int, default=3, help="encoder runs per model (median)")
    ap.add_argument("--prompts", type=int, default=20, help="decoder / predict runs per model (median)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from sam_edge.image import load_image

    image = load_image(Path(__file__).resolve().parents[1] / "sam_edge" / "assets" / "astronaut.jpg")
    peak = gemm_peak_gflops()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; fp32 GEMM peak {peak:.1f} GFLOP/s (measured)")
    models = list(dict.fromkeys(args.models))
    rows = []
    for name in models:
        print(f"  measuring {name} ...", file=sys.stderr, flush=True)
        rows.append(bench_model(name, image, args.repeats, args.prompts))
    base = next((r for r in rows if r["model"] == BASELINE), None)
    hdr = (f"{'model':<20} {'params':>7} {'GFLOP':>7} {'encoder s':>10} {'%peak':>6} {'set_image s':>12} "
           f"{'decoder ms':>11} {'predict ms':>11} {'pred/dec':>9} {'pred/set':>9} {'enc/ViT-B':>10}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        r["encoder_pct_gemm_peak"] = 100 * r["encoder_gflop"] / r["encoder_s"] / peak
        r["predict_over_decoder"] = r["predict_ms"] / r["decoder_ms"]
        r["predict_over_set_image"] = r["predict_ms"] / 1000 / r["set_image_s"]
        r["encoder_over_baseline"] = r["encoder_s"] / base["encoder_s"] if base else None
        rel = f"{r['encoder_over_baseline']:.3f}" if base else "n/a"
        print(f"{r['model']:<20} {r['params_m']:>6.1f}M {r['encoder_gflop']:>7.1f} {r['encoder_s']:>10.3f} "
              f"{r['encoder_pct_gemm_peak']:>5.0f}% {r['set_image_s']:>12.3f} {r['decoder_ms']:>11.1f} "
              f"{r['predict_ms']:>11.1f} {r['predict_over_decoder']:>9.2f} {r['predict_over_set_image']:>9.4f} {rel:>10}")
    if args.json:
        from sam_edge.utils.io import write_json_atomic

        write_json_atomic(args.json, {"gemm_peak_gflops": peak, "torch": torch.__version__,
                                      "threads": torch.get_num_threads(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
