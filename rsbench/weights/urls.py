"""Google Drive share links: the file id a link names and its direct-download form (pure string work).

Both :mod:`rsbench.weights.cache` (naming a cached file after its Drive id) and
:mod:`rsbench.weights.download` (the confirmation flow) read links through these two functions.
"""

from __future__ import annotations

import re
import urllib.parse


def drive_file_id(url: str) -> str | None:
    """The file id of a Drive link (``/file/d/ID/...``, ``?id=ID``), or ``None``."""
    parts = urllib.parse.urlsplit(url)
    match = re.search(r"/file/d/([A-Za-z0-9_-]+)", parts.path)
    if match:
        return match.group(1)
    ids = urllib.parse.parse_qs(parts.query).get("id")
    return ids[0] if ids else None


def drive_download_url(url: str) -> str:
    """A Drive share link as its direct ``uc?export=download&id=ID`` form (other URLs unchanged)."""
    parts = urllib.parse.urlsplit(url)
    file_id = drive_file_id(url)
    if file_id is None or parts.path.endswith(("/uc", "/download")):
        return url
    query = urllib.parse.urlencode({"export": "download", "id": file_id})
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/uc", query, ""))
