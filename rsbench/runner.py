"""Certification runs: protocols, subsets, resumable chunked runs, shards and torchrun.

A run certifies one zoo model (expert, dual or cascade) on a subset of one dataset split under one set of
parameters and writes one Parquet row per sample into ``<out>/<run_name>/`` (:mod:`rsbench.results`).

Guarantees
----------
* **Identity.** A run directory is named after a hash of everything that changes the numbers
  (:meth:`RunConfig.identity`): model and zoo entry digest(s), dataset, split, subset, n0, n, alpha,
  sigma(s), alpha split, seed, precision, device type (CPU and CUDA draw different streams), the
  noise scheme (:data:`rsbench.noise.NOISE_SCHEME`), the bounds' rounding (:data:`BOUNDS_VERSION`),
  protocol, and channels-last / compile when
  they are on. A run directory made under another noise scheme (or before the scheme was recorded)
  is refused, never resumed. The same configuration resumes the same directory; a changed one starts a new
  directory. Batch size, chunk size and CPU threads do not change any result (per-sample seeding,
  :mod:`rsbench.sampling`) and are not part of the identity.
* **Resume.** Completed samples are read from the valid part files; a part that fails to read is
  deleted (with a warning) and its samples certified again; a chunk in flight when a process dies
  leaves only a ``.tmp`` file that is removed. Every sample's votes depend only on (model, image,
  and its noise keys: dataset, split, index, seed; :mod:`rsbench.noise`), so a resumed run equals
  an uninterrupted one row for row (``seconds`` aside).
* **Concurrency.** Each shard holds a lock for its whole run (a second process on the same shard
  waits for it), and every chunk is written under a run-wide lock after dropping samples another
  process has already written: no sample is ever written twice.
* **Shards.** ``shard = (I, N)`` takes the samples at positions ``p`` (in the selection) with
  ``p % N == I``; disjoint shards write their own parts into the same run directory. Under
  torchrun (``WORLD_SIZE > 1``) rank ``r`` of ``W`` takes shard ``I + N * r`` of ``N * W``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rsbench import device as D
from rsbench import results as R
from rsbench.errors import (
    ConfigError,
    ResultsError,
    check_alpha,
    check_alpha_router_fraction,
    check_count,
    check_precision,
    check_seed,
    check_sigma,
)
from rsbench.noise import NOISE_SCHEME, check_noise_dtype
from rsbench.protocols import (  # noqa: F401  (re-exported: the protocol registry)
    CUSTOM_PROTOCOL,
    PROTOCOLS,
    Protocol,
    Subset,
    check_protocol,
    get_protocol,
    protocol_deviation,
    protocol_for,
    protocol_split,
)

logger = logging.getLogger(__name__)

#: The embedded default run (``rsbench certify`` with no id): the experts, then the dual model.
EMBEDDED_DEFAULT_IDS: tuple[str, ...] = (
    "embedded-fmnist-s0.25",
    "embedded-fmnist-s0.50",
    "embedded-fmnist-s1.00",
    "embedded-fmnist-dual",
)
#: Protocol of the embedded default run.
EMBEDDED_DEFAULT_PROTOCOL = "cpu"
#: torch CPU threads of the embedded default run (results/perf.md): its small networks gain little
#: from a second intra-op thread, and the engine's noise thread uses the second core instead.
EMBEDDED_DEFAULT_THREADS = 1
#: Architectures for which CPU runs default to :data:`EMBEDDED_DEFAULT_THREADS` torch threads: the
#: small networks measured in results/perf.md (a second intra-op thread gains little when the
#: machine is idle and costs 5-20x when another process holds a core).
SMALL_CPU_ARCHS = ("fmnist_cnn", "mlp", "pooled_mlp", "small_denoiser")
#: Noisy samples per forward pass of the embedded default run (results/perf.md).
EMBEDDED_DEFAULT_BATCH = 1000
#: Default noisy samples per forward pass (``--batch``).
DEFAULT_BATCH = 1000
#: The runner hands each CERTIFY call enough images for about this many forward batches of the
#: estimation stage, so that noise drawing overlaps the forward passes (results/perf.md).
PIPELINE_BATCHES = 8


#: Version of the certificate arithmetic, part of every run identity: 1 = SciPy's Clopper-Pearson
#: bound as computed; 2 = rounded down by rsbench.stats.CP_ROUND_DOWN (never above the exact bound).
BOUNDS_VERSION = 2


# ------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs. Build it with :func:`resolve_config`.

    ``identity()`` hashes the fields that change results; ``batch_size``, ``chunk_size``,
    ``threads``, ``device`` (only its type counts) and ``data_root`` do not.

    ``precision`` changes votes (bf16/fp16 logits round differently), so it is part of the identity.
    ``channels_last`` and ``compile`` compute the same function in exact arithmetic, but they change
    the kernels and therefore the float rounding of the logits, and a vote on a near-tie can flip;
    a run directory must hold rows of one computation only (a resumed run equals an uninterrupted
    one row for row), so they are part of the identity too, but only when on: a run with both off
    keeps the identity it had before these options existed. The batch size is not: packing and
    noise do not depend on it (:mod:`rsbench.sampling`), and the tests check the votes are equal.
    """

    model_id: str
    kind: str  # expert | dual | cascade
    dataset: str
    split: str
    protocol: str
    n0: int
    n: int
    alpha: float
    seed: int = 0
    sigma: float | None = None  # expert: certification sigma
    stride: int = 1
    limit: int | None = None
    indices: tuple[int, ...] | None = None
    precision: str = "fp32"
    batch_size: int = DEFAULT_BATCH
    device: str = "cpu"
    chunk_size: int = 64
    entry_digest: str = ""
    channels_last: bool = False
    compile: bool = False
    threads: int | None = None  # torch CPU threads (None: torch's default)
    noise_dtype: str = "auto"  # rsbench.sampling.NOISE_DTYPES; float32 is the (faster) opt-out
    # dual only
    router_id: str | None = None
    expert_ids: tuple[str, ...] = ()
    sigmas: tuple[float, ...] = ()
    sigma_router: float | None = None
    alpha_router_fraction: float | None = None
    # cascade only (expert_ids/sigmas above hold its stages, largest sigma first)
    p0: float | None = None
    alpha_split: str | None = None
    data_root: str | None = None

    def identity_fields(self) -> dict[str, Any]:
        """The configuration that determines every result value."""
        data = asdict(self)
        for key in ("batch_size", "chunk_size", "device", "data_root", "threads"):
            data.pop(key)
        for key in ("channels_last", "compile"):  # only when on: older identities stay valid
            if not data[key]:
                data.pop(key)
        for key in ("p0", "alpha_split"):  # cascade runs only: other identities stay valid
            if data[key] is None:
                data.pop(key)
        data["device_type"] = device_type(self.device)  # CPU and CUDA draw different streams
        data["format_version"] = R.RESULTS_FORMAT_VERSION
        data["noise_scheme"] = NOISE_SCHEME
        data["bounds_version"] = BOUNDS_VERSION
        return data

    def identity(self) -> str:
        """sha256 (hex) of :meth:`identity_fields`."""
        return R.digest(self.identity_fields())

    def run_name(self) -> str:
        """Directory name: readable prefix plus the first 12 hex digits of the identity."""
        parts = [self.model_id, self.protocol, f"{self.dataset}-{self.split}"]
        if self.kind == "expert" and self.sigma is not None:  # denoised experts too
            parts.append(f"s{self.sigma:g}")
        name = "-".join(parts) + "-" + self.identity()[:12]
        return re.sub(r"[^A-Za-z0-9._+-]+", "_", name)


