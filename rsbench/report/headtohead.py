"""Head to head: compositions of the same experts on the same images and protocol.

Given the result rows of one comparable section (one dataset, one (n0, n, alpha)), this module
puts side by side every single expert, the experts' envelope and oracle, and every composition
(dual RS, cascades, ...), all scored on the images that EVERY model certified (the intersection),
with the cost of each: mean and worst-case forward samples per image, and wall time per image.

* The **envelope** is the best single expert at each radius (no one expert need reach it
  everywhere); the **oracle** counts an image at radius r when some expert certifies it correctly
  with radius >= r (an upper bound on any per-image choice of expert, not a certificate).
* **Samples per image** come from the ``samples`` column (rows written before it existed: expert
  ``n0 + n``; dual router ``n0 + n`` plus the expert's when it ran). The worst case is the largest
  value observed and, for compositions, the bound ``K (n0 + n)`` (cascade) or ``2 (n0 + n)`` (dual).
* **Cost per image** counts forward passes of expert-sized networks: a sample of a router that runs
  the experts (``router_input`` ``experts``: one forward per expert that feeds it;
  :func:`rsbench.models.router_input.router_forwards`) costs that many, a router behind a denoiser
  (``router_input`` ``denoised``) its entry's declared ``forwards`` (denoiser + network by
  multiply-adds; ~240 for the embedded DDPM U-Net), any other sample one (a pixel router's network
  counts as one forward, however small). ``worst cost`` is the largest
  observed cost divided by one expert's certificate (``n0 + n`` forwards): the target of issue 24
  is at most 2.2 for a dual model.
* **Sequential estimation** (rows with ``estimation == "sequential"``): the samples are those
  drawn before the image stopped; rows of the two estimation modes are never compared in one table.
* **Seconds per image** are the mean of the stored per-sample wall times: comparable only between
  runs made on the same machine under the same load.

Library code only: :func:`compare` returns a DataFrame, :func:`to_markdown` and :func:`plot` render it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rsbench.errors import ResultsError
from rsbench.report import metrics

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

#: Row kinds of the comparison table, in display order.
ROW_KINDS = ("expert", "envelope", "oracle", "dual", "cascade")


def samples_per_row(df: pd.DataFrame) -> np.ndarray:
    """Forward samples each row's certificate used (the ``samples`` column, derived where null)."""
    n0 = df["n0"].astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    n = df["n"].astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    kind = df["kind"].astype(str).to_numpy()
    derived = n0 + n
    if "router_n" in df.columns:
        router = df["router_n0"].astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan) + df[
            "router_n"
        ].astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
        ran = df["expert_nA"].notna().to_numpy()
        derived = np.where(kind == "dual", router + np.where(ran, n0 + n, 0.0), derived)
    if "samples" not in df.columns:
        return derived
    stored = df["samples"].astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(np.isnan(stored), derived, stored)


def cost_per_row(
    df: pd.DataFrame, router_forwards: Mapping[str, float] | None = None
) -> np.ndarray:
    """Expert-sized forward passes each row's certificate cost: its samples, with each router sample
    of a dual row weighted by ``router_forwards[router_id]`` (default 1). The router's samples are
    taken as ``router_n0 + router_n``: exact for fixed n, an upper bound for a sequential row whose
    router stage stopped early."""
    samples = samples_per_row(df)
    if "router_n" not in df.columns or not router_forwards:
        return samples
    kind = df["kind"].astype(str).to_numpy()
    router = df["router_n0"].astype("Float64").to_numpy(dtype=np.float64, na_value=0.0) + df[
        "router_n"
    ].astype("Float64").to_numpy(dtype=np.float64, na_value=0.0)
    ids = df["router_id"].astype(str).to_numpy() if "router_id" in df.columns else None
    weight = np.array(
        [float(router_forwards.get(str(i), 1.0)) for i in ids] if ids is not None else [1.0]
    )
    extra = np.where(kind == "dual", router * (weight - 1.0), 0.0)
    return samples + extra


