#!/usr/bin/env bash
# One prepared GPU benchmark (under 8 minutes on an H100): ResNet-110, 20 synthetic 32x32 images,
# n = 100,000, every precision / layout option, against a bare forward loop. Needs only this
# repository and the machine's python3 with torch, numpy and scipy; installs nothing.
#   bash bench/gpu.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-.}}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
PYTHONUNBUFFERED=1 PYTHONPATH=. timeout 470 python3 bench/gpu_certify.py --images 20 --n 100000 \
  --batch 10000 --budget 330 --json "$out/gpu_certify.json" 2>&1 | tee "$out/gpu_certify.txt"
