"""The run store: one run directory's part index, locks, resume and run.json status.

A run directory holds ``run.json`` (configuration, identity, provenance, status) and the Parquet
parts of its shards (:mod:`rsbench.results` reads and writes the files themselves); this module
keeps them consistent while one or several processes certify into it.

Guarantees
----------
* **Resume never deletes what it could not read.** Completed samples are read from the part
  files. The only part a resume replaces is one that is positively this run's and truncated
  (:func:`rsbench.results.storage.truncated_part_of`: Parquet magic at the start, no footer, this
  run's id in its first bytes): it is moved aside to ``part-...parquet.corrupt`` (never deleted
  before the rerun completes; :func:`finish` removes it then) and its samples are certified again
  (:meth:`PartIndex.refresh` with ``repair``). Any other part that cannot be read (the OS refuses
  it, mode 000; not Parquet; a foreign Parquet file named ``part-*``; other column types;
  impossible counts) stops the run with one :class:`ResultsError` line naming the file, and the
  file stays as it was. A chunk in flight when a process dies leaves only a ``.tmp`` file that is
  removed (:func:`remove_stale_tmp`): the rename into place is the commit.
* **Identity.** A run directory made under another configuration, another results
  format or another noise scheme (or before the scheme was recorded), or whose weights changed
  since it started, is refused, never resumed (:func:`prepare_run_dir`).
* **Concurrency.** Each shard holds a lock for its whole run (:func:`shard_lock`: a second process
  on the same shard waits for it), and every chunk is written under the run-wide lock
  (:func:`run_lock`) after dropping samples another process has already written: no sample is
  ever written twice.
* **Status.** run.json says ``running``, ``interrupted`` (Ctrl-C: :func:`interrupt_marker`) or
  ``complete`` (every planned sample written: :func:`finish`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rsbench import results as R
from rsbench.engine.noise import NOISE_SCHEME
from rsbench.errors import ResultsError
from rsbench.run.runconfig import RunConfig

if TYPE_CHECKING:
    from filelock import FileLock

logger = logging.getLogger(__name__)


def _lock(path: Path, timeout: float = -1) -> FileLock:
    from filelock import FileLock

    return FileLock(str(path), timeout=timeout)


def run_lock(run_dir: Path) -> FileLock:
    """The run-wide lock, held briefly around run.json updates and chunk writes."""
    return _lock(run_dir / ".run.lock")


@contextlib.contextmanager
def shard_lock(run_dir: Path, shard: str, notify: Callable[[str], None]) -> Iterator[None]:
    """Hold shard ``shard``'s lock for the body; when another process holds it, ``notify`` why
    and wait for it."""
    from filelock import Timeout

    lock = _lock(run_dir / f".shard-{shard}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        notify(f"another process is certifying shard {shard} of this run; waiting for it")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def open_run_dir(run_dir: Path) -> bool:
    """Create ``run_dir`` and check that its lock can be taken; True when this call created it.

    Any OS refusal (read-only or missing parent, a file in the way) is one :class:`ResultsError`.
    """
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with run_lock(run_dir):
            pass
    except OSError as exc:
        raise ResultsError(
            f"cannot write in the run directory {run_dir} ({exc.strerror or type(exc).__name__}); "
            "a run needs a writable directory even to resume a complete run (it takes a lock "
            "file there): choose a writable --out or fix the permissions"
        ) from None
    return created


def discard_empty_run(run_dir: Path) -> None:
    """Remove a run directory that holds no results part and that no other process is using.

    Called when a run that created ``run_dir`` fails before writing a row, so that the directory
    does not block or confuse a retry. Leaves the directory alone when anything else is in it.
    """
    from filelock import Timeout

    if not run_dir.is_dir() or R.list_parts(run_dir):
        return
    locks = [_lock(p, timeout=0) for p in sorted(run_dir.glob(".shard-*.lock"))]
    held = []
    try:
        for lock in locks:
            lock.acquire()
            held.append(lock)
    except (Timeout, OSError):
        return  # another process is certifying into it
    finally:
        for lock in held:
            lock.release()
    for path in run_dir.iterdir():
        if path.name == R.RUN_JSON or path.name.endswith((".lock", ".tmp")):
            path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        run_dir.rmdir()


class PartIndex:
    """The samples already written to a run directory (all shards), updated incrementally."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.seen: set[str] = set()
        self.done: set[int] = set()
        self.rows = 0
        self.correct = 0

    def refresh(self, repair: bool = False) -> None:
        """Read part files not read before. A part that cannot be read raises
        :class:`ResultsError` naming it and is left as it is; with ``repair`` (a resume, under
        the run lock), a part that is positively this run's and truncated is moved aside to a
        ``.corrupt`` name instead and its samples are certified again."""
        owner = R.declared_run_id(self.run_dir)
        for part in R.list_parts(self.run_dir):
            if part.name in self.seen:
                continue
            try:
                table = R.read_part(part)
            except ResultsError as exc:
                declared = R.declared_run_id(self.run_dir)
                if not (repair and R.truncated_part_of(part, declared)):
                    raise
                try:
                    aside = R.set_aside(part)
                except OSError as err:
                    raise ResultsError(
                        f"results part {part} is a truncated part of this run but could not be "
                        f"moved aside ({err.strerror or type(err).__name__}); fix the folder's "
                        "permissions and rerun (the part was left as it was)"
                    ) from None
                logger.warning(
                    "%s is a truncated part of this run (%s); moved aside to %s, its samples "
                    "will be certified again (it is deleted once the run completes)",
                    part,
                    exc,
                    aside.name,
                )
                continue
            owner = R.check_part_owner(table, part, owner)  # a foreign part is refused, kept
            self.seen.add(part.name)
            idx = table.column("index").to_pylist()
            dupes = self.done.intersection(idx)
            if dupes:
                raise ResultsError(
                    f"{part} repeats samples {sorted(dupes)[:5]} already in this run"
                )
            self.done.update(idx)
            self.rows += len(idx)
            self.correct += sum(bool(c) for c in table.column("correct").to_pylist())

    def write_new(self, rows: Sequence[Mapping[str, Any]], shard: str) -> int:
        """Write the ``rows`` whose samples no process has written yet as ``shard``'s next part
        (rows of samples already written are dropped with a warning); return how many were
        written. Call it under :func:`run_lock`: no sample is ever written twice."""
        self.refresh(repair=False)
        fresh = [r for r in rows if r["index"] not in self.done]
        if len(fresh) < len(rows):
            logger.warning(
                "%d samples were already written by another process; dropped",
                len(rows) - len(fresh),
            )
        if fresh:
            path = R.write_chunk(self.run_dir, fresh, shard, self.next_seq(shard))
            self.seen.add(path.name)
            self.done.update(r["index"] for r in fresh)
            self.rows += len(fresh)
        return len(fresh)

    def next_seq(self, shard: str) -> int:
        """The sequence number of ``shard``'s next part (one more than its last)."""
        keys = (R.parse_part_name(p) for p in self.seen)
        seqs = [key[1] for key in keys if key is not None and key[0] == shard]
        return max(seqs, default=-1) + 1


