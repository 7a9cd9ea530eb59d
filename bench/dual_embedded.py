"""Evidence for the embedded dual model and cascade: curves, head to head, targets, time ratios.

Protocol (``rsbench certify --protocol cpu --n0 100 --n 2000 --alpha 0.001 --stride 4``): the embedded Fashion-MNIST test subset, every 4th of
the first 2,000 test images (500 images), n0 = 100, n = 2,000 (per stage for dual models), total
alpha = 0.001 (dual: half to the router, half to the expert), seed 0. Each model's per-sample
certificates are written as Parquet under ``results/embedded/`` (resumable: rerunning skips what is
done). Then, from those rows:

* certified accuracy at radii 0, 0.25, ..., 2.0 for each expert, their per-radius envelope, the
  oracle (best expert per image in hindsight: an upper bound, not a certificate), the dual model
  with off-the-shelf experts and the co-trained dual model (when its entry exists);
* target 1: the dual's largest shortfall below the envelope over those radii is less than half of
  the smallest largest-shortfall of any single expert;
* target 2: the wall-time ratio of dual certification to single-expert certification at the same n
  (<= 1.4), measured in this process, interleaved (expert, dual, expert, dual, ...) on the same
  images to cancel the load of other processes sharing the CPU, median over rounds; the per-sample
  ``seconds`` of the stored runs give a second, noisier figure.

The cascade ``embedded-fmnist-cascade`` (sigma 1.00 -> 0.50 -> 0.25, p0 = 0.5) is certified under
the same protocol twice: with the default union alpha split and with the reference code's
``--alpha-split reference`` (labelled as such). The head-to-head section compares every model on the
images all of them certified (:mod:`rsbench.report.headtohead`), with mean and worst-case samples per image.
Run directories of these models left by an older configuration (another identity, e.g. an older
noise scheme) are removed before certifying, so every model is scored once.

Writes ``results/dual-embedded.md``. Usage::

    python bench/dual_embedded.py                 # certify (resumes), then write the report
    python bench/dual_embedded.py --threads 2 --timing-images 100 --timing-rounds 5
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = ROOT / "rsbench" / "embedded"
#: the co-trained variant is not shipped (not better, see the report); a local rerun of
#: `rsbench train finetune` keeps it in runs/embedded-ct/ (gitignored)
CT_ZOO = ROOT / "runs" / "embedded-ct" / "ct-entries.yaml"
CANDIDATE_ZOOS = [CT_ZOO]
RADII = np.round(np.arange(0.0, 2.0001, 0.25), 2)
DUAL = "embedded-fmnist-dual"
#: the protocol of this evidence: the cpu protocol's data, with n = 2,000 on 500 images
N0, N, ALPHA, STRIDE = 100, 2000, 0.001, 4
DUAL_CT = "embedded-fmnist-dual-ct"
#: issue 24's dual: a router that sees the experts' outputs (rsbench.models.router_input)
DUAL_X = "embedded-fmnist-xdual"
CASCADE = "embedded-fmnist-cascade"
#: extra certify options per job label (a job is a model id plus options)
JOB_OPTIONS = {CASCADE: [], CASCADE + " (reference split)": ["--alpha-split", "reference"]}
#: shipped compositions certified too when the packaged zoo has them (issue 17's denoised dual: one
#: denoised expert served at the three sigmas, with its own router)
OPTIONAL_JOBS = ["embedded-fmnist-denoised-dual"]


def extra_zoos() -> list[Path]:
    """Embedded zoo files whose entries are not yet merged into the packaged model_zoo.yaml."""
    from rsbench.zoo.files import read_zoo_file
    from rsbench.zoo.registry import load_zoo

    packaged = set(load_zoo(include_packaged=True).ids())
    return [
        p
        for p in CANDIDATE_ZOOS
        if p.is_file() and any(e.id not in packaged for e in read_zoo_file(p))
    ]


def job_id(job: str) -> str:
    """The zoo id of a job label (``"<id> (...)"`` labels carry extra options)."""
    return job.split(" ", 1)[0]


def remove_stale_runs(jobs: list[str], out: Path) -> None:
    """Delete run directories of the jobs' models whose configuration is not the current one.

    The current run directory of each job is the one ``rsbench certify`` would write now
    (:meth:`rsbench.run.runconfig.RunConfig.run_name`); any other ``<id>-custom-*`` directory of that id is
    from an older configuration (e.g. an older noise scheme) and would be scored twice.
    """
    import shutil

    from rsbench.run import runconfig
    from rsbench.zoo.registry import load_zoo

    zoo = load_zoo()
    expected: dict[str, set[str]] = {}
    for job in jobs:
        model_id = job_id(job)
        if model_id == DUAL_CT or model_id not in zoo:
            continue
        options = JOB_OPTIONS.get(job, [])
        split = options[1] if options[:1] == ["--alpha-split"] else None
        config = runconfig.resolve_config(
            zoo.get(model_id),
            zoo=zoo,
            protocol="cpu",
            n0=N0,
            n=N,
            alpha=ALPHA,
            stride=STRIDE,
            device="cpu",
            alpha_split=split,
        )
        expected.setdefault(model_id, set()).add(config.run_name())
    for model_id, names in expected.items():
        for path in out.glob(f"{model_id}-custom-*"):
            if path.is_dir() and path.name not in names:
                print(f"removing {path.relative_to(ROOT)} (an older configuration)", flush=True)
                shutil.rmtree(path)


def certify(ids: list[str], zoos: list[Path], out: Path, threads: int, run: bool) -> list[str]:
    """Run (``run``) or just list the ``rsbench certify`` command of each job; return the commands.

    The shipped zoo files are passed to every command; the local co-trained zoo only to the
    co-trained dual, whose rows are kept once present (its entry left the package after it ran).
    """
    import os

    commands = []
    for job in ids:
        model_id = job_id(job)
        cmd = [sys.executable, "-m", "rsbench", "certify", model_id, "--protocol", "cpu"]
        cmd += JOB_OPTIONS.get(job, [])
        cmd += ["--n0", str(N0), "--n", str(N), "--alpha", str(ALPHA), "--stride", str(STRIDE)]
        cmd += ["--device", "cpu", "--out", str(out.relative_to(ROOT)), "--no-leaderboard"]
        for zoo in zoos:
            if zoo != CT_ZOO or model_id == DUAL_CT:
                cmd += ["--zoo", str(zoo.relative_to(ROOT))]
        shown = "rsbench " + shlex.join(cmd[3:])
        commands.append(shown)
        done = [p for p in out.glob(f"{model_id}-custom-*") if (p / "run.json").is_file()]
        if (
            not run
            or (done and model_id == DUAL_CT)
            or (model_id == DUAL_CT and CT_ZOO not in zoos)
        ):
            continue
        print(f"$ {shown}", flush=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run(cmd, cwd=ROOT, check=True, env=env)
    return commands


def curves(out: Path, experts: list[str], duals: list[str]):
    """Certified accuracy per model, envelope and oracle of the experts, from the stored rows."""
    from rsbench.report import metrics
    from rsbench.results.storage import read_results

    df = read_results(out)
    df = df[(df["n"] == N) & (df["n0"] == N0) & (df["alpha"] == ALPHA)]
    acc = {}
    for model_id in experts + duals:
        rows = df[df["model_id"] == model_id]
        if len(rows):
            acc[model_id] = metrics.certified_accuracy(rows, RADII)
    expert_rows = df[df["model_id"].isin(experts)]
    env = metrics.envelope(expert_rows, RADII)
    orc, oracle_images = metrics.oracle(expert_rows, RADII)
    seconds = {
        m: float(df.loc[df["model_id"] == m, "seconds"].sum()) / max(1, (df["model_id"] == m).sum())
        for m in acc
    }
    counts = {m: int((df["model_id"] == m).sum()) for m in acc}
    choices, uncapped = {}, {}
    for d in duals:
        rows = df[df["model_id"] == d]
        if len(rows):
            ok = rows["correct"].fillna(False).to_numpy(dtype=bool)
            expert_radius = rows["expert_radius"].astype("float64").fillna(-1.0).to_numpy()
            uncapped[d] = np.array([np.mean(ok & (expert_radius >= r)) for r in RADII])
    for d in duals:
        rows = df[df["model_id"] == d]
        if len(rows):
            choice = rows["router_choice"].astype("Int64").to_numpy()
            choices[d] = {k: float(np.mean(choice == k)) for k in range(-1, len(experts))}
    return acc, env, orc, oracle_images, seconds, counts, choices, uncapped


def timing(zoos: list[Path], dual_id: str, images: int, rounds: int, n0: int, n: int):
    """Median ratio of dual (and cascade) to single-expert certification wall time, interleaved."""
    import torch

    from rsbench.api import load_cascade, load_dual
    from rsbench.data.dataset import load_dataset
    from rsbench.engine.smoothing import SmoothedClassifier
    from rsbench.models.loading import load_model
    from rsbench.zoo.registry import load_zoo

    zoo = load_zoo(zoos)
    dual_entry = zoo.get(dual_id)
    dual = load_dual(zoo, dual_entry)
    cascade = load_cascade(zoo, CASCADE)
    experts = [load_model(zoo.get(e)) for e in dual_entry.experts]
    sigmas = dual.sigmas
    singles = [SmoothedClassifier(m, 10, s) for m, s in zip(experts, sigmas)]
    data = load_dataset("fashion-mnist", "embedded")
    idx = list(range(0, 4 * images, 4))
    x = data.images(idx)
    ratios, cpu_ratios, single_times, dual_times = [], [], [], []
    cascade_ratios, cascade_times = [], []
    with torch.inference_mode():
        for r in range(rounds):
            k = r % len(singles)
            calls = {"single": singles[k], "dual": dual, "cascade": cascade}
            names = list(calls)
            order = names[r % 3 :] + names[: r % 3]  # rotate: no model always runs first
            wall, cpu = {}, {}
            for name in order:
                t, c = time.perf_counter(), time.process_time()
                calls[name].certify_batch(x, n0, n, 0.001, seed=r, indices=idx)
                wall[name], cpu[name] = time.perf_counter() - t, time.process_time() - c
            single, single_cpu = wall["single"], cpu["single"]
            both, both_cpu, cascaded = wall["dual"], cpu["dual"], wall["cascade"]
            cascade_ratios.append(cascaded / single)
            cascade_times.append(cascaded / images)
            ratios.append(both / single)
            cpu_ratios.append(both_cpu / single_cpu)
            single_times.append(single / images)
            dual_times.append(both / images)
    return {
        "ratio": statistics.median(ratios),
        "cpu_ratio": statistics.median(cpu_ratios),
        "single": statistics.median(single_times),
        "dual": statistics.median(dual_times),
        "ratios": ratios,
        "cpu_ratios": cpu_ratios,
        "cascade": statistics.median(cascade_times),
        "cascade_ratio": statistics.median(cascade_ratios),
    }


def shortfalls(acc: dict[str, np.ndarray], env: np.ndarray) -> dict[str, tuple[float, float]]:
    """Largest shortfall below the envelope per model, and the radius where it happens."""
    out = {}
    for m, a in acc.items():
        gap = env - a
        i = int(np.argmax(gap))
        out[m] = (float(gap[i]), float(RADII[i]))
    return out


#: the section on a router behind a denoiser (bench/router_variants.py and
#: bench/dual_denoised_router.py measured it; kept here so that regenerating the report keeps it)
DENOISED_ROUTER_NOTES = """
## A router behind a denoiser (issue 24, the paper's estimator)

