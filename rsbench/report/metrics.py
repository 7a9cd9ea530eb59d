"""Numbers from certification rows: certified accuracy, ACR, envelope, oracle, router choices.

Pure functions over a results ``pandas.DataFrame`` with the columns of ``docs/results-schema.md``
(one row per run x sample). Nothing here reads files or prints.

Semantics (DESIGN.md §2):

* **certified accuracy at radius r** is the fraction of *all* evaluated samples whose prediction is
  correct and whose certified radius is ``>= r``; an abstention counts as wrong; clean accuracy is the
  value at ``r = 0``;
* **ACR** is the mean over all samples of the radius where correct and 0 elsewhere (a secondary
  metric: it depends on ``n`` and can be inflated);
* the **envelope** of several models is, at each radius, the best certified accuracy any one of them
  reaches there (a per-radius maximum over models, each on its own images);
* the **oracle** of an expert set picks, per image, the best expert in hindsight: an image counts at
  radius r when *some* expert is correct on it with radius ``>= r``. It is an upper bound on what a
  router over those experts could reach, not a certificate.

Rows are grouped by :data:`GROUP_COLUMNS`: ``(protocol, dataset, model_id, sigma_key, n, alpha)``.
Expert rows have one ``sigma`` per group; dual rows carry the chosen expert's sigma per row, so all
rows of a dual model share the sigma key ``"dual"`` (a cascade's: ``"cascade"``). ``n`` and ``alpha`` are part of the key so that
rows certified with different budgets are never averaged together (a protocol normally fixes both).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from rsbench.errors import ResultsError

log = logging.getLogger(__name__)

#: The sigma key shared by every row of a dual model (dual rows have a per-row sigma).
DUAL_SIGMA_KEY = "dual"
#: The sigma key shared by every row of a cascade (its rows carry the answering stage's sigma).
CASCADE_SIGMA_KEY = "cascade"

#: Columns that identify one leaderboard row (``sigma_key`` is derived, see :func:`add_sigma_key`).
GROUP_COLUMNS: tuple[str, ...] = ("protocol", "dataset", "model_id", "sigma_key", "n", "alpha")

#: Columns that identify one comparable section (rows of different sections are never ranked together).
SECTION_COLUMNS: tuple[str, ...] = ("protocol", "dataset")

#: Columns that identify one image across models.
IMAGE_COLUMNS: tuple[str, ...] = ("dataset", "split", "index")

#: Default radius grids (start, stop inclusive, step) per dataset.
DEFAULT_RADIUS_GRIDS: dict[str, tuple[float, float, float]] = {
    "cifar10": (0.0, 2.0, 0.25),
    "imagenet": (0.0, 3.0, 0.5),
    "fashion-mnist": (0.0, 2.0, 0.25),
    "mnist": (0.0, 2.0, 0.25),
}

#: Most radii a grid may hold (a table column or plot point each).
MAX_RADII = 1000

#: Grid used for a dataset without its own default.
FALLBACK_RADIUS_GRID: tuple[float, float, float] = (0.0, 2.0, 0.25)


# --------------------------------------------------------------------------- radius grids


def radius_grid(start: float, stop: float, step: float) -> np.ndarray:
    """Return ``start, start + step, ..., stop`` (stop included when it lies on the grid), rounded to 1e-9."""
    for name, value in (("start", start), ("stop", stop), ("step", step)):
        if not math.isfinite(value):
            raise ResultsError(f"radius {name} {value:g} is not allowed; use finite numbers")
    if not step > 0:
        raise ResultsError(f"radius step {step:g} is not allowed; use a step > 0, e.g. 0.25")
    if start < 0:
        raise ResultsError(f"radius start {start:g} is not allowed; radii must be >= 0")
    if stop < start:
        raise ResultsError(f"radius stop {stop:g} lies below start {start:g}; use start <= stop")
    count = int(math.floor((stop - start) / step + 1e-9)) + 1
    if count > MAX_RADII:
        raise ResultsError(
            f"the radius grid {start:g}:{stop:g}:{step:g} has {count:,} radii; at most {MAX_RADII} "
            "are allowed: use a larger step"
        )
    return np.round(start + step * np.arange(count), 9)


def default_radii(dataset: str | None) -> np.ndarray:
    """The default radius grid of ``dataset`` (CIFAR-10 and Fashion-MNIST 0..2 by 0.25, ImageNet 0..3 by 0.5)."""
    grid = DEFAULT_RADIUS_GRIDS.get((dataset or "").lower(), FALLBACK_RADIUS_GRID)
    return radius_grid(*grid)


def check_radii(radii: Iterable[float]) -> np.ndarray:
    """Return ``radii`` as a sorted, de-duplicated float array; raise ResultsError unless all are finite and >= 0."""
    items = list(radii)
    try:
        values = np.asarray([float(r) for r in items], dtype=np.float64)
    except (TypeError, ValueError):
        raise ResultsError(
            f"radii {', '.join(map(str, items))} are not all numbers; use e.g. 0,0.25,0.5"
        ) from None
    if values.size == 0:
        raise ResultsError("the radius grid is empty; give at least one radius, e.g. 0,0.25,0.5")
    if values.size > MAX_RADII:
        raise ResultsError(f"{values.size:,} radii given; at most {MAX_RADII} are allowed")
    bad = values[~np.isfinite(values) | (values < 0)]
    if bad.size:
        raise ResultsError(
            f"radius {float(bad[0]):g} is not allowed; radii must be finite numbers >= 0"
        )
    return np.unique(np.round(values, 9))


def parse_radii(text: str) -> np.ndarray:
    """Parse ``"0,0.25,0.5"`` (a list) or ``"0:2:0.25"`` (start:stop:step, stop included) into a radius grid."""
    text = text.strip()
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise ResultsError(f"radii {text!r} is not start:stop:step; use e.g. 0:2:0.25")
        try:
            start, stop, step = (float(p) for p in parts)
        except ValueError:
            raise ResultsError(
                f"radii {text!r} is not start:stop:step with numbers; use e.g. 0:2:0.25"
            ) from None
        return check_radii(radius_grid(start, stop, step))
    items = [p for p in text.replace(" ", "").split(",") if p]
    try:
        values = [float(p) for p in items]
    except ValueError:
        raise ResultsError(
            f"radii {text!r} is not a comma-separated list of numbers; use e.g. 0,0.25,0.5 or "
            "0:2:0.25"
        ) from None
    return check_radii(values)


# --------------------------------------------------------------------------- validation and groups


def require_columns(df: pd.DataFrame, columns: Sequence[str], what: str = "results") -> None:
    """Raise ResultsError naming the first missing columns unless ``df`` has all of ``columns``."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ResultsError(
            f"{what} lack the column(s) {', '.join(missing)}; read results with "
            "rsbench.results.read_results (schema: docs/results-schema.md)"
        )