def _bound(kind: str, rows: pd.DataFrame) -> float:
    per_stage = float(rows["n0"].iloc[0]) + float(rows["n"].iloc[0])
    if kind == "dual":
        return 2 * per_stage
    if kind == "cascade" and "stage_sigmas" in rows.columns:
        return per_stage * max(len(v) for v in rows["stage_sigmas"] if v is not None)
    return per_stage


def compare(
    df: pd.DataFrame,
    radii: Iterable[float] | None = None,
    router_forwards: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """The head-to-head table of one section of results (see the module docstring).

    ``df`` must hold one dataset and one (n0, n, alpha) (else :class:`ResultsError`, listing them).
    Columns: ``model``, ``kind``, ``sigma``, ``images``, ``ca@<r>`` per radius (fractions),
    ``largest_shortfall`` (below the envelope) and ``shortfall_at``, ``mean_samples``,
    ``max_samples``, ``bound_samples``, ``mean_cost``, ``max_cost`` (expert-sized forwards,
    :func:`cost_per_row` with ``router_forwards``: router id -> forwards per router sample),
    ``cost_ratio`` (``max_cost`` over one expert's ``n0 + n``), ``seconds_per_image``. Rows:
    experts (by sigma), envelope, oracle, then compositions.
    """
    if df is None or len(df) == 0:
        raise ResultsError("no result rows to compare; point at run directories")
    budgets = df[["dataset", "n0", "n", "alpha"]].astype(str).drop_duplicates()
    if len(budgets) > 1:
        found = "; ".join(
            f"{r.dataset} n0={r.n0} n={r.n} alpha={r.alpha}" for r in budgets.itertuples()
        )
        raise ResultsError(
            f"the head-to-head compares one dataset and one (n0, n, alpha); these rows hold {found}: "
            "pass the run directories of one protocol"
        )
    modes = estimation_modes(df)
    if len(modes) > 1:
        raise ResultsError(
            "these rows mix fixed-n and sequential estimation, whose radii are not comparable "
            "(early stopping certifies smaller radii at equal accuracy): compare the runs of one "
            "estimation mode"
        )
    dataset = str(df["dataset"].iloc[0])
    grid = metrics.check_radii(metrics.default_radii(dataset) if radii is None else radii)
    df = metrics.add_sigma_key(metrics.common_images(df))  # the images every model certified
    if len(df) == 0:
        raise ResultsError("the models share no certified image; nothing to compare")
    common = next(iter(metrics.iter_groups(df)))[1]
    images = len(common)
    records: list[dict[str, object]] = []
    experts = df[df["kind"].astype(str).eq("expert").to_numpy()]
    for key, rows in metrics.iter_groups(df):
        kind = str(rows["kind"].iloc[0])
        samples = samples_per_row(rows)
        cost = cost_per_row(rows, router_forwards)
        per_stage = float(rows["n0"].iloc[0]) + float(rows["n"].iloc[0])
        records.append(
            {
                "model": str(key["model_id"]),
                "kind": kind,
                "sigma": str(key["sigma_key"]),
                "images": len(rows),
                "curve": metrics.certified_accuracy(rows, grid),
                "mean_samples": float(np.nanmean(samples)),
                "max_samples": float(np.nanmax(samples)),
                "bound_samples": _bound(kind, rows),
                "mean_cost": float(np.nanmean(cost)),
                "max_cost": float(np.nanmax(cost)),
                "cost_ratio": float(np.nanmax(cost)) / per_stage,
                "seconds_per_image": metrics.seconds_per_image(rows),
            }
        )
    if len(experts):
        env = metrics.envelope(experts, grid)
        orc, _ = metrics.oracle(experts, grid)
        for name, curve in (("envelope", env), ("oracle", orc)):
            records.append(
                {
                    "model": f"{name} of the experts",
                    "kind": name,
                    "sigma": "",
                    "images": images,
                    "curve": curve,
                    "mean_samples": np.nan,
                    "max_samples": np.nan,
                    "bound_samples": np.nan,
                    "mean_cost": np.nan,
                    "max_cost": np.nan,
                    "cost_ratio": np.nan,
                    "seconds_per_image": np.nan,
                }
            )
    else:
        env = None
    order = {kind: i for i, kind in enumerate(ROW_KINDS)}
    records.sort(
        key=lambda r: (order.get(str(r["kind"]), len(order)), str(r["sigma"]), str(r["model"]))
    )
    rows_out = []
    for record in records:
        curve = np.asarray(record.pop("curve"), dtype=np.float64)
        out = dict(record)
        for r, value in zip(grid, curve):
            out[metrics.radius_column(r)] = float(value)
        if env is not None and record["kind"] not in ("envelope", "oracle"):
            gap = env - curve
            i = int(np.argmax(gap))
            out["largest_shortfall"], out["shortfall_at"] = float(gap[i]), float(grid[i])
        else:
            out["largest_shortfall"], out["shortfall_at"] = np.nan, np.nan
        rows_out.append(out)
    table = pd.DataFrame(rows_out)
    table.attrs["radii"] = grid
    table.attrs["dataset"] = dataset
    table.attrs["protocol"] = ",".join(sorted(df["protocol"].astype(str).unique()))
    table.attrs["images"] = images
    table.attrs["estimation"] = modes[0]
    table.attrs["budget"] = {
        "n0": int(df["n0"].iloc[0]),
        "n": int(df["n"].iloc[0]),
        "alpha": float(df["alpha"].iloc[0]),
    }
    return table


def estimation_modes(df: pd.DataFrame) -> list[str]:
    """The estimation modes of ``df``'s rows, sorted (``estimation`` null or absent: fixed)."""
    if "estimation" not in df.columns:
        return ["fixed"] if len(df) else []
    modes = df["estimation"].astype(object).where(df["estimation"].notna(), "fixed")
    return sorted({str(m) for m in modes})


#: The caption line of a sequential comparison (the leaderboard says the same).
SEQUENTIAL_NOTE = (
    "Sequential estimation: samples stop per image once more cannot change the certificate on "
    "the radius grid; radii, and so ACR, are smaller than under fixed n even where the grid "
    "accuracy is equal, so these numbers are never ranked with fixed-n runs."
)


def _pct(value: float) -> str:
    return "" if value is None or np.isnan(value) else f"{100 * value:.1f}"


def _ratio(value: float | None) -> str:
    return "" if value is None or np.isnan(value) else f"{value:.2f}x"


def _count(value: float) -> str:
    return "" if value is None or np.isnan(value) else f"{value:,.0f}"


def to_markdown(table: pd.DataFrame) -> str:
    """The comparison as a markdown table with a caption line."""
    grid = table.attrs["radii"]
    budget = table.attrs["budget"]
    head = (
        f"Head to head on {table.attrs['images']} common images of {table.attrs['dataset']} "
        f"(protocol {table.attrs['protocol']}; n0 = {budget['n0']}, n = {budget['n']} per stage, "
        f"alpha = {budget['alpha']:g}). Certified accuracy in %; samples = forward passes per image; "
        "worst cost = the most expert-sized forwards one image took (a router that runs the "
        "experts counts their forwards), over one expert's n0 + n."
    )
    if table.attrs.get("estimation") == "sequential":
        head = head.replace(f"n = {budget['n']} per stage", f"n_max = {budget['n']} per stage")
        head += " " + SEQUENTIAL_NOTE
    cols = (
        ["model", "sigma"]
        + [f"r={r:g}" for r in grid]
        + [
            "largest shortfall (at r)",
            "mean samples",
            "worst samples (bound)",
            "worst cost (x one expert)",
            "s/img",
        ]
    )
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in table.to_dict("records"):
        shortfall = (
            ""
            if np.isnan(row["largest_shortfall"])
            else f"{100 * row['largest_shortfall']:.1f} ({row['shortfall_at']:g})"
        )
        worst = (
            ""
            if np.isnan(row["max_samples"])
            else f"{_count(row['max_samples'])} ({_count(row['bound_samples'])})"
        )
        seconds = "" if np.isnan(row["seconds_per_image"]) else f"{row['seconds_per_image']:.4f}"
        cells = (
            [str(row["model"]), str(row["sigma"])]
            + [_pct(row[metrics.radius_column(r)]) for r in grid]
            + [
                shortfall,
                _count(row["mean_samples"]),
                worst,
                _ratio(row.get("cost_ratio")),
                seconds,
            ]
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(table: pd.DataFrame, title: str | None = None) -> Figure:
    """Two panels: certified accuracy against radius for every row (envelope black dashed, oracle
    grey dashed, compositions thick), and mean / worst-case samples per image per model."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    from rsbench.report.plots import OKABE_ITO

    grid = np.asarray(table.attrs["radii"], dtype=np.float64)
    fig = Figure(figsize=(13, 4.8), layout="constrained")
    curves, costs = fig.subplots(1, 2, width_ratios=[1.6, 1])
    colour = 0
    for row in table.to_dict("records"):
        values = [row[metrics.radius_column(r)] for r in grid]
        kind = row["kind"]
        label = (
            row["model"] if kind in ("envelope", "oracle") else f"{row['model']} ({row['sigma']})"
        )
        if kind == "envelope":
            style = {"color": "black", "linestyle": "--", "linewidth": 1.5}
        elif kind == "oracle":
            style = {"color": "grey", "linestyle": ":", "linewidth": 1.5}
        else:
            style = {
                "color": OKABE_ITO[colour % len(OKABE_ITO)],
                "linewidth": 2.6 if kind not in ("expert",) else 1.3,
                "marker": "o" if kind not in ("expert",) else None,
                "markersize": 3,
            }
            colour += 1
        curves.plot(grid, values, label=label, **style)
    curves.set_xlabel("L2 radius")
    curves.set_ylabel("certified accuracy")
    curves.yaxis.set_major_formatter(PercentFormatter(1.0))
    curves.set_ylim(0, 1)
    curves.grid(alpha=0.3)
    curves.legend(fontsize=7, loc="lower left")
    models = table[~table["kind"].isin(["envelope", "oracle"])]
    names = [f"{m}\n({s})" for m, s in zip(models["model"], models["sigma"])]
    y = np.arange(len(models))
    costs.barh(y - 0.2, models["mean_samples"], height=0.4, label="mean", color=OKABE_ITO[0])
    costs.barh(y + 0.2, models["max_samples"], height=0.4, label="worst case", color=OKABE_ITO[1])
    costs.set_yticks(y, names, fontsize=7)
    costs.invert_yaxis()
    costs.set_xlabel("forward samples per image")
    costs.legend(fontsize=7)
    costs.grid(alpha=0.3, axis="x")
    if title:
        fig.suptitle(title)
    return fig


def head_to_head(paths: Sequence[str] | str, radii: Iterable[float] | None = None) -> pd.DataFrame:
    """:func:`compare` over the rows read from run directories (or parents of runs)."""
    from rsbench.results.storage import read_results

    return compare(read_results(paths), radii, router_forwards_of(paths))


def router_forwards_of(paths: Sequence[str] | str) -> dict[str, float]:
    """Router id -> expert-sized forwards per router sample, from the router entries recorded in the
    ``run.json`` of every run under ``paths`` (:func:`rsbench.models.router_input.router_forwards`)."""
    import json
    from pathlib import Path

    from rsbench.models.router_input import router_forwards

    found: dict[str, float] = {}
    for path in [paths] if isinstance(paths, str | Path) else list(paths):
        root = Path(path)
        runs = [root / "run.json"] if (root / "run.json").is_file() else root.rglob("run.json")
        for run in runs:
            try:
                models = json.loads(run.read_text()).get("models") or []
            except (OSError, ValueError):
                continue
            for model in models:
                entry = model.get("entry") if isinstance(model, dict) else None
                if isinstance(entry, dict) and entry.get("kind") == "router":
                    found[str(entry.get("id"))] = router_forwards(entry)
    return found
