#!/usr/bin/env bash
# The GPU figures in one go (about 6-9 minutes on one H100/H200): ResNet50 training at 224 px
# with bf16 + channels_last, the population embedding's EfficientNet-B5 at 512 x 192 px in bf16
# against its forward floor, label-only queries per second against the forward floor (and ART),
# canvas rendering, DP-SGD against non-DP throughput, and the leakage monitor's overhead.
#
#   bash benchmarks/gpu_checks.sh                       # on a GPU: results in benchmarks/results/gpu/
#   bash benchmarks/gpu_checks.sh --device cpu --smoke  # check the script on a CPU at tiny sizes
#
# Extra arguments go to benchmarks/run_all.py (a later --device or --out-dir wins). Each script
# gets at most 240 s; the table of figures against goals is printed at the end and written to
# <out-dir>/summary.md, with the card's name in every result's "machine" field.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${BENCH_OUT_DIR:-benchmarks/results/gpu}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
date -u +"%Y-%m-%dT%H:%M:%SZ"
exec python benchmarks/run_all.py --gpu-checks --device cuda --threads 0 --timeout 240 \
    --out-dir "$OUT_DIR" "$@"
