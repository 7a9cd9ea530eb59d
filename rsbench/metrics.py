"""Moved to :mod:`rsbench.report.metrics`; this old path resolves there (with a DeprecationWarning)
for one more release. Nothing inside rsbench imports it."""

from __future__ import annotations

from rsbench._moved import moved_names

__getattr__ = moved_names(
    "rsbench.metrics",
    {
        "CASCADE_SIGMA_KEY": "rsbench.report.metrics",
        "DEFAULT_RADIUS_GRIDS": "rsbench.report.metrics",
        "DUAL_SIGMA_KEY": "rsbench.report.metrics",
        "FALLBACK_RADIUS_GRID": "rsbench.report.metrics",
        "GROUP_COLUMNS": "rsbench.report.metrics",
        "IMAGE_COLUMNS": "rsbench.report.metrics",
        "MAX_RADII": "rsbench.report.metrics",
        "ResultsError": "rsbench.errors",
        "SECTION_COLUMNS": "rsbench.report.metrics",
        "abstain_rate": "rsbench.report.metrics",
        "acr": "rsbench.report.metrics",
        "add_sigma_key": "rsbench.report.metrics",
        "cascade_sigma_key": "rsbench.report.metrics",
        "certified_accuracy": "rsbench.report.metrics",
        "check_radii": "rsbench.report.metrics",
        "clean_accuracy": "rsbench.report.metrics",
        "common_images": "rsbench.report.metrics",
        "credited_radius": "rsbench.report.metrics",
        "default_radii": "rsbench.report.metrics",
        "dual_sigma_label": "rsbench.report.metrics",
        "envelope": "rsbench.report.metrics",
        "format_sigma": "rsbench.report.metrics",
        "iter_groups": "rsbench.report.metrics",
        "oracle": "rsbench.report.metrics",
        "parse_radii": "rsbench.report.metrics",
        "radius_column": "rsbench.report.metrics",
        "radius_grid": "rsbench.report.metrics",
        "require_columns": "rsbench.report.metrics",
        "router_choice_frequencies": "rsbench.report.metrics",
        "seconds_per_image": "rsbench.report.metrics",
        "sections": "rsbench.report.metrics",
        "single_value": "rsbench.report.metrics",
        "summarize": "rsbench.report.metrics",
    },
)