def format_sigma(sigma: float) -> str:
    """Format a noise level the way Cohen's logs name it (0.12, 0.25, 0.50, 1.00)."""
    return f"{float(sigma):.2f}" if round(float(sigma), 2) == float(sigma) else f"{float(sigma):g}"


def add_sigma_key(df: pd.DataFrame) -> pd.DataFrame:
    """Return a copy of ``df`` with a string ``sigma_key`` column: the formatted sigma, or "dual" for dual rows."""
    require_columns(df, ("sigma",))
    out = df.copy()
    kind = out["kind"] if "kind" in out.columns else pd.Series("expert", index=out.index)
    kinds = kind.astype("string").fillna("expert").to_numpy()
    sigma = pd.to_numeric(out["sigma"], errors="coerce").to_numpy(dtype=np.float64)
    keys = [
        DUAL_SIGMA_KEY
        if k == "dual"
        else cascade_sigma_key(out, i)
        if k == "cascade"
        else ("?" if np.isnan(s) else format_sigma(s))
        for i, (k, s) in enumerate(zip(kinds, sigma))
    ]
    out["sigma_key"] = keys
    return out


def cascade_sigma_key(df: pd.DataFrame, position: int) -> str:
    """Sigma key of the cascade row at ``position``: "cascade", plus its p0 when not 0.5 and its
    alpha split when not the default union split (so runs of one cascade id under other settings
    are never averaged together)."""
    key = CASCADE_SIGMA_KEY
    if "cascade_p0" in df.columns:
        p0 = df["cascade_p0"].iloc[position]
        if p0 is not None and p0 is not pd.NA and not pd.isna(p0) and float(p0) != 0.5:
            key += f" p0={float(p0):g}"
    if "alpha_split" in df.columns:
        split = df["alpha_split"].iloc[position]
        if isinstance(split, str) and split != "union":
            key += f" {split}-split"
    return key