def device_type(device: str) -> str:
    """``cpu`` or ``cuda`` from a device string like ``cuda:1`` (:func:`rsbench.device.device_type`)."""
    return D.device_type(device)


def resolve_device(device: str | None) -> str:
    """``--device`` resolved by :func:`rsbench.device.resolve`: ``cpu`` or an indexed ``cuda:N``
    (``cuda:LOCAL_RANK`` under torchrun); :class:`ConfigError` for an unsupported device."""
    return str(D.resolve(device))


def resolve_config(
    entry,
    *,
    zoo=None,
    protocol: str = "cpu",
    dataset: str | None = None,
    split: str | None = None,
    n0: int | None = None,
    n: int | None = None,
    alpha: float | None = None,
    sigma: float | None = None,
    stride: int | None = None,
    limit: int | None = None,
    indices: Sequence[int] | None = None,
    batch_size: int = DEFAULT_BATCH,
    seed: int = 0,
    precision: str = "fp32",
    device: str | None = "cpu",
    chunk_size: int = 64,
    data_root: str | os.PathLike | None = None,
    alpha_router_fraction: float | None = None,
    sigma_router: float | None = None,
    channels_last: bool = False,
    compile: bool = False,
    threads: int | None = None,
    p0: float | None = None,
    alpha_split: str | None = None,
    noise_dtype: str = "auto",
) -> RunConfig:
    """A :class:`RunConfig` for zoo ``entry`` under ``protocol`` with the given overrides.

    Any override of n0, n, alpha, split, stride, limit or indices that differs from the protocol
    records the protocol as ``custom`` (leaderboards never mix it with the named protocol).
    ``zoo`` is needed for dual entries (to resolve the router's and experts' entries).
    A ``denoised`` entry certifies as an expert (``kind`` ``expert``) at one of the sigmas it serves
    (``sigma``; default: its only one); its digest covers the denoiser and the classifier.
    """
    from rsbench.zoo import entry_digest

    proto = get_protocol(protocol)
    if entry.kind not in ("expert", "dual", "cascade", "denoised"):
        raise ConfigError(
            f"{entry.id} is a {entry.kind}; certify an expert, dual or cascade entry (a router is "
            "certified as part of its dual entry)"
        )
    if entry.kind != "cascade" and (p0 is not None or alpha_split is not None):
        raise ConfigError(f"{entry.id} is a {entry.kind}; --p0/--alpha-split apply to cascade ids")
    dataset = dataset or entry.dataset
    subset = proto.subset_for(dataset)
    default_split = subset.split or ("val" if dataset == "imagenet" else "test")
    split = split or default_split
    deviates = split != default_split
    if indices is not None:
        if stride is not None or limit is not None:
            raise ConfigError("give either --indices or --stride/--limit, not both")
        indices_t: tuple[int, ...] | None = tuple(int(i) for i in indices)
        stride_v, limit_v = 1, None
        deviates = True
    else:
        indices_t = None
        stride_v = check_count(stride, "stride") if stride is not None else subset.stride
        limit_v = check_count(limit, "limit") if limit is not None else subset.limit
        deviates |= stride_v != subset.stride or limit_v != subset.limit
    n0_v = check_count(n0 if n0 is not None else proto.n0, "n0")
    n_v = check_count(n if n is not None else proto.n, "n")
    alpha_v = check_alpha(alpha if alpha is not None else proto.alpha)
    deviates |= (n0_v, n_v, alpha_v) != (proto.n0, proto.n, proto.alpha)
    check_precision(precision)
    resolved_device = resolve_device(device)
    common = dict(
        model_id=entry.id,
        kind="expert" if entry.kind == "denoised" else entry.kind,
        dataset=dataset,
        split=split,
        protocol=CUSTOM_PROTOCOL if deviates else proto.name,
        n0=n0_v,
        n=n_v,
        alpha=alpha_v,
        seed=check_seed(seed),
        stride=stride_v,
        limit=limit_v,
        indices=indices_t,
        precision=precision,
        channels_last=bool(channels_last),
        compile=bool(compile),
        noise_dtype=check_noise_dtype(noise_dtype),
        threads=(
            check_count(threads, "threads")
            if threads is not None
            else default_threads(entry, zoo, resolved_device)
        ),
        batch_size=check_count(batch_size, "batch"),
        device=resolved_device,
        chunk_size=check_count(chunk_size, "chunk_size"),
        data_root=os.fspath(data_root) if data_root is not None else None,
    )
    if entry.kind in ("expert", "denoised"):
        if alpha_router_fraction is not None or sigma_router is not None:
            raise ConfigError(
                f"{entry.id} is an expert; --alpha-router-fraction/--sigma-router apply to dual ids"
            )
        if entry.kind == "denoised":
            from rsbench.denoised import check_served

            served = ", ".join(f"{s:g}" for s in entry.sigmas)
            if sigma is None and len(entry.sigmas) > 1:
                raise ConfigError(
                    f"{entry.id} is a denoised expert serving sigma {served}; pass --sigma (one of them)"
                )
            value = check_served(
                entry.id, entry.sigmas, sigma if sigma is not None else entry.sigmas[0]
            )
            return RunConfig(sigma=value, entry_digest=entry_digest(entry), **common)
        value = sigma if sigma is not None else entry.train_sigma
        if sigma is None and not value:  # trained without noise (or no train_sigma)
            raise ConfigError(f"{entry.id} has no train_sigma (> 0); pass --sigma")
        return RunConfig(sigma=check_sigma(value), entry_digest=entry_digest(entry), **common)
    if zoo is None:
        raise ConfigError(f"{entry.id} is a {entry.kind} entry; resolving it needs the zoo")
    if entry.kind == "cascade":
        return _cascade_config(
            entry, zoo, common, sigma, alpha_router_fraction, sigma_router, p0, alpha_split
        )
    if sigma is not None:
        raise ConfigError(
            f"{entry.id} is a dual entry: its experts' sigmas come from the entry, drop --sigma"
        )
    router = zoo.get(entry.router)
    experts = [zoo.get(e) for e in entry.experts]
    sigmas, s_router, fraction = dual_values(entry, zoo, sigma_router, alpha_router_fraction)
    digest = R.digest(
        {
            "dual": entry_digest(entry),
            "router": entry_digest(router),
            "experts": [entry_digest(e) for e in experts],
        }
    )
    fraction = check_alpha_router_fraction(fraction)
    s_router = check_sigma(s_router, "sigma_router")
    return RunConfig(
        entry_digest=digest,
        router_id=router.id,
        expert_ids=tuple(e.id for e in experts),
        sigmas=tuple(check_sigma(s) for s in sigmas),
        sigma_router=s_router,
        alpha_router_fraction=fraction,
        **common,
    )