def remove_stale_tmp(run_dir: Path, shard: str) -> None:
    """Remove the ``.tmp`` files of ``shard`` left by a write that was interrupted (call it under
    the shard's lock: no write of that shard is in flight)."""
    for tmp in run_dir.glob(f".part-{shard}-*.tmp"):
        logger.info("removing %s left by an interrupted write", tmp)
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def interrupt_marker(run_dir: Path, lock: Any) -> Iterator[None]:
    """On Ctrl-C (KeyboardInterrupt) in the body, record ``status: interrupted`` in run.json unless
    the run is complete, then re-raise. The rows written so far stay; running the same command
    again resumes, and :func:`prepare_run_dir` sets ``running`` again."""
    try:
        yield
    except KeyboardInterrupt:
        with lock, contextlib.suppress(ResultsError):
            info = R.read_run_json(run_dir)
            if info.get("status") != "complete":
                info["status"] = "interrupted"
                info["interrupted"] = R.utc_now()
                R.write_json_atomic(run_dir / R.RUN_JSON, info)
        raise


def check_noise_scheme(run_dir: Path, info: Mapping[str, Any]) -> None:
    """Refuse to add rows to a run made under another noise scheme (or before schemes were recorded).

    Its samples were drawn from other streams (:mod:`rsbench.engine.noise`), so resuming it would mix two
    computations in one run.
    """
    fields = info.get("identity_fields")
    scheme = fields.get("noise_scheme") if isinstance(fields, Mapping) else None
    if scheme != NOISE_SCHEME:
        made = f"noise scheme {scheme}" if scheme is not None else "an older noise scheme"
        raise ResultsError(
            f"{run_dir} was made under {made} and this rsbench draws noise scheme {NOISE_SCHEME}; "
            "start afresh with another --out, or delete that directory"
        )


