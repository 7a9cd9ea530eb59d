"""Reading YAML that users write (zoo and sweep files) within fixed memory and time bounds.

Guarantees: :func:`read_text` never reads more than :data:`MAX_BYTES` bytes and accepts only UTF-8;
:func:`load` composes the node graph first and refuses it, before constructing any Python object,
when aliases would expand it to more than :data:`MAX_EXPANDED` units (one per node plus the length
of each scalar) or when an alias refers to a node that contains it. So an alias bomb ("billion
laughs", a few hundred bytes that expand to gigabytes) is one error line in milliseconds, and
nothing downstream can walk an expansion larger than a few times the largest allowed file.
Every refusal is raised as the :class:`~rsbench.errors.RSBenchError` subclass the caller names.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import yaml

from rsbench.errors import RSBenchError

#: Largest YAML file read (the packaged zoo is about 40 kB).
MAX_BYTES = 1024 * 1024

#: Largest expanded size: nodes plus scalar characters after following every alias.
MAX_EXPANDED = 4 * MAX_BYTES


def read_text(path: str | os.PathLike, what: str, error: type[RSBenchError]) -> str:
    """The UTF-8 text of ``path``; ``error`` (one line naming ``what`` and the fix) otherwise."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise error(f"{what} {str(path)!r} does not exist") from None
    except OSError as exc:
        hint = {
            errno.ELOOP: "; it is a symlink loop: point the link at a real file",
            errno.EISDIR: "; it is a directory: name a YAML file",
        }.get(exc.errno or 0, "")
        raise error(
            f"{what} {str(path)!r} cannot be read ({exc.strerror or type(exc).__name__}){hint}"
        ) from None
    if len(data) > MAX_BYTES:
        raise error(
            f"{what} {str(path)!r} is larger than {MAX_BYTES // 1024} KiB; split it into several "
            "files"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(
            f"{what} {str(path)!r} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start}); save it with UTF-8 encoding"
        ) from None


def load(text: str, loader: type, where: str, error: type[RSBenchError]) -> Any:
    """Parse one YAML document of ``text`` with ``loader`` (a SafeLoader subclass), bounded.

    ``yaml.YAMLError`` from the parser propagates unchanged (callers word it with a line number).
    """
    instance = loader(text)
    try:
        node = instance.get_single_node()
        if node is None:
            return None
        expanded_size(node, where, error)
        return instance.construct_document(node)
    finally:
        instance.dispose()


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def expanded_size(root: yaml.Node, where: str, error: type[RSBenchError]) -> int:
    """Size of ``root`` with every alias expanded (nodes + scalar characters), computed in time
    linear in the number of distinct nodes; raise ``error`` past :data:`MAX_EXPANDED` or on an
    alias that refers to one of its own ancestors."""
    done: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            size = 1 + sum(done[id(child)] for child in _children(node))
        elif key in done:
            continue
        elif isinstance(node, yaml.ScalarNode):
            size = 1 + len(node.value)
        else:
            open_nodes.add(key)
            stack.append((node, True))
            for child in _children(node):
                if id(child) in open_nodes:
                    line = child.start_mark.line + 1 if child.start_mark else "?"
                    raise error(
                        f"{where}: the node anchored at line {line} contains an alias to itself "
                        "(a recursive alias); write the value out instead"
                    )
                if id(child) not in done:
                    stack.append((child, False))
            continue
        if size > MAX_EXPANDED:
            raise error(
                f"{where}: aliases expand this YAML to more than {MAX_EXPANDED:,} nodes and "
                "characters (an alias bomb?); use fewer aliases or write the values out"
            )
        done[key] = size
    return done[id(root)]
