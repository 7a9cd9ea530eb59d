"""Writing a user-named output file (a leaderboard, a plot) all or nothing.

:func:`atomic_output` hands out a temporary path next to the target and renames it onto the target
only when writing succeeded, so a failure never leaves a truncated file and never damages the file
that was there. A target that exists but is read-only, a parent that cannot be created (a file in
the way, a read-only folder) and any other OS refusal is one :class:`~rsbench.errors.ResultsError`
line naming the file, the reason and the fix.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from rsbench.errors import ResultsError


def _refused(path: Path, reason: str) -> ResultsError:
    return ResultsError(
        f"cannot write {path} ({reason}); choose a writable location with -o/--output or fix "
        "the permissions (nothing was written)"
    )


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` (parents are created)."""
    target = Path(path)
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


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` all or nothing; return the path."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