def dual_values(
    entry, zoo, sigma_router: float | None = None, alpha_router_fraction: float | None = None
) -> tuple[tuple[float, ...], float, float]:
    """``(expert sigmas, sigma_router, alpha_router_fraction)`` of dual ``entry``: the overrides,
    else the entry's values, else the experts' and the router's ``train_sigma`` and 0.5 (not yet
    range-checked). The one place a dual model's noise levels and alpha split are resolved
    (:func:`resolve_config`, :func:`rsbench.load`, co-training in :mod:`rsbench.train.finetune`)."""
    experts = [zoo.get(e) for e in entry.experts]
    sigmas = tuple(entry.sigmas) if entry.sigmas else tuple(e.train_sigma for e in experts)
    s_router = sigma_router if sigma_router is not None else entry.sigma_router
    if s_router is None:
        s_router = zoo.get(entry.router).train_sigma
    fraction = (
        alpha_router_fraction if alpha_router_fraction is not None else entry.alpha_router_fraction
    )
    return sigmas, s_router, 0.5 if fraction is None else fraction


def _cascade_config(
    entry, zoo, common: dict[str, Any], sigma, alpha_router_fraction, sigma_router, p0, alpha_split
) -> RunConfig:
    """The :class:`RunConfig` of a cascade entry: stages ordered by sigma, largest first."""
    from rsbench.cascade import DEFAULT_ALPHA_SPLIT, DEFAULT_P0, check_alpha_split, check_p0
    from rsbench.zoo import entry_digest

    if sigma is not None or alpha_router_fraction is not None or sigma_router is not None:
        raise ConfigError(
            f"{entry.id} is a cascade entry: its sigmas come from the entry and it has no router; "
            "drop --sigma/--sigma-router/--alpha-router-fraction"
        )
    experts = [zoo.get(e) for e in entry.experts]
    sigmas = tuple(entry.sigmas) if entry.sigmas else tuple(e.train_sigma for e in experts)
    order = sorted(range(len(experts)), key=lambda i: -float(sigmas[i]))
    digest = R.digest(
        {"cascade": entry_digest(entry), "experts": [entry_digest(e) for e in experts]}
    )
    p0_value = p0 if p0 is not None else entry.p0
    split = alpha_split if alpha_split is not None else entry.alpha_split
    return RunConfig(
        entry_digest=digest,
        expert_ids=tuple(experts[i].id for i in order),
        sigmas=tuple(check_sigma(sigmas[i]) for i in order),
        p0=check_p0(DEFAULT_P0 if p0_value is None else p0_value),
        alpha_split=check_alpha_split(DEFAULT_ALPHA_SPLIT if split is None else split),
        **common,
    )