def _with_defaults(df: pd.DataFrame) -> pd.DataFrame:
    """Fill group-key columns that a partial frame may lack (dataset, n, alpha) so grouping works."""
    out = df if "sigma_key" in df.columns else add_sigma_key(df)
    if out is df:
        out = df.copy()
    for column, default in (
        ("dataset", "unknown"),
        ("split", "test"),
        ("n", -1),
        ("alpha", float("nan")),
    ):
        if column not in out.columns:
            out[column] = default
    return out


def iter_groups(df: pd.DataFrame) -> Iterator[tuple[dict[str, object], pd.DataFrame]]:
    """Yield ``(key, rows)`` per leaderboard group (see :data:`GROUP_COLUMNS`), in sorted key order.

    Raises ResultsError when one group holds the same image twice (two runs of the same model and
    protocol over overlapping images), since counting it twice would bias every number.
    """
    require_columns(df, ("protocol", "model_id", "sigma", "correct", "radius"))
    frame = _with_defaults(df)
    # NaN alpha would drop rows in groupby; group on a string form instead.
    frame["_alpha_key"] = frame["alpha"].map(lambda a: "nan" if pd.isna(a) else repr(float(a)))
    keys = ["protocol", "dataset", "model_id", "sigma_key", "n", "_alpha_key"]
    for values, rows in frame.groupby(keys, sort=True, dropna=False):
        key = dict(zip(GROUP_COLUMNS, values))
        key["alpha"] = (
            float(rows["alpha"].iloc[0]) if pd.notna(rows["alpha"].iloc[0]) else float("nan")
        )
        if "index" in rows.columns:
            image = rows[[c for c in IMAGE_COLUMNS if c in rows.columns]]
            dup = image.duplicated()
            if dup.any():
                first = rows.loc[dup[dup].index[0]]
                runs = (
                    sorted(set(rows.loc[image.duplicated(keep=False), "run_id"].astype(str)))
                    if ("run_id" in rows.columns)
                    else []
                )
                raise ResultsError(
                    f"model {key['model_id']} (sigma {key['sigma_key']}, protocol {key['protocol']}) "
                    f"holds image {first['index']} more than once (runs: {', '.join(runs) or '?'}); "
                    "pass only one run per model and protocol"
                )
        yield key, rows.drop(columns=["_alpha_key"])


def sections(df: pd.DataFrame) -> list[tuple[str, str]]:
    """The distinct ``(protocol, dataset)`` pairs in ``df``, sorted: the units that may be ranked."""
    require_columns(df, ("protocol",))
    dataset = df["dataset"] if "dataset" in df.columns else pd.Series("unknown", index=df.index)
    pairs = set(zip(df["protocol"].astype(str), dataset.astype(str)))
    return sorted(pairs)


# --------------------------------------------------------------------------- per-group metrics