`rsbench train router --router-input denoised --denoiser ENTRY --arch NET` trains the paper's
estimator: the router's network `NET` (e.g. `pooled_mlp`, `fmnist_cnn`) behind the frozen one-shot
denoiser of a `denoised` zoo entry at sigma_router, `router(x + delta) = NET(clamp(D(x + delta,
sigma_router), 0, 1))` (`rsbench.models.router_input.DenoisedRouter`). It is a deterministic function
of the one noisy copy (the denoiser is frozen, in eval mode in every mode of the router, and the
one-step DDPM denoiser draws no noise: its timestep is fixed by sigma, it has no dropout and no
batch norm; tests/test_router_input_denoised.py checks this and that the same copy gives the same
output twice in train() mode), so the router certificate and the dual's union bound are unchanged.

- **Cost.** One router sample is one denoiser pass plus the network. The entry records it as
  `router_input.forwards`, expert forwards by multiply-adds (convolutions and linear layers, one
  28x28 image): `fmnist_cnn` expert 0.253 M; `small_denoiser` (`embedded-fmnist-denoised`) 4.97 M
  (+ `fmnist_cnn` net: 20.6 forwards); `small_ddpm_unet` (`embedded-fmnist-ddpm`) 61.1 M (+
  `pooled_mlp`: 241, + `fmnist_cnn`: 242). Wall time agrees in order of magnitude (batch 500, one
  thread, a quiet machine at the start of the session): fmnist_cnn 108,138 samples/s, small_denoiser
  10,312 (10.5x an expert forward), DDPM U-Net 539 (200x). `rsbench compare` counts the declared
  forwards, so a dual behind a denoiser router shows a worst cost of (1 + forwards) x one expert:
  21.6x (small denoiser) or ~243x (DDPM), against the issue's target of 2.2x. That target is out of
  reach for any router behind these denoisers: the embedded experts are tiny CNNs.
