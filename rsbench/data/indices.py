"""Which images: :func:`select_indices` (a deterministic subset of a split) and :func:`parse_indices`.

Guarantees: :func:`select_indices` returns explicit indices in their given order (distinct
integers in ``[0, size)``) or ``start::stride`` cut to ``limit`` images, and refuses a stride, start
or limit beyond the dataset with one :class:`~rsbench.errors.DataError` line; :func:`parse_indices`
reads the CLI's ``--indices`` text (``0,5,10-12``, ``start:stop:step``) and checks its size
arithmetically before building any list: more than :data:`MAX_INDICES` images, or an index at
or beyond :data:`MAX_INDEX` (or the dataset's size, when given), is one ``DataError`` line, so a
typo such as ``0:1000000000000`` costs no memory. The protocols' subsets are
:meth:`rsbench.data.protocols.Protocol.indices`. Re-exported by :mod:`rsbench.data.dataset`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rsbench.errors import DataError

#: The most images one ``--indices`` may select: more than any split rsbench knows (ImageNet's
#: training set has 1,281,167), and small enough that the list costs little memory.
MAX_INDICES = 2_000_000
#: Indices are positions in a split; none is this large.
MAX_INDEX = 2_000_000


def select_indices(
    size: int,
    stride: int = 1,
    limit: int | None = None,
    indices: Sequence[int] | None = None,
    start: int = 0,
) -> list[int]:
    """Deterministic subset of ``range(size)``: explicit ``indices``, or ``start::stride`` cut to ``limit``.

    ``limit`` counts images (the first ``limit`` of the selection). Explicit ``indices`` keep
    their given order, must be distinct integers in ``[0, size)``, and exclude ``stride``/``start``.
    Raises :class:`DataError` for a stride, start or limit beyond the dataset and for bad indices.
    """
    size = int(size)
    if size < 1:
        raise DataError(f"the dataset is empty (size {size}); nothing to select")
    if isinstance(stride, bool) or int(stride) != stride or stride < 1:
        raise DataError(f"stride={stride!r} is not allowed; use an integer >= 1")
    if stride > size:
        raise DataError(
            f"stride={stride} is beyond the dataset ({size} images); use a stride <= {size}"
        )
    if limit is not None and (isinstance(limit, bool) or int(limit) != limit or limit < 1):
        raise DataError(f"limit={limit!r} is not allowed; use a number of images >= 1")
    if indices is not None:
        if stride != 1 or start != 0:
            raise DataError("give either explicit indices or stride/start, not both")
        chosen = []
        for value in indices:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise DataError(
                    f"index {value!r} is not an integer; indices are positions 0..{size - 1}"
                )
            if not 0 <= int(value) < size:
                raise DataError(f"index {value} is outside the dataset (0..{size - 1})")
            chosen.append(int(value))
        if len(set(chosen)) != len(chosen):
            dupes = sorted({i for i in chosen if chosen.count(i) > 1})
            raise DataError(
                f"indices repeat ({', '.join(map(str, dupes[:5]))}); give each index once"
            )
        if not chosen:
            raise DataError("the index list is empty; give at least one index")
    else:
        if isinstance(start, bool) or int(start) != start or not 0 <= start < size:
            raise DataError(f"start={start!r} is outside the dataset (0..{size - 1})")
        chosen = list(range(int(start), size, int(stride)))
    if limit is not None:
        if limit > len(chosen):
            raise DataError(
                f"limit={limit} is beyond the {len(chosen)} images selected from {size}; "
                f"use a limit <= {len(chosen)} or a smaller stride"
            )
        chosen = chosen[: int(limit)]
    return chosen


def _check_range(part: str, values: range, size: int | None, total: int) -> None:
    """Refuse ``values`` (from ``part`` of --indices) before it is built: its last index must lie
    below the dataset's ``size`` (when known) and :data:`MAX_INDEX`, and ``total`` images so far
    must stay within :data:`MAX_INDICES`. Arithmetic only: no list is made."""
    if not values:
        return
    last = values[-1]
    if size is not None and last >= size:
        raise DataError(f"index {last} (from {part!r}) is outside the dataset (0..{size - 1})")
    if last >= MAX_INDEX:
        raise DataError(
            f"index {last} (from {part!r}) is outside every dataset rsbench knows (indices are "
            f"positions below {MAX_INDEX:,}); check --indices"
        )
    if total > MAX_INDICES:
        raise DataError(
            f"--indices selects {total:,} images (at {part!r}); at most {MAX_INDICES:,} per run: "
            "use a step or a shorter range"
        )


def parse_indices(text: str, size: int | None = None) -> list[int]:
    """Parse an index list: ``"0,5,10-12"`` (inclusive ranges) and ``"start:stop:step"`` slices.

    ``"0,5,10-12"`` -> ``[0, 5, 10, 11, 12]``; ``"100:200:10"`` -> ``[100, 110, ..., 190]`` (Python's
    ``range(start, stop, step)``; ``start`` defaults to 0 and ``step`` to 1, ``stop`` is required).
    Parts combine: ``"0-4,100:200:50"``. An empty or blank text is a :class:`DataError`, and so
    is, before any list is built, an index at or beyond ``size`` (the dataset's, when given) or
    :data:`MAX_INDEX`, or more than :data:`MAX_INDICES` images in all.
    """
    out: list[int] = []
    example = "write e.g. 0,5,10-12 or 0:2000:8 (start:stop:step)"
    if not str(text).strip():
        raise DataError(f"--indices is empty; {example}")
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if ":" in part:
                fields = part.split(":")
                if len(fields) > 3 or not fields[1].strip():
                    raise DataError(
                        f"index slice {part!r} needs start:stop[:step] with a stop; {example}"
                    )
                start = int(fields[0]) if fields[0].strip() else 0
                stop = int(fields[1])
                step = int(fields[2]) if len(fields) == 3 and fields[2].strip() else 1
                if step < 1 or start < 0 or stop <= start:
                    raise DataError(
                        f"index slice {part!r} selects nothing or runs backwards; use 0 <= start < "
                        "stop and step >= 1"
                    )
                values = range(start, stop, step)
                _check_range(part, values, size, len(out) + len(values))
                out.extend(values)
            elif "-" in part[1:]:
                lo, hi = part.split("-", 1)
                a, b = int(lo), int(hi)
                if b < a:
                    raise DataError(f"index range {part!r} runs backwards; write low-high")
                values = range(a, b + 1)
                _check_range(part, values, size, len(out) + len(values))
                out.extend(values)
            else:
                value = int(part)
                _check_range(part, range(value, value + 1), size, len(out) + 1)
                out.append(value)
        except ValueError:
            raise DataError(f"cannot read index {part!r}; {example}") from None
    if not out:
        raise DataError(f"no indices in {text!r}; {example}")
    return out
