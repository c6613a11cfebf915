"""The export table: every artifact of an export directory, its size on disk, its host latency
through its own runtime (where the runtime runs here), and its verification against eager
PyTorch (encoder embedding cosine, decoder mask IoU) from the manifest.

Measured in the same run, for ratios: eager PyTorch of the same model (random weights of the
manifest's config, reparameterised: latency does not depend on the values) and this machine's
fp32 GEMM peak. Prints a Markdown table, the int8-vs-fp32 encoder speed-ups per format, and the
targets (student encoder <= 0.30 s, decoder <= 20 ms per prompt, int8 >= 1.5x fp32, encoder at
>= 60 % of GEMM peak) as measured / target ratios.

    python -m benchmarks.export_table --artifacts out/export --markdown out/export/table.md
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks.core_latency import gemm_peak_gflops, timed

TARGET_ENCODER_S = 0.30
TARGET_DECODER_MS = 20.0
TARGET_INT8_SPEEDUP = 1.5
TARGET_PEAK_SHARE = 0.60


def _sample_image() -> np.ndarray:
    import sam_edge
    from sam_edge.image import load_image

    return load_image(Path(sam_edge.__file__).parent / "assets" / "astronaut.jpg")


def eager_model(manifest: dict):
    from sam_edge.encoders import fuse_model
    from sam_edge.registry import ModelConfig, build_sam

    torch.manual_seed(0)
    model = build_sam(ModelConfig.from_dict(manifest["model"]["config"])).eval()
    fuse_model(model)
    return model


def encoder_gflop(model) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, 3, model.image_size, model.image_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.image_encoder(x)
    return counter.get_total_flops() / 1e9


def decoder_feed(manifest: dict, embedding: np.ndarray, num_points: int) -> dict[str, np.ndarray]:
    from sam_edge.runtime.feeds import decoder_feed as feed

    s = manifest["image_size"]
    rng = np.random.default_rng(0)
    coords = np.concatenate([rng.uniform(0, s, (num_points, 2)), np.zeros((1, 2))]).astype(np.float32)[None]
    labels = np.array([[1.0] * num_points + [-1.0]], np.float32)
    return feed(embedding, coords, labels)


def measure(export_dir: Path, repeats: int, num_points: int, threads: int, formats=None) -> dict:
    from sam_edge.runtime import BackendUnavailable, get_backend, load_manifest
    from sam_edge.runtime.manifest import artifact_path
    from sam_edge.runtime.predictor import encoder_input

    torch.set_num_threads(threads)
    man = load_manifest(export_dir)
    model = eager_model(man)
    s = man["image_size"]
    image = _sample_image()
    x, _ = encoder_input(image, s, man["pixel_mean"], man["pixel_std"], man["normalize_inside"])
    xt = torch.from_numpy(encoder_input(image, s, man["pixel_mean"], man["pixel_std"], False)[0])
    with torch.no_grad():
        emb = model.image_encoder(xt).numpy()
        eager_enc = timed(lambda: model.image_encoder(xt), repeats, warmup=2)
        from sam_edge.export.wrappers import DecoderWrapper  # noqa: PLC0415 (benchmarks may import export)

        dec = DecoderWrapper(model, mask_outputs=man["mask_outputs"]).eval()
        feed = decoder_feed(man, emb, num_points)
        from sam_edge.runtime.feeds import DECODER_INPUT_NAMES

        targs = [torch.from_numpy(feed[k]) for k in DECODER_INPUT_NAMES]
        eager_dec = timed(lambda: dec(*targs), repeats * 5, warmup=3)
    peak = gemm_peak_gflops()
    gflop = encoder_gflop(model)
    rows = []
    for art in man["artifacts"]:
        if formats and art["format"] not in formats:
            continue
        v = art.get("verification") or {}
        m = v.get("metrics") or {}
        row = {"format": art["format"], "role": art["role"], "precision": art["precision"], "file": art["file"],
               "size_mb": art["size_bytes"] / 1e6, "cosine": m.get("cosine_min"), "mask_iou": m.get("mask_iou_mean"),
               "passed": v.get("passed"), "latency_ms": None, "note": ""}
        try:
            backend = get_backend(art["format"])
            for attr in ("threads", "num_threads"):
                if hasattr(backend, attr):
                    setattr(backend, attr, threads)
            sess = backend.load(artifact_path(export_dir, art))
            if art["role"] == "encoder":
                inp = {sess.input_names[0]: x}
                row["latency_ms"] = 1e3 * timed(lambda: sess.run(inp), repeats, warmup=2)
            else:
                row["latency_ms"] = 1e3 * timed(lambda: sess.run(feed), repeats * 5, warmup=3)
        except BackendUnavailable as exc:
            row["note"] = str(exc).split(";")[0]
        rows.append(row)
    return {"export_dir": str(export_dir), "model": man["model"]["name"], "threads": threads,
            "num_points": num_points, "repeats": repeats, "gemm_peak_gflops": peak, "encoder_gflop": gflop,
            "eager_encoder_ms": 1e3 * eager_enc, "eager_decoder_ms": 1e3 * eager_dec,
            "machine": f"{platform.machine()} {platform.processor() or ''} torch {torch.__version__}".strip(),
            "rows": rows}


def _f(v, fmt):
    return "-" if v is None else format(v, fmt)


def markdown(res: dict) -> str:
    lines = [
        f"Model `{res['model']}`; {res['threads']} threads; decoder with {res['num_points']} points; "
        f"median of {res['repeats']} (encoder) / {5 * res['repeats']} (decoder) runs. "
        f"Eager PyTorch baseline in the same run: encoder {res['eager_encoder_ms']:.1f} ms, "
        f"decoder {res['eager_decoder_ms']:.2f} ms. fp32 GEMM peak {res['gemm_peak_gflops']:.0f} GFLOP/s; "
        f"encoder {res['encoder_gflop']:.2f} GFLOP.",
        "",
        "| format | part | precision | size (MB) | latency (ms) | vs fp32 | vs eager | embedding cosine | mask IoU | verified |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    fp32 = {(r["format"], r["role"]): r["latency_ms"] for r in res["rows"] if r["precision"] == "fp32"}
    for r in res["rows"]:
        lat = r["latency_ms"]
        base = fp32.get((r["format"], r["role"]))
        eager = res["eager_encoder_ms"] if r["role"] == "encoder" else res["eager_decoder_ms"]
        vs32 = f"{base / lat:.2f}x" if lat and base else "-"
        vse = f"{eager / lat:.2f}x" if lat else "-"
        ver = {True: "yes", False: "missed (reason in manifest)", None: "spec only (needs macOS)"}[r["passed"]]
        lat_s = _f(lat, ".2f") if lat else ("not runnable here" if r["note"] else "-")
        lines.append(f"| {r['format']} | {r['role']} | {r['precision']} | {r['size_mb']:.2f} | {lat_s} | {vs32} | {vse} "
                     f"| {_f(r['cosine'], '.5f')} | {_f(r['mask_iou'], '.4f')} | {ver} |")
    return "\n".join(lines) + "\n"


def summary(res: dict) -> str:
    out = []
    enc = {(r["format"], r["precision"]): r["latency_ms"] for r in res["rows"] if r["role"] == "encoder" and r["latency_ms"]}
    dec = [r["latency_ms"] for r in res["rows"] if r["role"] == "decoder" and r["latency_ms"]]
    for fmt in sorted({f for f, _ in enc}):
        if (fmt, "fp32") not in enc:
            continue
        for (f, p), ms in sorted(enc.items()):
            if f == fmt and p.startswith("int8"):
                sp = enc[(fmt, "fp32")] / ms
                out.append(f"{fmt} encoder {p} vs fp32: {sp:.2f}x faster (target >= {TARGET_INT8_SPEEDUP}x: "
                           f"{'met' if sp >= TARGET_INT8_SPEEDUP else 'MISSED'})")
    if enc:
        (bf, bp), best = min(enc.items(), key=lambda kv: kv[1])
        share = res["encoder_gflop"] / (best / 1e3) / res["gemm_peak_gflops"]
        out.append(f"best encoder: {bf} {bp} {best:.1f} ms = {best / 1e3 / TARGET_ENCODER_S:.3f} of the "
                   f"{TARGET_ENCODER_S} s target; {share:.1%} of GEMM peak (target {TARGET_PEAK_SHARE:.0%}; "
                   f"int8 variants counted against the fp32 peak)")
        fp32 = {k: v for k, v in enc.items() if k[1] == "fp32"}
        if fp32:
            (bf, _), best32 = min(fp32.items(), key=lambda kv: kv[1])
            share32 = res["encoder_gflop"] / (best32 / 1e3) / res["gemm_peak_gflops"]
            out.append(f"best fp32 encoder: {bf} {best32:.1f} ms, {share32:.1%} of the fp32 GEMM peak")
    if dec:
        best = min(dec)
        out.append(f"best decoder: {best:.2f} ms per prompt = {best / TARGET_DECODER_MS:.3f} of the "
                   f"{TARGET_DECODER_MS:.0f} ms target")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", required=True, help="export directory (manifest.json)")
    ap.add_argument("--repeats", type=int, default=20, help="encoder runs timed (decoder: 5x) (default 20)")
    ap.add_argument("--threads", type=int, default=2, help="threads per runtime (default 2)")
    ap.add_argument("--points", type=int, default=2, help="prompt points per decoder call (default 2)")
    ap.add_argument("--formats", help="comma-separated formats to include (default all)")
    ap.add_argument("--markdown", help="write the table (and summary) as Markdown here")
    ap.add_argument("--json", help="write the raw results as JSON here")
    args = ap.parse_args(argv)
    from sam_edge.utils.io import atomic_path, write_json_atomic

    res = measure(Path(args.artifacts), args.repeats, args.points, args.threads,
                  args.formats.split(",") if args.formats else None)
    text = markdown(res) + "\n" + summary(res) + "\n"
    print(text)
    if args.markdown:
        with atomic_path(Path(args.markdown)) as tmp:
            Path(tmp).write_text(text)
    if args.json:
        write_json_atomic(Path(args.json), res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