def default_threads(entry, zoo, device: str) -> int | None:
    """Torch CPU threads for a run that does not set them: 1 on CPU when every network of the run
    is one of :data:`SMALL_CPU_ARCHS`, else None (torch's default)."""
    if device_type(device) != "cpu":
        return None
    if entry.kind in ("dual", "cascade"):
        if zoo is None:
            return None
        networks = [zoo.get(e) for e in entry.experts]
        if entry.kind == "dual":
            networks.append(zoo.get(entry.router))
    else:
        networks = [entry]
    archs = []
    for e in networks:
        if e.kind == "denoised":  # its two networks (a hub component has no rsbench arch)
            archs += [(e.denoiser or {}).get("arch"), (e.classifier or {}).get("arch")]
        else:
            archs.append(getattr(e, "arch", None))
    if all(arch in SMALL_CPU_ARCHS for arch in archs):
        return EMBEDDED_DEFAULT_THREADS
    return None


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the body with ``threads`` torch CPU threads (None: unchanged), then restore the count."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------ progress


@dataclass(frozen=True)
class ProgressEvent:
    """A progress report: ``done`` of ``total`` samples of this process's shard are written or
    certified; ``certified`` of them are correct (certified accuracy at radius 0 so far)."""

    run_id: str
    done: int
    total: int
    certified: int
    message: str = ""

    @property
    def accuracy(self) -> float:
        """Running certified accuracy at radius 0 (NaN before the first sample)."""
        return self.certified / self.done if self.done else float("nan")


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass(frozen=True)
class RunResult:
    """What one process did: where, how many rows it wrote, whether the whole run is complete."""

    run_dir: Path
    run_id: str
    written: int
    skipped: int
    total: int
    complete: bool
    seconds: float


# ------------------------------------------------------------------------------------ locking


def _lock(path: Path, timeout: float = -1):
    from filelock import FileLock

    return FileLock(str(path), timeout=timeout)


def _run_lock(run_dir: Path):
    """The run-wide lock, held briefly around run.json updates and chunk writes."""
    return _lock(run_dir / ".run.lock")


@contextlib.contextmanager
def _shard_lock(run_dir: Path, shard: str, notify: Callable[[str], None]) -> Iterator[None]:
    from filelock import Timeout

    lock = _lock(run_dir / f".shard-{shard}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        notify(f"another process is certifying shard {shard} of this run; waiting for it")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _open_run_dir(run_dir: Path) -> bool:
    """Create ``run_dir`` and check that its lock can be taken; True when this call created it.

    Any OS refusal (read-only or missing parent, a file in the way) is one :class:`ResultsError`.
    """
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with _run_lock(run_dir):
            pass
    except OSError as exc:
        raise ResultsError(
            f"cannot write in the run directory {run_dir} ({exc.strerror or type(exc).__name__}); "
            "a run needs a writable directory even to resume a complete run (it takes a lock "
            "file there): choose a writable --out or fix the permissions"
        ) from None
    return created


def _discard_empty_run(run_dir: Path) -> None:
    """Remove a run directory that holds no results part and that no other process is using.

    Called when a run that created ``run_dir`` fails before writing a row, so that the directory
    does not block or confuse a retry. Leaves the directory alone when anything else is in it.
    """
    from filelock import Timeout

    if not run_dir.is_dir() or R.list_parts(run_dir):
        return
    locks = [_lock(p, timeout=0) for p in sorted(run_dir.glob(".shard-*.lock"))]
    held = []
    try:
        for lock in locks:
            lock.acquire()
            held.append(lock)
    except (Timeout, OSError):
        return  # another process is certifying into it
    finally:
        for lock in held:
            lock.release()
    for path in run_dir.iterdir():
        if path.name == R.RUN_JSON or path.name.endswith((".lock", ".tmp")):
            path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        run_dir.rmdir()


# ------------------------------------------------------------------------------------ the run


def shard_name(shard: tuple[int, int]) -> str:
    """``(I, N)`` -> ``'IofN'`` (part file names)."""
    return f"{shard[0]}of{shard[1]}"


def check_shard(shard: tuple[int, int]) -> tuple[int, int]:
    """Validate ``(I, N)``: ``N >= 1`` and ``0 <= I < N``."""
    index, count = (int(v) for v in shard)
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"shard {index}/{count} is not allowed; use I/N with 0 <= I < N")
    return index, count


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``'I/N'``."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match:
        raise ConfigError(f"shard {text!r} is not I/N (e.g. 0/4)")
    return check_shard((int(match[1]), int(match[2])))


