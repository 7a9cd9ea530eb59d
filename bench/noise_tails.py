"""How far is torch's Gaussian noise from the Gaussian that the certificates assume?

Prints (see docs/reliability.md, "Floating point"):

1. the largest |z| that ``torch.randn`` can return, derived from the implementation by
   evaluating its Box-Muller formula at the smallest uniform it can draw (float32 arithmetic as
   the kernels do it): CPU float32 (24-bit uniforms, ``u1 = 1 - U`` >= 2^-24), CUDA float32 (curand
   Philox ``_curand_box_muller``: ``u = x * 2^-32 + 2^-33`` >= 2^-33), and the float64 paths;
2. the empirical max |z| over ``--draws`` draws on the chosen device, and the count of |z| > 5
   against the count a true Gaussian gives (a check that the bulk of the tail is right);
3. the tail mass a true N(0, I_d) puts where the sampler can never go, the total-variation gap
   ``eps_d = 1 - (1 - q)^d`` (``q`` = mass folded per coordinate pair, counted per coordinate for a
   conservative bound), for d = 784, 3072, 150528;
4. what a sound correction ``pA_lower - eps_d`` would cost in radius at typical pA_lower;
5. the float64 Clopper-Pearson bound of rsbench.engine.stats against 50-digit mpmath (is it ever above the
   exact bound, and by how much in radius?);
6. the cost of the proposed fix (draw float64 noise, cast to float32) against float32 noise.

Usage: ``python bench/noise_tails.py [--draws 1e8] [--device cpu|cuda] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from scipy.stats import norm

DIMS = {"Fashion-MNIST 1x28x28": 784, "CIFAR-10 3x32x32": 3072, "ImageNet 3x224x224": 150528}


def max_abs_z() -> dict[str, tuple[float, float]]:
    """Largest |z| per sampler and the probability q that one Box-Muller pair is folded onto it.

    Each sampler draws uniforms on a grid; the smallest grid cell of ``u1`` stands for every true
    radius beyond the largest one it can produce, so a true Gaussian pair lands there with
    probability ``q`` (the cell's width) and the sampler never goes further.
    """
    f32 = np.float32
    with np.errstate(all="ignore"):
        # CPU float32 (normal_fill_16 / normal_fill_16_AVX2): U = (bits & (2^24 - 1)) * 2^-24,
        # u1 = 1 - U, radius = sqrt(-2 log u1), z = radius * cos(2 pi u2) (u2 = 0 gives cos = 1)
        u1_cpu = f32(1.0) - (f32(2**24 - 1) * f32(2.0**-24))
        cpu32 = float(np.sqrt(f32(-2.0) * np.log(u1_cpu)))
        # CUDA float32 (curand_normal4 -> _curand_box_muller): u = x * 2^-32 + 2^-33, x = 0
        u_cuda = f32(0) * f32(2.0**-32) + f32(2.0**-33)
        cuda32 = float(np.sqrt(f32(-2.0) * np.log(u_cuda)))
    # float64 paths: CPU 53-bit uniforms (u1 >= 2^-53); CUDA curand_normal2_double (u >= 2^-54)
    cpu64 = math.sqrt(-2.0 * math.log(2.0**-53))
    cuda64 = math.sqrt(-2.0 * math.log(2.0**-54))
    return {
        "cpu float32": (cpu32, 2.0**-24),
        "cuda float32": (cuda32, 2.0**-32),
        "cpu float64": (cpu64, 2.0**-53),
        "cuda float64": (cuda64, 2.0**-53),
    }


def empirical(draws: int, device: str, chunk: int = 10_000_000) -> tuple[float, int, float]:
    """(max |z|, count of |z| > 5, seconds) over ``draws`` float32 draws of ``torch.randn``."""
    generator = torch.Generator(device=device).manual_seed(20240601)
    largest, over5, left = 0.0, 0, draws
    start = time.perf_counter()
    while left > 0:
        size = min(chunk, left)
        left -= size
        z = torch.randn(size, generator=generator, device=device, dtype=torch.float32).abs_()
        largest = max(largest, float(z.max()))
        over5 += int((z > 5.0).sum())
    return largest, over5, time.perf_counter() - start


def tv_gap(q: float, d: int) -> float:
    """``1 - (1 - q)^d`` computed without cancellation: at most d coordinates touch a folded pair."""
    return -math.expm1(d * math.log1p(-q))


def radius_cost(p_lower: float, eps: float) -> float:
    """Radius (units of sigma) lost by certifying with ``p_lower - eps`` instead of ``p_lower``."""
    corrected = p_lower - eps
    before = norm.ppf(p_lower)
    after = norm.ppf(corrected) if corrected > 0.5 else 0.0
    return float(before - after)


def _upper_binomial_tail(n: int, k: int, p):
    """P[Bin(n, p) >= k] = I_p(k, n - k + 1) in mpmath precision (sum from j = n down to k)."""

    term = p**n
    total = term
    ratio = (1 - p) / p
    for j in range(n, k, -1):  # term_{j-1} = term_j * j / (n - j + 1) * (1 - p) / p
        term = term * j / (n - j + 1) * ratio
        total += term
    return total


def clopper_pearson_check() -> tuple[float, float, int, int]:
    """Max |scipy - exact| of the lower bound, worst radius error, cases above exact, cases.

    The exact bound p* solves I_p(k, n - k + 1) = alpha (regularised incomplete beta, increasing in
    p). At rsbench's value p, F = I_p - alpha is evaluated with 50 digits: F > 0 means p > p*
    (not conservative); the error is F / (dI/dp) to first order.
    """
    import mpmath

    from rsbench.engine import stats

    mpmath.mp.dps = 50
    worst_p, worst_r, above, cases = 0.0, 0.0, 0, 0
    for n in (100, 1000, 10_000, 100_000):
        for alpha in (0.001, 0.0005, 0.01):
            for k in sorted({n, n - 1, n - 2, n - 10, int(0.999 * n), int(0.99 * n), int(0.9 * n)}):
                if k < 1:
                    continue
                got = float(stats.clopper_pearson_lower(k, n, alpha))
                p = mpmath.mpf(got)
                a, b = k, n - k + 1
                excess = _upper_binomial_tail(n, k, p) - mpmath.mpf(alpha)
                density = mpmath.exp(
                    (a - 1) * mpmath.log(p)
                    + (b - 1) * mpmath.log1p(-p)
                    - mpmath.log(mpmath.beta(a, b))
                )
                diff = float(excess / density)
                cases += 1
                above += diff > 0
                worst_p = max(worst_p, abs(diff))
                if got > 0.5:
                    worst_r = max(worst_r, abs(diff) / float(norm.pdf(norm.ppf(got))))
    return worst_p, worst_r, above, cases


def fix_cost(device: str, repeats: int = 5) -> list[tuple[str, float, float]]:
    """Seconds per noise block: float32 randn vs float64 randn cast to float32."""
    rows = []
    for label, shape in (
        ("1000 x 1x28x28", (1000, 1, 28, 28)),
        ("64 x 3x224x224", (64, 3, 224, 224)),
    ):
        generator = torch.Generator(device=device).manual_seed(0)
        timings = {}
        for dtype in (torch.float32, torch.float64):
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                noise = torch.randn(shape, generator=generator, device=device, dtype=dtype)
                noise = noise.to(torch.float32)
                if device == "cuda":
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - t0)
            timings[dtype] = best
        rows.append((label, timings[torch.float32], timings[torch.float64]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=float, default=1e8, help="float32 draws to scan")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-stats", action="store_true", help="skip the mpmath check")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print("1. largest |z| by construction (float32 arithmetic of the kernels)")
    bounds = max_abs_z()
    for name, (z, q) in bounds.items():
        print(f"   {name:13s} max |z| = {z:.6f}   folded mass per pair q = {q:.3e}")

    draws = int(args.draws)
    largest, over5, seconds = empirical(draws, args.device)
    expected5 = draws * 2 * norm.sf(5.0)
    bound = bounds[f"{'cuda' if args.device.startswith('cuda') else 'cpu'} float32"][0]
    print(f"\n2. empirical, {draws:.2e} float32 draws on {args.device} ({seconds:.1f} s)")
    print(
        f"   max |z| = {largest:.6f} (bound {bound:.6f}; a true Gaussian's expected max ~ "
        f"{norm.isf(0.5 / draws):.3f})"
    )
    print(f"   |z| > 5: {over5} (a true Gaussian: {expected5:.1f} +- {math.sqrt(expected5):.1f})")
    assert largest <= bound + 1e-6, "torch.randn exceeded the derived bound"

    print(
        "\n3. tail mass the sampler never produces: eps_d = 1 - (1 - q)^d (conservative, per coordinate)"
    )
    print(f"   {'sampler':13s} " + " ".join(f"{name:>24s}" for name in DIMS))
    for name, (_, q) in bounds.items():
        print(f"   {name:13s} " + " ".join(f"{tv_gap(q, d):24.3e}" for d in DIMS.values()))

    print("\n4. radius lost (units of sigma) by the sound correction pA_lower - eps_d")
    levels = {
        "pA_lower 0.90 (R 1.28s)": 0.90,
        "pA_lower 0.99 (R 2.33s)": 0.99,
        "cap n=1e4 a=1e-3 (3.09s)": 0.001 ** (1 / 10_000),
        "cap n=1e5 a=1e-3 (3.81s)": 0.001 ** (1 / 100_000),
    }
    for sampler in ("cpu float32", "cuda float32", "cpu float64"):
        q = bounds[sampler][1]
        print(f"   {sampler}")
        for label, p in levels.items():
            costs = " ".join(f"{radius_cost(p, tv_gap(q, d)):24.2e}" for d in DIMS.values())
            print(f"     {label:26s}{costs}")

    if not args.skip_stats:
        worst_p, worst_r, above, cases = clopper_pearson_check()
        print("\n5. float64 Clopper-Pearson (rsbench.engine.stats) against 50-digit mpmath")
        print(
            f"   {cases} cases: max |error| {worst_p:.2e} in p, {worst_r:.2e} sigma in radius; "
            f"{above} cases above the exact bound"
        )

    print(f"\n6. cost of the fix on {args.device}: float64 noise cast to float32 vs float32 noise")
    for label, t32, t64 in fix_cost(args.device):
        print(
            f"   {label:16s} float32 {1e3 * t32:8.2f} ms   float64->32 {1e3 * t64:8.2f} ms   "
            f"x{t64 / t32:.2f}"
        )


if __name__ == "__main__":
    main()
