"""Latency and IoU drop of exported artifacts on a device: encoder and decoder timed separately
(warm-up, N runs: min / p50 / p90 / std, threads), load time, peak RSS, size on disk; masks
compared with the teacher's, the fp32 pipeline's and the ground truth per prompt type (mIoU and
share under 0.5). Devices: host, ssh://user@host[:port], adb://SERIAL. Results JSON is written
after every export directory; rerunning with the same --out resumes."""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifacts", nargs="+", help="export directories (sam-edge export --out)")
    parser.add_argument("--ingest", metavar="FILE",
                        help="instead of running: convert an iOS / Android app benchmark JSON or an Xcode Core ML report "
                             "summary (CSV/JSON) into a results file for `sam-edge report`")
    parser.add_argument("--remote-python", default="python3", help="ssh://: python on the remote box (default python3)")
    parser.add_argument("--ssh-option", action="append", default=[], metavar="OPT",
                        help="ssh://: extra ssh argument, e.g. -i ~/.ssh/jetson (repeatable)")
    parser.add_argument("--device", default="host", help="host (default), cuda (onnxruntime CUDA/TensorRT providers, torch on the GPU), "
                             "ssh://user@host[:port] or adb://SERIAL")
    parser.add_argument("--data", help="SA-1B-format folder with ground-truth masks")
    parser.add_argument("--teacher", help="teacher model name (e.g. sam_demo_teacher, sam_vit_h)")
    parser.add_argument("--teacher-checkpoint", help="teacher weights (default: bundled)")
    parser.add_argument("--prompts", default="point,box,points2", help="comma-separated prompt types (default point,box,points2)")
    parser.add_argument("--num-images", type=int, default=16, help="images (default 16)")
    parser.add_argument("--masks-per-image", type=int, default=4, help="ground-truth masks per image (default 4)")
    parser.add_argument("--runs", type=int, default=20, help="timed encoder runs (decoder: 5x) (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up runs (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="runtime threads (default 2)")
    parser.add_argument("--formats", help="only these formats (comma-separated)")
    parser.add_argument("--torch-model", help="host: also run this PyTorch model (name or .safetensors; the model the "
                                              "artifacts were exported from) as format 'torch'")
    parser.add_argument("--torch-checkpoint", help="weights for --torch-model given by name")
    parser.add_argument("--torch-variants", default="eager_fp32,torchao_int8_weight_only",
                        help="with --torch-model: eager_fp32, compile_fp32, torchao_int8_weight_only, torchao_int8_dynamic "
                             "(default eager_fp32,torchao_int8_weight_only)")
    parser.add_argument("--peers", action="store_true",
                        help="also time eager teacher and SAM ViT-H encoders in the same run (ViT-H: ~1 min here)")
    parser.add_argument("--seed", type=int, default=0, help="image / mask / prompt choice (default 0)")
    parser.add_argument("--out", required=True, help="results JSON file")


def run(args: argparse.Namespace) -> int:
    from sam_edge.bench.harness import bench, ingest_results

    argv = ["sam-edge", "bench", *sys.argv[2:]] if sys.argv[1:2] == ["bench"] else None
    if args.ingest:
        res = ingest_results(args.ingest, args.out, argv)
        print(f"{len(res['rows'])} row(s) from {args.ingest} ({res['device']}) -> {args.out}")
        return 0
    missing = [f for f, v in (("--artifacts", args.artifacts), ("--data", args.data), ("--teacher", args.teacher)) if not v]
    if missing:
        raise ValueError(f"sam-edge bench needs {', '.join(missing)} (or --ingest FILE)")
    opts = {}
    if args.device.startswith("ssh://"):
        import shlex

        opts = {"remote_python": args.remote_python,
                "ssh_options": tuple(x for o in args.ssh_option for x in shlex.split(o))}
    if args.num_images < 1 or args.runs < 1 or args.warmup < 0 or args.masks_per_image < 1:
        raise ValueError("--num-images, --runs and --masks-per-image must be >= 1, --warmup >= 0")
    res = bench(args.artifacts, args.device, args.data, args.teacher, args.out,
                teacher_checkpoint=args.teacher_checkpoint, prompt_types=[t for t in args.prompts.split(",") if t],
                num_images=args.num_images, masks_per_image=args.masks_per_image, runs=args.runs,
                warmup=args.warmup, threads=args.threads,
                formats=args.formats.split(",") if args.formats else None, with_peers=args.peers,
                seed=args.seed, argv=argv, device_options=opts, torch_model=args.torch_model,
                torch_checkpoint=args.torch_checkpoint,
                torch_variants=[v for v in args.torch_variants.split(",") if v])
    from sam_edge.bench.report import markdown_table

    print(markdown_table([res]))
    print(f"results: {args.out}")
    return 0
