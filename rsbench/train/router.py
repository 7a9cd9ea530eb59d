"""Router training for dual randomized smoothing (Sun, Mao & Vechev, ICLR 2026), over any zoo experts.

The "routing over off-the-shelf experts" view: experts ``E_1..E_K`` (zoo entries of one dataset)
certify at their own noise levels ``sigma_k``; a router network with ``K`` outputs learns, under
noise ``sigma_router``, which expert certifies each image best.

1. **Labels** (:func:`label_radii`): every training image ``x`` is certified by every expert at its
   sigma with a small budget (default ``n0 = 10`` selection draws, ``n = 100`` estimation draws, the
   paper's label budget, ``alpha = 0.001``), giving ``R_k(x)``: the certified radius when the
   prediction is the true label, else 0 (wrong or abstaining). ``n0 = 10`` is our choice: the label
   only matters when the top class holds at least ~63% of the mass (below that, ``n = 100`` draws
   cannot certify at ``alpha = 0.001``), and then 10 draws pick it with probability > 0.9 while costing
   only 10% on top of ``n``. With ``n = 100`` the largest label radius is ``1.50 sigma_k``. Labels are
   cached in Parquet, one file per expert per chunk of images, written atomically, under a folder
   keyed by (expert id, weights sha256, sigma, n0, n, alpha, seed, dataset, split, noise scheme,
   device type; a folder whose key.json names another noise scheme is refused); a rerun or another
   router sharing an expert computes only the images not yet cached (so an interrupted label stage
   resumes, and gives exactly what an uninterrupted one gives: each image's noise comes from its own
   :class:`rsbench.noise.NoiseKey` with the label stage's purposes ``label-select`` and
   ``label-estimate``, which no certificate ever draws from, so the router's weights are independent
   of the noise that later certifies any test image).
2. **Targets** (:func:`soft_targets`, :func:`keep_mask`, :func:`class_weights`): ``y =
   softmax_k(R_k(x) / T)`` (default ``T = 0.05 max_k sigma_k``, see :data:`DEFAULT_ROUTER_ARCH`'s
   notes; the paper's ``T = 1``); images whose radius is 0 for every expert are dropped; each
   kept image is weighted by ``1 / q_k`` where ``q_k`` is the share of kept images whose best expert
   (largest ``R_k``, ties to the lower index) is ``k``. The weights are divided by their mean over
   the kept images (their ratios stay exactly ``1 / q_k``) so the cross-entropy keeps the scale of an
   unweighted mean and ``lambda``, ``eta`` keep the paper's meaning.
3. **Loss** (:func:`router_loss`) on ``m >= 2`` Gaussian copies of each image at ``sigma_router``:
   ``mean_i w_i * mean_j CE(y_i, p_ij) + lambda * mean_i mean_j KL(pbar_i || p_ij) + eta *
   mean_i H(pbar_i)`` where ``p_ij = softmax(router(x_i + d_ij))`` and ``pbar_i = mean_j p_ij``
   (Jeong & Shin's consistency regulariser; paper defaults ``lambda = 40``, ``eta = 0.5``, ``m = 2``,
   ``sigma_router = 1.0``).
4. **Training** (:func:`train_router`): seeded and deterministic like :mod:`rsbench.train.expert`
   (epoch ``e``'s order and noise come from ``(seed, e)`` alone), checkpointed after every epoch and
   resumable (same weights bit for bit on the same device, threads and versions). The router is any
   zoo architecture with ``K`` outputs (default :data:`DEFAULT_ROUTER_ARCH`; the input layer is the
   first expert's).
   Outputs: ``<out>/<router id>.safetensors`` (the net's state dict), ``<out>/<router id>.train.json``
   and, with a zoo file, a ``router`` entry (experts, ``train_sigma = sigma_router``, recipe with the
   label budget, options and exact command, sha256) and a ``dual`` entry (router, experts, sigmas,
   ``sigma_router``, ``alpha_router_fraction``).

Cost: the label stage runs ``N * K * (n0 + n)`` forward samples. ``fmnist_cnn`` certifies about
33,000 noisy samples per second on one core of the development machine (measured with
``SmoothedClassifier.certify_batch``), so :data:`DEFAULT_TRAIN_IMAGES` = 20,000 Fashion-MNIST images
over three experts cost about 6.6 M samples: the embedded router's label stage took 196 s on one
thread (676 s when the two cores were shared with other jobs), and its training 22 s (an ``mlp``
router; a ``fmnist_cnn`` router takes about 4 s per epoch of 17,000 images). With the default
``pooled_mlp`` router and 20 epochs the whole run stays around 5-10 minutes on two shared cores.

The library never prints: progress goes to an optional callback receiving :class:`RouterEvent`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rsbench import device as D
from rsbench.errors import (
    ConfigError,
    check_alpha,
    check_alpha_router_fraction,
    check_count,
    check_sigma,
)
from rsbench.noise import NOISE_SCHEME
from rsbench.train.common import (
    atomic_write,
    make_optimizer,
    make_scheduler,
    package_relative,
    restore_training_state,
    zoo_dataset_name,
)
from rsbench.train.expert import OPTIMIZERS, SCHEDULES
from rsbench.weights import sha256_file

log = logging.getLogger(__name__)

#: images labelled by default (the first ones in canonical order); see the module docstring
DEFAULT_TRAIN_IMAGES = 20_000
#: label budget defaults: selection draws, estimation draws (the paper's n = 100), alpha
LABEL_N0 = 10
LABEL_N = 100
LABEL_ALPHA = 0.001
#: images per cached label file
LABEL_CHUNK = 1000
LABEL_FORMAT = 1
CHECKPOINT_FORMAT = 1
_CHUNK_RE = re.compile(r"^idx-(\d+)-(\d+)\.parquet$")

#: How a label radius is computed from an expert's label-stage counts: ``bound`` is CERTIFY's radius
#: ``sigma * Phi^-1(pA_lower)`` (Clopper-Pearson at the label alpha; at n = 100 it is at most
#: 1.50 sigma, so on every image that all experts classify confidently the largest sigma wins);
#: ``point`` uses the point estimate ``p = (nA + 1/2) / (n + 1)`` of the top-class probability,
#: ``sigma * Phi^-1(p)`` when the selected class is the true one and ``p > 1/2`` (at n = 100 at most
#: 2.58 sigma). Labels are training targets, not certificates, so no confidence bound is needed.
#: Measured on 1,000 embedded Fashion-MNIST images (every 2nd of the first 2,000) with the three
#: embedded experts at n0 = 10, n = 100: best-expert shares s0.25 / s0.50 / s1.00 are 14.0 / 24.3 /
#: 61.7% with ``bound`` and 11.8 / 23.0 / 65.2% with ``point``: the point estimate does not remove
#: the pull toward the largest sigma (both caps scale with sigma; it comes from the n = 100 budget
#: saturating on easy images), so ``bound`` stays the default.
LABEL_RADII = ("bound", "point")


def point_radius(cA, nA, n, label, sigma: float) -> np.ndarray:
    """``sigma * Phi^-1((nA + 1/2) / (n + 1))`` where ``cA == label`` and that estimate exceeds 1/2,
    else 0 (the ``point`` label radius, see :data:`LABEL_RADII`)."""
    from scipy.stats import norm

    nA = np.asarray(nA, dtype=np.float64)
    p = (nA + 0.5) / (np.asarray(n, dtype=np.float64) + 1.0)
    ok = (np.asarray(cA) == np.asarray(label)) & (p > 0.5)
    return np.where(ok, float(sigma) * norm.ppf(np.clip(p, 0.5, 1.0)), 0.0)


#: The default router recipe (``rsbench train router`` without options). Chosen so that a router
#: over experts nobody here trained does not collapse to one expert on a small label set (measured
#: on 600 embedded Fashion-MNIST images labelled by the s0.25 and s1.00 embedded experts, best-expert
#: labels 28% / 72%, held-out 400 images; results/dual-embedded.md has the table):
#:
#: * temperature ``None`` = :data:`DEFAULT_TEMPERATURE_SCALE` x the largest expert sigma. Label radii
#:   scale with sigma (at ``n = 100`` at most 1.5 sigma), so at ``T = 1`` an image whose best expert
#:   is the small sigma gets a nearly flat target (0.375 vs 0.3: 52% / 48%) while an image whose best
#:   expert is the large sigma gets a clear one (0.3 vs 1.5: 23% / 77%); even with the 1/q class
#:   weights the best *constant* output then picks the largest sigma, and a router that has not yet
#:   learned to tell images apart sits there (it collapsed with lambda = eta = 0 too). A temperature
#:   of 5% of the radius scale makes the targets follow the best expert.
#: * :data:`DEFAULT_ROUTER_ARCH` ``pooled_mlp``: under ``sigma_router`` noise a router only needs
#:   coarse features; 4x4 average pooling divides the noise's standard deviation by 4 before the
#:   first layer, so it learns the choice from few images (the experts' ``fmnist_cnn`` as router
#:   still collapsed at 20 epochs, 60 steps, and needed 600 steps to learn it), and it costs almost
#:   nothing next to an expert when certifying. ``--arch`` picks another (e.g. ``cifar_resnet20``).
#: * ``batch_size = 64`` (4x the optimiser steps of 256 for the same compute) and ``lr = 3e-3``.
#:
#: ``lambda = 40``, ``eta = 0.5`` (the paper's) and 20 epochs stay.
DEFAULT_ROUTER_ARCH = "pooled_mlp"
DEFAULT_TEMPERATURE_SCALE = 0.05
DEFAULT_BATCH_SIZE = 64
DEFAULT_LR = 3e-3


def default_temperature(sigmas: Sequence[float]) -> float:
    """The default soft-target temperature: :data:`DEFAULT_TEMPERATURE_SCALE` x ``max(sigmas)``."""
    return round(DEFAULT_TEMPERATURE_SCALE * max(float(s) for s in sigmas), 12)


#: A label set or a router whose choices give more than this share of the images to one expert is
#: reported as collapsed (a warning event and log line; the router is still written).
COLLAPSE_SHARE = 0.9


def collapse_message(shares: Sequence[float], experts: Sequence[str], what: str) -> str | None:
    """A warning when one expert takes more than :data:`COLLAPSE_SHARE` of ``shares``, else None."""
    if len(shares) == 0:
        return None
    k = int(np.argmax(shares))
    if float(shares[k]) <= COLLAPSE_SHARE:
        return None
    return (
        f"{what} collapsed: {100 * float(shares[k]):.1f}% of the images go to {experts[k]} "
        f"(> {100 * COLLAPSE_SHARE:.0f}%); the dual model will behave like that expert. Try a "
        "lower --temperature (sharper targets), more epochs, a smaller router (--arch pooled_mlp), "
        "fewer or other experts, or check the labels"
    )


@dataclass(frozen=True)
class RouterEvent:
    """A progress report.

    ``phase``: ``label-start`` / ``label`` / ``label-done`` (per expert: ``done`` of ``total``
    images labelled, ``computed`` of them certified in this run, the rest read from the cache),
    ``train-start``, ``batch``, ``epoch`` (after the checkpoint), ``done``; ``warning`` carries a
    ``message`` (e.g. a collapse to one expert, :data:`COLLAPSE_SHARE`).
    """

    phase: str
    expert: str | None = None
    expert_index: int = 0
    experts: int = 0
    done: int = 0
    total: int = 0
    computed: int = 0
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps: int = 0
    loss: float = math.nan
    agreement: float = math.nan
    message: str = ""
    lr: float = math.nan
    elapsed: float = 0.0
    resumed_from: int | None = None


Progress = Callable[[RouterEvent], None]


# ------------------------------------------------------------------------------------------------
# labels


@dataclass(frozen=True)
class LabelBudget:
    """The certification budget of the label stage (n0 selection, n estimation draws, alpha, seed)."""

    n0: int = LABEL_N0
    n: int = LABEL_N
    alpha: float = LABEL_ALPHA
    seed: int = 0

    def check(self) -> LabelBudget:
        check_count(self.n0, "label n0")
        check_count(self.n, "label n")
        check_alpha(self.alpha, "label alpha")
        return self


def label_key(
    expert_id: str,
    weights_sha256: str,
    sigma: float,
    budget: LabelBudget,
    dataset: str,
    split: str,
    device_type: str = "cpu",
) -> dict[str, Any]:
    """Everything that determines an expert's label radii (the cache key, as a dict).

    The noise scheme and the device type (CPU and CUDA draw different streams) are part of it.
    """
    return {
        "format": LABEL_FORMAT,
        "noise_scheme": NOISE_SCHEME,
        "device_type": device_type,
        "expert": expert_id,
        "weights_sha256": weights_sha256,
        "sigma": float(sigma),
        "n0": int(budget.n0),
        "n": int(budget.n),
        "alpha": float(budget.alpha),
        "seed": int(budget.seed),
        "dataset": dataset,
        "split": split,
    }


def check_label_key(folder: Path, key: dict[str, Any]) -> None:
    """Refuse a label-cache folder whose ``key.json`` is not ``key`` (another noise scheme, say)."""
    try:
        stored = json.loads((folder / "key.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"label cache {folder} has an unreadable key.json ({exc}); delete that folder"
        ) from None
    if stored == key:
        return
    if not isinstance(stored, dict) or stored.get("noise_scheme") != key["noise_scheme"]:
        made = (stored.get("noise_scheme") if isinstance(stored, dict) else None) or "an older"
        raise ConfigError(
            f"label cache {folder} was made under {made} noise scheme, this rsbench draws scheme "
            f"{key['noise_scheme']}; delete that folder or pass another --label-cache to start afresh"
        )
    raise ConfigError(
        f"label cache {folder} holds labels of another configuration; delete that folder or pass "
        "another --label-cache to start afresh"
    )


def label_dir(cache_dir: str | os.PathLike, key: dict[str, Any]) -> Path:
    """Folder of one label key: ``<cache_dir>/<dataset>-<split>/<expert>-<hash of the key>``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9._+-]", "_", key["expert"])
    return Path(cache_dir).expanduser() / f"{key['dataset']}-{key['split']}" / f"{safe}-{digest}"


