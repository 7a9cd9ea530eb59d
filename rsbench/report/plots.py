"""Certified-accuracy plots: curves per section, the experts' envelope and oracle, and for dual
models the router's choices and router-vs-expert radii.

Guarantees: a figure is built without pyplot state (:class:`matplotlib.figure.Figure`, Agg);
legend labels are unique within a section; colours are the colour-blind-safe Okabe-Ito palette;
:func:`save_figure` writes PNG, SVG or PDF all or nothing, without dates or software stamps, so the
committed plots regenerate byte for byte. Imports :mod:`rsbench.errors`, :mod:`rsbench.report.metrics`,
:mod:`rsbench.report.leaderboard`; :mod:`rsbench.output` and matplotlib lazily.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rsbench.errors import ResultsError
from rsbench.report import metrics
from rsbench.report.leaderboard import (
    ENVELOPE_ID,
    ORACLE_ID,
    dual_experts,
    is_unsound,
    kind_mask,
    rows_of_section,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Okabe & Ito (2008) colour-blind-safe palette (black is kept for the envelope).
OKABE_ITO: tuple[str, ...] = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#D55E00",  # vermillion
    "#F0E442",  # yellow
)
ENVELOPE_COLOR = "#000000"
ORACLE_COLOR = "#7F7F7F"

FIGURE_FORMATS: tuple[str, ...] = ("png", "svg", "pdf")


def _model_label(model_id: str, sigma: str) -> str:
    return (
        f"{model_id} (σ={sigma})"
        if not sigma.startswith((metrics.DUAL_SIGMA_KEY, metrics.CASCADE_SIGMA_KEY))
        else f"{model_id} ({sigma})"
    )


def plot_curves(
    df: pd.DataFrame,
    radii: Iterable[float] | None = None,
    points: int = 401,
    bounds: bool = True,
    states: Mapping[str, Any] | None = None,
) -> Figure:
    """Certified accuracy against L2 radius, one figure row per section (protocol, dataset).

    Per section: one solid line per model; with two or more experts the experts' envelope (black,
    dashed) and oracle (grey, dashed; an upper bound); when the section holds dual rows, two more
    panels: how often each dual model's router chose each expert, and router radius R_r against
    expert radius R_e. Curves are evaluated on ``points`` radii from 0 to the largest radius of the
    grid (default: the dataset's grid). Legend labels are unique: runs of one model that differ
    (n0, n, alpha, run) say how. ``states`` (:func:`rsbench.results.run_states`) adds what rows do
    not hold: all experts of a dual model (its label, and a zero bar for an expert its router
    never chose) and the mark of a run that has not finished. Returns a matplotlib Figure (no
    pyplot state is touched).
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    if df is None or len(df) == 0:
        raise ResultsError(
            "no result rows to plot; point at run directories holding part-*.parquet files"
        )
    found = metrics.sections(df)
    has_dual = [bool(kind_mask(rows_of_section(df, p, d), "dual").any()) for p, d in found]
    columns = 3 if any(has_dual) else 1
    fig = Figure(figsize=(6.4 * columns, 4.6 * len(found)), layout="constrained")
    axes = fig.subplots(len(found), columns, squeeze=False)
    for row, ((protocol, dataset), dual) in enumerate(zip(found, has_dual)):
        rows = rows_of_section(df, protocol, dataset)
        grid = metrics.check_radii(metrics.default_radii(dataset) if radii is None else radii)
        fine = np.linspace(0.0, float(grid[-1]) if grid[-1] > 0 else 1.0, points)
        ax = axes[row][0]
        experts_of = dual_experts(rows, states)
        groups = list(metrics.iter_groups(rows))
        for i, ((_key, group), label) in enumerate(
            zip(groups, _curve_labels(groups, experts_of, states))
        ):
            ax.plot(
                fine,
                metrics.certified_accuracy(group, fine),
                color=OKABE_ITO[i % len(OKABE_ITO)],
                linewidth=1.8,
                label=label,
            )
        experts = rows[kind_mask(rows, "expert")]
        n_experts = (
            metrics.add_sigma_key(experts).groupby(["model_id", "sigma_key"]).ngroups
            if len(experts)
            else 0
        )
        if bounds and n_experts >= 2:
            ax.plot(
                fine,
                metrics.envelope(experts, fine),
                color=ENVELOPE_COLOR,
                linestyle="--",
                linewidth=1.4,
                label=ENVELOPE_ID,
            )
            if "index" in experts.columns:
                orc, n_common = metrics.oracle(experts, fine)
                most = int(
                    metrics.add_sigma_key(experts).groupby(["model_id", "sigma_key"]).size().max()
                )
                label = f"{ORACLE_ID}, upper bound"
                if n_common < most:
                    label += f" ({n_common} common images)"
                ax.plot(
                    fine,
                    orc,
                    color=ORACLE_COLOR,
                    linestyle=(0, (2, 2)),
                    linewidth=1.4,
                    label=label,
                )
        ax.set_xlabel("L2 radius r")
        ax.set_ylabel("certified accuracy")
        ax.set_title(f"{dataset} · protocol {protocol}")
        ax.set_xlim(0.0, fine[-1])
        ax.set_ylim(0.0, 1.0)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
        if dual:
            _plot_router_choices(axes[row][1], rows, experts_of)
            _plot_router_scatter(axes[row][2], rows)
        elif columns > 1:
            for extra in axes[row][1:]:
                extra.set_visible(False)
    return fig


def _curve_labels(
    groups: Sequence[tuple[dict, pd.DataFrame]],
    experts_of: Mapping[str, Sequence[tuple[str, float]]],
    states: Mapping[str, Any] | None,
) -> list[str]:
    """One legend label per group, unique within the section: "model (σ=0.50)", and where two
    groups would read the same, the settings that tell them apart (n0, n, alpha, else the run)."""
    base = []
    for key, group in groups:
        if key["sigma_key"] == metrics.DUAL_SIGMA_KEY:
            experts = experts_of.get(str(key["model_id"]))
            sigma = metrics.dual_sigma_label(group, [s for _, s in experts] if experts else None)
        else:
            sigma = key["sigma_key"]
        base.append(_model_label(str(key["model_id"]), str(sigma)))
    labels = list(base)
    for label in set(base):
        clash = [i for i, b in enumerate(base) if b == label]
        if len(clash) < 2:
            continue
        extras: dict[int, list[str]] = {i: [] for i in clash}
        for name, column in (("n0", "n0"), ("n", "n"), ("alpha", "alpha"), ("run", "run_id")):
            if name == "run" and any(extras.values()):
                break  # the settings tell them apart; the run id is only the last resort
            values = {i: metrics.single_value(groups[i][1], column) for i in clash}
            if len({str(v) for v in values.values()}) > 1:
                for i in clash:
                    extras[i].append(
                        f"{name}={values[i]:g}" if name == "alpha" else f"{name}={values[i]}"
                    )
        for i in clash:
            labels[i] = f"{base[i]}, {', '.join(extras[i])}" if extras[i] else base[i]
    for i, (_, group) in enumerate(groups):  # runs that have not finished say so
        if states and "run_id" in group.columns:
            unfinished = [
                r
                for r in group["run_id"].astype(str).unique()
                if r in states and not states[r].complete
            ]
            if unfinished:
                planned = [states[r].planned for r in unfinished]
                done = int(group["run_id"].astype(str).isin(unfinished).sum())
                total = f"/{sum(planned)}" if None not in planned else ""
                labels[i] += f" [{done}{total} images, incomplete]"
    for i, (key, _) in enumerate(groups):  # as in the leaderboard: known unsound, say so
        if is_unsound(str(key["sigma_key"])):
            labels[i] += " [unsound]"
    return labels


def _plot_router_choices(
    ax: Any, rows: pd.DataFrame, experts_of: Mapping[str, Sequence[tuple[str, float]]] | None = None
) -> None:
    from matplotlib.ticker import PercentFormatter

    freq = metrics.router_choice_frequencies(rows, experts_of)
    models = list(dict.fromkeys(freq["model_id"]))
    choices = sorted(
        set(zip(freq["router_choice"], freq["expert_id"])), key=lambda c: (c[0] < 0, c[0], c[1])
    )
    labels = _choice_labels(freq, choices)
    positions = np.arange(len(choices))
    width = 0.8 / max(1, len(models))
    for i, model in enumerate(models):
        sub = freq[freq["model_id"] == model]
        heights = [
            float(sub[(sub["router_choice"] == c) & (sub["expert_id"] == e)]["fraction"].sum())
            for c, e in choices
        ]
        where = positions + (i - (len(models) - 1) / 2) * width
        ax.bar(where, heights, width, color=OKABE_ITO[i % len(OKABE_ITO)], label=model)
        listed = set(zip(sub["router_choice"], sub["expert_id"]))
        for x, h, choice in zip(where, heights, choices):
            if h == 0 and choice in listed:  # an expert of this model its router never chose
                ax.text(x, 0.01, "0%", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(positions, labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("fraction of images")
    ax.set_xlabel("expert chosen by the router")
    ax.set_title("router choices")
    ax.set_ylim(0.0, 1.0)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def _choice_labels(freq: pd.DataFrame, choices: Sequence[tuple[int, str]]) -> list[str]:
    """A bar label per router choice: the expert's id, plus its sigma where one id serves several
    choices (a denoised dual's experts are one denoised model at several sigmas), so that no two
    bars of different experts read the same."""
    ids = [expert for _, expert in choices]
    labels = []
    for choice, expert in choices:
        sigmas = freq.loc[
            (freq["router_choice"] == choice) & (freq["expert_id"] == expert), "sigma"
        ].dropna()
        if ids.count(expert) > 1 and len(sigmas):
            labels.append(f"{expert} (σ={float(sigmas.iloc[0]):g})")
        else:
            labels.append(expert)
    return labels


def _plot_router_scatter(ax: Any, rows: pd.DataFrame) -> None:
    dual = rows[kind_mask(rows, "dual")]
    metrics.require_columns(dual, ("router_radius", "expert_radius"), "dual results")
    top = 0.0
    for i, (model, sub) in enumerate(dual.groupby("model_id", sort=True)):
        x = pd.to_numeric(sub["router_radius"], errors="coerce").to_numpy(dtype=np.float64)
        y = pd.to_numeric(sub["expert_radius"], errors="coerce").to_numpy(dtype=np.float64)
        keep = np.isfinite(x) & np.isfinite(y)
        if keep.any():
            top = max(top, float(np.max(x[keep])), float(np.max(y[keep])))
        ax.scatter(
            x[keep],
            y[keep],
            s=8,
            alpha=0.5,
            color=OKABE_ITO[i % len(OKABE_ITO)],
            label=str(model),
            rasterized=True,
        )
    top = top * 1.05 if top > 0 else 1.0
    ax.plot(
        [0, top], [0, top], color=ENVELOPE_COLOR, linestyle="--", linewidth=1.0, label="R_e = R_r"
    )
    ax.set_xlim(0.0, top)
    ax.set_ylim(0.0, top)
    ax.set_xlabel("router radius R_r")
    ax.set_ylabel("expert radius R_e")
    ax.set_title("router vs expert radius (certified radius = min)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` as PNG, SVG or PDF (chosen by the file extension); returns the path."""
    import matplotlib

    target = Path(path)
    suffix = target.suffix.lower().lstrip(".")
    if suffix not in FIGURE_FORMATS:
        raise ResultsError(
            f"cannot write a plot to {str(path)!r}: the extension must be one of "
            f"{', '.join('.' + f for f in FIGURE_FORMATS)}"
        )
    from rsbench.output import atomic_output

    metadata: dict[str, Any] = {
        "png": {"Software": None},
        "svg": {"Date": None},
        "pdf": {"CreationDate": None},
    }[suffix]
    with matplotlib.rc_context({"svg.hashsalt": "rsbench"}), atomic_output(target) as tmp:
        fig.savefig(tmp, format=suffix, dpi=150, metadata=metadata, bbox_inches="tight")
    return target
