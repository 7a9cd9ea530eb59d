"""Error types for user mistakes.

Every :class:`RSBenchError` carries a one-line message that names the offending value and what is
allowed. The CLI prints it as ``error: <message>`` with no traceback and exits non-zero; library
callers catch it like any exception.
"""

from __future__ import annotations


class RSBenchError(Exception):
    """A user mistake (bad argument, bad file, missing data). The message is one line."""

    exit_code = 2


class ConfigError(RSBenchError):
    """An invalid parameter (sigma, alpha, n, batch size, image shape, ...)."""


class ZooError(RSBenchError):
    """A malformed zoo file or an unknown model id."""


class WeightsError(RSBenchError):
    """A checkpoint that cannot be fetched, verified or loaded safely."""


class DataError(RSBenchError):
    """A dataset that cannot be found or read, or a subset outside the dataset."""


class ResultsError(RSBenchError):
    """A results directory that cannot be read, resumed or written."""


class CheckFailed(RSBenchError):
    """A command ran to the end and found failures (e.g. ``zoo check`` on a broken entry);
    the details were printed before this one-line summary. Exit status 1."""

    exit_code = 1


#: Largest noise level accepted. Pixels lie in [0, 1], so noise of standard deviation 100 already
#: drowns every image; far larger values overflow float32 noise to inf.
MAX_SIGMA = 100.0

#: Numeric precisions of the forward passes (``--precision``).
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")

#: Seeds are stored in int64 Parquet columns and hashed as signed 64-bit values: 0 <= seed < 2**63.
MAX_SEED = 2**63 - 1


def check_sigma(sigma: float, name: str = "sigma") -> float:
    """Return ``sigma`` as float if it is a finite number in (0, :data:`MAX_SIGMA`], else raise
    :class:`ConfigError`."""
    try:
        value = float(sigma)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{name}={sigma!r} is not a number; use a noise level > 0, e.g. 0.25"
        ) from None
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{name}={sigma!r} is not allowed; {name} must be a finite number > 0")
    if value > MAX_SIGMA:
        raise ConfigError(
            f"{name}={sigma!r} is too large; {name} must lie in (0, {MAX_SIGMA:g}] (pixels lie in "
            "[0, 1]; typical noise levels are 0.12 to 1)"
        )
    return value


def check_seed(seed: int, name: str = "seed") -> int:
    """Return ``seed`` if it is an integer with ``0 <= seed < 2**63``, else raise :class:`ConfigError`."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        try:
            as_int = int(seed)
        except (TypeError, ValueError):
            as_int = None
        if as_int is None or as_int != seed:
            raise ConfigError(
                f"{name}={seed!r} is not an integer; use an integer 0 <= {name} < 2**63"
            )
        seed = as_int
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"{name}={seed} is out of range; use an integer 0 <= {name} < 2**63")
    return seed


def check_alpha(alpha: float, name: str = "alpha") -> float:
    """Return ``alpha`` as float if it lies strictly inside (0, 1), else raise :class:`ConfigError`."""
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{name}={alpha!r} is not a number; use a value in (0, 1), e.g. 0.001"
        ) from None
    if not 0.0 < value < 1.0:
        raise ConfigError(
            f"{name}={alpha!r} is not allowed; {name} must lie strictly between 0 and 1"
        )
    return value


def check_alpha_router_fraction(fraction: float, name: str = "alpha_router_fraction") -> float:
    """Return ``fraction`` (the share of a dual run's alpha that goes to the router) as float if it
    lies strictly inside (0, 1), else raise :class:`ConfigError`."""
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{name}={fraction!r} is not a number; use a value in (0, 1), e.g. 0.5"
        ) from None
    if not 0.0 < value < 1.0:
        raise ConfigError(
            f"{name}={fraction!r} is not allowed; it must lie strictly between 0 and 1 "
            "(0.5 splits alpha evenly between router and expert)"
        )
    return value


def check_precision(precision: str) -> str:
    """Return ``precision`` if it is one of :data:`PRECISIONS`, else raise :class:`ConfigError`."""
    if precision not in PRECISIONS:
        raise ConfigError(
            f"precision={precision!r} is not allowed; use one of {', '.join(PRECISIONS)}"
        )
    return precision


def check_count(value: int, name: str) -> int:
    """Return ``value`` if it is an integer >= 1, else raise :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            as_int = int(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"{name}={value!r} is not an integer; {name} must be an integer >= 1"
            ) from None
        if as_int != value:
            raise ConfigError(f"{name}={value!r} is not an integer; {name} must be an integer >= 1")
        value = as_int
    if value < 1:
        raise ConfigError(f"{name}={value!r} is not allowed; {name} must be an integer >= 1")
    return value


#: Cascade alpha splits (:mod:`rsbench.engine.cascade`): ``union`` (sound for every input) and
#: ``reference`` (the reference code's); the cascade's default threshold p0 and split.
ALPHA_SPLITS = ("union", "reference")
DEFAULT_P0 = 0.5
DEFAULT_ALPHA_SPLIT = "union"


def check_p0(p0: float) -> float:
    """Return ``p0`` as float if ``1/2 <= p0 < 1``, else raise :class:`ConfigError`."""
    try:
        value = float(p0)
    except (TypeError, ValueError):
        raise ConfigError(f"p0={p0!r} is not a number; use a threshold in [0.5, 1)") from None
    if not 0.5 <= value < 1.0:
        raise ConfigError(
            f"p0={p0!r} is not allowed; the cascade threshold must lie in [0.5, 1) (below 1/2 two "
            "classes could both pass it)"
        )
    return value


def check_alpha_split(split: str) -> str:
    """Return ``split`` if it names an alpha split, else raise :class:`ConfigError`."""
    if split not in ALPHA_SPLITS:
        raise ConfigError(
            f"alpha split {split!r} is not known; use one of {', '.join(ALPHA_SPLITS)}"
        )
    return split