def credited_radius(df: pd.DataFrame) -> np.ndarray:
    """Per row: the certified radius when the prediction is correct, ``-inf`` otherwise (abstain = wrong)."""
    require_columns(df, ("correct", "radius"))
    correct = df["correct"].fillna(False).to_numpy(dtype=bool, copy=True)
    if "abstained" in df.columns:
        correct = correct & ~df["abstained"].fillna(False).to_numpy(dtype=bool)
    radius = pd.to_numeric(df["radius"], errors="coerce").fillna(0.0).to_numpy(dtype=np.float64)
    return np.where(correct, radius, -np.inf)


def _accuracy_at(credited: np.ndarray, radii: np.ndarray) -> np.ndarray:
    if credited.size == 0:
        return np.full(radii.shape, np.nan)
    ordered = np.sort(credited)
    # number of samples with credited radius >= r, for every r at once
    at_least = ordered.size - np.searchsorted(ordered, radii, side="left")
    return at_least / ordered.size


def certified_accuracy(df: pd.DataFrame, radii: Iterable[float]) -> np.ndarray:
    """Certified accuracy of the rows in ``df`` (one model) at each radius, in the order given.

    Guarantee: element i equals ``#{rows: correct and radius >= radii[i]} / #rows``; abstained rows
    count as wrong; a radius exactly equal to r counts. NaN for an empty frame.
    """
    grid = np.asarray([float(r) for r in radii], dtype=np.float64)
    return _accuracy_at(credited_radius(df), grid)


def clean_accuracy(df: pd.DataFrame) -> float:
    """Certified accuracy at radius 0 (the smoothed classifier's accuracy, abstentions wrong)."""
    return float(certified_accuracy(df, [0.0])[0])


def abstain_rate(df: pd.DataFrame) -> float:
    """Fraction of rows that abstained (``abstained`` column, else ``prediction == -1``); NaN if empty."""
    if len(df) == 0:
        return float("nan")
    if "abstained" in df.columns:
        return float(df["abstained"].fillna(False).to_numpy(dtype=bool).mean())
    require_columns(df, ("prediction",))
    return float((df["prediction"].to_numpy() == -1).mean())


def acr(df: pd.DataFrame) -> float:
    """Average certified radius: mean over all rows of the radius where correct, 0 elsewhere; NaN if empty."""
    credited = credited_radius(df)
    if credited.size == 0:
        return float("nan")
    return float(np.where(np.isfinite(credited), credited, 0.0).mean())


def seconds_per_image(df: pd.DataFrame) -> float:
    """Mean wall time per sample in seconds (NaN when no row records a time)."""
    if "seconds" not in df.columns or len(df) == 0:
        return float("nan")
    seconds = pd.to_numeric(df["seconds"], errors="coerce")
    return float(seconds.mean()) if seconds.notna().any() else float("nan")


def dual_sigma_label(df: pd.DataFrame, sigmas: Iterable[float] | None = None) -> str:
    """Display label of a dual model's sigma: "dual" plus its experts' noise levels, e.g.
    "dual 0.25/0.50/1.00". ``sigmas``: all of its experts' (from run.json); without them, the
    levels its router chose in ``df`` (an expert never chosen is then missing)."""
    if sigmas is not None:
        sigma = np.unique(np.asarray(list(sigmas), dtype=np.float64))
    else:
        sigma = pd.to_numeric(df["sigma"], errors="coerce").dropna().unique()
    if sigma.size == 0:
        return DUAL_SIGMA_KEY
    return f"{DUAL_SIGMA_KEY} " + "/".join(format_sigma(s) for s in sorted(sigma))


def single_value(rows: pd.DataFrame, column: str) -> object:
    """The one value ``column`` takes in ``rows`` (a Python scalar), None when absent or all null,
    else the sorted distinct values joined by commas (e.g. ``"1000,10000"``: a group mixes them)."""
    if column not in rows.columns:
        return None
    values = rows[column].dropna().unique()
    if values.size == 0:
        return None
    if values.size == 1:
        value = values[0]
        return value.item() if hasattr(value, "item") else value
    return ",".join(str(v) for v in sorted(values))


