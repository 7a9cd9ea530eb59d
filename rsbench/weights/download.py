"""HTTP downloads that get through: Google Drive's confirmation flow, resume, progress, digest.

Guarantees:

* :func:`download` streams ``url`` into a partial file next to ``dest`` (``.<name>.partial``) and
  renames it to ``dest`` only when the size matches what the server announced, the caller's ``check``
  accepts the bytes and the sha256 equals ``expected_sha256`` (when given). It returns the sha256.
* A download cut short (connection dropped, fewer bytes than ``Content-Length``) keeps the partial
  file and says so; the next call resumes it with an HTTP ``Range`` request (``If-Range`` carries the
  server's ``ETag`` / ``Last-Modified`` when it sent one). A server that answers a range request with
  ``200`` (the whole file), a ``Content-Range`` that does not start where the partial file ends, or
  ``416`` restarts from zero; a partial file recorded for another URL is discarded. Bytes that fail
  ``check`` or the digest are deleted, never kept for a resume.
* Google Drive (``drive.google.com``, ``docs.google.com``, ``drive.usercontent.google.com``, plus the
  hosts in ``$RSBENCH_DRIVE_HOSTS`` or the ``drive_hosts`` argument, which tests use for a local
  server): share links (``/file/d/ID/view``, ``open?id=ID``) become ``uc?export=download&id=ID``; the
  HTML page Drive answers for files it cannot virus-scan is parsed and its download form (its
  ``action`` and hidden inputs: ``id``, ``export``, ``confirm``, ``uuid``, which lead to the file on
  ``drive.usercontent.google.com``) is followed, at most three times. The quota page ("Too many users
  have viewed or downloaded this file recently"), sign-in and permission pages, and any other page
  raise :class:`~rsbench.errors.WeightsError` with one line saying which and what to do. Any other
  host that answers with HTML is refused as "an HTML page, not a file".
* Progress goes to a callback ``(description, bytes done, total bytes or None)``: the library
  renders nothing, the CLI draws the bar.

Why not gdown: gdown is the maintained library for Drive downloads, but its 6.x API removed
``fuzzy=``, it does not check the HTTP status (an error page can end up saved as the file), it draws
its own tqdm bar and prints to stderr instead of reporting progress, and it brings requests,
beautifulsoup4 and tqdm. What rsbench needs (one-line errors, resume with ``Range``/``If-Range``,
hashing, a progress callback, a host that tests can point at 127.0.0.1) is about 200 lines on
urllib, with no new dependency and every branch tested against a local server.
"""

from __future__ import annotations

import http.client
import http.cookiejar
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from contextlib import suppress
from html.parser import HTMLParser
from pathlib import Path

from rsbench.errors import WeightsError
from rsbench.weights.urls import drive_download_url

CHUNK = 1 << 20
ENV_DRIVE_HOSTS = "RSBENCH_DRIVE_HOSTS"
DRIVE_HOSTS = ("drive.google.com", "docs.google.com", "drive.usercontent.google.com")
MAX_PAGES = 3
_PAGE_LIMIT = 1 << 20  # an HTML page larger than this is not one of Drive's interstitials

#: progress callback: (description, bytes done, total bytes or None)
ProgressCallback = Callable[[str, int, "int | None"], None]

_QUOTA_MARKERS = ("too many users have viewed or downloaded", "quota exceeded", "download quota")
_SIGNIN_MARKERS = ("accounts.google.com/servicelogin", "accounts.google.com/v3/signin", "sign in")
_ACCESS_MARKERS = ("you need access", "you need permission", "request access")
_MISSING_MARKERS = ("does not exist", "not found")


def partial_path(dest: Path) -> Path:
    """Where the bytes of an unfinished download of ``dest`` are kept for a resume."""
    return dest.with_name(f".{dest.name}.partial")


def partial_meta_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.partial.json")


def _partial_files(dest: Path, partial: Path | None) -> tuple[Path, Path]:
    """The partial file of a download to ``dest`` and its metadata file (folder created)."""
    part = Path(partial) if partial is not None else partial_path(dest)
    part.parent.mkdir(parents=True, exist_ok=True)
    return part, part.with_name(part.name + ".json")


def drive_hosts(extra: Iterable[str] | None = None) -> frozenset[str]:
    """Google Drive's hosts, plus ``$RSBENCH_DRIVE_HOSTS`` (comma-separated) and ``extra``."""
    env = [h.strip().lower() for h in os.environ.get(ENV_DRIVE_HOSTS, "").split(",") if h.strip()]
    return frozenset((*DRIVE_HOSTS, *env, *(h.lower() for h in extra or ())))


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc.lower()


# --------------------------------------------------------------------------------------------------
# Drive's HTML pages


