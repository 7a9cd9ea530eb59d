"""Importers: published per-image certification logs into rows of the results schema.

:func:`import_cohen_log` reads the TSV log that Cohen et al.'s ``certify.py`` writes; the count
``nA`` is reconstructed from the printed radius (the *smallest* consistent count, see there), so
an imported row is as conservative as the log allows and rescores like a native one. A malformed
log is refused with one :class:`~rsbench.errors.ResultsError` naming the file and line. Imports
:mod:`rsbench.errors` and :mod:`rsbench.results.schema`; lazily :mod:`rsbench.engine.stats` and
:mod:`rsbench.data.protocols`. Write the rows with :func:`rsbench.results.write_run`.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from rsbench.errors import ConfigError, ResultsError
from rsbench.results.schema import columns_to_table, pandas_types

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

_TIME_RE = re.compile(r"^(?:(?P<days>\d+) days?, )?(?P<h>\d+):(?P<m>\d{2}):(?P<s>\d{2}(?:\.\d+)?)$")


def parse_log_time(text: str) -> float:
    """Seconds from a Cohen log time: ``H:MM:SS.ffffff`` (``str(timedelta)``) or plain seconds."""
    text = text.strip()
    match = _TIME_RE.match(text)
    if match:
        days = int(match["days"] or 0)
        return days * 86400 + int(match["h"]) * 3600 + int(match["m"]) * 60 + float(match["s"])
    try:
        value = float(text)
    except ValueError:
        raise ResultsError(
            f"time {text!r} is neither H:MM:SS.ffffff nor a number of seconds"
        ) from None
    if not np.isfinite(value) or value < 0:
        raise ResultsError(f"time {text!r} is not a non-negative number of seconds")
    return value


#: The largest ``n`` an import accepts: reconstructing counts tabulates the radius of every count
#: 0..n (8 bytes each, about 13 s for n = 10**6 on one core), and published logs use n = 100,000.
MAX_LOG_N = 1_000_000
#: Significant digits a log may print its radii with (a float64 holds 17).
MAX_DIGITS = 17

#: Where an imported row's radius comes from: ``count`` (recomputed from the reconstructed smallest
#: consistent count; the default) or ``printed`` (the log's rounded radius).
RADIUS_FROM = ("count", "printed")


def import_cohen_log(  # noqa: C901, PLR0912 — one pass over a foreign log: each column and protocol check is a separate refusal with its own message
    path: str | os.PathLike,
    *,
    dataset: str,
    split: str,
    model_id: str,
    sigma: float,
    n0: int,
    n: int,
    alpha: float,
    protocol: str | None = None,
    run_id: str | None = None,
    significant_digits: int = 3,
    radius_from: str = "count",
) -> pd.DataFrame:
    """Read a Cohen-format certification log into a ``pandas.DataFrame`` of :data:`SCHEMA`.

    The log (plain text, or gzipped when its name ends in ``.gz``) is tab-separated with the header
    ``idx label predict radius correct time``; ``time`` is
    ``H:MM:SS.ffffff`` or plain seconds; ``radius`` is printed with ``significant_digits``
    significant digits. Each row gets ``kind='expert'`` and the given protocol parameters.

    Reconstruction of ``nA`` (non-abstained rows): the radius is non-decreasing in nA, so the counts
    whose radius ``sigma * Phi^-1(CP_lower(nA, n, alpha))`` prints as the logged radius form a
    range; several counts usually print the same radius (e.g. about 30 counts at a printed radius
    near 0.5 for n = 100,000). We store the **smallest** consistent count, so ``pA_lower`` is the
    smallest bound consistent with the log. ``radius_from="count"`` (the default, conservative):
    ``radius`` is recomputed from that count, the smallest radius consistent with the log, and
    exactly what :func:`rescore_frame` gives at the same alpha; ``"printed"``: ``radius`` keeps the
    logged (rounded) value, as the authors' own analysis scripts use it. Abstained rows keep
    ``nA``, ``cA`` and ``pA_lower`` null (any count below the threshold is consistent).

    ``protocol``: None records the registered protocol the rows follow (n0, n, alpha, split and
    every index in its selection), else ``custom``; a given name is validated
    (:func:`rsbench.data.protocols.check_protocol`: a deviation is a :class:`ConfigError`).
    ``count0``, ``counts``, ``seed``, ``precision``, ``batch_size`` are null: logs do not record them.
    Raises :class:`ResultsError` on a malformed file, a ``correct`` that disagrees with
    ``predict == label``, or a radius no count can produce.
    """
    from rsbench.data.protocols import check_protocol
    from rsbench.engine.stats import clopper_pearson_lower, counts_from_radii, radius_from_bound
    from rsbench.errors import check_alpha, check_count, check_sigma

    if radius_from not in RADIUS_FROM:
        raise ConfigError(
            f"radius_from={radius_from!r} is not allowed; use one of {', '.join(RADIUS_FROM)}"
        )
    sigma = check_sigma(sigma)
    alpha = check_alpha(alpha)
    n0 = check_count(n0, "n0")
    n = check_count(n, "n")
    if n > MAX_LOG_N:
        raise ConfigError(
            f"n={n} is more estimation samples than an import handles (at most {MAX_LOG_N:,}; "
            "published logs use 100,000): check --n"
        )
    if n0 > MAX_LOG_N:
        raise ConfigError(f"n0={n0} is more than {MAX_LOG_N:,} selection samples: check --n0")
    if (
        isinstance(significant_digits, bool)
        or not isinstance(significant_digits, int)
        or not 1 <= significant_digits <= MAX_DIGITS
    ):
        raise ConfigError(
            f"digits={significant_digits!r} is not allowed; the significant digits of the printed "
            f"radii are an integer from 1 to {MAX_DIGITS} (Cohen's logs: 3)"
        )
    if not isinstance(model_id, str) or not model_id.strip():
        raise ConfigError(f"model id {model_id!r} is empty; pass --model-id, e.g. my-model")
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"log file {path} does not exist")
    try:
        if path.suffix == ".gz":  # a gzipped log (tests/data ships them so)
            with gzip.open(path, "rt", encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        else:
            lines = path.read_text(encoding="utf-8").splitlines()
    except (EOFError, gzip.BadGzipFile) as exc:
        raise ResultsError(f"log file {path} is not a readable gzip file ({exc})") from None
    except UnicodeDecodeError as exc:
        raise ResultsError(
            f"log file {path} is not a text log (byte {exc.start} is not UTF-8); pass the "
            "tab-separated log that Cohen et al.'s certify.py writes"
        ) from None
    except OSError as exc:
        raise ResultsError(f"log file {path} cannot be read ({exc.strerror})") from None
    if not lines:
        raise ResultsError(
            f"log file {path} is empty; expected a header 'idx label predict radius correct time'"
        )
    header = lines[0].split()
    expected = ["idx", "label", "predict", "radius", "correct", "time"]
    if header != expected:
        raise ResultsError(
            f"log file {path} has header {header}; expected {expected} (tab-separated)"
        )
    idx, label, predict, radius, correct, seconds, radius_text = [], [], [], [], [], [], []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 6:
            raise ResultsError(
                f"{path}:{number}: expected 6 tab-separated fields, got {len(fields)}"
            )
        try:
            idx.append(int(fields[0]))
            label.append(int(fields[1]))
            predict.append(int(fields[2]))
            radius.append(float(fields[3]))
            correct.append(int(fields[4]))
        except ValueError as exc:
            raise ResultsError(f"{path}:{number}: malformed field ({exc})") from None
        radius_text.append(fields[3])
        try:
            seconds.append(parse_log_time(fields[5]))
        except ResultsError as exc:
            raise ResultsError(f"{path}:{number}: {exc}") from None
    idx_a = np.asarray(idx, dtype=np.int64)
    label_a = np.asarray(label, dtype=np.int64)
    predict_a = np.asarray(predict, dtype=np.int64)
    radius_a = np.asarray(radius, dtype=np.float64)
    correct_a = np.asarray(correct, dtype=np.int64).astype(bool)
    abstained = predict_a == -1
    if np.any(correct_a != ((predict_a == label_a) & ~abstained)):
        bad = int(idx_a[np.argmax(correct_a != ((predict_a == label_a) & ~abstained))])
        raise ResultsError(
            f"{path}: row idx={bad} has 'correct' that disagrees with predict == label"
        )
    if np.any(radius_a < 0) or np.any(abstained & (radius_a != 0)):
        raise ResultsError(f"{path}: a radius is negative, or an abstained row has a radius > 0")
    if len(np.unique(idx_a)) != len(idx_a):
        raise ResultsError(f"{path}: duplicate idx values")
    if len(idx_a) == 0:
        raise ResultsError(
            f"log file {path} has a header but no rows; import it once certify.py has written rows"
        )

    protocol = check_protocol(protocol, dataset, split, n0, n, alpha, idx_a.tolist())
    nA = np.full(len(idx_a), -1, dtype=np.int64)
    answered = ~abstained
    summary = {
        "rows": len(idx_a),
        "rows_abstained": int(abstained.sum()),
        "rows_with_ambiguous_count": 0,
        "max_consistent_counts": 1,
        "count_rule": "smallest count whose radius prints as the logged radius",
        "significant_digits": significant_digits,
        "radius_from": radius_from,
    }
    if answered.any():
        lowest, highest = counts_from_radii(radius_a[answered], sigma, n, alpha, significant_digits)
        pos = np.flatnonzero(answered)
        zero = radius_a[answered] == 0.0
        # A printed radius of 0 with a prediction means pA_lower == 1/2 (up to rounding): the count
        # just above the abstaining range is the smallest non-abstaining, consistent one.
        lowest = np.where(zero, highest + 1, lowest)
        if np.any(lowest < 0):
            bad = int(np.flatnonzero(lowest < 0)[0])
            raise ResultsError(
                f"{path}: radius {radius_text[pos[bad]]!r} at idx={int(idx_a[pos[bad]])} cannot come from "
                f"any count with sigma={sigma}, n={n}, alpha={alpha}; check these options"
            )
        nA[pos] = lowest
        spread = highest - lowest
        summary["rows_with_ambiguous_count"] = int(np.sum(spread > 0))
        summary["max_consistent_counts"] = int(spread.max(initial=0)) + 1
        log.info(
            "%s: reconstructed nA for %d rows; %d rows have more than one consistent count (max %d); "
            "the smallest was used",
            path,
            len(pos),
            int(np.sum(spread > 0)),
            int(spread.max(initial=0)) + 1,
        )
    pa_lower = np.where(answered, clopper_pearson_lower(np.maximum(nA, 0), n, alpha), np.nan)
    if radius_from == "count":  # the smallest radius consistent with the log (conservative)
        radius_a = np.where(answered, radius_from_bound(np.nan_to_num(pa_lower), sigma), 0.0)

    run_id = run_id or f"imported-{model_id}-{dataset}-{split}-s{sigma:g}"
    rows = len(idx_a)
    table = columns_to_table(
        {
            "run_id": [run_id] * rows,
            "protocol": [protocol] * rows,
            "dataset": [dataset] * rows,
            "split": [split] * rows,
            "index": idx_a,
            "label": label_a,
            "model_id": [model_id] * rows,
            "kind": ["expert"] * rows,
            "sigma": np.full(rows, sigma),
            "n0": np.full(rows, n0),
            "n": np.full(rows, n),
            "alpha": np.full(rows, alpha),
            "prediction": predict_a,
            "abstained": abstained,
            "correct": correct_a,
            "cA": pa.array(predict_a, mask=abstained),
            "nA": pa.array(nA, mask=abstained),
            "pA_lower": pa.array(pa_lower, mask=abstained),
            "radius": radius_a,
            "seconds": np.asarray(seconds, dtype=np.float64),
        },
        rows,
    )
    frame = table.to_pandas(types_mapper=pandas_types().get)
    frame.attrs["import"] = summary
    return frame
