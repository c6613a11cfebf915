"""``sam-edge report``: merge ``sam-edge bench`` results (any devices) into one JSON, a CSV, a
Markdown report and PNG plots (latency vs mIoU Pareto chart per device, latency bars)."""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any, Sequence


def _ms(v) -> Any:
    return None if not v else v.get("p50")


def flat_rows(results: Sequence[dict]) -> list[dict[str, Any]]:
    rows = []
    for res in results:
        env = res.get("device_env") or res.get("host_env") or {}
        for r in res["rows"]:
            iou = r.get("iou") or {}
            vt = [v["vs_teacher"]["miou"] for v in iou.values() if v and v.get("vs_teacher")]
            vf = [v["vs_fp32"]["miou"] for v in iou.values() if v and v.get("vs_fp32")]
            row = {
                "device": res["device"], "cpu": env.get("cpu"), "threads": r.get("threads"),
                "model": r["model"], "format": r["format"], "precision": r["precision"],
                "encoder_ms_p50": _ms(r.get("encoder_ms")), "encoder_ms_p90": (r.get("encoder_ms") or {}).get("p90"),
                "encoder_ms_std": (r.get("encoder_ms") or {}).get("std"),
                "decoder_ms_p50": _ms(r.get("decoder_ms")), "decoder_ms_p90": (r.get("decoder_ms") or {}).get("p90"),
                "size_mb": round((r.get("size_mb") or {}).get("encoder", 0) + (r.get("size_mb") or {}).get("decoder", 0), 3),
                "peak_rss_mb": r.get("peak_rss_mb"),
                "miou_vs_teacher": sum(vt) / len(vt) if vt else None,
                "drop_vs_fp32": 1 - sum(vf) / len(vf) if vf else None,
                "error": r.get("error"),
            }
            for t, v in iou.items():
                if v:
                    row[f"{t}_miou_vs_teacher"] = v["vs_teacher"]["miou"]
                    row[f"{t}_under_0_5_vs_teacher"] = v["vs_teacher"]["under_0_5"]
                    row[f"{t}_miou_vs_gt"] = v["vs_gt"]["miou"]
            rows.append(row)
    # mIoU drop: fp32 pipeline's mIoU vs teacher minus this one's (same device and format)
    base = {(r["device"], r["format"]): r["miou_vs_teacher"] for r in rows if r["precision"] in ("fp32", "eager_fp32")}
    for r in rows:
        b = base.get((r["device"], r["format"]))
        r["miou_drop_vs_fp32"] = None if b is None or r["miou_vs_teacher"] is None else b - r["miou_vs_teacher"]
    return rows


def _f(v, fmt=".2f") -> str:
    return "-" if v is None else format(v, fmt)