class _PageParser(HTMLParser):
    """Collects the title, the text, the forms (action, method, inputs) and the links of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.text: list[str] = []
        self.forms: list[dict] = []
        self.links: list[str] = []
        self._in_title = False
        self._form: dict | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "title":
            self._in_title = True
        elif tag == "form":
            self._form = {
                "id": values.get("id", ""),
                "action": values.get("action", ""),
                "method": values.get("method", "get").lower(),
                "inputs": {},
            }
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None and values.get("name"):
            if values.get("type", "text").lower() in ("hidden", "text"):
                self._form["inputs"][values["name"]] = values.get("value", "")
        elif tag == "a" and values.get("href"):
            self.links.append(values["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag == "form":
            self._form = None

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        self.text.append(data)


def _browser_hint(manual: str) -> str:
    return f"download it in a browser and {manual}"


def _follow_drive_page(page: str, page_url: str, origin: str, what: str, manual: str) -> str:
    """The URL that Drive's confirmation page leads to; raise a one-line error for other pages."""
    parser = _PageParser()
    with suppress(Exception):  # a malformed page is classified by its text below
        parser.feed(page)
    text = " ".join(" ".join(parser.text).split()).lower()
    title = " ".join(parser.title.split())
    lowered = page.lower()
    if any(marker in text for marker in _QUOTA_MARKERS):
        raise WeightsError(
            f"{what}: Google Drive refuses {origin} for now: too many users have viewed or "
            "downloaded this file recently (Drive's download quota, reset within about a day); "
            f"try again later, or {_browser_hint(manual)}"
        )
    for form in parser.forms:
        action = form["action"]
        if form["id"] == "download-form" or (action and "id" in form["inputs"]):
            target = urllib.parse.urljoin(page_url, action or page_url)
            query = urllib.parse.urlencode(form["inputs"])
            return f"{target}{'&' if '?' in target else '?'}{query}" if query else target
    for href in parser.links:  # the older page: a "download anyway" link with confirm=<token>
        if "export=download" in href and "confirm=" in href:
            return urllib.parse.urljoin(page_url, href)
    if (
        _host(page_url).startswith("accounts.")
        or any(m in lowered for m in _SIGNIN_MARKERS[:2])
        or (_SIGNIN_MARKERS[2] in title.lower())
    ):
        raise WeightsError(
            f"{what}: Google Drive asks to sign in for {origin}: the file is not shared publicly "
            f"(or the link changed); {_browser_hint(manual)} while signed in"
        )
    if any(marker in text for marker in _ACCESS_MARKERS):
        raise WeightsError(
            f"{what}: Google Drive says you need permission to download {origin}; ask the owner "
            f"to share it publicly, or {_browser_hint(manual)} with an account that has access"
        )
    if any(marker in text for marker in _MISSING_MARKERS):
        raise WeightsError(
            f"{what}: Google Drive says {origin} does not exist (removed, or a wrong file id); "
            "check the link with the model's authors"
        )
    raise WeightsError(
        f"{what}: Google Drive answered {origin} with a page rsbench does not recognise "
        f"(title {title or 'none'!r}); {_browser_hint(manual)}"
    )


# --------------------------------------------------------------------------------------------------
# the download


