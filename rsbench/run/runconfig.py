"""Run identity: :class:`RunConfig`, the values of a run resolved from a zoo entry and a protocol.

:func:`resolve_config` is the one place a run's values are resolved (the protocol's n0, n, alpha
and subset, an expert's sigma, a dual model's sigmas, sigma_router and alpha split through
:func:`dual_values`, a cascade's stages, p0 and alpha split); ``rsbench certify`` and
``rsbench.load`` go through it, co-training (:mod:`rsbench.train.finetune`) through
:func:`dual_values`. A resumed run directory made under another noise scheme is refused by
:func:`rsbench.run.store.prepare_run_dir`.

Guarantee
---------
A run directory is named after a hash of everything that changes the numbers
(:meth:`RunConfig.identity`): model and zoo entry digest(s), dataset, split, subset, n0, n, alpha,
sigma(s), alpha split, seed, precision, device type (CPU and CUDA draw different streams), the
noise scheme (:data:`rsbench.engine.noise.NOISE_SCHEME`), the bounds' rounding (:data:`BOUNDS_VERSION`),
protocol, and channels-last / compile when they are on; a sequential run also its estimation
mode, bound, stage sizes, n_max (its ``n``), alpha weighting, futility rule and the radius grid it
stops on (:meth:`rsbench.engine.sequential.SequentialSpec.identity`; a fixed-n run's identity is
what it was before sequential estimation existed). The same configuration resumes the same
directory; a changed one starts a new directory. Batch size, chunk size and CPU threads do not
change any result (per-sample seeding, :mod:`rsbench.engine.sampling`) and are not part of the identity.

Imports the protocol registry (:mod:`rsbench.data.protocols`), the value checks, the noise scheme and
the results format version; the zoo, cascade and denoised modules only lazily.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rsbench import results as R
from rsbench.data.protocols import CUSTOM_PROTOCOL, get_protocol
from rsbench.engine import device as D
from rsbench.engine.noise import NOISE_SCHEME, check_noise_dtype
from rsbench.engine.sequential import DEFAULT_FUTILITY_ALPHA, ESTIMATIONS, SequentialSpec
from rsbench.errors import (
    ConfigError,
    RSBenchError,
    check_alpha,
    check_alpha_router_fraction,
    check_count,
    check_precision,
    check_seed,
    check_sigma,
)

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
SMALL_CPU_ARCHS = ("fmnist_cnn", "mlp", "pooled_mlp", "small_denoiser", "head_mlp", "head_linear")
#: Noisy samples per forward pass of the embedded default run (results/perf.md).
EMBEDDED_DEFAULT_BATCH = 1000
#: Default noisy samples per forward pass (``--batch``).
DEFAULT_BATCH = 1000

#: Version of the certificate arithmetic, part of every run identity: 1 = SciPy's Clopper-Pearson
#: bound as computed; 2 = rounded down by rsbench.engine.stats.CP_ROUND_DOWN (never above the exact bound).
BOUNDS_VERSION = 2


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
    noise do not depend on it (:mod:`rsbench.engine.sampling`), and the tests check the votes are equal.
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
    noise_dtype: str = (
        "auto"  # rsbench.engine.sampling.NOISE_DTYPES; float32 is the (faster) opt-out
    )
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
    # estimation: "fixed" (Cohen's n) or "sequential" (then n is n_max and radii the grid it
    # stops on; rsbench.engine.sequential)
    estimation: str = "fixed"
    radii: tuple[float, ...] | None = None
    # sequential only: the level of the futility upper bound (None: the module's default; it
    # decides when an image stops, never the bound's validity)
    futility_alpha: float | None = None

    def sequential_spec(self) -> SequentialSpec | None:
        """The run's :class:`~rsbench.engine.sequential.SequentialSpec` (None: fixed n)."""
        if self.estimation != "sequential":
            return None
        if not self.radii:
            raise ConfigError(f"the sequential run config of {self.model_id} has no radius grid")
        if self.futility_alpha is None:
            return SequentialSpec(n_max=self.n, radii=self.radii)
        return SequentialSpec(n_max=self.n, radii=self.radii, futility_alpha=self.futility_alpha)

    def record(self) -> dict[str, Any]:
        """The config as run.json keeps it: every field; ``estimation`` and ``radii`` only for a
        sequential run (a fixed run's run.json is what it was before they existed)."""
        data = asdict(self)
        if self.estimation == "fixed":
            data.pop("estimation")
            data.pop("radii")
        if self.futility_alpha is None:  # run.json files from before the option stay the same
            data.pop("futility_alpha")
        return data

    def identity_fields(self) -> dict[str, Any]:
        """The configuration that determines every result value."""
        data = asdict(self)
        data.pop("estimation")
        data.pop("radii")
        data.pop("futility_alpha")  # in the spec's identity below
        spec = self.sequential_spec()
        if spec is not None:  # fixed runs keep the identity they had before
            data["sequential"] = spec.identity()
            if self.kind == "cascade":  # how its stages stop and resume for the caps
                from rsbench.engine.cascade import SEQUENTIAL_RULE

                data["sequential"]["cascade_rule"] = SEQUENTIAL_RULE
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
    """``cpu`` or ``cuda`` from a device string like ``cuda:1`` (:func:`rsbench.engine.device.device_type`)."""
    return D.device_type(device)