- **Recipe, chosen on held-out training images** (`results/router-variants.md`, section "Issue 24:
  routers behind a denoiser"; 150 images, every 20th of train 17,000-19,999; router stage certified,
  expert stage the stored expert certificates rescored at alpha/2). Budget: trained on train
  0-4,999 (labels from the cached label stage), 10 epochs, 2 copies, lambda 40, one thread (DDPM
  routers: about 5 min of training each on a shared core; their scoring, 315,000 U-Net passes, about
  40 min). Three variants: DDPM + `pooled_mlp`, DDPM + `fmnist_cnn`, small_denoiser + `fmnist_cnn`:
  largest shortfall below the envelope 8.7 / 10.0 / 8.0 points (one image = 0.67), against 5.4 for
  the shipped xrouter recipe (`top-softmax`, trained on 0-16,999) and 6.0 for that recipe on the same
  5,000 images and 10 epochs (`top-5k`). Chosen by the issue's target then cost: small_denoiser +
  `fmnist_cnn` (`v-dn-small-cnn`); DDPM + `pooled_mlp` was one image worse on that, 1.3-2.7 points
  better at r >= 1, at 11x the cost. Training agreement with the best-expert labels: 0.632 / 0.639 /
  0.640 (denoised) vs 0.639 / 0.646 (experts-top): the denoised image does not tell the router more
  about which expert wins than the s1.00 expert's softmax does.
- **Test protocol, certified once** (all 500 embedded images: the small denoiser made the full
  protocol affordable, 270 s on one shared thread; n0 = 100, n = 2,000 per stage, alpha = 0.001),
  compared with the committed runs in `results/embedded` on the same images:

| model | r=0 | 0.25 | 0.5 | 0.75 | 1 | 1.25 | 1.5 | 1.75 | largest shortfall (at r) | worst cost |
|---|---|---|---|---|---|---|---|---|---|---|
| envelope of the experts | 90.2 | 83.8 | 74.2 | 66.0 | 57.2 | 49.2 | 42.8 | 34.6 | | |
| embedded-fmnist-xdual | 84.6 | 76.2 | 69.8 | 63.8 | 55.6 | 46.4 | 38.0 | 31.2 | 7.6 (0.25) | 2.00x |
| dual behind the small denoiser (`v-dn-small-cnn-dual`) | 84.2 | 76.6 | 69.0 | 62.2 | 53.8 | 44.4 | 37.4 | 30.6 | 7.2 (0.25) | 21.60x |
| embedded-fmnist-cascade (union split) | 84.4 | 76.6 | 70.0 | 64.2 | 56.8 | 48.8 | 42.2 | 34.2 | 7.2 (0.25) | 3.00x |

  Dual minus cascade per radius (points), r = 0 ... 1.75: behind the denoiser -0.2 / +0.0 / -1.0 /
  -2.0 / -3.0 / -4.4 / -4.8 / -3.6; xdual +0.2 / -0.4 / -0.2 / -0.4 / -1.2 / -2.4 / -4.2 / -3.0.
  Shortfall below the envelope: behind the denoiser 6.0 / 7.2 / 5.2 / 3.8 / 3.4 / 4.8 / 5.4 / 4.0,
  xdual 5.6 / 7.6 / 4.4 / 2.2 / 1.6 / 2.8 / 4.8 / 3.4. Router choices (abstain / s0.25 / s0.50 /
  s1.00): 1.4 / 0.0 / 26.2 / 72.4% (xdual 1.2 / 0.0 / 29.8 / 69.0%); the two routers pick the same
  expert on 92.2% of the images. Mean samples 4,171 per image (xdual 4,175); 0.54 s per image
  (xdual 0.16 s, same machine class, other load).
- **Verdict: not shipped.** The denoiser router's dual is 0.4 points better than xdual at r = 0.25
  (its largest shortfall 7.2 vs 7.6, two images), 0.4 worse at r = 0, 0.6-2.0 worse at every r >= 0.5, trails the
  cascade by up to 4.8 points (r = 1.5), and costs 10.8x xdual's worst case. On the validation
  split it lost to the xdual recipe at every r <= 1 as well. `embedded-fmnist-xdual` stays.
- **Limits.** One seed; 5,000 training images and 10 epochs (the xrouter: 20,000 and 6); sigma_router
  1 and lambda 40 only; 150 validation images (the ranking of the three denoised variants is within
  1-2 images on the issue's metric); the DDPM variants were not certified on the test images (only
  the chosen one is); the dual rows (`runs/dn-test/`) are not committed (the router entry lives in
  the uncommitted work zoo), so they are reproduced by the commands below.
- **Commands** (from the repository root, `PYTHONPATH=$PWD`):

```
python bench/router_variants.py --only dn-small-cnn dn-ddpm-pool dn-ddpm-cnn top-softmax top-5k --held-out 17000:20000:20 --work runs/router-variants-dn --section 'Issue 24: routers behind a denoiser'
python bench/dual_denoised_router.py --dual v-dn-small-cnn-dual --zoo runs/router-variants-dn/routers/zoo.yaml --stride 4 --out runs/dn-test
```

  The chosen router's own recorded command (in its entry's recipe): `rsbench train router
  embedded-fmnist-s0.25 embedded-fmnist-s0.50 embedded-fmnist-s1.00 --id v-dn-small-cnn-router
  --dual-id v-dn-small-cnn-dual --sigma-router 1 --arch fmnist_cnn --label-n0 10 --label-n 100
  --label-alpha 0.001 --indices 0:5000 --lambda 40 --eta 0.5 --copies 2 --epochs 10 --batch-size 64
  --optimizer adam --lr 0.003 --weight-decay 0 --schedule cosine --seed 0 --router-input denoised
  --denoiser embedded-fmnist-denoised --out runs/router-variants-dn/routers --zoo-file
  runs/router-variants-dn/routers/zoo.yaml --threads 1`.
"""

NOTES = """
## Notes: a router that sees the experts (issue 24)

- `embedded-fmnist-xdual` is the dual over the same three experts whose router
  (`embedded-fmnist-xrouter`, `--router-input experts-top --features softmax`) is a small head
  (`head_mlp`, 10-64-3) over the softmax of the largest-sigma expert (`embedded-fmnist-s1.00`) on the
  same noisy copy at sigma_router = 1: a deterministic function of that copy, so its certificate is
  the router certificate of any router. One router sample costs one expert forward, so its worst
  case is 2 x 2,100 expert forwards = 2.00x one expert (the head over all three experts would cost
  4.00x). It was chosen on held-out *training* images (`results/router-variants.md`, section
  "Issue 24"; trained on train 0-16,999 for 6 epochs, scored on 300 images of 17,000-19,999, never
  the test images). Certified accuracy there at r = 0 / 0.25 / 0.5 / 0.75 / 1 (envelope 93.0 / 80.0 /
  68.7 / 57.7 / 47.0; the shipped pixel router 80.0 / 70.0 / 60.7 / 51.7 / 44.3): head over all
  three experts, log-softmax 80.3 / 72.0 / 61.7 / 52.7 / 45.7, softmax 82.0 / 74.7 / 63.7 / 54.0 /
  46.0; over the largest-sigma expert only, log-softmax 82.0 / 73.7 / 62.7 / 53.3 / 46.3, softmax
  82.0 / 74.7 / 64.0 / 54.0 / 46.3 (shipped: as good as the head over all three with a third of its
  router forwards); lambda 10 lets R_router cut more (82.7 / 72.3 / 60.7 / 50.3 / 44.0), lambda 80 and
  temperature 0.1 lose at small r (80.7 / 71.3 / 61.7 / 53.0 / 46.3 and 78.0 / 68.0 / 59.3 / 50.7 /
  45.0), and without the 1/q class weights the router collapses to s1.00 (its curve exactly). No
  variant sends a held-out image to s0.25 (0.0% of the choices): under sigma_router = 1 noise even
  the experts' outputs do not tell which images the smallest sigma wins. The shipped router was
  trained on train 0-19,999 with the recorded command (`recipe.command` of its entry).