def _read_meta(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _discard(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _total_from(response: http.client.HTTPResponse, offset: int) -> int | None:
    if response.status == 206:
        match = re.match(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", ""))
        if match and match.group(3) != "*":
            return int(match.group(3))
    length = response.headers.get("Content-Length", "")
    return offset + int(length) if length.isdigit() else None


def _http_failure(exc: urllib.error.HTTPError, origin: str, what: str, drive: bool, manual: str):
    if drive and exc.code == 429:
        return WeightsError(
            f"{what}: Google Drive refuses {origin} for now (HTTP 429, too many requests: Drive's "
            f"download quota); try again later, or {_browser_hint(manual)}"
        )
    if drive and exc.code in (401, 403):
        return WeightsError(
            f"{what}: Google Drive denies access to {origin} (HTTP {exc.code}): not shared publicly, "
            f"or over quota; {_browser_hint(manual)}"
        )
    if drive and exc.code == 404:
        return WeightsError(
            f"{what}: Google Drive has no file at {origin} (HTTP 404: removed, or a wrong file id); "
            "check the link with the model's authors"
        )
    return WeightsError(f"{what}: download of {origin} failed: HTTP {exc.code} {exc.reason}")


def download(  # noqa: C901, PLR0912 — one resumable transfer: Drive confirmation, Range/If-Range resume, retries and digest share its state
    url: str,
    dest: Path,
    *,
    what: str,
    check: Callable[[Path], None] | None = None,
    expected_sha256: str | None = None,
    progress: ProgressCallback | None = None,
    manual: str = "point the entry at the downloaded file",
    drive_hosts_extra: Iterable[str] | None = None,
    timeout: float = 60.0,
    partial: Path | None = None,
) -> str:
    """Download ``url`` to ``dest`` (resuming a partial download); return the file's sha256.

    ``check(path)`` raises :class:`WeightsError` for bytes that are not what the caller expects;
    ``manual`` completes the "download it in a browser and ..." advice of Drive's refusals. The
    caller holds any lock on ``dest``. ``partial`` is where the unfinished bytes are kept for a
    resume (default :func:`partial_path` of ``dest``; the weights cache passes a name keyed by the
    URL and downloads to a fresh temporary ``dest``). See the module docstring for the guarantees.
    """
    from rsbench import __version__
    from rsbench.weights.cache import sha256_file
    from rsbench.weights.checkpoints import looks_like_html

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part, meta_path = _partial_files(dest, partial)
    meta = _read_meta(meta_path)
    if not part.is_file() or meta.get("url") != url:
        _discard(part, meta_path)
        meta = {}
    offset = part.stat().st_size if part.is_file() else 0
    hosts = drive_hosts(drive_hosts_extra)
    drive = _host(url) in hosts
    current = drive_download_url(url) if drive else url
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    done = offset
    total: int | None = None
    for _hop in range(MAX_PAGES + 2):
        headers = {"User-Agent": f"rsbench/{__version__}"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            validator = meta.get("etag") or meta.get("last_modified")
            if validator:
                headers["If-Range"] = validator
        request = urllib.request.Request(current, headers=headers)
        try:
            response = opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:  # the partial file is not a prefix the server knows
                _discard(part, meta_path)
                offset = done = 0
                meta = {}
                continue
            raise _http_failure(exc, url, what, drive, manual) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise WeightsError(f"{what}: download of {url} failed ({reason})") from None
        with response:
            final_url = response.geturl()
            content_type = (response.headers.get("Content-Type") or "").lower()
            first = b""
            if "text/html" not in content_type:
                try:
                    first = response.read(CHUNK)
                except (http.client.HTTPException, OSError) as exc:
                    raise WeightsError(f"{what}: download of {url} failed ({exc})") from None
            html = "text/html" in content_type or looks_like_html(first[:1024])
            if html and (drive or _host(final_url) in hosts):
                page = first + response.read(_PAGE_LIMIT)
                if _hop >= MAX_PAGES:
                    raise WeightsError(
                        f"{what}: Google Drive answered {url} with {MAX_PAGES + 1} pages in a row, "
                        f"never the file; {_browser_hint(manual)}"
                    )
                current = _follow_drive_page(
                    page.decode("utf-8", "replace"), final_url, url, what, manual
                )
                drive = True
                continue
            if html:
                raise WeightsError(
                    f"{what}: {url} returned an HTML page, not a file (a login, quota or "
                    f"confirmation page?); {_browser_hint(manual)}"
                )
            if offset and response.status == 206:
                match = re.match(r"bytes\s+(\d+)-", response.headers.get("Content-Range", ""))
                if not match or int(match.group(1)) != offset:
                    _discard(part, meta_path)  # not the range asked for: start again
                    offset = done = 0
                    meta = {}
                    continue
            elif offset:  # 200 to a range request: the server sends the whole file
                offset = done = 0
            total = _total_from(response, offset)
            meta = {
                "url": url,
                "etag": response.headers.get("ETag"),
                "last_modified": response.headers.get("Last-Modified"),
                "total": total,
            }
            meta_path.write_text(json.dumps(meta), encoding="utf-8")
            done = offset
            with open(part, "ab" if offset else "wb") as out:
                chunk = first
                try:
                    while chunk:
                        out.write(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(what, done, total)
                        chunk = response.read(CHUNK)
                except http.client.IncompleteRead as exc:
                    out.write(exc.partial)
                    done += len(exc.partial)
                except (OSError, http.client.HTTPException) as exc:
                    raise WeightsError(
                        f"{what}: download of {url} stopped after {done} bytes ({exc}); the bytes "
                        "are kept and the next attempt resumes"
                    ) from None
            break
    else:
        raise WeightsError(f"{what}: download of {url} restarted too often; try again later")
    if total is not None and done != total:
        raise WeightsError(
            f"{what}: download of {url} was truncated ({done} of {total} bytes); the {done} bytes "
            "are kept and the next attempt resumes"
        )
    try:
        if check is not None:
            check(part)
        seen = sha256_file(part)
        if expected_sha256 is not None and seen != expected_sha256:
            raise WeightsError(
                f"{what}: sha256 mismatch for {url}: expected {expected_sha256}, got {seen}; the file "
                "was not kept (if the upstream file changed on purpose, update the entry's sha256)"
            )
    except WeightsError:
        _discard(part, meta_path)
        raise
    os.replace(part, dest)
    _discard(meta_path)
    return seen


__all__ = [
    "DRIVE_HOSTS",
    "ENV_DRIVE_HOSTS",
    "ProgressCallback",
    "download",
    "drive_hosts",
    "partial_meta_path",
    "partial_path",
]