def resolve_device(device: str | None) -> str:
    """``--device`` resolved by :func:`rsbench.engine.device.resolve`: ``cpu`` or an indexed ``cuda:N``
    (``cuda:LOCAL_RANK`` under torchrun); :class:`ConfigError` for an unsupported device."""
    return str(D.resolve(device))


def resolve_config(entry, **options: Any) -> RunConfig:
    """A :class:`RunConfig` for zoo ``entry`` (:func:`_resolve`'s keywords); a sequential run's
    plans are built here once for every stage's sigma and alpha, so a grid that no stage can reach
    is one ``ConfigError`` before anything is loaded."""
    config = _resolve(entry, **options)
    spec = config.sequential_spec()
    if spec is not None:
        stages: list[tuple[float, float]] = []
        levels: list[float] = []
        if config.kind == "dual":
            fraction = config.alpha_router_fraction or 0.0
            a_router = config.alpha * fraction
            stages.append((a_router, config.sigma_router or 0.0))
            stages += [(config.alpha - a_router, s) for s in config.sigmas]
        elif config.kind == "cascade":  # each stage's answer bound at its union share, from p0
            if config.alpha_split != "union":
                raise ConfigError(
                    f"{config.model_id}: sequential estimation needs --alpha-split union (the "
                    f"{config.alpha_split} split is not covered by a union bound)"
                )
            share = config.alpha / (2 * len(config.sigmas) - 1)
            stages += [(share, s) for s in config.sigmas]
            levels = [float(config.p0 or 0.5)] * len(stages)
        else:
            stages.append((config.alpha, config.sigma or 0.0))
        for i, (alpha, sigma) in enumerate(stages):
            try:
                spec.plan(alpha, sigma, *levels[i : i + 1])
            except ValueError as exc:
                raise ConfigError(f"sequential estimation at sigma {sigma:g}: {exc}") from None
    return config


def _resolve(
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
    estimation: str | None = None,
    n_max: int | None = None,
    radii: Sequence[float] | None = None,
    futility_alpha: float | None = None,
) -> RunConfig:
    """A :class:`RunConfig` for zoo ``entry`` under ``protocol`` with the given overrides.

    Any override of n0, n, alpha, split, stride, limit or indices that differs from the protocol
    records the protocol as ``custom`` (leaderboards never mix it with the named protocol).
    ``zoo`` is needed for dual entries (to resolve the router's and experts' entries).
    A ``denoised`` entry certifies as an expert (``kind`` ``expert``) at one of the sigmas it serves
    (``sigma``; default: its only one); its digest covers the denoiser and the classifier.
    """
    from rsbench.zoo.entry import entry_digest

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
    estimation_v, n_v, radii_v = estimation_values(
        entry, proto, dataset, estimation, n, n_max, radii
    )
    alpha_v = check_alpha(alpha if alpha is not None else proto.alpha)
    deviates |= (n0_v, n_v, alpha_v) != (proto.n0, proto.n, proto.alpha)
    deviates |= estimation_v != proto.estimation
    deviates |= radii_v is not None and radii_v != protocol_radii(dataset)
    futility_v = check_futility_alpha(futility_alpha, estimation_v)
    deviates |= futility_v is not None
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
        estimation=estimation_v,
        radii=(protocol_radii(dataset) if radii_v is None else radii_v)
        if estimation_v == "sequential"
        else None,
        futility_alpha=futility_v,
    )
    if entry.kind in ("expert", "denoised"):
        if alpha_router_fraction is not None or sigma_router is not None:
            raise ConfigError(
                f"{entry.id} is an expert; --alpha-router-fraction/--sigma-router apply to dual ids"
            )
        if entry.kind == "denoised":
            from rsbench.models.components import check_served

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