class _PartIndex:
    """The samples already written to a run directory (all shards), updated incrementally."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.seen: set[str] = set()
        self.done: set[int] = set()
        self.rows = 0
        self.correct = 0

    def refresh(self, repair: bool = False) -> None:
        """Read part files not read before; a corrupted part raises, or with ``repair`` is deleted."""
        owner = R.declared_run_id(self.run_dir)
        for part in R.list_parts(self.run_dir):
            if part.name in self.seen:
                continue
            try:
                table = R.read_part(part)
            except ResultsError as exc:
                if not repair:
                    raise
                logger.warning("%s; deleting it, its samples will be certified again", exc)
                part.unlink(missing_ok=True)
                continue
            owner = R.check_part_owner(table, part, owner)  # a foreign part is refused, kept
            self.seen.add(part.name)
            idx = table.column("index").to_pylist()
            dupes = self.done.intersection(idx)
            if dupes:
                raise ResultsError(
                    f"{part} repeats samples {sorted(dupes)[:5]} already in this run"
                )
            self.done.update(idx)
            self.rows += len(idx)
            self.correct += sum(bool(c) for c in table.column("correct").to_pylist())

    def next_seq(self, shard: str) -> int:
        seqs = [s for sh, s in (R.parse_part_name(p) for p in self.seen) if sh == shard]
        return max(seqs, default=-1) + 1


def _remove_stale_tmp(run_dir: Path, shard: str) -> None:
    for tmp in run_dir.glob(f".part-{shard}-*.tmp"):
        logger.info("removing %s left by an interrupted write", tmp)
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _interrupt_marker(run_dir: Path, run_lock: Any) -> Iterator[None]:
    """On Ctrl-C (KeyboardInterrupt) in the body, record ``status: interrupted`` in run.json unless
    the run is complete, then re-raise. The rows written so far stay; running the same command
    again resumes, and :func:`_prepare_run_dir` sets ``running`` again."""
    try:
        yield
    except KeyboardInterrupt:
        with run_lock, contextlib.suppress(ResultsError):
            info = R.read_run_json(run_dir)
            if info.get("status") != "complete":
                info["status"] = "interrupted"
                info["interrupted"] = R.utc_now()
                R.write_json_atomic(run_dir / R.RUN_JSON, info)
        raise


def check_noise_scheme(run_dir: Path, info: Mapping[str, Any]) -> None:
    """Refuse to add rows to a run made under another noise scheme (or before schemes were recorded).

    Its samples were drawn from other streams (:mod:`rsbench.noise`), so resuming it would mix two
    computations in one run.
    """
    fields = info.get("identity_fields")
    scheme = fields.get("noise_scheme") if isinstance(fields, Mapping) else None
    if scheme != NOISE_SCHEME:
        made = f"noise scheme {scheme}" if scheme is not None else "an older noise scheme"
        raise ResultsError(
            f"{run_dir} was made under {made} and this rsbench draws noise scheme {NOISE_SCHEME}; "
            "start afresh with another --out, or delete that directory"
        )


def _prepare_run_dir(
    run_dir: Path, config: RunConfig, run_info: Mapping[str, Any], num_indices: int
) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / R.RUN_JSON
    identity = config.identity()
    if path.exists():
        info = R.read_run_json(run_dir)
        check_noise_scheme(run_dir, info)
        if info.get("identity") != identity:
            raise ResultsError(
                f"{run_dir} holds a run with another configuration (identity {info.get('identity')!r}); "
                "remove it or choose another --out"
            )
        seen = {m.get("id"): m.get("weights_sha256") for m in info.get("models") or []}
        for model in run_info.get("models") or []:
            before = seen.get(model.get("id"))
            if before and model.get("weights_sha256") and before != model["weights_sha256"]:
                raise ResultsError(
                    f"{run_dir}: the weights of {model['id']} changed since this run started "
                    f"(sha256 {before[:12]}... -> {model['weights_sha256'][:12]}...); pin the entry's "
                    "sha256 or choose another --out"
                )
        if info.get("format_version") != R.RESULTS_FORMAT_VERSION:
            raise ResultsError(
                f"{run_dir} has results format {info.get('format_version')}; this rsbench writes "
                f"{R.RESULTS_FORMAT_VERSION}"
            )
        if info.get("status") == "interrupted":  # resumed: running again
            info["status"] = "running"
            R.write_json_atomic(path, info)
        return
    info = {
        "format_version": R.RESULTS_FORMAT_VERSION,
        "run_id": run_dir.name,
        "identity": identity,
        "status": "running",
        "config": asdict(config),
        "identity_fields": config.identity_fields(),
        "num_indices": num_indices,
        "started": R.utc_now(),
        "finished": None,
        "num_rows": 0,
        **dict(run_info),
    }
    R.write_json_atomic(path, info)


def _finish(
    run_dir: Path, index: _PartIndex, num_indices: int, extra: Mapping[str, Any] | None = None
) -> bool:
    index.refresh(repair=False)
    info = R.read_run_json(run_dir)
    complete = len(index.done) == num_indices
    info["num_rows"] = index.rows
    if complete and info.get("status") != "complete":
        info["status"] = "complete"
        info["finished"] = R.utc_now()
    if extra:
        info.update(extra)
    R.write_json_atomic(run_dir / R.RUN_JSON, info)
    return complete


def execute(
    config: RunConfig,
    certifier: Any,
    dataset: Any,
    run_dir: str | os.PathLike,
    *,
    positions: Sequence[int],
    shard: tuple[int, int] = (0, 1),
    run_info: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    expert_ids: Sequence[str] = (),
    finalize: bool = True,
) -> RunResult:
    """Certify the samples at ``positions`` of ``dataset`` that fall in ``shard`` into ``run_dir``.

    ``certifier`` is a :class:`rsbench.smoothing.SmoothedClassifier` (expert runs) or a
    :class:`rsbench.dual.DualSmoothed` (dual runs, ``expert_ids`` name its experts). ``positions``
    are positions in ``dataset``; the recorded ``index`` is the sample's canonical index in its source
    dataset (``dataset.source_indices``). Resumes, locks and writes as the module docstring says.
    """
    run_dir = Path(run_dir)
    shard = check_shard(shard)
    name = shard_name(shard)
    positions = [int(p) for p in positions]
    sources = [int(dataset.source_indices[p]) for p in positions]
    labels = [int(dataset.labels[p]) for p in positions]
    mine = [k for k in range(len(positions)) if k % shard[1] == shard[0]]
    # rows name the sample in its source dataset (the embedded subset is fashion-mnist/test)
    data_name = str(getattr(dataset, "source_name", None) or config.dataset)
    data_split = str(getattr(dataset, "split", None) or config.split)
    run_id = run_dir.name
    started = time.perf_counter()

    def report(done: int, total: int, certified: int, message: str = "") -> None:
        if progress is not None:
            progress(ProgressEvent(run_id, done, total, certified, message))

    _open_run_dir(run_dir)
    run_lock = _run_lock(run_dir)
    with run_lock:
        _prepare_run_dir(run_dir, config, run_info or {}, len(positions))
    with (
        _interrupt_marker(run_dir, run_lock),
        _shard_lock(run_dir, name, lambda msg: report(0, len(mine), 0, msg)),
    ):
        parts = _PartIndex(run_dir)
        with run_lock:
            _remove_stale_tmp(run_dir, name)
            parts.refresh(repair=True)
        todo = [k for k in mine if sources[k] not in parts.done]
        skipped = len(mine) - len(todo)
        mine_set = {sources[k] for k in mine}
        prior_correct = _count_correct(run_dir, parts, mine_set)
        done, certified = skipped, prior_correct
        report(done, len(mine), certified)
        written = 0
        group = images_per_call(config)
        pending: list[dict[str, Any]] = []
        for start in range(0, len(todo), config.chunk_size):
            chunk = todo[start : start + config.chunk_size]
            for g in range(0, len(chunk), group):
                ks = chunk[g : g + group]
                images = dataset.images([positions[k] for k in ks])
                t0 = time.perf_counter()
                certs = certifier.certify_batch(
                    images,
                    config.n0,
                    config.n,
                    config.alpha,
                    seed=config.seed,
                    indices=[sources[k] for k in ks],
                    dataset=data_name,
                    split=data_split,
                )
                seconds = (time.perf_counter() - t0) / len(ks)
                for k, cert in zip(ks, certs):
                    row = R.certificate_row(
                        cert, config, run_id, sources[k], labels[k], seconds, expert_ids
                    )
                    row["dataset"], row["split"] = data_name, data_split
                    pending.append(row)
                    done += 1
                    certified += bool(row["correct"])
                report(done, len(mine), certified)
            with run_lock:
                parts.refresh(repair=False)
                rows = [r for r in pending if r["index"] not in parts.done]
                if len(rows) < len(pending):
                    logger.warning(
                        "%d samples were already written by another process; dropped",
                        len(pending) - len(rows),
                    )
                if rows:
                    seq = parts.next_seq(name)
                    path = R.write_chunk(run_dir, rows, name, seq)
                    parts.seen.add(path.name)
                    parts.done.update(r["index"] for r in rows)
                    parts.rows += len(rows)
                    written += len(rows)
            pending = []
        complete = False
        if finalize:
            with run_lock:
                complete = _finish(run_dir, parts, len(positions))
        else:
            with run_lock:
                parts.refresh()
                complete = len(parts.done) == len(positions)
    return RunResult(
        run_dir, run_id, written, skipped, len(mine), complete, time.perf_counter() - started
    )


def images_per_call(config: RunConfig) -> int:
    """Images per CERTIFY call: enough for about :data:`PIPELINE_BATCHES` estimation batches.

    Several batches per call let the engine draw the next batch's noise while the current one runs
    (:mod:`rsbench.sampling`); results do not depend on it (per-image seeding). At most one chunk.
    """
    per_image = max(1, config.n0 + config.n)
    return max(1, min(config.chunk_size, -(-PIPELINE_BATCHES * config.batch_size // per_image)))


def _count_correct(run_dir: Path, parts: _PartIndex, indices: set[int]) -> int:
    if not parts.seen:
        return 0
    total = 0
    for name in sorted(parts.seen):
        table = R.read_part(run_dir / name).select(["index", "correct"]).to_pydict()
        total += sum(1 for i, c in zip(table["index"], table["correct"]) if c and i in indices)
    return total


# ------------------------------------------------------------------------------------ distributed


@dataclass(frozen=True)
class DistInfo:
    """torchrun's environment: ``rank`` of ``world_size``, ``local_rank`` (device index)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def dist_info(environ: Mapping[str, str] | None = None) -> DistInfo:
    """Read ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (torchrun); a single process when absent."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError("WORLD_SIZE/RANK/LOCAL_RANK must be integers (set by torchrun)") from None
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return DistInfo(rank, world, local)


@contextlib.contextmanager
def distributed(device: str) -> Iterator[DistInfo]:
    """Initialise ``torch.distributed`` under torchrun (gloo on CPU, nccl on CUDA); tear it down after."""
    info = dist_info()
    if not info.active:
        yield info
        return
    import torch.distributed as dist

    created = False
    if not dist.is_initialized():
        dist.init_process_group(backend=D.backend(device))
        created = True
    try:
        yield info
    finally:
        if created:
            dist.destroy_process_group()


def rank_device(device: str, info: DistInfo) -> str:
    """The device of this rank: ``cuda:LOCAL_RANK`` for a bare ``cuda`` under torchrun (a device
    resolved by :func:`rsbench.device.resolve` is already indexed and is returned as it is)."""
    if info.active and device == "cuda":
        return f"cuda:{info.local_rank}"
    return device


def combine_shards(shard: tuple[int, int], info: DistInfo) -> tuple[int, int]:
    """Shard ``I/N`` split over ``W`` ranks: rank ``r`` takes ``I + N*r`` of ``N*W`` (a partition of I/N)."""
    index, count = check_shard(shard)
    return index + count * info.rank, count * info.world_size


# ------------------------------------------------------------------------------------ from the zoo


@dataclass
class Prepared:
    """A run ready to execute: its config, directory, selected positions and loaders."""

    config: RunConfig
    run_dir: Path
    dataset: Any
    positions: list[int]
    entry: Any
    zoo: Any

    @property
    def num_images(self) -> int:
        return len(self.positions)


def prepare(config: RunConfig, zoo, out_dir: str | os.PathLike, download: bool = False) -> Prepared:
    """Load the dataset and resolve the subset of ``config`` (no model is loaded).

    ``download`` lets torchvision fetch CIFAR-10 / MNIST / Fashion-MNIST when not found locally.
    """
    from rsbench.data import load_dataset, select_indices

    dataset = load_dataset(config.dataset, config.split, config.data_root, download=download)
    positions = select_indices(
        len(dataset),
        stride=config.stride,
        limit=config.limit,
        indices=list(config.indices) if config.indices is not None else None,
    )
    entry = zoo.get(config.model_id)
    shape = getattr(dataset, "input_shape", None)
    expected = _input_shape(entry, zoo)
    if expected is not None and shape is not None and tuple(expected) != tuple(shape):
        raise ConfigError(
            f"{entry.id} expects images of shape {list(expected)} but {config.dataset}/{config.split} has "
            f"{list(shape)}; pick the model's dataset"
        )
    return Prepared(config, Path(out_dir) / config.run_name(), dataset, positions, entry, zoo)


def _input_shape(entry, zoo) -> tuple[int, ...] | None:
    if entry.kind in ("dual", "cascade"):
        return tuple(zoo.get(entry.experts[0]).input_shape or ()) or None
    return tuple(entry.input_shape) if entry.input_shape else None


def _num_classes(entry, zoo) -> int:
    if entry.kind in ("dual", "cascade"):
        return int(entry.num_classes or zoo.get(entry.experts[0]).num_classes)
    return int(entry.num_classes)


def build_certifier(
    prepared: Prepared,
    device: str,
    *,
    cache_dir=None,
    require_pinned: bool = False,
    weights_progress: Any = None,
) -> tuple[Any, dict[str, Any]]:
    """Load the model(s) on ``device`` and wrap them for certification; also return provenance.

    Every network is probed on the run's first image before anything is certified."""
    return certifier_for(
        prepared.config,
        prepared.zoo,
        device,
        probe_image=prepared.dataset.images([prepared.positions[0]]),
        cache_dir=cache_dir,
        require_pinned=require_pinned,
        weights_progress=weights_progress,
    )


