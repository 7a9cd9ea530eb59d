"""Writing a user-named output (a leaderboard, a plot, a folder of runs) without losing anything.

Two guarantees, for every ``-o``/``--output``/``--out``/``--plot`` of ``leaderboard``, ``plot``,
``compare``, ``rescore`` and ``import-logs``:

* **No command writes over what it reads.** :func:`check_output_path` (called by each command
  before it reads anything, and again by :func:`atomic_output` for every file it writes) refuses
  an output that is one of the command's inputs, that lies inside a run folder (a folder holding
  ``run.json`` or a ``part-*.parquet`` file), or whose name is one rsbench itself uses in a run
  folder (``run.json``, ``part-*.parquet``). The refusal is one
  :class:`~rsbench.errors.ResultsError` line naming the path and the fix; nothing is written.
* **All or nothing.** :func:`atomic_output` hands out a temporary path next to the target and
  renames it onto the target only when writing succeeded, so a failure never leaves a truncated
  file and never damages the file that was there. A target that exists but is read-only, a parent
  that cannot be created (a file in the way, a read-only folder) and any other OS refusal is one
  :class:`~rsbench.errors.ResultsError` line naming the file, the reason and the fix.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from rsbench.errors import ResultsError

#: The names rsbench gives the files of a run folder (kept in step with
#: :mod:`rsbench.results.storage`, which this layer may not import; a test checks they agree).
RUN_JSON = "run.json"
PART_PATTERN = re.compile(r"^part-.*\.parquet$")


def _refused(path: Path, reason: str) -> ResultsError:
    return ResultsError(
        f"cannot write {path} ({reason}); choose a writable location with -o/--output or fix "
        f"the permissions ({path} was left as it was)"
    )


def is_run_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a run: a ``run.json`` or a file named like a results part."""
    try:
        if (folder / RUN_JSON).is_file():
            return True
        with os.scandir(folder) as entries:
            return any(PART_PATTERN.match(entry.name) for entry in entries)
    except OSError:  # missing, not a folder, unreadable: nothing of a run can be told there
        return False


def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.fspath(path)))


def check_output_path(
    path: str | os.PathLike,
    inputs: Iterable[str | os.PathLike] = (),
    *,
    option: str = "-o/--output",
    folder: bool = False,
) -> Path:
    """Refuse an output that would write over results or inputs; return ``path`` as a Path.

    ``inputs`` are what the command reads (files or folders); ``folder`` says that ``path`` is a
    folder the command creates runs in (``rescore --out``, ``import-logs --out``) rather than a
    file. Refused, with one :class:`ResultsError` line and nothing written: a file named
    ``run.json`` or ``part-*.parquet``; a path equal to an input; a path inside a run folder (for a
    folder output: the folder itself being a run folder too); for a folder output, an input file
    inside it. Symbolic links are not followed (the check is on the names given).
    """
    target = Path(path)
    absolute = _resolved(target)
    fix = f"write it elsewhere, e.g. {option} outside the results folders"
    if not folder and (target.name == RUN_JSON or PART_PATTERN.match(target.name)):
        raise ResultsError(
            f"{option} {target}: {target.name!r} is a file name rsbench uses for results "
            f"(run.json, part-*.parquet); {fix} (nothing was written)"
        )
    for given in inputs:
        if _resolved(given) == absolute:
            raise ResultsError(
                f"{option} {target} is also an input of this command; writing it would replace "
                f"what is read: {fix} (nothing was written)"
            )
    first = absolute if folder else absolute.parent
    for ancestor in (first, *first.parents):
        if is_run_folder(ancestor):
            where = "is" if ancestor == absolute else "lies inside"
            raise ResultsError(
                f"{option} {target} {where} the run folder {ancestor}, which holds results; "
                f"{fix} (nothing was written)"
            )
    return target


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, option: str = "-o/--output") -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` (parents are created).

    ``path`` is first checked by :func:`check_output_path` (never a results file, never inside a
    run folder).
    """
    target = check_output_path(path, option=option)
    if target.is_dir():
        raise _refused(target, "it is a directory")
    if target.exists() and not os.access(target, os.W_OK):
        raise _refused(target, "the file is read-only")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, target)
    except (FileExistsError, NotADirectoryError):
        raise _refused(target, "a parent of it is a file, not a folder") from None
    except OSError as exc:
        raise _refused(target, exc.strerror or type(exc).__name__) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str, option: str = "-o/--output") -> Path:
    """Write ``text`` (UTF-8) to ``path`` all or nothing; return the path."""
    with atomic_output(path, option) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