def check_futility_alpha(value: float | None, estimation: str) -> float | None:
    """``--futility-alpha`` checked: None (the default plan's level), or a level in (0, 1) for a
    sequential run; a value equal to the default is None, so it keeps the protocol's name."""
    if value is None:
        return None
    if estimation != "sequential":
        raise ConfigError(
            "--futility-alpha applies to --estimation sequential; drop it for a fixed-n run"
        )
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ConfigError(
            f"--futility-alpha {value!r} is not allowed; use a level 0 < value < 1, e.g. 0.2"
        )
    return None if float(value) == DEFAULT_FUTILITY_ALPHA else float(value)


def protocol_radii(dataset: str) -> tuple[float, ...]:
    """The radius grid a sequential run of ``dataset`` stops on by default: the leaderboard's
    grid of the dataset (:func:`rsbench.report.metrics.default_radii`)."""
    from rsbench.report.metrics import default_radii

    return tuple(float(r) for r in default_radii(dataset))


def estimation_values(
    entry,
    proto,
    dataset: str,
    estimation: str | None,
    n: int | None,
    n_max: int | None,
    radii: Sequence[float] | None,
) -> tuple[str, int, tuple[float, ...] | None]:
    """``(estimation, n, radii)`` of a run: the mode (the option, else the protocol's), its n (a
    sequential run's is n_max: ``--n-max``, else ``--n``, else the protocol's n) and the grid given
    with ``--radii`` (None: the protocol's). One ``ConfigError`` line for a mistake."""
    mode = estimation if estimation is not None else proto.estimation
    if mode not in ESTIMATIONS:
        raise ConfigError(
            f"estimation {mode!r} is unknown; use one of {', '.join(ESTIMATIONS)} "
            "(e.g. --estimation sequential)"
        )
    if mode == "fixed":
        if n_max is not None:
            raise ConfigError(
                "--n-max applies to --estimation sequential; for a fixed-n run pass --n"
            )
        if radii is not None:
            raise ConfigError(
                "--radii is the grid sequential estimation stops on; it applies to "
                "--estimation sequential only"
            )
        return mode, check_count(n if n is not None else proto.n, "n"), None
    if n is not None and n_max is not None and int(n) != int(n_max):
        raise ConfigError(
            f"--n {n} and --n-max {n_max} disagree; a sequential run's n is its n_max (give one)"
        )
    value = check_count(n_max if n_max is not None else n if n is not None else proto.n, "n_max")
    grid: tuple[float, ...] | None = None
    if radii is not None:
        from rsbench.report.metrics import check_radii

        try:
            grid = tuple(float(r) for r in check_radii(radii))
        except RSBenchError as exc:
            raise ConfigError(f"--radii: {exc}") from None
        if not grid:
            raise ConfigError("--radii is empty; give the grid, e.g. --radii 0,0.25,0.5,0.75,1")
    try:  # a grid no stage can reach, or an n_max too small for any stage, is refused here
        SequentialSpec(n_max=value, radii=grid or protocol_radii(dataset))
    except ValueError as exc:
        raise ConfigError(f"sequential estimation: {exc}") from None
    return mode, value, grid


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
    from rsbench.errors import DEFAULT_ALPHA_SPLIT, DEFAULT_P0, check_alpha_split, check_p0
    from rsbench.zoo.entry import entry_digest

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