def certifier_for(
    config: RunConfig,
    zoo,
    device: str,
    *,
    probe_image: Any = None,
    cache_dir=None,
    require_pinned: bool = False,
    weights_progress: Any = None,
) -> tuple[Any, dict[str, Any]]:
    """The smoothed model of a resolved ``config`` (a :class:`~rsbench.smoothing.SmoothedClassifier`,
    :class:`~rsbench.dual.DualSmoothed` or :class:`~rsbench.cascade.CascadeSmoothed`) with its
    networks loaded on ``device``, and its provenance. Every value it certifies with (sigma(s),
    sigma_router, alpha split, p0) comes from ``config`` (:func:`resolve_config`, the one place
    they are resolved). ``probe_image`` (a ``[1, C, H, W]`` batch): each network is run on it once
    and its output checked first."""
    from rsbench.models import load_model
    from rsbench.zoo import entry_digest

    entry = zoo.get(config.model_id)
    shape = _input_shape(entry, zoo)
    kwargs = dict(
        batch_size=config.batch_size,
        precision=config.precision,
        input_shape=shape,
        channels_last=config.channels_last,
        device=D.as_torch(device),
        noise_dtype=config.noise_dtype,
    )

    def load(e, sigma=None):
        model = load_model(
            e,
            device=device,
            cache_dir=cache_dir,
            require_pinned=require_pinned,
            progress=weights_progress,
            sigma=sigma,
        )
        return model, {
            "id": e.id,
            "entry": e.to_yaml_dict(),
            "entry_digest": entry_digest(e),
            "weights_sha256": getattr(model, "weights_sha256", None),
            "weights_pinned": getattr(model, "weights_pinned", None),
        }

    def checked(e, model):
        if probe_image is not None:
            probe(model, probe_image, e.num_classes, what=e.id, device=device)
        return for_speed(model, config)

    if config.kind == "expert":
        from rsbench.smoothing import SmoothedClassifier

        model, info = load(entry, config.sigma)
        model = checked(entry, model)
        certifier = SmoothedClassifier(model, _num_classes(entry, zoo), config.sigma, **kwargs)
        return certifier, {
            "zoo_entry": info["entry"],
            "zoo_entry_digest": info["entry_digest"],
            "models": [info],
        }
    if config.kind == "cascade":
        from rsbench.cascade import CascadeSmoothed
        from rsbench.denoised import serve

        stages = []
        infos: dict[str, tuple[Any, dict[str, Any]]] = {}
        for expert_id, sigma in zip(config.expert_ids, config.sigmas):
            if expert_id not in infos:  # a denoised expert serves several stages
                infos[expert_id] = load(zoo.get(expert_id))
            stages.append(checked(zoo.get(expert_id), serve(infos[expert_id][0], sigma)))
        certifier = CascadeSmoothed(
            stages,
            config.sigmas,
            _num_classes(entry, zoo),
            p0=config.p0,
            alpha_split=config.alpha_split,
            **kwargs,
        )
        return certifier, {
            "zoo_entry": entry.to_yaml_dict(),
            "zoo_entry_digest": entry_digest(entry),
            "models": [info for _, info in infos.values()],
        }
    from rsbench.dual import DualSmoothed

    router, router_info = load(zoo.get(config.router_id))
    router = checked(zoo.get(config.router_id), router)
    from rsbench.denoised import serve

    loaded: dict[str, tuple[Any, dict[str, Any]]] = {}
    served = []  # one base model per (expert, sigma); a denoised expert shares its networks
    for expert_id, sigma in zip(config.expert_ids, config.sigmas):
        if expert_id not in loaded:
            loaded[expert_id] = load(zoo.get(expert_id))
        served.append(checked(zoo.get(expert_id), serve(loaded[expert_id][0], sigma)))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        certifier = DualSmoothed(
            router,
            served,
            config.sigmas,
            config.sigma_router,
            _num_classes(entry, zoo),
            alpha_router_fraction=config.alpha_router_fraction,
            **kwargs,
        )
    models = [router_info] + [loaded[e][1] for e in dict.fromkeys(config.expert_ids)]
    return certifier, {
        "zoo_entry": entry.to_yaml_dict(),
        "zoo_entry_digest": entry_digest(entry),
        "models": models,
    }


