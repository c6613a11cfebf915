#!/usr/bin/env bash
# The training-engine benchmark on a lent GPU machine, in one go (the device tool runs it from the
# repository root): synthetic data generated on the machine's CPUs, pretrain (full recipe,
# 32 images x 8 masks) / stage 1 / stage 2 on CUDA with the GPU kernel share from torch.profiler,
# the pretrain step also with torch.compile of the decoder, and the same on the pre-engine
# revision for the before/after table. Results (JSON + Markdown + log) go to the folder given as
# the first argument (default $OUT, else out/gpu_train_step).
#   bash benchmarks/gpu_train_step.sh "$OUT"
# Tried on the CPU with tiny sizes: DEVICE=cpu SMALL=1 bash benchmarks/gpu_train_step.sh /tmp/ts
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-out/gpu_train_step}}"
DEVICE="${DEVICE:-cuda}"
BEFORE="${BEFORE:-7adaf2c}"   # the last revision before the training engine
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -n "${SMALL:-}" ]; then
    SIZE=(--pretrain-batch 2 --stage1-batch 4 --stage2-batch 2 --warmup 1 --steps 2 --profile-steps 1)
    NDATA=16
else
    SIZE=(--pretrain-batch 32 --stage1-batch 64 --stage2-batch 16 --warmup 5 --steps 20 --profile-steps 5)
    NDATA=256
fi
DATA="$OUT_DIR/data"
python -c "from sam_edge.data.synth import generate_dataset; generate_dataset('$DATA', num_images=$NDATA, image_size=256, seed=0, workers=8)" \
    >"$OUT_DIR/data.log" 2>&1 || python -c "from sam_edge.data.synth import generate_dataset; generate_dataset('$DATA', num_images=$NDATA, image_size=256, seed=0)"
git rev-parse --verify -q "$BEFORE^{commit}" >/dev/null || BEFORE=""
{
    python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())"
    [ "$DEVICE" = cuda ] && { python -m pytest -q -p no:cacheprovider tests/test_pretrain.py -k "never_waits" 2>&1 | tail -15 || true; }
    python -m benchmarks.train_step --device "$DEVICE" --data "$DATA" "${SIZE[@]}" ${BEFORE:+--compare-rev "$BEFORE"} \
        --out "$OUT_DIR/eager"
    timeout 420 python -m benchmarks.train_step --device "$DEVICE" --data "$DATA" "${SIZE[@]}" --tasks pretrain --compile \
        --out "$OUT_DIR/compile" || echo "compile run failed"
} 2>&1 | tee "$OUT_DIR/train_step.log"
rm -rf "$DATA"
tar -czf "$OUT_DIR.tar.gz" -C "$(dirname "$OUT_DIR")" "$(basename "$OUT_DIR")" && mv "$OUT_DIR.tar.gz" "$OUT_DIR/results.tar.gz" || true
