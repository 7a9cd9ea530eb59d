#!/usr/bin/env bash
# The GPU check of denoised experts, one command on a GPU machine (a few minutes):
#   bash bench/gpu_denoised.sh [OUT_DIR]
# 1. the CLI: `rsbench certify` of the embedded denoised experts at sigma 0.5 (the small_denoiser
#    one and the diffusion U-Net one, embedded-fmnist-ddpm) and of the embedded denoised dual model
#    on --device cuda (4 images); each run.json must say complete on cuda:N; the U-Net denoised
#    expert's logits on CUDA match CPU's;
# 2. the Hub-architecture path on CUDA: a tiny random-weight transformers ViT behind the one-step
#    diffusion denoiser (a tiny noise-prediction net stands in for the diffusers UNet, which the
#    machine may not have), logits on CUDA == on CPU, one certificate on CUDA;
# 3. bench/denoised_throughput.py on CUDA: samples/s of the denoised experts vs the Gaussian expert.
# Needs only this repository and the machine's python3 with torch, transformers and rsbench's
# dependencies (diffusers among them); installs nothing, downloads nothing. Stops at the first
# failure.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-.}}"
mkdir -p "$out"
log="$out/gpu_denoised.txt"
: >"$log"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export RSBENCH_CACHE="$work/cache" RSBENCH_DATA="$work/data"
dev="${GPU_DENOISED_DEVICE:-cuda}"
small=(--limit 4 --n0 20 --num-samples 1000 --no-leaderboard)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$log" || true

check_run() {  # check_run DIR: the run.json under DIR says complete on the device
  python3 - "$1" "$dev" <<'PY' 2>&1 | tee -a "$log"
import glob, json, sys
(path,) = glob.glob(f"{sys.argv[1]}/*/run.json")
info = json.load(open(path))
assert info["status"] == "complete" and info["device"].startswith(sys.argv[2]), info
print(f"run.json: {info['status']} on {info['device']} ({info.get('device_name')})")
PY
}

echo "== certify embedded-fmnist-denoised --sigma 0.5 --device $dev" | tee -a "$log"
python3 -m rsbench certify embedded-fmnist-denoised --sigma 0.5 --device "$dev" "${small[@]}" \
  --out "$work/single" 2>&1 | tee -a "$log"
check_run "$work/single"
echo "== certify embedded-fmnist-ddpm --sigma 0.5 --device $dev (diffusion U-Net denoiser)" | tee -a "$log"
python3 -m rsbench certify embedded-fmnist-ddpm --sigma 0.5 --device "$dev" "${small[@]}" \
  --out "$work/unet" 2>&1 | tee -a "$log"
check_run "$work/unet"
python3 - "$dev" <<'PY' 2>&1 | tee -a "$log"
import sys

import torch

from rsbench.models.loading import load_model
from rsbench.zoo.registry import load_zoo

dev = torch.device(sys.argv[1] if sys.argv[1] != "cuda" else "cuda:0")
entry = load_zoo().get("embedded-fmnist-ddpm")
z = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    cpu = load_model(entry, "cpu", sigma=0.5)(z)
    gpu = load_model(entry, dev, sigma=0.5)(z.to(dev)).cpu()
print(f"embedded-fmnist-ddpm: max |logits cpu - {dev}| = {(cpu - gpu).abs().max():.2e}")
assert torch.allclose(cpu, gpu, atol=1e-3), "U-Net denoised logits differ between CPU and GPU"
PY
echo "== certify embedded-fmnist-denoised-dual --device $dev" | tee -a "$log"
python3 -m rsbench certify embedded-fmnist-denoised-dual --device "$dev" "${small[@]}" \
  --out "$work/dual" 2>&1 | tee -a "$log"
check_run "$work/dual"

echo "== Hub-architecture path (tiny ViT + one-step diffusion denoiser) on $dev" | tee -a "$log"
python3 - "$dev" <<'PY' 2>&1 | tee -a "$log"
import sys

import torch
import transformers
from torch import nn

from rsbench.models.denoised import DenoisedClassifier, DiffusionDenoiser, HubClassifier
from rsbench.models.network import InputLayer
from rsbench.engine.smoothing import SmoothedClassifier

dev = torch.device(sys.argv[1] if sys.argv[1] != "cuda" else "cuda:0")


class Eps(nn.Module):  # a tiny noise-prediction net (x_t, t) -> eps, standing in for a UNet
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x, t):
        return self.conv(x) * (1 + t.view(-1, 1, 1, 1).float() / 1000)


torch.manual_seed(0)
config = transformers.ViTConfig(image_size=16, patch_size=8, num_channels=3, hidden_size=16,
                                num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                num_labels=10)
vit = transformers.ViTForImageClassification(config).eval()
betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
model = DenoisedClassifier(
    DiffusionDenoiser(Eps(), torch.cumprod(1 - betas, 0)),
    HubClassifier(vit, InputLayer("normalize", [0.5] * 3, [0.5] * 3), size=16),
    0.5,
).eval()
z = torch.rand(8, 3, 8, 8)
with torch.no_grad():
    cpu = model(z)
    model.to(dev)
    gpu = model(z.to(dev)).cpu()
print(f"transformers {transformers.__version__}; max |logits cpu - {dev}| = {(cpu - gpu).abs().max():.2e}")
assert torch.allclose(cpu, gpu, atol=1e-4)
cert = SmoothedClassifier(model, 10, 0.5, batch_size=1000, device=dev).certify(
    torch.rand(3, 8, 8), n0=20, n=1000, alpha=0.001, seed=0
)
print(f"certificate on {dev}: prediction {cert.prediction}, nA {cert.nA}/1000, radius {cert.radius:.4f}")
PY

echo "== bench/denoised_throughput.py --device $dev" | tee -a "$log"
python3 bench/denoised_throughput.py --device "$dev" --images 32 --n0 100 --n 10000 --batch 10000 \
  --rounds 3 2>&1 | tee -a "$log"
python3 bench/denoised_throughput.py --device "$dev" --sigma 1.0 --images 32 --n0 100 --n 10000 \
  --batch 10000 --rounds 3 2>&1 | tee -a "$log"
echo "all denoised GPU checks passed" | tee -a "$log"
