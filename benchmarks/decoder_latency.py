"""The 1024-px students' mask decoder (SAM's 256-d prompt encoder + mask decoder on a 64 x 64
embedding; the same for mobilesam_tinyvit, repvit_sam and sam_vit_b) per click, in eager PyTorch
and in each exported format, with the two-way transformer's attention computed ``direct`` (SAM's
code) and ``factorised`` (:class:`sam_edge.modeling.transformer.Attention`), in one run.

    python -m benchmarks.decoder_latency --out out/decoder_latency
    python -m benchmarks.decoder_latency --out out/decoder_latency --points 1 4 9 --repeats 50

The decoder graphs are exported from a model that carries that decoder behind a small ViT image
encoder (``sam_test_tiny`` at 1024 px with SAM's decoder fields; checked equal to
``mobilesam_tinyvit``'s), so that exporting the four formats takes a minute, not the 1024-px
encoders' ten; random weights (latency does not depend on them). Exports are kept in OUT and
reused by a rerun. Each timing is the median of ``--repeats`` runs of the decoder alone on one
prompt (the runtime's ``decode``: no image encoder, no mask resizing), with ``--threads`` threads.
Writes OUT/decoder_latency.json and OUT/decoder_latency.md; prints the table.

TFLite: its exporter converts the direct form whatever the model's mode (LiteRT ran the factorised
form's batched matmuls 1.5x slower), so its two columns time the same kind of graph; the
comparison came from exports made before that rule (in README).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

MODES = ("direct", "factorised")
DECODER_FIELDS = ("prompt_embed_dim", "decoder_depth", "decoder_num_heads", "decoder_mlp_dim",
                  "iou_head_hidden_dim", "num_multimask_outputs", "image_size")


def decoder_host(mode: str):
    """A model with the 1024-px students' decoder (and a small encoder), attention in ``mode``."""
    from sam_edge import create_model, get_config
    from sam_edge.modeling.transformer import Attention

    ref = get_config("mobilesam_tinyvit")
    torch.manual_seed(0)
    model = create_model("sam_test_tiny", **{f: getattr(ref, f) for f in DECODER_FIELDS})
    assert all(getattr(model.config, f) == getattr(ref, f) for f in DECODER_FIELDS)
    for m in model.modules():
        if isinstance(m, Attention):
            m.mode = mode
    return model


def _median_ms(fn, repeats: int) -> float:
    from benchmarks.core_latency import timed

    return 1000 * timed(fn, repeats, warmup=2)


def _prompt(n_points: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(n_points)
    coords = np.concatenate([rng.uniform(0, size, (n_points, 2)), np.zeros((1, 2))]).astype(np.float32)[None]
    labels = np.array([[1.0] * n_points + [-1.0]], np.float32)  # the runtime's padding point
    return coords, labels


def decoder_gflop(model, n_points: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    from sam_edge.export.wrappers import DecoderWrapper

    w = DecoderWrapper(model).eval()
    c, l = _prompt(n_points, model.image_size)
    g = model.prompt_encoder.image_embedding_size
    args = (torch.randn(1, model.mask_decoder.transformer_dim, *g), torch.from_numpy(c), torch.from_numpy(l),
            torch.zeros(1, 1, 4 * g[0], 4 * g[1]), torch.zeros(1))
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        w(*args)
    return fc.get_total_flops() / 1e9


def export_decoders(out: Path, mode: str, formats: list[str]) -> Path:
    from skimage import data

    from sam_edge.export.api import export_model
    from sam_edge.runtime import load_manifest

    d = out / mode
    have = set()
    if (d / "manifest.json").is_file():
        have = {a["format"] for a in load_manifest(d)["artifacts"]}
    todo = [f for f in formats if f not in have]
    if todo:
        t = time.perf_counter()
        export_model(decoder_host(mode), d, formats=todo, precisions=("fp32",),
                     verify_images=[data.astronaut()])
        print(f"exported {mode}: {', '.join(todo)} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return d


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    from sam_edge.formats import runnable_formats

    formats = runnable_formats()  # registered formats whose artifacts run here (Core ML: macOS only)
    ap.add_argument("--formats", nargs="+", default=formats, choices=formats)
    ap.add_argument("--points", nargs="+", type=int, default=[1])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ["SAM_EDGE_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)

    from skimage import data

    from sam_edge.export.wrappers import DecoderWrapper
    from sam_edge.runtime import load_predictor

    dirs = {mode: export_decoders(out, mode, args.formats) for mode in MODES}
    photo = data.astronaut()
    rows = []
    for n in args.points:
        row: dict = {"points": n}
        for mode in MODES:
            model = decoder_host(mode)
            row[f"gflop_{mode}"] = round(decoder_gflop(model, n), 3)
            w = DecoderWrapper(model).eval()
            preds = {}
            for fmt in args.formats:
                p = load_predictor(dirs[mode], precision="fp32", fmt=fmt)
                p.set_image(photo)
                preds[fmt] = p
            c, l = _prompt(n, model.image_size)
            with torch.no_grad():
                feats = torch.from_numpy(preds[args.formats[0]].features) if preds else torch.randn(1, 256, 64, 64)
                targs = (feats, torch.from_numpy(c), torch.from_numpy(l), torch.zeros(1, 1, 256, 256), torch.zeros(1))
                row[f"eager_{mode}"] = round(_median_ms(lambda: w(*targs), args.repeats), 2)
            for fmt, p in preds.items():
                if fmt == "tflite" and n + 1 > getattr(p, "max_points", 10**9):
                    continue
                row[f"{fmt}_{mode}"] = round(_median_ms(lambda: p.decode(c, l, None), args.repeats), 2)
        rows.append(row)

    cols = ["eager"] + args.formats
    lines = [f"Decoder per click (ms, median of {args.repeats}, {args.threads} threads, {platform.processor() or platform.machine()}), "
             "SAM's 256-d decoder on a 64 x 64 embedding, fp32", "",
             "| points | GFLOP direct / factorised | " + " | ".join(f"{c} direct | {c} factorised | ratio" for c in cols) + " |",
             "|---|---|" + "---|---|---|" * len(cols)]
    for r in rows:
        cells = [str(r["points"]), f"{r['gflop_direct']:.2f} / {r['gflop_factorised']:.2f}"]
        for c in cols:
            a, b = r.get(f"{c}_direct"), r.get(f"{c}_factorised")
            cells += [f"{a:.1f}" if a else "-", f"{b:.1f}" if b else "-", f"{a / b:.2f}x" if a and b else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    for r in rows:
        if "executorch_factorised" in r and "onnx_factorised" in r:
            lines.append(f"\n{r['points']} point(s): ExecuTorch / onnxruntime = "
                         f"{r['executorch_factorised'] / r['onnx_factorised']:.2f} (factorised), "
                         f"{r['executorch_direct'] / r['onnx_direct']:.2f} (direct)")
    text = "\n".join(lines) + "\n"
    print(text)
    from sam_edge.utils.io import write_bytes_atomic, write_json_atomic

    write_json_atomic(out / "decoder_latency.json", {"threads": args.threads, "repeats": args.repeats, "rows": rows,
                                                     "torch": torch.__version__, "machine": platform.machine()})
    write_bytes_atomic(out / "decoder_latency.md", text.encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