- Training noise: routers now draw their training noise from their own purpose `router-training`;
  the routers above it (`embedded-fmnist-router`, `embedded-fmnist-denoised-router`) were trained on
  the shared `training` stream and are rebuilt by their recorded commands plus
  `--training-noise training`.

## Notes: how the pixel router was chosen (same protocol, earlier runs)

- Labels: the three experts certified the first 20,000 Fashion-MNIST training images with
  n0 = 10, n = 100, alpha = 0.001 (196 s on one thread); 18,105 images are certified by some
  expert; best-expert shares s0.25 / s0.50 / s1.00 = 15.8% / 22.4% / 61.8%.
- With the paper's defaults (temperature 1, lambda 40, eta 0.5) the router collapsed to a
  constant choice (always s1.00: its agreement with the best expert stayed at exactly 0.618, the
  share of s1.00, for 12 epochs), so the dual would equal s1.00 at alpha/2. Soft targets over
  label radii of at most 1.5 sigma are nearly flat at temperature 1; the shipped router uses
  temperature 0.05 (sharp targets), lambda 40 and eta 0.5 (the paper's consistency weights).
- A small sweep on held-out training images (17,000-19,999, scored with their label radii) showed
  lambda trading choice quality against the router's own radius. Certified with this protocol:
  an `mlp` router with lambda = 2 (temperature 0.1) gave a dual with 84.4% clean but only 49.4% at
  r = 0.75 (largest shortfall 17.0 pts), because 45% of its correct certificates were cut by
  R_router < R_expert; with lambda = 40 (temperature 0.05) the largest shortfall fell to 7.4 pts
  (its co-trained variant: 8.0).
- Router network: `mlp` (784-256-128-3) costs about half of an expert's `fmnist_cnn` forward
  (CPU per 1,000 samples, one thread: noise 3.2 ms, fmnist_cnn 10.7 ms, mlp 5.7 ms), so its dual
  took 1.51x (CPU 1.54x) the time of one expert. The shipped router,
  `pooled_mlp` (4x4 average pooling, 49-128-3, 6,787 parameters, 27 KB),
  is nearly free: predicted 1 + 3.2 / (3.2 + 10.7) = 1.23x, measured above; its choices are as
  good (largest shortfall 7.0 pts vs 7.4). What remains of the ratio is the router's own noise.
- Co-training (one round, `rsbench train finetune`): the router assigned 0% / 26.8% / 73.2% of the
  training images to s0.25 / s0.50 / s1.00, so s0.25 stayed as it was; s0.50 and s1.00 were
  fine-tuned 2 epochs (Adam 2e-4, half of each batch replayed from the other images), then labels
  and router were redone. Its largest shortfall (6.8 pts) is within one image of the off-the-shelf
  dual's (7.0; one image is 0.2 pts) but it is lower at 6 of the 9 radii (e.g. 59.8% vs 63.2% at
  r = 0.75), so it is not shipped (figures from the earlier noise scheme). Its rows were removed
  from results/embedded/: they predate the purpose-keyed noise (their router's label noise was the
  test noise), so they are not sound certificates under the current scheme. `rsbench train
  finetune embedded-fmnist-dual --arch pooled_mlp --lr 0.003 --temperature 0.05 --batch-size 256 --zoo-file
  runs/embedded-ct/ct-entries.yaml --out runs/embedded-ct` rebuilds it (deterministic); this script
  certifies it again when that zoo file exists.
- Router recipe variants (issue 15 item 5): `results/router-variants.md` (`python
  bench/router_variants.py`) compares 19 recipes (temperature 0.02 / 0.05 / 0.1 / 0.2, lambda 20 /
  40 / 80, eta 0, sigma_router 0.5 / 0.75 / 1.25, `mlp` router, 60 epochs, 4 and 8 noisy copies, point label
  radii, 37,000 instead of 17,000 labelled images) trained on train images 0-16,999 and scored on
  300 held-out training images (router stage certified, expert stage from the experts' stored
  certificates at alpha/2), so that no recipe is chosen on the test images. None at sigma_router >= 0.75 sends
  a held-out image to s0.25 (0-0.3% of the choices) and none beats the majority expert by much (training
  agreement 0.62-0.66 with s1.00 at 62% of the labels); a higher temperature moves the choices to
  s1.00 (T = 0.2: all of them), with eta = 0 R_router cuts 4-9 points at r >= 0.5, a smaller sigma_router sees
  more but caps the router's radius (0.5: 4% of the choices go to s0.25, nothing certified beyond
  r = 1.33; 0.75: +2 points at r <= 0.25, -0.6 to -2.3 from r = 1). The best on held-out are within
  1-2 points (3-6 images) of the shipped recipe at every radius: `mlp` (81.3 / 72.7 / 61.0 / 52.7 /
  45.7 vs 80.0 / 70.0 / 60.7 / 51.7 / 44.3 at r = 0 ... 1; but an `mlp` router made the dual
  1.51x one expert's time, over target 2's 1.4x, see below) and 4 noisy copies (80.3 / 71.3 / 61.7 / 52.0 / 45.3,
  less cut by R_router at large r). Certified with this protocol (router trained on the 20,000
  images, default recipe plus `--copies 4`, 500 test images): 84.8 / 76.6 / 69.4 / 63.0 / 55.0 /
  45.6 / 38.8 / 32.4 / 23.6 vs the shipped dual's 84.2 / 76.6 / 69.8 / 63.4 / 54.4 / 44.8 / 38.4 /
  32.0 / 23.6: ahead at 5 radii by 0.4-0.8 points, behind at 2 by 0.4 (1-4 images), the same
  largest shortfall (7.2 at r = 0.25) and still behind the cascade from r = 0.5 up. Not a clear
  win, so the shipped router stays. Co-training (one `rsbench train finetune` round) was tried in
  the earlier session (below) and was not better; it was not rerun.
