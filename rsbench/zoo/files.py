"""Zoo files: strict YAML reading (:func:`read_zoo_file`) and writing (:func:`write_entries`).

Guarantees:

* :func:`read_zoo_file` reads one file (bounded, through :mod:`rsbench.safeyaml`) whose top level
  is ``models:`` and validates every entry (:func:`rsbench.zoo.parse.parse_entry`); duplicate YAML
  keys and an id repeated within the file raise :class:`~rsbench.errors.ZooError` naming the file,
  the entry and the field.
* :func:`write_entries` adds validated entries to a user zoo file (appending text, so comments
  stay), replacing an entry with the same id only when ``overwrite=True``; under an inter-process
  lock (``.<name>.lock`` beside the file) the file is re-read, merged with the new entries, the new
  text re-read and checked, and written to a unique temporary name that atomically replaces the
  file, so concurrent writers keep every entry and a reader never sees half a file. :func:`dump_entries` is the YAML text of
  entries.

Merging the files into one registry is :func:`rsbench.zoo.registry.load_zoo`.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import yaml

from rsbench import safeyaml
from rsbench.errors import ZooError
from rsbench.zoo.entry import ZooEntry
from rsbench.zoo.parse import Where, parse_entry

ENV_ZOO = "RSBENCH_ZOO"


class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """(C)SafeLoader that refuses duplicate mapping keys."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    out: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in out:
            raise ZooError(
                f"duplicate key {key!r} at line {key_node.start_mark.line + 1}; remove one of them"
            )
        out[key] = loader.construct_object(value_node, deep=deep)
    return out


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,  # type: ignore[arg-type]
)