def for_speed(model: Any, config: RunConfig) -> Any:
    """``model`` in channels-last memory format and/or compiled, as ``config`` asks.

    The engine compiles with ``dynamic=False`` and pads partial batches to a few fixed sizes
    (:func:`rsbench.device.compile_model`), so a run compiles each network a handful of times.
    """
    import torch

    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if config.compile:
        model = D.compile_model(model)
    return model


def probe(
    model: Any, images: Any, num_classes: int | None, *, what: str, device: str = "cpu"
) -> None:
    """One forward pass on real ``images``; :class:`ConfigError` when the network cannot take them.

    Catches a wrong ``arch``/``input_shape`` before any run directory is written, as one line.
    """
    import torch

    shape = list(images.shape[1:])
    try:
        with torch.no_grad():
            logits = model(D.to_device(images, device))
    except (RuntimeError, ValueError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(
            f"{what}: the network fails on a {shape} image ({type(exc).__name__}: {first}); check the "
            "entry's arch and input_shape"
        ) from None
    if logits.dim() != 2 or (num_classes is not None and logits.shape[1] != int(num_classes)):
        raise ConfigError(
            f"{what}: the network returns shape {list(logits.shape)} for a {shape} image; expected "
            f"[batch, {num_classes}] logits (check num_classes and arch)"
        )


def run_status(run_dir: str | os.PathLike) -> str | None:
    """``complete``/``running`` from a run directory's run.json, or None when there is none."""
    try:
        return R.read_run_json(run_dir).get("status")
    except ResultsError:
        return None


def run_certification(
    config: RunConfig,
    zoo,
    out_dir: str | os.PathLike,
    *,
    shard: tuple[int, int] = (0, 1),
    progress: ProgressCallback | None = None,
    cache_dir=None,
    require_pinned: bool = False,
    weights_progress: Any = None,
    prepared: Prepared | None = None,
) -> RunResult:
    """Certify zoo model ``config.model_id`` into ``out_dir/<run name>/`` (resumable, sharded).

    Under torchrun (``WORLD_SIZE > 1``) initialises ``torch.distributed`` (gloo on CPU, nccl on
    CUDA), takes this rank's part of ``shard`` on ``cuda:LOCAL_RANK`` (CUDA) and waits for all ranks
    at the end; rank 0 then writes the final run.json status.
    """
    import torch

    prepared = prepared or prepare(config, zoo, out_dir)
    with torch_threads(config.threads), distributed(config.device) as info:
        device = rank_device(config.device, info)
        D.activate(device)
        my_shard = combine_shards(shard, info)
        certifier, provenance = build_certifier(
            prepared,
            device,
            cache_dir=cache_dir,
            require_pinned=require_pinned,
            weights_progress=weights_progress,
        )
        run_info = {
            **provenance,
            "device": device,
            "device_name": D.name(device),
            "precision": config.precision,
            "channels_last": config.channels_last,
            "compile": config.compile,
            "noise_dtype": config.noise_dtype,
            "torch_threads": torch.get_num_threads(),
            "protocol": config.protocol,
            "environment": R.environment_info(),
        }
        fresh = not prepared.run_dir.exists()
        try:
            result = execute(
                config,
                certifier,
                prepared.dataset,
                prepared.run_dir,
                positions=prepared.positions,
                shard=my_shard,
                run_info=run_info,
                progress=progress,
                expert_ids=config.expert_ids,
                finalize=not info.active,
            )
        except Exception:
            if fresh and not info.active:
                _discard_empty_run(prepared.run_dir)  # a failed first chunk leaves nothing behind
            raise
        if info.active:
            import torch.distributed as dist

            dist.barrier()
            if info.rank == 0:
                parts = _PartIndex(prepared.run_dir)
                with _run_lock(prepared.run_dir):
                    complete = _finish(
                        prepared.run_dir,
                        parts,
                        len(prepared.positions),
                        {"world_size": info.world_size},
                    )
                result = replace(result, complete=complete)
            dist.barrier()
            if info.rank != 0:
                result = replace(result, complete=run_status(prepared.run_dir) == "complete")
    return result


# ------------------------------------------------------------------------------------ cost


def samples_per_image(config: RunConfig) -> int:
    """Forward samples one certificate costs at most (dual: router plus one expert; cascade: every
    stage)."""
    per_stage = config.n0 + config.n
    if config.kind == "cascade":
        return per_stage * max(1, len(config.sigmas))
    return per_stage * (2 if config.kind == "dual" else 1)


def measure_throughput(certifier: Any, image, seconds: float = 1.0) -> float:
    """Noisy samples per second of ``certifier`` on one ``image`` (a short warm-up, then timed)."""
    if hasattr(certifier, "experts"):
        expert = certifier.experts[0]
    elif hasattr(certifier, "stages"):
        expert = certifier.stages[0]
    else:
        expert = certifier
    num = max(1, min(expert.batch_size, 2000))
    from rsbench.noise import NoiseKey

    keys = [NoiseKey("throughput", "probe", 0, "select", 0)]  # timing only: no result uses it
    expert.votes(image.unsqueeze(0), num, keys)  # warm-up
    total, t0 = 0, time.perf_counter()
    while True:
        expert.votes(image.unsqueeze(0), num, keys)
        total += num
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds or total >= 50 * num:
            return total / elapsed


def estimate_seconds(config: RunConfig, images: int, throughput: float) -> float:
    """Estimated wall time for ``images`` certificates at ``throughput`` samples per second."""
    if throughput <= 0 or not math.isfinite(throughput):
        return float("nan")
    return images * samples_per_image(config) / throughput
