"""The label stage of router training for dual RS: label radii, their cache, and targets from them.

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
   :class:`rsbench.engine.noise.NoiseKey` with the label stage's purposes ``label-select`` and
   ``label-estimate``, which no certificate ever draws from, so the router's weights are independent
   of the noise that later certifies any test image).
2. **Targets** (:func:`soft_targets`, :func:`keep_mask`, :func:`class_weights`): ``y =
   softmax_k(R_k(x) / T)`` (the temperature ``T`` is the router config's; its default is explained
   in :mod:`rsbench.train.router_config`); images whose radius is 0 for every expert are dropped;
   each kept image is weighted by ``1 / q_k`` where ``q_k`` is the share of kept images whose best
   expert (largest ``R_k``, ties to the lower index) is ``k``. The weights are divided by their mean
   over the kept images (their ratios stay exactly ``1 / q_k``) so the cross-entropy keeps the scale
   of an unweighted mean and ``lambda``, ``eta`` keep the paper's meaning.

Cost: the label stage runs ``N * K * (n0 + n)`` forward samples. ``fmnist_cnn`` certifies about
33,000 noisy samples per second on one core of the development machine (measured with
``SmoothedClassifier.certify_batch``), so 20,000 Fashion-MNIST images over three experts cost about
6.6 M samples: the embedded router's label stage took 196 s on one thread (676 s when the two cores
were shared with other jobs).

Also here: :class:`RouterEvent` (the progress reports of the whole router pipeline; the library
never prints) and :func:`collapse_message` (a label set or router that gives one expert nearly
every image). Imports ``device``, ``errors``, ``noise``, ``train.common``; lazily ``sampling``,
``smoothing``, ``weights``; nothing of the other router modules.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rsbench.engine import device as D
from rsbench.engine.noise import NOISE_SCHEME
from rsbench.errors import ConfigError, check_alpha, check_count, check_sigma
from rsbench.train.common import atomic_write

#: label budget defaults: selection draws, estimation draws (the paper's n = 100), alpha
LABEL_N0 = 10
LABEL_N = 100
LABEL_ALPHA = 0.001
#: images per cached label file
LABEL_CHUNK = 1000
LABEL_FORMAT = 1
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


#: A label set or a router whose choices give more than this share of the images to one expert is
#: reported as collapsed (a warning event and log line; the router is still written).
COLLAPSE_SHARE = 0.9


def collapse_message(shares: Sequence[float], experts: Sequence[str], what: str) -> str | None:
    """A one-line warning when one expert takes more than :data:`COLLAPSE_SHARE` of ``shares``.

    ``what`` says which collapse it is, and the hint names what can help for that kind:

    * ``"labels"`` (a *label collapse*: one expert is best on nearly every training image, so any
      router, however good, gives it nearly every image): other experts or sigmas, ``point`` label
      radii, more label draws; no router recipe changes the labels;
    * ``"training"`` (a *training collapse*: the labels are split, yet the trained router's choices
      are not): a router that sees more (``--router-input experts``), a lower ``--temperature``,
      more ``--epochs``, a smaller ``--lambda``;
    * anything else: ``what`` names it and the message lists both kinds' hints.

    :func:`rsbench.train.router.train_router` emits each at most once per run (labels before
    training, training after its last epoch and only when the labels did not collapse).
    """
    if len(shares) == 0:
        return None
    k = int(np.argmax(shares))
    if float(shares[k]) <= COLLAPSE_SHARE:
        return None
    share = f"{100 * float(shares[k]):.1f}% of the images go to {experts[k]} (> {100 * COLLAPSE_SHARE:.0f}%)"
    if what == "labels":
        return (
            f"label collapse: {experts[k]} is the best expert on {100 * float(shares[k]):.1f}% of "
            f"the training images (> {100 * COLLAPSE_SHARE:.0f}%), so the dual will behave like "
            "that expert whatever the router learns. What helps: other experts or sigmas (e.g. a "
            "smaller sigma next to it), --label-radius point, a larger --label-n; no router recipe "
            "changes the labels"
        )
    if what == "training":
        return (
            f"training collapse: the trained router sends {100 * float(shares[k]):.1f}% of the "
            f"images to {experts[k]} (> {100 * COLLAPSE_SHARE:.0f}%) although the labels are split; "
            "the dual will behave like that expert. What helps: a router that sees the experts "
            "(--router-input experts), a lower --temperature, more --epochs, a smaller --lambda"
        )
    return (
        f"{what} collapsed: {share}; the dual model will behave like that expert. Try a "
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
    from rsbench.weights.cache import cache_root

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

    from rsbench.engine.noise import noise_keys
    from rsbench.engine.sampling import model_device
    from rsbench.engine.smoothing import SmoothedClassifier, certify_from_counts

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
    common: dict[str, Any] = {"expert": expert_id, "expert_index": expert_index, "experts": experts}
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
        # samples): never the noise that certifies any test image (rsbench.engine.noise)
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
        atomic_write(path, functools.partial(_write_parquet, frame))
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


def _write_parquet(frame: Any, path: Path) -> None:
    frame.to_parquet(path, index=False)


def keep_mask(radii: np.ndarray) -> np.ndarray:
    """Boolean mask of the images (rows of ``[N, K]`` radii) that some expert certifies (R > 0)."""
    return np.asarray((np.asarray(radii, dtype=np.float64) > 0).any(axis=1), dtype=bool)


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
