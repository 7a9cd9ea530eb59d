#!/usr/bin/env bash
# The real-hardware check, one command on a GPU machine:
#   bash bench/gpu.sh [OUT_DIR]          # CLI checks (about a minute), then the benchmark (< 8 min)
#   GPU_SH_CLI_ONLY=1 bash bench/gpu.sh  # CLI checks only
# First the CLI itself, as users run it, on a tiny subset of the embedded Fashion-MNIST images:
# `rsbench certify` (the quickstart, --device auto), `--device cuda` with bf16, `--device cuda:0`,
# a rerun that must resume (0 written), `rsbench sweep` (expert, dual, cascade), and `torchrun --nproc-per-node 1 -m
# rsbench certify`; each run.json must say complete on cuda:N. Then the benchmark: ResNet-110,
# 20 synthetic 32x32 images, n = 100,000, every precision / layout option, against a bare forward
# loop. Needs only this repository and the machine's python3 with torch and rsbench's
# dependencies (numpy, scipy, pandas, pyarrow, click, rich, pyyaml, safetensors, filelock...);
# installs nothing, downloads nothing. Stops at the first failure (set -euo pipefail).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-.}}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export RSBENCH_CACHE="$work/cache" RSBENCH_DATA="$work/data"
small=(--limit 4 --n0 20 --num-samples 1000 --no-leaderboard)  # --n would be taken by torchrun
log="$out/gpu_cli.txt"
: >"$log"

step() {  # step NAME COMMAND...: run it, log it, stop the script on failure
  local name="$1"
  shift
  echo "== $name: $*" | tee -a "$log"
  "$@" 2>&1 | tee -a "$log"
}

step "quickstart (embedded default, --device auto)" \
  python3 -m rsbench certify "${small[@]}" --out "$work/auto"
step "--device cuda, bf16" \
  python3 -m rsbench certify embedded-fmnist-s0.50 --device cuda --precision bf16 "${small[@]}" \
  --out "$work/cuda"
step "--device cuda:0" \
  python3 -m rsbench certify embedded-fmnist-dual --device cuda:0 "${small[@]}" --out "$work/cuda0"
step "rerun resumes" \
  python3 -m rsbench certify embedded-fmnist-dual --device cuda:0 "${small[@]}" --out "$work/cuda0"
tr -s ' \n' '  ' <"$log" | grep -q "0 written, 4 already there" ||
  { echo "FAIL: the rerun did not resume" >&2; exit 1; }
cat >"$work/sweep.yaml" <<EOF
ids: [embedded-fmnist-s0.25, embedded-fmnist-dual, embedded-fmnist-cascade]
protocols: [cpu]
options: {limit: 4, n0: 20, n: 1000, device: cuda, out: $work/sweep}
EOF
step "sweep" python3 -m rsbench sweep "$work/sweep.yaml" --no-leaderboard
step "torchrun --nproc-per-node 1" \
  python3 -m torch.distributed.run --standalone --nproc-per-node 1 -m rsbench certify \
  embedded-fmnist-s0.50 --device cuda "${small[@]}" --out "$work/torchrun"
step "leaderboard" python3 -m rsbench leaderboard "$work/auto" --format markdown
step "run.json on the GPU" python3 - "$work" <<'EOF'
import json
import sys
from pathlib import Path

runs = sorted(Path(sys.argv[1]).glob("*/*/run.json"))
assert len(runs) >= 10, f"expected at least 10 runs, found {len(runs)}"
for path in runs:
    info = json.loads(path.read_text())
    assert info["status"] == "complete" and info["num_rows"] == 4, (path, info["status"])
    assert info["device"].startswith("cuda:"), (path, info["device"])
    print(f"ok {path.parent.name}: {info['device']} ({info['device_name']}), {info['num_rows']} rows")
EOF
echo "CLI checks passed" | tee -a "$log"

if [[ "${GPU_SH_CLI_ONLY:-0}" == "1" ]]; then
  exit 0
fi
PYTHONUNBUFFERED=1 timeout 470 python3 bench/gpu_certify.py --images 20 --n 100000 \
  --batch 10000 --budget 330 --json "$out/gpu_certify.json" 2>&1 | tee "$out/gpu_certify.txt"

# ---- sound noise: cost of float64 draws (cast to float32) against float32 draws (issue 13) ----
# bench/noise_cost.py through the engine itself; figures go to results/perf.md ("Sound noise").
# Alone: python3 bench/noise_cost.py --device cuda
PYTHONUNBUFFERED=1 timeout 150 python3 bench/noise_cost.py --device cuda --repeats 3 2>&1 |
  tee "$out/noise_cost.txt"
# ---- end of the sound-noise block ----