def default_label_cache(cache_dir: str | os.PathLike | None = None) -> Path:
    """``<rsbench cache>/router-labels`` (``cache_dir``, ``$RSBENCH_CACHE`` or the user cache)."""
    from rsbench.weights import cache_root

    return cache_root(cache_dir) / "router-labels"


def read_label_cache(folder: Path) -> Any:
    """All cached label rows of one key folder as a DataFrame indexed by dataset index."""
    import pandas as pd

    frames = []
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if _CHUNK_RE.match(path.name):
                frames.append(pd.read_parquet(path))
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in _LABEL_COLUMNS.items()}).set_index(
            "index"
        )
    frame = pd.concat(frames, ignore_index=True).drop_duplicates("index")
    return frame.set_index("index").sort_index()


_LABEL_COLUMNS = {
    "index": "int64",
    "label": "int64",
    "prediction": "int64",
    "radius": "float64",
    "label_radius": "float64",
    "cA": "int64",
    "count0": "int64",
    "nA": "int64",
    "pA_lower": "float64",
}


def label_radii(
    model: nn.Module,
    expert_id: str,
    weights_sha256: str,
    sigma: float,
    num_classes: int,
    dataset,
    indices: Sequence[int],
    budget: LabelBudget = LabelBudget(),
    cache_dir: str | os.PathLike | None = None,
    chunk_size: int = LABEL_CHUNK,
    batch_size: int = 2000,
    progress: Progress | None = None,
    expert_index: int = 0,
    experts: int = 1,
    radius_kind: str = "bound",
) -> np.ndarray:
    """``R_k(x)`` for each dataset index in ``indices`` (radius when right, else 0), cached.

    ``radius_kind`` (:data:`LABEL_RADII`) says how the cached counts become the returned radii; the cache
    holds the counts, so both kinds read the same cached certificates.

    Certifies ``model`` at ``sigma`` with ``budget`` on the images not yet in the cache folder of
    this key (:func:`label_key`), in chunks of ``chunk_size`` images, each written atomically as
    ``idx-<first>-<last>.parquet``; then returns the radii for ``indices`` in their order. Results do
    not depend on ``chunk_size``, ``batch_size``, interruptions or what was cached before.
    """
    import pandas as pd

    from rsbench.noise import noise_keys
    from rsbench.sampling import model_device
    from rsbench.smoothing import SmoothedClassifier, certify_from_counts

    budget = budget.check()
    chunk_size = check_count(chunk_size, "label chunk size")
    key = label_key(
        expert_id,
        weights_sha256,
        sigma,
        budget,
        dataset.name,
        dataset.split,
        D.device_type(model_device(model)),
    )
    folder = label_dir(cache_dir if cache_dir is not None else default_label_cache(), key)
    folder.mkdir(parents=True, exist_ok=True)
    key_file = folder / "key.json"
    if key_file.is_file():
        check_label_key(folder, key)
    else:
        atomic_write(key_file, lambda tmp: tmp.write_text(json.dumps(key, indent=2) + "\n"))
    wanted = [int(i) for i in indices]
    cached = read_label_cache(folder)
    have = set(cached.index.tolist())
    missing = sorted(set(wanted) - have)
    emit = progress or (lambda event: None)
    total = len(wanted)
    done = total - len(missing)
    began = time.perf_counter()
    common = {"expert": expert_id, "expert_index": expert_index, "experts": experts}
    emit(RouterEvent("label-start", done=done, total=total, **common))
    smoothed = SmoothedClassifier(model, num_classes, sigma, batch_size=batch_size)
    groups: dict[int, list[int]] = {}
    for index in missing:
        groups.setdefault(index // chunk_size, []).append(index)
    computed = 0
    new_frames = []
    for group in groups.values():
        images = dataset.images(group)
        labels = dataset.labels[torch.as_tensor(group)].numpy()
        # the label stage's own streams (purposes label-select/label-estimate of the training
        # samples): never the noise that certifies any test image (rsbench.noise)
        sources = [int(dataset.source_indices[i]) for i in group]
        source_name = str(getattr(dataset, "source_name", None) or dataset.name)

        def keys(purpose, sources=sources, source_name=source_name):
            return noise_keys(source_name, dataset.split, sources, purpose, budget.seed)

        counts0 = smoothed.votes(images, budget.n0, keys("label-select"))
        counts = smoothed.votes(images, budget.n, keys("label-estimate"))
        certs = certify_from_counts(counts0, counts, budget.alpha, sigma)
        prediction = certs["prediction"].astype(np.int64)
        radius = certs["radius"].astype(np.float64)
        frame = pd.DataFrame(
            {
                "index": np.asarray(group, dtype=np.int64),
                "label": labels.astype(np.int64),
                "prediction": prediction,
                "radius": radius,
                "label_radius": np.where(prediction == labels, radius, 0.0),
                "cA": certs["cA"].astype(np.int64),
                "count0": certs["count0"].astype(np.int64),
                "nA": certs["nA"].astype(np.int64),
                "pA_lower": certs["pA_lower"].astype(np.float64),
            }
        )
        path = folder / f"idx-{group[0]:09d}-{group[-1]:09d}.parquet"
        atomic_write(path, lambda tmp, frame=frame: frame.to_parquet(tmp, index=False))
        new_frames.append(frame.set_index("index"))
        computed += len(group)
        done += len(group)
        emit(
            RouterEvent(
                "label",
                done=done,
                total=total,
                computed=computed,
                elapsed=time.perf_counter() - began,
                **common,
            )
        )
    if new_frames:
        cached = pd.concat([cached, *new_frames]).sort_index()
    emit(
        RouterEvent(
            "label-done",
            done=total,
            total=total,
            computed=computed,
            elapsed=time.perf_counter() - began,
            **common,
        )
    )
    rows = cached.loc[wanted]
    if radius_kind == "point":
        return point_radius(rows["cA"], rows["nA"], budget.n, rows["label"], sigma)
    return rows["label_radius"].to_numpy(dtype=np.float64)


# ------------------------------------------------------------------------------------------------
# targets and loss


def keep_mask(radii: np.ndarray) -> np.ndarray:
    """Boolean mask of the images (rows of ``[N, K]`` radii) that some expert certifies (R > 0)."""
    return (np.asarray(radii, dtype=np.float64) > 0).any(axis=1)


def soft_targets(radii: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``softmax_k(R_k(x) / temperature)`` for each row of ``[N, K]`` radii."""
    temperature = check_sigma(temperature, "temperature")
    z = np.asarray(radii, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def best_expert(radii: np.ndarray) -> np.ndarray:
    """Index of the largest radius per row (ties go to the lower index, i.e. the smaller sigma)."""
    return np.asarray(radii, dtype=np.float64).argmax(axis=1)


def class_weights(radii: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image weights proportional to ``1 / q_k`` (mean 1 over the rows), and ``q``.

    ``radii`` are the kept rows; ``q_k`` is the share of rows whose best expert is ``k`` (0 for an
    expert that is never best; no row carries its weight).
    """
    radii = np.asarray(radii, dtype=np.float64)
    if radii.shape[0] == 0:
        raise ConfigError(
            "no training image is certified by any expert; check the experts, their sigmas and the data"
        )
    best = best_expert(radii)
    q = np.bincount(best, minlength=radii.shape[1]) / radii.shape[0]
    weights = 1.0 / q[best]
    return weights / weights.mean(), q


def router_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    lam: float = 40.0,
    eta: float = 0.5,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The router loss on ``m`` noisy copies: ``logits [m, B, K]``, ``targets [B, K]``, ``weights [B]``.

    ``mean_i w_i mean_j CE(y_i, p_ij) + lam * mean_i mean_j KL(pbar_i || p_ij) + eta * mean_i
    H(pbar_i)``, with ``p_ij = softmax(logits[j, i])`` and ``pbar_i = mean_j p_ij``. Returns the
    loss and its parts (``ce``, ``kl``, ``entropy``) as floats.
    """
    if logits.dim() != 3 or logits.shape[1:] != targets.shape:
        raise ConfigError(
            f"logits {list(logits.shape)} must be [copies, batch, K] with targets {list(targets.shape)}"
        )
    log_p = torch.log_softmax(logits, dim=-1)  # [m, B, K]
    ce = -(targets.unsqueeze(0) * log_p).sum(-1).mean(0)  # [B]
    p_bar = log_p.exp().mean(0)  # [B, K]
    log_p_bar = torch.log(p_bar.clamp_min(1e-12))
    kl = (p_bar.unsqueeze(0) * (log_p_bar.unsqueeze(0) - log_p)).sum(-1).mean(0)  # [B]
    entropy = -(p_bar * log_p_bar).sum(-1)  # [B]
    ce_term = (weights * ce).mean()
    loss = ce_term + lam * kl.mean() + eta * entropy.mean()
    parts = {
        "ce": float(ce_term.detach()),
        "kl": float(kl.mean().detach()),
        "entropy": float(entropy.mean().detach()),
    }
    return loss, parts


# ------------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class RouterTrainConfig:
    """Everything that determines the router (plus where the data and labels come from).

    ``experts``: zoo ids (one dataset); the router's output ``k`` selects ``experts[k]``.
    ``sigmas``: certify sigma per expert (default each expert's ``train_sigma``); labels and the dual
    entry use them. ``dataset``/``split``: the data to label and train on (default the experts'
    dataset, ``train``); ``train_images`` keeps the first ones (``None``: all; capped at the split's
    size); ``indices``, when given, names the images instead (positions in the split). ``arch``:
    the router architecture (default :data:`DEFAULT_ROUTER_ARCH`); its input layer is the first
    expert's. ``lam``, ``eta``, ``copies``, ``temperature``: see :func:`router_loss` and
    :func:`soft_targets`; ``temperature`` ``None`` is :func:`default_temperature` of the sigmas
    (:meth:`resolved` fills it and ``arch`` in).
    """

    experts: tuple[str, ...]
    router_id: str | None = None
    dual_id: str | None = None
    sigma_router: float = 1.0
    sigmas: tuple[float, ...] | None = None
    arch: str | None = None
    label_n0: int = LABEL_N0
    label_n: int = LABEL_N
    label_alpha: float = LABEL_ALPHA
    label_radius: str = "bound"
    train_images: int | None = DEFAULT_TRAIN_IMAGES
    indices: tuple[int, ...] | None = None
    temperature: float | None = None
    lam: float = 40.0
    eta: float = 0.5
    copies: int = 2
    epochs: int = 20
    batch_size: int = DEFAULT_BATCH_SIZE
    optimizer: str = "adam"
    lr: float = DEFAULT_LR
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    step_size: int = 30
    gamma: float = 0.1
    seed: int = 0
    dataset: str | None = None
    split: str = "train"
    alpha_router_fraction: float = 0.5
    data_root: str | None = None
    device: str = "cpu"
    label_cache: str | None = None
    label_chunk: int = LABEL_CHUNK
    label_batch_size: int = 2000
    command: str | None = None

    def budget(self) -> LabelBudget:
        """The label stage's budget (its seed is the training seed)."""
        return LabelBudget(self.label_n0, self.label_n, self.label_alpha, self.seed)

    def resolved(self, sigmas: Sequence[float]) -> RouterTrainConfig:
        """This config with its automatic defaults filled in for experts at ``sigmas``: ``arch``
        (:data:`DEFAULT_ROUTER_ARCH`) and ``temperature`` (:func:`default_temperature`)."""
        return dataclasses.replace(
            self,
            arch=self.arch or DEFAULT_ROUTER_ARCH,
            temperature=(
                default_temperature(sigmas) if self.temperature is None else self.temperature
            ),
        )

    def resolved_ids(self) -> tuple[str, str]:
        """(router id, dual id): given, or the experts' common id prefix + ``-router`` / ``-dual``."""
        prefix = os.path.commonprefix(list(self.experts)).rstrip("-_.")
        prefix = re.sub(r"[-_]s\d*\.?\d*$", "", prefix).rstrip("-_.") or "router"
        if self.experts and prefix == self.experts[0] and len(self.experts) > 1:
            prefix = "router"
        router_id = self.router_id or f"{prefix}-router"
        dual_id = self.dual_id or (
            router_id[: -len("-router")] + "-dual"
            if router_id.endswith("-router")
            else f"{router_id}-dual"
        )
        return router_id, dual_id

    def determining(self) -> dict[str, Any]:
        """The fields that determine the router weights (a resumed run must match them)."""
        skip = {"data_root", "device", "label_cache", "label_chunk", "label_batch_size", "command"}
        if self.indices is None:  # only when set: older checkpoints keep their key
            skip.add("indices")
        if self.label_radius == "bound":
            skip.add("label_radius")
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


@dataclass
class RouterTrainResult:
    """What :func:`train_router` wrote."""

    router_id: str
    dual_id: str
    weights: Path
    sha256: str
    router_entry: Any  # rsbench.zoo.ZooEntry
    dual_entry: Any
    zoo_file: Path | None
    label_stats: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def _validate(config: RouterTrainConfig) -> None:
    if len(config.experts) < 2:
        raise ConfigError(
            f"got {len(config.experts)} expert(s); a router chooses between at least 2 experts"
        )
    if len(set(config.experts)) != len(config.experts):
        pairs = list(zip(config.experts, config.sigmas or [None] * len(config.experts)))
        if config.sigmas is None or len(set(pairs)) != len(pairs):
            raise ConfigError(
                f"experts {list(config.experts)} repeat an id; an expert may repeat only at "
                "different --sigmas (a denoised expert serving several sigmas)"
            )
    check_sigma(config.sigma_router, "sigma_router")
    if config.sigmas is not None:
        if len(config.sigmas) != len(config.experts):
            raise ConfigError(
                f"got {len(config.sigmas)} sigmas for {len(config.experts)} experts; give one per expert"
            )
        for s in config.sigmas:
            check_sigma(s, "expert sigma")
    config.budget().check()
    if config.label_radius not in LABEL_RADII:
        raise ConfigError(
            f"label radius {config.label_radius!r} is not one of {', '.join(LABEL_RADII)}"
        )
    if config.temperature is not None:
        check_sigma(config.temperature, "temperature")
    if config.copies < 2 or int(config.copies) != config.copies:
        raise ConfigError(f"copies={config.copies!r} is not allowed; use m >= 2 noisy copies")
    if not (config.lam >= 0 and config.eta >= 0):
        raise ConfigError(f"lambda={config.lam} and eta={config.eta} must be >= 0")
    check_count(config.epochs, "epochs")
    check_count(config.batch_size, "batch_size")
    if config.optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer={config.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
    if config.schedule not in SCHEDULES:
        raise ConfigError(f"schedule={config.schedule!r} is not one of {', '.join(SCHEDULES)}")
    if not (config.lr > 0 and math.isfinite(config.lr)):
        raise ConfigError(f"lr={config.lr!r} is not allowed; use a learning rate > 0, e.g. 1e-3")
    if config.train_images is not None:
        check_count(config.train_images, "train_images")
    check_alpha_router_fraction(config.alpha_router_fraction)


def command_line(config: RouterTrainConfig) -> str:
    """An ``rsbench train router`` command that reproduces ``config`` (output paths excluded)."""
    router_id, dual_id = config.resolved_ids()
    parts = ["rsbench train router", *config.experts]
    parts += [f"--id {router_id}", f"--dual-id {dual_id}"]
    return " ".join(parts) + " " + recipe_options(config)


def recipe_options(config: RouterTrainConfig) -> str:
    """The command-line options of ``config``'s router recipe (no experts, ids or paths)."""
    parts = [f"--sigma-router {config.sigma_router:g}"]
    if config.sigmas is not None:
        parts += [f"--sigmas {','.join(f'{s:g}' for s in config.sigmas)}"]
    if config.arch:
        parts.append(f"--arch {config.arch}")
    parts += [
        f"--label-n0 {config.label_n0}",
        f"--label-n {config.label_n}",
        f"--label-alpha {config.label_alpha:g}",
        *([f"--label-radius {config.label_radius}"] if config.label_radius != "bound" else []),
        (
            f"--indices {_indices_text(config.indices)}"
            if config.indices is not None
            else f"--train-images {config.train_images if config.train_images is not None else 'all'}"
        ),
        *([f"--temperature {config.temperature:g}"] if config.temperature is not None else []),
        f"--lambda {config.lam:g}",
        f"--eta {config.eta:g}",
        f"--copies {config.copies}",
        f"--epochs {config.epochs}",
        f"--batch-size {config.batch_size}",
        f"--optimizer {config.optimizer}",
        f"--lr {config.lr:g}",
        f"--weight-decay {config.weight_decay:g}",
        f"--schedule {config.schedule}",
        f"--seed {config.seed}",
    ]
    if config.optimizer == "sgd":
        parts.append(f"--momentum {config.momentum:g}")
    if config.schedule == "step":
        parts += [f"--step-size {config.step_size}", f"--gamma {config.gamma:g}"]
    if config.dataset:
        parts.append(f"--dataset {config.dataset}")
    if config.split != "train":
        parts.append(f"--split {config.split}")
    if config.alpha_router_fraction != 0.5:
        parts.append(f"--alpha-router-fraction {config.alpha_router_fraction:g}")
    return " ".join(parts)


def _indices_text(indices: Sequence[int]) -> str:
    """Compact ``--indices`` text: ``start:stop:step`` for an arithmetic run, else a comma list."""
    values = [int(i) for i in indices]
    if len(values) >= 2:
        step = values[1] - values[0]
        if step > 0 and all(b - a == step for a, b in zip(values, values[1:])):
            return f"{values[0]}:{values[-1] + 1}:{step}"
    return ",".join(str(v) for v in values)


# ------------------------------------------------------------------------------------------------
# experts and data


@dataclass
class LoadedExperts:
    """Expert entries, their loaded models, weights digests and certify sigmas."""

    entries: list[Any]
    models: list[nn.Module]
    sha256: list[str]
    sigmas: tuple[float, ...]

    @property
    def dataset(self) -> str:
        return self.entries[0].dataset


def check_experts(entries: Sequence[Any]) -> None:
    """Raise :class:`ConfigError` unless the entries are experts of one dataset, classes and shape."""
    for e in entries:
        if e.kind not in ("expert", "denoised"):
            raise ConfigError(f"{e.id} is a {e.kind} entry; a router chooses between experts")
    datasets = {e.dataset for e in entries}
    if len(datasets) > 1:
        listed = ", ".join(f"{e.id} ({e.dataset})" for e in entries)
        raise ConfigError(
            f"the experts do not share a dataset: {listed}; a router needs experts of one dataset"
        )
    shapes = {(e.num_classes, tuple(e.input_shape or ())) for e in entries}
    if len(shapes) > 1:
        listed = ", ".join(
            f"{e.id} ({e.num_classes} classes, {list(e.input_shape)})" for e in entries
        )
        raise ConfigError(f"the experts differ in classes or input shape: {listed}")


def load_experts(
    zoo,
    expert_ids: Sequence[str],
    sigmas: Sequence[float] | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike | None = None,
) -> LoadedExperts:
    """Look up, check (:func:`check_experts`) and load the experts; sigmas default to train_sigma.

    A denoised expert needs its sigma in ``sigmas`` (one of those it serves); listed at several
    sigmas it is loaded once and serves each with shared networks.
    """
    from rsbench.denoised import check_served, serve
    from rsbench.models import load_model

    entries = [zoo.get(i) for i in expert_ids]
    check_experts(entries)
    if not sigmas:
        denoised = [e.id for e in entries if e.kind == "denoised"]
        if denoised:
            raise ConfigError(
                f"{denoised[0]} is a denoised expert serving several sigmas; pass --sigmas"
            )
    chosen = tuple(float(s) for s in sigmas) if sigmas else tuple(e.train_sigma for e in entries)
    loaded: dict[str, nn.Module] = {}
    models = []
    for e, sigma in zip(entries, chosen):
        if e.kind == "denoised":
            check_served(e.id, e.sigmas or (), sigma)
        if e.id not in loaded:
            loaded[e.id] = load_model(e, device, cache_dir=cache_dir)
        models.append(serve(loaded[e.id], sigma))
    shas = [str(m.weights_sha256) for m in models]
    return LoadedExperts(entries, models, shas, chosen)


def expert_names(experts: Sequence[str], sigmas: Sequence[float]) -> list[str]:
    """Display names of the router's outputs: the ids, or ``id@sigma`` where an id repeats."""
    repeated = {e for e in experts if list(experts).count(e) > 1}
    return [f"{e}@{s:g}" if e in repeated else e for e, s in zip(experts, sigmas)]


def router_input_layer(entry) -> dict[str, Any]:
    """The input layer a router takes from its first expert; for a denoised expert, that of its
    classifier."""
    if entry.kind == "denoised":
        spec = entry.classifier or {}
        layer = spec.get("input_layer") or {"type": "none"}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in layer.items()}
    return entry.input_layer.to_dict()


def training_data(config: RouterTrainConfig, zoo_dataset: str):
    """The dataset to label and train on, and the indices used (the first ``train_images``)."""
    from rsbench.data import load_dataset

    name = config.dataset or zoo_dataset
    if zoo_dataset_name(name) != zoo_dataset:
        raise ConfigError(
            f"dataset {name!r} does not match the experts' dataset {zoo_dataset!r}; "
            "label and train on the experts' own data"
        )
    data = load_dataset(name, config.split, root=config.data_root)
    if config.indices is not None:
        from rsbench.data import select_indices

        return data, select_indices(len(data), indices=list(config.indices))
    count = len(data) if config.train_images is None else min(config.train_images, len(data))
    if config.train_images is not None and config.train_images > len(data):
        log.info(
            "train_images=%d capped at %s/%s's %d images",
            config.train_images,
            name,
            config.split,
            len(data),
        )
    return data, list(range(count))


def compute_labels(
    config: RouterTrainConfig,
    experts: LoadedExperts,
    data,
    indices: Sequence[int],
    progress: Progress | None = None,
) -> np.ndarray:
    """``[N, K]`` label radii of ``indices`` (cached; see :func:`label_radii`)."""
    cache = Path(config.label_cache) if config.label_cache else default_label_cache()
    columns = []
    for k, (entry, model) in enumerate(zip(experts.entries, experts.models)):
        columns.append(
            label_radii(
                model,
                entry.id,
                experts.sha256[k],
                experts.sigmas[k],
                entry.num_classes,
                data,
                indices,
                config.budget(),
                cache_dir=cache,
                chunk_size=config.label_chunk,
                batch_size=config.label_batch_size,
                progress=progress,
                expert_index=k,
                experts=len(experts.entries),
                radius_kind=config.label_radius,
            )
        )
    return np.stack(columns, axis=1)


def label_plan(
    config: RouterTrainConfig,
    zoo=None,
    zoo_paths: Sequence[str | os.PathLike] = (),
    cache_dir: str | os.PathLike | None = None,
    probe_seconds: float = 0.5,
) -> list[dict[str, Any]]:
    """What the label stage of ``config`` would cost, without labelling anything.

    Per expert: images wanted, already cached, to compute, forward samples to draw
    (``missing * (n0 + n)``), the measured throughput of a short probe (noisy samples per second on
    one training image, this machine, now) and the resulting time estimate in seconds. Loads the
    experts (fetching weights that are not cached) and the training data.
    """
    from rsbench.noise import noise_keys
    from rsbench.smoothing import SmoothedClassifier
    from rsbench.zoo import load_zoo

    _validate(config)
    zoo = zoo if zoo is not None else load_zoo(zoo_paths)
    experts = load_experts(zoo, config.experts, config.sigmas, config.device, cache_dir)
    data, indices = training_data(config, experts.dataset)
    cache = Path(config.label_cache) if config.label_cache else default_label_cache()
    wanted = set(int(i) for i in indices)
    plan = []
    probe = data.images([indices[0]])
    for k, (entry, model) in enumerate(zip(experts.entries, experts.models)):
        key = label_key(
            entry.id, experts.sha256[k], experts.sigmas[k], config.budget(), data.name, data.split
        )
        folder = label_dir(cache, key)
        cached = len(wanted & set(read_label_cache(folder).index.tolist()))
        missing = len(wanted) - cached
        smoothed = SmoothedClassifier(
            model, entry.num_classes, experts.sigmas[k], batch_size=config.label_batch_size
        )
        keys = noise_keys(data.name, data.split, [0], "label-select", config.seed)
        num = max(1, min(config.label_batch_size, 2000))
        smoothed.votes(probe, num, keys)  # warm-up
        drawn, began = 0, time.perf_counter()
        while time.perf_counter() - began < probe_seconds or drawn == 0:
            smoothed.votes(probe, num, keys)
            drawn += num
        rate = drawn / (time.perf_counter() - began)
        samples = missing * (config.label_n0 + config.label_n)
        plan.append(
            {
                "expert": entry.id,
                "sigma": experts.sigmas[k],
                "images": len(wanted),
                "cached": cached,
                "missing": missing,
                "samples": samples,
                "samples_per_second": rate,
                "seconds": samples / rate if rate > 0 else math.nan,
            }
        )
    return plan


def label_summary(radii: np.ndarray, experts: Sequence[str]) -> dict[str, Any]:
    """Counts and shares of the label stage (kept images, best-expert shares q, mean radii)."""
    keep = keep_mask(radii)
    _, q = class_weights(radii[keep]) if keep.any() else (None, np.zeros(radii.shape[1]))
    return {
        "images": int(radii.shape[0]),
        "kept": int(keep.sum()),
        "best_share": {e: round(float(v), 4) for e, v in zip(experts, q)},
        "mean_label_radius": {e: round(float(v), 4) for e, v in zip(experts, radii.mean(axis=0))},
        "certified_share": {
            e: round(float(v), 4) for e, v in zip(experts, (radii > 0).mean(axis=0))
        },
    }


# ------------------------------------------------------------------------------------------------
# entries


def _source(weights: Path, zoo_file: Path | None) -> dict[str, str]:
    package_path = package_relative(weights)
    if package_path is not None:
        return {"type": "package", "path": package_path}
    if zoo_file is not None:
        try:
            return {
                "type": "file",
                "path": weights.resolve().relative_to(zoo_file.resolve().parent).as_posix(),
            }
        except ValueError:
            pass
    return {"type": "file", "path": str(weights.resolve())}


def build_router_entries(
    config: RouterTrainConfig,
    experts: LoadedExperts,
    weights: Path,
    sha256: str | None,
    zoo_file: Path | None,
    recipe: dict[str, Any] | None = None,
):
    """(router entry, dual entry) for ``config``'s router at ``weights`` (validated by the zoo parser)."""
    from rsbench.zoo import parse_entry

    router_id, dual_id = config.resolved_ids()
    first = experts.entries[0]
    expert_ids = [e.id for e in experts.entries]
    input_layer = router_input_layer(first)
    names = expert_names(expert_ids, experts.sigmas)  # id@sigma where an id repeats
    router_raw = {
        "id": router_id,
        "kind": "router",
        "dataset": first.dataset,
        "description": (
            f"dual-RS router over {', '.join(names)}, trained by rsbench under noise "
            f"sigma_router {config.sigma_router:g} on {config.dataset or first.dataset}/{config.split}"
        ),
        "num_classes": len(expert_ids),
        "input_shape": list(first.input_shape),
        "arch": config.arch or DEFAULT_ROUTER_ARCH,
        "train_sigma": float(config.sigma_router),
        "experts": expert_ids,
        "input_layer": input_layer,
        "source": _source(weights, zoo_file),
        "sha256": sha256,
        "license": "weights: MIT (rsbench); training data: see the experts' entries",
        "paper": "Sun, Mao, Vechev. Dual Randomized Smoothing: Beyond Global Noise Variance. ICLR 2026",
        "recipe": recipe or {},
    }
    dual_raw = {
        "id": dual_id,
        "kind": "dual",
        "dataset": first.dataset,
        "description": f"dual RS: router {router_id} picks one of {', '.join(names)}",
        "router": router_id,
        "experts": expert_ids,
        "sigmas": list(experts.sigmas),
        "sigma_router": float(config.sigma_router),
        "alpha_router_fraction": float(config.alpha_router_fraction),
        "num_classes": int(first.num_classes),
        "paper": "Sun, Mao, Vechev. Dual Randomized Smoothing: Beyond Global Noise Variance. ICLR 2026",
    }
    return parse_entry(router_raw, file=zoo_file), parse_entry(dual_raw, file=zoo_file)


def _recipe(config: RouterTrainConfig, experts: LoadedExperts, stats: dict[str, Any]) -> dict:
    return {
        "trainer": "rsbench train router (dual RS, Sun, Mao & Vechev 2026)",
        "command": config.command or command_line(config),
        "experts": [e.id for e in experts.entries],
        "expert_sha256": list(experts.sha256),
        "sigmas": list(experts.sigmas),
        "labels": {
            "n0": config.label_n0,
            "n": config.label_n,
            "alpha": config.label_alpha,
            "seed": config.seed,
            "dataset": config.dataset or experts.dataset,
            "split": config.split,
            "images": stats.get("images"),
            "kept": stats.get("kept"),
            "best_share": stats.get("best_share"),
        },
        "sigma_router": config.sigma_router,
        "temperature": config.temperature,
        "lambda": config.lam,
        "eta": config.eta,
        "copies": config.copies,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "optimizer": config.optimizer,
        "lr": config.lr,
        "weight_decay": config.weight_decay,
        "schedule": config.schedule,
        "seed": config.seed,
        "torch": str(torch.__version__),
    }


def _check_ids_free(zoo_file: Path | None, ids: Sequence[str], overwrite: bool) -> None:
    from rsbench.errors import ZooError
    from rsbench.zoo import read_zoo_file

    if zoo_file is None or overwrite or not zoo_file.exists():
        return
    existing = {e.id for e in read_zoo_file(zoo_file)}
    clash = [i for i in ids if i in existing]
    if clash:
        raise ZooError(
            f"{zoo_file}: entry {clash[0]!r} already exists; pick another --id / --dual-id or pass --overwrite"
        )


# ------------------------------------------------------------------------------------------------
# training


def paths_for(out_dir: str | os.PathLike, router_id: str) -> dict[str, Path]:
    """Output paths: ``weights``, ``checkpoint``, ``record`` (train.json)."""
    out = Path(out_dir).expanduser()
    return {
        "weights": out / f"{router_id}.safetensors",
        "checkpoint": out / f"{router_id}.checkpoint.pt",
        "record": out / f"{router_id}.train.json",
    }


def fit_router(
    config: RouterTrainConfig,
    model: nn.Sequential,
    images: torch.Tensor,
    radii: np.ndarray,
    checkpoint: Path | None = None,
    key: str = "",
    resume: bool = True,
    progress: Progress | None = None,
    dataset: str | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` (InputLayer + net with K outputs) on kept ``images`` and their label ``radii``.

    ``images`` ``[N, C, H, W]`` in [0, 1] and ``radii`` ``[N, K]`` are the kept rows of ``dataset``
    (default ``config.dataset``) / ``config.split``. Epoch ``e`` draws its order and noise from the
    ``training`` stream of :class:`rsbench.noise.NoiseKey` ``(dataset, split, e, seed)``, which no
    certificate draws from; with ``checkpoint`` the state is saved after
    every epoch and, with ``resume``, restored (a checkpoint with another ``key`` is refused).
    Returns the per-epoch history.
    """

    from rsbench.noise import UNNAMED_DATASET, NoiseKey

    emit = progress or (lambda event: None)
    device = D.resolve(config.device)
    D.activate(device)
    device = device.torch
    data_name, data_split = dataset or config.dataset or UNNAMED_DATASET, config.split
    if config.temperature is None:
        raise ConfigError("fit_router needs a resolved config (RouterTrainConfig.resolved)")
    targets = torch.as_tensor(soft_targets(radii, config.temperature), dtype=torch.float32)
    weights_np, _ = class_weights(radii)
    weights = torch.as_tensor(weights_np, dtype=torch.float32)
    best = torch.as_tensor(best_expert(radii))
    size = images.shape[0]
    net = model[1]
    optimizer = make_optimizer(config, model.parameters())  # type: ignore[arg-type]
    steps = math.ceil(size / config.batch_size)
    scheduler = make_scheduler(config, optimizer, steps)  # type: ignore[arg-type]
    history: list[dict[str, Any]] = []
    start_epoch = 0
    resumed_from = None
    if checkpoint is not None and resume and checkpoint.is_file():
        start_epoch, history = restore_training_state(checkpoint, key, net, optimizer, scheduler)
        resumed_from = start_epoch
    began = time.perf_counter()
    emit(
        RouterEvent(
            "train-start",
            epoch=start_epoch,
            epochs=config.epochs,
            steps=steps,
            total=size,
            resumed_from=resumed_from,
        )
    )
    m = int(config.copies)
    for epoch in range(start_epoch, config.epochs):
        model.train()
        # epoch e's order and noise: the training stream of (dataset, split, epoch, seed)
        generator = NoiseKey(data_name, data_split, epoch, "training", config.seed).generator()
        order = torch.randperm(size, generator=generator)
        sums = {"loss": 0.0, "ce": 0.0, "kl": 0.0, "entropy": 0.0}
        agree, seen = 0, 0
        chosen = torch.zeros(radii.shape[1], dtype=torch.long)
        for step, start in enumerate(range(0, size, config.batch_size), start=1):
            idx = order[start : start + config.batch_size]
            x = images[idx]
            noise = torch.randn((m, *x.shape), generator=generator) * config.sigma_router
            noisy = (x.unsqueeze(0) + noise).reshape(m * len(idx), *x.shape[1:]).to(device)
            logits = model(noisy).reshape(m, len(idx), -1)
            loss, parts = router_loss(
                logits, targets[idx].to(device), weights[idx].to(device), config.lam, config.eta
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            b = len(idx)
            sums["loss"] += float(loss.detach()) * b
            for name, value in parts.items():
                sums[name] += value * b
            choice = torch.softmax(logits.detach(), -1).mean(0).argmax(-1).cpu()
            agree += int((choice == best[idx]).sum())
            chosen += torch.bincount(choice, minlength=radii.shape[1])
            seen += b
            emit(
                RouterEvent(
                    "batch",
                    epoch=epoch + 1,
                    epochs=config.epochs,
                    step=step,
                    steps=steps,
                    loss=sums["loss"] / seen,
                    agreement=agree / seen,
                    lr=optimizer.param_groups[0]["lr"],
                    elapsed=time.perf_counter() - began,
                )
            )
        if not math.isfinite(sums["loss"]):
            raise ConfigError(
                f"router training diverged in epoch {epoch + 1} (loss {sums['loss']}); lower --lr"
            )
        record = {"epoch": epoch + 1, **{k: v / seen for k, v in sums.items()}}
        record["agreement"] = agree / seen
        record["choice_share"] = [round(float(c) / seen, 4) for c in chosen]
        record["lr_end"] = optimizer.param_groups[0]["lr"]
        history.append(record)
        if checkpoint is not None:
            state = {
                "format": CHECKPOINT_FORMAT,
                "config_key": key,
                "epoch": epoch + 1,
                "net": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "history": json.dumps(history),
            }
            atomic_write(checkpoint, lambda tmp, state=state: torch.save(state, tmp))
        names = (
            list(config.experts)
            if len(config.experts) == radii.shape[1]
            else [f"expert {k}" for k in range(radii.shape[1])]
        )
        warning = collapse_message(record["choice_share"], names, f"epoch {epoch + 1}: the router")
        if warning:
            record["collapsed"] = True
            log.warning("%s", warning)
            emit(RouterEvent("warning", epoch=epoch + 1, epochs=config.epochs, message=warning))
        emit(
            RouterEvent(
                "epoch",
                epoch=epoch + 1,
                epochs=config.epochs,
                step=steps,
                steps=steps,
                loss=record["loss"],
                agreement=record["agreement"],
                lr=record["lr_end"],
                elapsed=time.perf_counter() - began,
                resumed_from=resumed_from,
            )
        )
    model.eval()
    return history


def train_router(
    config: RouterTrainConfig,
    out_dir: str | os.PathLike,
    zoo_file: str | os.PathLike | None = None,
    zoo=None,
    zoo_paths: Sequence[str | os.PathLike] = (),
    resume: bool = True,
    keep_checkpoint: bool = False,
    overwrite_entries: bool = False,
    cache_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> RouterTrainResult:
    """Label, train and write a router over ``config.experts``, plus its router and dual entries.

    ``zoo`` (a :class:`rsbench.zoo.Zoo`) or ``zoo_paths`` (extra zoo files for :func:`load_zoo`)
    resolve the experts; ``cache_dir`` is the weights cache. Entry ids already in ``zoo_file`` are
    refused before any work unless ``overwrite_entries``. Raises :class:`ConfigError` for bad
    settings or experts of different datasets, :class:`~rsbench.errors.ZooError` for unknown ids or
    clashes, :class:`~rsbench.errors.WeightsError` for a checkpoint of another configuration.
    """
    from safetensors.torch import save_file

    from rsbench.models import build_model
    from rsbench.zoo import load_zoo, write_entries

    _validate(config)
    began = time.perf_counter()
    router_id, dual_id = config.resolved_ids()
    zoo_path = Path(zoo_file).expanduser() if zoo_file is not None else None
    _check_ids_free(zoo_path, [router_id, dual_id], overwrite_entries)
    zoo = zoo if zoo is not None else load_zoo(zoo_paths)
    experts = load_experts(zoo, config.experts, config.sigmas, config.device, cache_dir)
    config = config.resolved(experts.sigmas)
    data, indices = training_data(config, experts.dataset)
    label_began = time.perf_counter()
    radii = compute_labels(config, experts, data, indices, progress)
    label_seconds = time.perf_counter() - label_began
    stats = label_summary(radii, expert_names(config.experts, experts.sigmas))
    stats["seconds"] = round(label_seconds, 2)
    warning = collapse_message(list(stats["best_share"].values()), config.experts, "the labels")
    if warning:
        log.warning("%s", warning)
        stats["collapsed"] = True
        if progress is not None:
            progress(RouterEvent("warning", message=warning))
    keep = keep_mask(radii)
    if not keep.any():
        raise ConfigError(
            f"none of the {len(indices)} training images is certified by any expert; "
            "check the experts and their sigmas"
        )
    kept_indices = [i for i, k in zip(indices, keep) if k]
    images = data.images(kept_indices)

    paths = paths_for(out_dir, router_id)
    entry, _ = build_router_entries(config, experts, paths["weights"], None, zoo_path)
    torch.manual_seed(config.seed)
    model = build_model(entry).to(config.device)
    key_data = {
        **config.determining(),
        "expert_sha256": experts.sha256,
        "noise_scheme": NOISE_SCHEME,
        "device_type": D.device_type(config.device),
    }
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True, default=str).encode()).hexdigest()
    train_began = time.perf_counter()
    history = fit_router(
        config,
        model,
        images,
        radii[keep],
        paths["checkpoint"],
        key,
        resume,
        progress,
        dataset=str(getattr(data, "source_name", None) or data.name),
    )
    train_seconds = time.perf_counter() - train_began

    net = model[1]
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    # one metadata key only: safetensors writes a multi-key metadata map in a random order, which
    # would make the file's sha256 differ between identical runs
    metadata = {
        "rsbench": json.dumps(
            {"id": router_id, "sigma_router": config.sigma_router, "seed": config.seed},
            sort_keys=True,
        )
    }
    atomic_write(paths["weights"], lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    digest = sha256_file(paths["weights"])
    recipe = _recipe(config, experts, stats)
    if history:
        recipe["final_agreement"] = round(float(history[-1]["agreement"]), 4)
    router_entry, dual_entry = build_router_entries(
        config, experts, paths["weights"], digest, zoo_path, recipe
    )
    seconds = time.perf_counter() - began
    run_record = {
        "id": router_id,
        "dual_id": dual_id,
        "config": dataclasses.asdict(config),
        "command": config.command or command_line(config),
        "sha256": digest,
        "labels": stats,
        "history": history,
        "label_seconds": round(label_seconds, 2),
        "train_seconds": round(train_seconds, 2),
        "torch": str(torch.__version__),
        "threads": torch.get_num_threads(),
    }
    atomic_write(
        paths["record"], lambda tmp: tmp.write_text(json.dumps(run_record, indent=2) + "\n")
    )
    if zoo_path is not None:
        write_entries(zoo_path, [router_entry, dual_entry], overwrite=overwrite_entries)
    if not keep_checkpoint:
        paths["checkpoint"].unlink(missing_ok=True)
    emit = progress or (lambda event: None)
    emit(RouterEvent("done", epochs=config.epochs, elapsed=seconds))
    return RouterTrainResult(
        router_id,
        dual_id,
        paths["weights"],
        digest,
        router_entry,
        dual_entry,
        zoo_path,
        stats,
        history,
        seconds,
    )
