"""docs/results-schema.md lists the protocols that rsbench really writes (issue 12, item 7)."""

from __future__ import annotations

import re
from pathlib import Path

from rsbench.data import protocols

SCHEMA_DOC = Path(__file__).resolve().parents[1] / "docs" / "results-schema.md"


def _documented() -> dict[str, str]:
    text = SCHEMA_DOC.read_text(encoding="utf-8")
    section = text[text.index("| protocol | written by |") :]
    section = section[: section.index("\n\n")]
    rows = re.findall(r"^\| `([a-z0-9.-]+)` \|[^|]+\|([^|]+)\|([^|]+)\|([^|]+)\|", section, re.M)
    return {name: tuple(c.split()[0] for c in cells) for name, *cells in rows}


def test_every_protocol_is_documented_with_its_numbers() -> None:
    documented = _documented()
    for name, protocol in protocols.PROTOCOLS.items():
        assert name in documented, f"protocol {name!r} missing from {SCHEMA_DOC.name}"
        n0, n, alpha = documented[name]
        assert int(n0) == protocol.n0
        assert int(n.replace(",", "")) == protocol.n
        assert float(alpha) == protocol.alpha
    assert protocols.CUSTOM_PROTOCOL in documented
    # nothing else is written: import-logs and rescore record registered protocols or custom
    assert set(documented) == set(protocols.PROTOCOLS) | {protocols.CUSTOM_PROTOCOL}