def _plain_count(value: object) -> int | None:
    """A group's ``n`` as a Python int, or None when absent (missing column or null)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    as_int = int(value)  # type: ignore[call-overload]
    return None if as_int == -1 else as_int


def radius_column(radius: float) -> str:
    """Name of the summary column holding certified accuracy at ``radius`` (e.g. ``"ca@0.25"``)."""
    return f"ca@{float(radius):g}"


def summarize(df: pd.DataFrame, radii: Iterable[float]) -> pd.DataFrame:
    """One row per group (see :func:`iter_groups`) with the metrics of that group.

    Columns: protocol, dataset, model_id, kind, sigma (display label), sigma_key, n0, n, alpha, images,
    runs, clean_accuracy, abstain_rate, acr, seconds_per_image, and ``ca@<r>`` for each radius.
    Accuracies are fractions in [0, 1].
    """
    grid = check_radii(radii)
    records = []
    for key, rows in iter_groups(df):
        kind = single_value(rows, "kind") or "expert"
        record: dict[str, object] = {
            "protocol": key["protocol"],
            "dataset": key["dataset"],
            "model_id": key["model_id"],
            "kind": kind,
            "sigma": dual_sigma_label(rows)
            if key["sigma_key"] == DUAL_SIGMA_KEY
            else key["sigma_key"],
            "sigma_key": key["sigma_key"],
            "n0": single_value(rows, "n0"),
            "n": _plain_count(key["n"]),
            "alpha": key["alpha"],
            "images": int(len(rows)),
            "runs": single_value(rows, "run_id"),
            "clean_accuracy": clean_accuracy(rows),
            "abstain_rate": abstain_rate(rows),
            "acr": acr(rows),
            "seconds_per_image": seconds_per_image(rows),
        }
        for r, value in zip(grid, certified_accuracy(rows, grid)):
            record[radius_column(r)] = float(value)
        records.append(record)
    columns = [
        "protocol", "dataset", "model_id", "kind", "sigma", "sigma_key", "n0", "n", "alpha",
        "images", "runs", "clean_accuracy", "abstain_rate", "acr", "seconds_per_image",
    ] + [radius_column(r) for r in grid]  # fmt: skip
    return pd.DataFrame.from_records(records, columns=columns)


# --------------------------------------------------------------------------- sets of models


def _image_keys(rows: pd.DataFrame) -> pd.Series:
    cols = [c for c in IMAGE_COLUMNS if c in rows.columns]
    keys = rows[cols[0]].astype(str)
    for col in cols[1:]:
        keys = keys + "\x1f" + rows[col].astype(str)
    return keys


def common_images(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``df`` whose image (dataset, split, index) every group (model) evaluated.

    Without an ``index`` column the frame is returned unchanged (images cannot be matched).
    """
    if "index" not in df.columns or len(df) == 0:
        return df
    df = df.reset_index(drop=True)
    keys = _image_keys(df)
    shared: set[str] | None = None
    for _, rows in iter_groups(df):
        mine = set(keys.loc[rows.index])
        shared = mine if shared is None else shared & mine
    return df[keys.isin(shared or set()).to_numpy()]


def envelope(df: pd.DataFrame, radii: Iterable[float]) -> np.ndarray:
    """Per radius, the maximum certified accuracy over the groups (models) in ``df``.

    Scored on the images every group evaluated (:func:`common_images`, as the :func:`oracle`), so
    the envelope never exceeds the oracle; it is what the best single model at each radius reaches
    there, so no one model need reach it everywhere. NaN when no image is common.
    """
    grid = np.asarray([float(r) for r in radii], dtype=np.float64)
    df = common_images(df)
    if len(df) == 0:
        return np.full(grid.shape, np.nan)
    curves = [certified_accuracy(rows, grid) for _, rows in iter_groups(df)]
    if not curves:
        return np.full(grid.shape, np.nan)
    return np.max(np.vstack(curves), axis=0)