- What limits the dual here: the choice, more than R_router. Scored at alpha/2 on these 500 test
  images, the best expert is s0.25 for 10.4% of them, s0.50 for 19.2%, s1.00 for 62.2% (none:
  8.2%); an oracle choosing only between s0.50 and s1.00 would reach 89.6 / 83.2 / 76.0 / 69.4 /
  60.2% at r = 0 ... 1, the dual reaches 84.2 / 76.6 / 69.8 / 63.4 / 54.4. Under sigma_router = 1
  noise the router cannot tell which images a small sigma wins (agreement with the best expert on
  its training images 0.62-0.66 for every recipe, 0.62 for always-s1.00), so it never picks s0.25 and sends
  26% of the images to s0.50, whose radius stops at 1.33 (3.8% of all images are routed to s0.50
  while s1.00 certifies them at >= 1.25). Ignoring R_router (the table above) lifts the dual by
  0.2-2.8 points at r >= 0.25 but still leaves it behind the cascade at r = 1.25-1.75. The cascade
  instead answers with s1.00 whenever s1.00 is confident and falls back only otherwise.
- Collapse on a small label set (issue 15 item 6), now fixed in the defaults. Experts s0.25 and
  s1.00, 600 embedded images (`--dataset fashion-mnist --split embedded --indices 0:1200:2`),
  labels 28.1% / 71.9%; held out: 400 images (1200:2000:2, labels 30.7% / 69.3%), router choices
  = vote of 32 noisy copies. Old defaults (`fmnist_cnn` router, the experts' architecture,
  temperature 1, batch 256, lr 1e-3, 20 epochs = 60 steps): 0% / 100% of the choices, held-out
  agreement 0.693 (the majority share). The cause is the temperature: label radii scale with sigma
  (at most 1.5 sigma at n = 100), so at T = 1 an image that s0.25 wins gets a nearly flat target
  (e.g. 0.375 vs 0.3: 52% / 48%) and one that s1.00 wins a clear one (0.3 vs 1.5: 23% / 77%); even
  with the 1/q weights the best constant output is s1.00, and with lambda = eta = 0 the router still
  collapsed (0% / 100%; at T = 0.05 and lambda = eta = 0: 34% / 66%, agreement 0.701). With T = 0.05
  the `fmnist_cnn` router still collapsed after 60 steps and learned the split only after 600
  (200 epochs: 22% / 78%, held-out agreement 0.754). A `pooled_mlp` router (4x4 pooling divides the
  router noise's std by 4) at T = 0.05, lr 3e-3: batch 256, 20 epochs: 10% / 90% (agreement 0.696);
  batch 64: 15% / 85% (0.729; seeds 1 and 2: 0.729, 0.749); batch 64, 60 epochs: 19% / 81% (0.757).
  The defaults are now `pooled_mlp`, T = 0.05 x the largest expert sigma, batch 64, lr 3e-3 and 20
  epochs but at least 500 optimiser steps (lambda 40, eta 0.5 kept; with 120 steps on 400 images,
  training seed 2 left s0.25 only 7% of the choices, with 500 steps seeds 0 / 1 / 2 give 22 / 17 /
  16%); on the embedded set they give the shipped router's figures
  (`default` vs `shipped` in `results/router-variants.md`). `tests/test_router_options.py::
  test_default_recipe_does_not_collapse_when_sigmas_split_the_labels` trains with default options on
  400 embedded images (labels 29% / 71%) and asserts that each expert with >= 10% of the labels gets
  >= 5% of the choices and that no epoch-20 collapse is flagged (it gets 22%); with the old
  defaults it fails (s0.25: 0.0%).
"""


def head_to_head_section(out: Path) -> list[str]:
    """The head-to-head table (rsbench.report.headtohead) and the dual-vs-cascade targets of issue 15."""
    from rsbench.report import headtohead
    from rsbench.results.storage import read_results

    df = read_results(out)
    df = df[(df["n"] == N) & (df["n0"] == N0) & (df["alpha"] == ALPHA)]
    table = headtohead.compare(df, RADII, headtohead.router_forwards_of(out))
    lines = ["", "## Head to head: experts, envelope, oracle, dual, cascade", ""]
    lines.append(
        "`rsbench compare results/embedded` (rsbench.report.headtohead): every model on the images all of "
        "them certified; samples = forward passes per image (worst: observed, bound in "
        "parentheses); s/img from the stored per-sample times (runs made one after another on "
        "this shared machine; the interleaved timing below is the fairer time comparison). The "
        "`cascade reference-split` row uses the authors' alpha/(k+1) budget, which a union bound "
        "does not cover (rsbench/engine/cascade.py); the `cascade` row is the sound default."
    )
    lines += ["", headtohead.to_markdown(table).rstrip(), ""]
    rows = table.set_index(["model", "sigma"])
    cascade_key = (CASCADE, "cascade")
    for dual_id in [DUAL, DUAL_X]:
        if (dual_id, "dual") in rows.index and cascade_key in rows.index:
            lines += dual_targets(rows.loc[(dual_id, "dual")], rows.loc[cascade_key], dual_id)
    return lines


def dual_targets(dual, cascade, dual_id: str) -> list[str]:
    """The issue 15 / 24 targets of one dual row of the head-to-head table against the cascade."""
    from rsbench.report import metrics

    grid = [r for r in RADII if r >= 0.25]
    behind = [
        (r, dual[metrics.radius_column(r)], cascade[metrics.radius_column(r)])
        for r in grid
        if dual[metrics.radius_column(r)] < cascade[metrics.radius_column(r)]
    ]
    worst = max((c - d for _, d, c in behind), default=0.0)
    lines = [f"Targets for `{dual_id}` (issues 15 and 24, on these common images):", ""]
    lines.append(
        f"- dual >= cascade at every radius from 0.25 up: **{'met' if not behind else 'not met'}**"
        + (
            " (behind at "
            + ", ".join(f"r = {r:g}: {100 * d:.1f} vs {100 * c:.1f}" for r, d, c in behind)
            + f"; by at most {100 * worst:.1f} pts)"
            if behind
            else ""
        )
        + f"; worst-case samples per image dual {dual['max_samples']:,.0f} vs cascade "
        f"{cascade['max_samples']:,.0f} (means {dual['mean_samples']:,.0f} vs "
        f"{cascade['mean_samples']:,.0f});"
    )
    gap = dual["largest_shortfall"]
    lines.append(
        f"- the dual's largest shortfall below the envelope: {100 * gap:.1f} pts "
        f"(r = {dual['shortfall_at']:g}); target < 4.2 pts: **{'met' if gap < 0.042 else 'not met'}**;"
    )
    ratio = dual["cost_ratio"]
    lines.append(
        f"- worst-case cost {ratio:.2f}x one expert's samples x forwards (the router's expert "
        f"forwards counted); target <= 2.2x: **{'met' if ratio <= 2.2 else 'not met'}**."
    )
    return lines + [""]


def pct(v: float) -> str:
    return "n/a" if v is None or np.isnan(v) else f"{100 * v:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "results" / "embedded"))
    parser.add_argument("--report", default=str(ROOT / "results" / "dual-embedded.md"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-certify", action="store_true")
    parser.add_argument("--timing-images", type=int, default=50)
    parser.add_argument("--timing-rounds", type=int, default=6)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from rsbench.zoo.registry import load_zoo

    zoos = extra_zoos()
    zoo = load_zoo(zoos)
    experts = list(zoo.get(DUAL).experts)
    out = Path(args.out)
    ct_rows = (
        any(p.name.startswith(DUAL_CT + "-") for p in out.glob("*")) if out.is_dir() else False
    )
    duals = [DUAL] + ([DUAL_X] if DUAL_X in zoo else [])
    duals += [DUAL_CT] if DUAL_CT in zoo or ct_rows else []
    ct_experts = (
        list(zoo.get(DUAL_CT).experts)
        if DUAL_CT in zoo
        else ["embedded-fmnist-s0.25", "embedded-fmnist-s0.50-ct", "embedded-fmnist-s1.00-ct"]
    )
    jobs = experts + duals + list(JOB_OPTIONS) + [j for j in OPTIONAL_JOBS if j in zoo]
    if not args.skip_certify:
        remove_stale_runs(jobs, out)
    commands = certify(jobs, zoos + [CT_ZOO], out, args.threads, not args.skip_certify)
    acc, env, orc, oracle_images, seconds, counts, choices, uncapped = curves(out, experts, duals)
    gaps = shortfalls(acc, env)
    single_gaps = [gaps[e][0] for e in experts if e in gaps]
    bound = min(single_gaps) / 2 if single_gaps else float("nan")

    timed = timing(zoos, DUAL, args.timing_images, args.timing_rounds, N0, N)

    lines = ["# Dual randomized smoothing on the embedded Fashion-MNIST set", ""]
    lines += [
        "Produced by `python bench/dual_embedded.py` (this file is overwritten by it).",
        "",
        "**Protocol** (`--protocol cpu --n0 100 --n 2000 --alpha 0.001 --stride 4`, recorded as"
        " `custom`): the embedded Fashion-MNIST test subset, every 4th of the first 2,000",
        "test images (500 images, indices 0, 4, ..., 1996), n0 = 100, n = 2,000 (per stage for the",
        "dual models), total alpha = 0.001 (dual: 0.0005 router + 0.0005 expert), seed 0, CPU, fp32.",
        "Per-sample certificates: Parquet under `results/embedded/`. With n = 2,000 the largest",
        "reachable radius is 2.63 sigma (experts) and 2.67 sigma at alpha/2 for each dual stage.",
        "",
        "Models: experts "
        + ", ".join(f"`{e}`" for e in experts)
        + f"; dual `{DUAL}` (router `{zoo.get(DUAL).router}`, sigma_router"
        f" {zoo.get(DUAL).sigma_router:g})"
        + (
            f"; co-trained dual `{DUAL_CT}` (router `embedded-fmnist-router-ct`, experts "
            + ", ".join(f"`{e}`" for e in ct_experts)
            + "; not shipped: see Notes)"
            if DUAL_CT in duals
            else "; no co-trained dual rows"
        )
        + ".",
        "",
        "## Certified accuracy (%) at radius r",
        "",
        "| model | " + " | ".join(f"{r:g}" for r in RADII) + " | largest shortfall (at r) |",
        "|---|" + "---|" * (len(RADII) + 1),
    ]
    for m in experts + duals:
        if m in acc:
            gap, where = gaps[m]
            lines.append(
                f"| {m} | "
                + " | ".join(pct(v) for v in acc[m])
                + f" | {100 * gap:.1f} ({where:g}) |"
            )
    lines.append("| envelope of the experts | " + " | ".join(pct(v) for v in env) + " | 0 |")
    lines.append(
        f"| oracle (best expert per image, {oracle_images} images; upper bound) | "
        + " | ".join(pct(v) for v in orc)
        + " | |"
    )
    lines += ["", "## Target 1: dual close to the envelope", ""]
    lines.append(
        "Largest shortfall below the envelope over r in {0, 0.25, ..., 2.0}: "
        + ", ".join(f"{m} {100 * gaps[m][0]:.1f} pts (r = {gaps[m][1]:g})" for m in experts)
        + f". Smallest of the single experts: {100 * min(single_gaps):.1f} pts; half of it:"
        f" {100 * bound:.1f} pts."
    )
    lines.append("")
    for d in duals:
        if d in gaps:
            met = gaps[d][0] < bound
            lines.append(
                f"- `{d}`: largest shortfall {100 * gaps[d][0]:.1f} pts (r = {gaps[d][1]:g}) "
                f"{'<' if met else '>='} {100 * bound:.1f} pts: **target {'met' if met else 'not met'}**."
            )
    lines += ["", "Router choices on the test subset (share of images; -1 = router abstained):", ""]
    for d, share in choices.items():
        names = ["abstain"] + (experts if d != DUAL_CT else ct_experts)
        lines.append(
            f"- `{d}`: " + ", ".join(f"{names[k + 1]} {100 * v:.1f}%" for k, v in share.items())
        )
    lines += [
        "",
        "Where the dual loses: its radius is min(R_router, R_expert). Scoring the same rows with the",
        "expert's radius alone (the router's choice kept, its own radius ignored; not a certificate)",
        "shows how much of the shortfall is the router's radius rather than its choice:",
        "",
        "| dual rows scored with R_expert only | "
        + " | ".join(f"{r:g}" for r in RADII)
        + " | largest shortfall |",
        "|---|" + "---|" * (len(RADII) + 1),
    ]
    for d, curve in uncapped.items():
        lines.append(
            f"| {d} | "
            + " | ".join(pct(v) for v in curve)
            + f" | {100 * float(np.max(env - curve)):.1f} |"
        )
    lines += head_to_head_section(out)
    lines += ["", "## Target 2: time of dual certification vs one expert (same n)", ""]
    ratio, cpu_ratio = timed["ratio"], timed["cpu_ratio"]
    lines.append(
        f"Measured in one process with {args.threads} torch thread(s), interleaved on the same"
        f" {args.timing_images} images (n0 = {N0}, n = {N} per stage), {args.timing_rounds}"
        f" rounds cycling through the experts (the order single / dual / cascade rotates each"
        f" round), against `{DUAL}`: single expert"
        f" {timed['single']:.3f} s/image, dual {timed['dual']:.3f} s/image (medians)."
    )
    lines.append("")
    lines.append(
        f"- wall-time ratio, median over rounds: **{ratio:.2f}** (rounds: "
        + ", ".join(f"{r:.2f}" for r in timed["ratios"])
        + f"): **target <= 1.4 {'met' if ratio <= 1.4 else 'not met'}** on this shared machine;"
    )
    lines.append(
        f"- CPU-time ratio (`time.process_time`, the wall time of a single-thread run on an idle"
        f" core, insensitive to the other jobs sharing the two cores): **{cpu_ratio:.2f}** (rounds: "
        + ", ".join(f"{r:.2f}" for r in timed["cpu_ratios"])
        + f"): **target {'met' if cpu_ratio <= 1.4 else 'not met'}**."
    )
    lines.append(
        f"- the cascade `{CASCADE}` in the same rounds: {timed['cascade']:.3f} s/image, "
        f"**{timed['cascade_ratio']:.2f}x** one expert (median; it stops at its first confident "
        "stage, so its cost depends on the images)."
    )
    lines.append("")
    router_arch = zoo.get(zoo.get(DUAL).router).arch
    expert_arch = zoo.get(experts[0]).arch
    lines.append(
        f"The router's architecture is `{router_arch}`, the experts' `{expert_arch}`; each stage"
        " draws the same number of noisy samples, so the ratio is 1 + (router stage cost) /"
        " (expert stage cost)."
    )
    lines += ["", NOTES.strip(), ""]
    lines += ["", DENOISED_ROUTER_NOTES.strip(), ""]
    lines += ["", "## Commands", "", "```"]
    lines += commands or [
        "(certification skipped: --skip-certify; rows already in results/embedded/)"
    ]
    lines += ["python bench/dual_embedded.py", "```", ""]
    lines.append(f"Rows used: {counts}.")
    Path(args.report).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