def prepare_run_dir(
    run_dir: Path, config: RunConfig, run_info: Mapping[str, Any], num_indices: int
) -> None:
    """Write a fresh run.json (status ``running``), or check that the existing one is this run:
    same identity, noise scheme, results format and (where recorded) weights; an interrupted run
    becomes ``running`` again. Call it under :func:`run_lock`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / R.RUN_JSON
    identity = config.identity()
    if path.exists():
        info = R.read_run_json(run_dir)
        check_noise_scheme(run_dir, info)
        if info.get("identity") != identity:
            raise ResultsError(
                f"{run_dir} holds a run with another configuration (identity {info.get('identity')!r}); "
                "remove it or choose another --out"
            )
        seen = {m.get("id"): m.get("weights_sha256") for m in info.get("models") or []}
        for model in run_info.get("models") or []:
            before = seen.get(model.get("id"))
            if before and model.get("weights_sha256") and before != model["weights_sha256"]:
                raise ResultsError(
                    f"{run_dir}: the weights of {model['id']} changed since this run started "
                    f"(sha256 {before[:12]}... -> {model['weights_sha256'][:12]}...); pin the entry's "
                    "sha256 or choose another --out"
                )
        if info.get("format_version") != R.RESULTS_FORMAT_VERSION:
            raise ResultsError(
                f"{run_dir} has results format {info.get('format_version')}; this rsbench writes "
                f"{R.RESULTS_FORMAT_VERSION}"
            )
        if info.get("status") == "interrupted":  # resumed: running again
            info["status"] = "running"
            R.write_json_atomic(path, info)
        return
    info = {
        "format_version": R.RESULTS_FORMAT_VERSION,
        "run_id": run_dir.name,
        "identity": identity,
        "status": "running",
        "config": config.record(),
        "identity_fields": config.identity_fields(),
        "num_indices": num_indices,
        "started": R.utc_now(),
        "finished": None,
        "num_rows": 0,
        **dict(run_info),
    }
    R.write_json_atomic(path, info)


def finish(
    run_dir: Path, index: PartIndex, num_indices: int, extra: Mapping[str, Any] | None = None
) -> bool:
    """Record the rows written in run.json (plus ``extra``), and ``status: complete`` once all
    ``num_indices`` samples are there; True when complete. Once complete, the parts a resume set
    aside (``*.corrupt``: their samples are all written again) are removed. Call it under
    :func:`run_lock`."""
    index.refresh(repair=False)
    info = R.read_run_json(run_dir)
    complete = len(index.done) == num_indices
    info["num_rows"] = index.rows
    if complete and info.get("status") != "complete":
        info["status"] = "complete"
        info["finished"] = R.utc_now()
    if extra:
        info.update(extra)
    R.write_json_atomic(run_dir / R.RUN_JSON, info)
    if complete:  # every sample of a part set aside is in a new part now: let the old one go
        for aside in R.set_aside_parts(run_dir):
            logger.info("the run is complete; removing %s (set aside when it was resumed)", aside)
            aside.unlink(missing_ok=True)
    return complete


def count_correct(run_dir: Path, parts: PartIndex, indices: set[int]) -> int:
    """How many of the written samples whose index is in ``indices`` are certified correct."""
    if not parts.seen:
        return 0
    total = 0
    for name in sorted(parts.seen):
        table = R.read_part(run_dir / name).select(["index", "correct"]).to_pydict()
        total += sum(1 for i, c in zip(table["index"], table["correct"]) if c and i in indices)
    return total


def run_status(run_dir: str | os.PathLike) -> str | None:
    """``complete``/``running`` from a run directory's run.json, or None when there is none."""
    try:
        return R.read_run_json(run_dir).get("status")
    except ResultsError:
        return None