def read_raw(path: Path, text: str | None = None) -> list:
    """The raw entries (a list) of the zoo file at ``path`` (or of ``text``, its new content)."""
    if text is None:
        if not path.exists() and not path.is_symlink():
            raise ZooError(f"zoo file {str(path)!r} does not exist; check --zoo / {ENV_ZOO}")
        text = safeyaml.read_text(path, "zoo file", ZooError)
    try:
        data = safeyaml.load(text, _StrictLoader, str(path), ZooError)
    except ZooError as exc:
        if str(exc).startswith(f"{path}: "):
            raise
        raise ZooError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ZooError(f"{path}: not valid YAML{line} ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return []
    if not isinstance(data, Mapping) or set(data) - {"models"}:
        raise ZooError(f"{path}: top level must be a mapping with the single key 'models:'")
    models = data.get("models")
    if models is None:
        return []
    if not isinstance(models, list):
        raise ZooError(f"{path}: 'models' must be a list of entries")
    return models


def read_zoo_file(path: str | os.PathLike) -> list[ZooEntry]:
    """Parse and validate every entry of one zoo file (ids unique within the file)."""
    path = Path(path).expanduser()
    entries: list[ZooEntry] = []
    seen: set[str] = set()
    for index, raw in enumerate(read_raw(path)):
        entry = parse_entry(raw, file=path, index=index)
        if entry.id in seen:
            raise Where(path, entry.id).error(
                "id", "appears twice in this file; ids must be unique"
            )
        seen.add(entry.id)
        entries.append(entry)
    return entries


class _Dumper(yaml.SafeDumper):
    """Block style, with short lists of scalars in flow style ([3, 32, 32])."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(isinstance(v, str | int | float | bool) or v is None for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def dump_entries(entries: Sequence[ZooEntry], indent: int = 2) -> str:
    """YAML text of ``entries`` as list items indented by ``indent`` spaces (no ``models:`` line)."""
    text = yaml.dump(
        [e.to_yaml_dict() for e in entries],
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=100,
    )
    pad = " " * indent
    return "".join(pad + line if line.strip() else line for line in text.splitlines(keepends=True))


_ITEM_RE = re.compile(r"^(\s*)- ", re.MULTILINE)


def write_entries(
    path: str | os.PathLike, entries: Sequence[ZooEntry], overwrite: bool = False
) -> Path:
    """Add validated ``entries`` to the zoo file at ``path`` (created if missing); return the path.

    New ids are appended as text, so the file's comments and layout stay. An id already in the file
    raises :class:`ZooError` unless ``overwrite=True``, which replaces that entry in place. The result
    is re-read and checked before it atomically replaces the file (references to other zoos are not
    checked here: :func:`load_zoo` does that). Concurrent writers (threads or processes) lose
    nothing: the file is re-read, merged and replaced while holding an inter-process lock
    (:func:`lock_path`), so each writer's entries are added to what the previous writer left.
    """
    path = Path(path).expanduser()
    entries = [parse_entry(e.to_yaml_dict(), file=path) for e in entries]
    new_ids = [e.id for e in entries]
    if len(set(new_ids)) != len(new_ids):
        raise ZooError(f"{path}: the entries to write repeat an id: {new_ids}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(path):
        _write_locked(path, entries, new_ids, overwrite)
    return path


#: Seconds a writer waits for another process's lock on a zoo file before giving up.
LOCK_TIMEOUT_S = 120.0


def lock_path(path: Path) -> Path:
    """The lock file that serialises writers of the zoo file ``path`` (``.<name>.lock`` beside it)."""
    return path.with_name(f".{path.name}.lock")


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    from filelock import FileLock, Timeout

    try:
        with FileLock(str(lock_path(path)), timeout=LOCK_TIMEOUT_S):
            yield
    except Timeout:
        raise ZooError(
            f"{path}: another process has held its lock ({lock_path(path)}) for over "
            f"{LOCK_TIMEOUT_S:g} s; wait for it to finish, then run this again"
        ) from None


def _write_locked(path: Path, entries: list[ZooEntry], new_ids: list[str], overwrite: bool) -> None:
    """:func:`write_entries` with the file's lock held: re-read, merge, check, atomic rename."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    existing = read_zoo_file(path) if path.exists() else []
    existing_ids = [e.id for e in existing]
    clashes = [i for i in new_ids if i in existing_ids]
    if clashes and not overwrite:
        raise ZooError(
            f"{path}: entry {clashes[0]!r} already exists; pass overwrite=True (CLI: --overwrite)"
        )
    if clashes:
        merged = [next((e for e in entries if e.id == old.id), old) for old in existing]
        merged += [e for e in entries if e.id not in existing_ids]
        new_text = _replace_text(text, existing, merged)
    else:
        new_text = _append_text(text, entries, has_entries=bool(existing))
    expected = [e.to_yaml_dict() for e in _expected_order(existing, entries)]
    check = [parse_entry(raw, file=path).to_yaml_dict() for raw in read_raw(path, new_text)]
    if check != expected:  # the text edit lost its way (unusual layout): write the data instead
        header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
        new_text = header + "models:\n" + dump_entries(_expected_order(existing, entries))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600 files: keep the existing file's mode, else the usual umask default.
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(new_text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _expected_order(existing: list[ZooEntry], entries: list[ZooEntry]) -> list[ZooEntry]:
    new = {e.id: e for e in entries}
    out = [new.pop(e.id, e) for e in existing]
    return out + list(new.values())


def _item_indent(text: str) -> int:
    in_models = False
    for line in text.splitlines():
        if line.startswith("models:"):
            in_models = True
            continue
        match = _ITEM_RE.match(line)
        if in_models and match:
            return len(match.group(1))
    return 2


def _append_text(text: str, entries: list[ZooEntry], has_entries: bool) -> str:
    if not text.strip() or not re.search(r"^models:", text, re.MULTILINE):
        prefix = text if text.endswith("\n") or not text else text + "\n"
        return prefix + "models:\n" + dump_entries(entries)
    if not has_entries:  # "models:" or "models: []" with no items
        text = re.sub(r"^models:.*$", "models:", text, count=1, flags=re.MULTILINE)
    if not text.endswith("\n"):
        text += "\n"
    return text + dump_entries(entries, indent=_item_indent(text))


def _replace_text(text: str, existing: list[ZooEntry], merged: list[ZooEntry]) -> str:
    indent = _item_indent(text)
    lines = text.splitlines(keepends=True)
    item_re = re.compile(r"^" + " " * indent + r"- ")
    starts = [i for i, line in enumerate(lines) if item_re.match(line)]
    if len(starts) != len(existing):
        return ""  # layout not understood; the caller falls back to a rewrite
    out = lines[: starts[0]]
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        block = lines[start:end]
        tail_start = len(block)
        while tail_start > 1 and (
            not block[tail_start - 1].strip() or block[tail_start - 1].lstrip().startswith("#")
        ):
            tail_start -= 1
        if merged[n] is existing[n]:
            out += block
        else:
            out.append(dump_entries([merged[n]], indent=indent))
            out += block[tail_start:]
    body = "".join(out)
    extra = merged[len(existing) :]
    if extra:
        body = (body if body.endswith("\n") else body + "\n") + dump_entries(extra, indent=indent)
    return body
