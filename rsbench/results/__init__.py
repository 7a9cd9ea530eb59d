"""Per-sample certificates in Parquet, with ``run.json`` provenance (see docs/results-schema.md).

The results layer, one concept per module; this package re-exports their public names, so
``from rsbench.results import read_results`` is the import to use:

* :mod:`rsbench.results.schema` — the columns and Arrow :data:`SCHEMA` of a row, the
  ``Certificate -> row`` mapping (:func:`certificate_row`) and conversions to Arrow tables;
* :mod:`rsbench.results.storage` — run directories: atomic part files (:func:`write_chunk`),
  ``run.json``, reading rows back (:func:`read_results`), whole-run writes (:func:`write_run`);
* :mod:`rsbench.results.provenance` — time, host, versions, git commit, :func:`digest`;
* :mod:`rsbench.results.rescore` — certificates recomputed from stored counts at another alpha;
* :mod:`rsbench.results.importers` — published certification logs (:func:`import_cohen_log`).

A run directory holds ``run.json`` and ``part-<shard>-<seq>.parquet`` chunks, one row per
(run, sample); a chunk is written atomically, and a part that is truncated, corrupted, has the
wrong columns or another run's rows is refused with a :class:`~rsbench.errors.ResultsError` naming
the file.
"""

from __future__ import annotations

from rsbench.results.importers import RADIUS_FROM, import_cohen_log, parse_log_time
from rsbench.results.provenance import (
    digest,
    environment_info,
    git_commit,
    package_versions,
    recorded_path,
    utc_now,
)
from rsbench.results.rescore import rescore_frame, rescore_run
from rsbench.results.schema import (
    BASE_COLUMNS,
    CASCADE_COLUMNS,
    COLUMNS,
    DUAL_COLUMNS,
    OPTIONAL_COLUMNS,
    RESULTS_FORMAT_VERSION,
    SCHEMA,
    RowSource,
    certificate_row,
    columns_to_table,
    frame_to_table,
    rows_to_table,
)
from rsbench.results.storage import (
    CORRUPT_SUFFIX,
    DEFAULT_RESULTS_DIR,
    ENV_RESULTS,
    RUN_JSON,
    RunState,
    UnreadablePart,
    check_counts,
    check_format,
    check_part_owner,
    check_run_id,
    declared_run_id,
    default_results_dir,
    find_run_dirs,
    list_parts,
    parse_part_name,
    part_name,
    read_part,
    read_results,
    read_run_json,
    read_tables,
    run_states,
    set_aside,
    set_aside_parts,
    truncated_part_of,
    write_chunk,
    write_json_atomic,
    write_run,
)

__all__ = [
    "BASE_COLUMNS",
    "CORRUPT_SUFFIX",
    "CASCADE_COLUMNS",
    "COLUMNS",
    "DEFAULT_RESULTS_DIR",
    "DUAL_COLUMNS",
    "ENV_RESULTS",
    "OPTIONAL_COLUMNS",
    "RADIUS_FROM",
    "RESULTS_FORMAT_VERSION",
    "RUN_JSON",
    "SCHEMA",
    "RowSource",
    "RunState",
    "UnreadablePart",
    "certificate_row",
    "check_counts",
    "check_format",
    "check_part_owner",
    "check_run_id",
    "columns_to_table",
    "declared_run_id",
    "default_results_dir",
    "digest",
    "environment_info",
    "find_run_dirs",
    "frame_to_table",
    "git_commit",
    "import_cohen_log",
    "list_parts",
    "package_versions",
    "parse_log_time",
    "parse_part_name",
    "part_name",
    "read_part",
    "read_results",
    "read_run_json",
    "read_tables",
    "recorded_path",
    "rescore_frame",
    "rescore_run",
    "rows_to_table",
    "run_states",
    "set_aside",
    "set_aside_parts",
    "truncated_part_of",
    "utc_now",
    "write_chunk",
    "write_json_atomic",
    "write_run",
]