def oracle(df: pd.DataFrame, radii: Iterable[float]) -> tuple[np.ndarray, int]:
    """Best-expert-in-hindsight accuracy of the groups in ``df``, and the number of images it uses.

    An image counts at radius r when some group is correct on it with radius ``>= r``. Only images
    evaluated by every group count (intersection on dataset, split, index); when the groups cover
    different images this is logged (info). An upper bound over the set, not a certificate.
    """
    require_columns(df, ("index",), "results for the oracle")
    grid = np.asarray([float(r) for r in radii], dtype=np.float64)
    per_group = []
    for key, rows in iter_groups(df):
        image_cols = [c for c in IMAGE_COLUMNS if c in rows.columns]
        image = pd.MultiIndex.from_frame(rows[image_cols].astype(str))
        per_group.append(pd.Series(credited_radius(rows), index=image, name=str(key["model_id"])))
    if not per_group:
        return np.full(grid.shape, np.nan), 0
    wide = pd.concat(per_group, axis=1, join="inner")
    union = len(set().union(*(set(s.index) for s in per_group)))
    if len(wide) < union:
        log.info(
            "oracle over %d models uses the %d images all of them evaluated (of %d in total)",
            len(per_group), len(wide), union,
        )  # fmt: skip
    best = wide.to_numpy(dtype=np.float64).max(axis=1) if len(wide) else np.empty(0)
    return _accuracy_at(best, grid), int(len(wide))


def router_choice_frequencies(
    df: pd.DataFrame, experts: Mapping[str, Sequence[tuple[str, float]]] | None = None
) -> pd.DataFrame:
    """How often each dual model's router chose each expert.

    One row per (protocol, model_id, choice) over the dual rows of ``df`` with columns protocol,
    model_id, router_choice (-1 = router abstained), expert_id ("router abstained" for -1), sigma,
    count, fraction (of that model's rows; fractions of one model sum to 1). ``experts`` maps a
    dual model id to all of its experts in router order, (id, sigma) from run.json: experts never
    chosen then get a row with count 0. Empty when no dual rows.
    """
    columns = ["protocol", "model_id", "router_choice", "expert_id", "sigma", "count", "fraction"]
    if "kind" not in df.columns:
        return pd.DataFrame(columns=columns)
    dual = df[df["kind"].astype("string").eq("dual").fillna(False).to_numpy(dtype=bool)]
    if dual.empty:
        return pd.DataFrame(columns=columns)
    require_columns(dual, ("router_choice",), "dual results")
    records = []
    for (protocol, model_id), rows in dual.groupby(["protocol", "model_id"], sort=True):
        choice = pd.to_numeric(rows["router_choice"], errors="coerce").fillna(-1).astype(int)
        for value, count in choice.value_counts().sort_index().items():
            chosen = rows[choice == value]
            if value < 0:
                expert, sigma = "router abstained", float("nan")
            else:
                expert = str(single_value(chosen, "expert_id") or f"expert {value}")
                sig = single_value(chosen, "sigma")
                sigma = float(sig) if isinstance(sig, (int, float)) else float("nan")
            records.append(
                (protocol, model_id, int(value), expert, sigma, int(count), count / len(rows))
            )
        chosen_values = set(choice.unique())
        for k, (expert, sigma) in enumerate((experts or {}).get(str(model_id), ())):
            if k not in chosen_values:
                records.append((protocol, model_id, k, str(expert), float(sigma), 0, 0.0))
    out = pd.DataFrame.from_records(records, columns=columns)
    return out.sort_values(["protocol", "model_id", "router_choice"], kind="mergesort").reset_index(
        drop=True
    )