def markdown_table(results: Sequence[dict]) -> str:
    rows = flat_rows(results)
    types = sorted({k.split("_miou_vs_teacher")[0] for r in rows for k in r if k.endswith("_miou_vs_teacher")
                    and k != "miou_vs_teacher"})
    head = ["device", "format", "precision", "encoder ms (p50)", "decoder ms (p50)", "size MB",
            "mIoU vs teacher"] + [f"{t} vs teacher" for t in types] + ["mIoU drop vs fp32", "1 - IoU vs fp32 masks"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: (r["device"], r["encoder_ms_p50"] or 1e9)):
        cells = [r["device"], r["format"], r["precision"], _f(r["encoder_ms_p50"]), _f(r["decoder_ms_p50"]),
                 _f(r["size_mb"]), _f(r["miou_vs_teacher"], ".4f")]
        cells += [_f(r.get(f"{t}_miou_vs_teacher"), ".4f") for t in types]
        cells += [_f(r["miou_drop_vs_fp32"], "+.4f")]
        cells += [_f(r["drop_vs_fp32"], ".4f") if r["error"] is None else f"error: {r['error']}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def peer_lines(results: Sequence[dict]) -> list[str]:
    out = []
    for res in results:
        peers = res.get("peers")
        if not peers:
            continue
        enc = [(r["encoder_ms"]["p50"], r["format"], r["precision"], r["artifacts"]) for r in res["rows"]
               if r.get("encoder_ms") and r["format"] != "torch"]
        if not enc:
            continue
        best, fmt, prec, art = min(enc)
        size = (res.get("image_sizes") or {}).get(art)
        vit_h = peers["sam_vit_h_encoder_ms"]["p50"]
        teach = peers["teacher_encoder_ms"]["p50"]
        out.append(f"- {res['device']}: SAM ViT-H encoder (eager fp32, 1024 px) {vit_h / 1e3:.1f} s; teacher "
                   f"`{res['teacher']}` encoder {teach:.1f} ms; best student artifact encoder {best:.2f} ms "
                   f"({fmt} {prec}{f', {size} px input' if size else ''}): **ViT-H / best student = {vit_h / best:,.0f}x**, teacher / best student = "
                   f"{teach / best:.1f}x (measured in one run)")
    return out


def plots(results: Sequence[dict], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sam_edge.utils.io import atomic_path

    rows = [r for r in flat_rows(results) if r["encoder_ms_p50"] is not None]
    files = []
    for device in sorted({r["device"] for r in rows}):
        dr = [r for r in rows if r["device"] == device and r["miou_vs_teacher"] is not None]
        if not dr:
            continue
        fig, ax = plt.subplots(figsize=(8, 4.8))
        markers = {"onnx": "o", "executorch": "s", "tflite": "^", "coreml": "D", "torch": "P"}
        for r in sorted(dr, key=lambda r: (r["format"], r["precision"])):
            ax.scatter(r["encoder_ms_p50"], r["miou_vs_teacher"], s=40, marker=markers.get(r["format"], "x"),
                       label=f"{r['format']} {r['precision']} ({r['encoder_ms_p50']:.2f} ms, {r['miou_vs_teacher']:.3f})")
        front, best = [], -1.0
        for r in sorted(dr, key=lambda r: r["encoder_ms_p50"]):
            if r["miou_vs_teacher"] > best:
                front.append(r)
                best = r["miou_vs_teacher"]
        ax.plot([r["encoder_ms_p50"] for r in front], [r["miou_vs_teacher"] for r in front], "k--", lw=1,
                label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel("encoder latency p50 (ms, log scale)")
        ax.set_ylabel("mIoU vs teacher (all prompt types)")
        ax.set_title(f"latency vs mIoU: {device}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        name = f"pareto_{device.replace('://', '_').replace('/', '_').replace(':', '_')}.png"
        with atomic_path(out / name) as tmp:
            fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        files.append(name)
    if rows:
        labels = [f"{r['device']}\n{r['format']} {r['precision']}" for r in rows]
        fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(rows)), 4.5))
        xs = range(len(rows))
        ax.bar([x - 0.2 for x in xs], [r["encoder_ms_p50"] for r in rows], width=0.4, label="encoder")
        ax.bar([x + 0.2 for x in xs], [r["decoder_ms_p50"] or 0 for r in rows], width=0.4, label="decoder (per prompt)")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("latency p50 (ms)")
        ax.legend()
        ax.grid(axis="y", alpha=0.3)
        with atomic_path(out / "latency.png") as tmp:
            fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        files.append("latency.png")
    return files


def report(paths: Sequence[str | Path], out: str | Path) -> dict[str, Any]:
    from sam_edge.utils.io import atomic_path, write_json_atomic

    from sam_edge.bench.harness import SCHEMA, BenchError

    results = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise BenchError(f"results file {p} does not exist (write one with `sam-edge bench --out`)")
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise BenchError(f"results file {p}: not JSON ({exc})") from exc
        if data.get("schema") != SCHEMA:
            raise BenchError(f"results file {p}: schema {data.get('schema')!r}, expected {SCHEMA!r}")
        results.append(data)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "merged.json", {"schema": SCHEMA, "results": results})
    rows = flat_rows(results)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_path(out / "results.csv") as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
    pngs = plots(results, out)
    md = ["# sam-edge benchmark report", ""]
    for res in results:
        env = res.get("device_env") or {}
        md.append(f"- **{res['device']}**: {env.get('cpu')} ({env.get('cpu_count')} cores), threads "
                  f"{env.get('threads')}, {', '.join(f'{k} {v}' for k, v in (env.get('versions') or {}).items())}; "
                  f"git {str(res.get('git_commit'))[:10]}; data `{res['data']}` ({res['num_images']} images, "
                  f"{res['num_prompts']} prompts: {', '.join(res['prompt_types'])}); teacher `{res['teacher']}`"
                  + (f"; command `{' '.join(res['command'])}`" if res.get("command") else ""))
        tg = res.get("teacher_vs_gt") or {}
        if tg:
            md.append("  teacher vs ground truth: " + ", ".join(f"{t} {v['miou']:.3f}" for t, v in tg.items()))
    md += ["", markdown_table(results)]
    peers = peer_lines(results)
    if peers:
        md += ["Peers, measured in the same run:", ""] + peers + [""]
    md += [f"![{p}]({p})" for p in pngs]
    with atomic_path(out / "report.md") as tmp:
        Path(tmp).write_text("\n".join(md) + "\n")
    return {"rows": rows, "plots": pngs}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", help="results JSON files from `sam-edge bench`")
    parser.add_argument("--out", required=True, help="report folder: merged.json, results.csv, report.md, *.png")


def run(args: argparse.Namespace) -> int:
    res = report(args.results, args.out)
    print(f"{len(res['rows'])} rows, plots {', '.join(res['plots'])} -> {args.out}/report.md")
    return 0
