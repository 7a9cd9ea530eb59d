"""A local stand-in for Google Drive on 127.0.0.1 (random port), for the download tests.

It reproduces what Drive does for a file it cannot virus-scan: ``/uc?export=download&id=ID`` answers
with the HTML "virus scan warning" page whose ``download-form`` (action on another host, here
``localhost`` instead of ``127.0.0.1``; hidden ``id``, ``export``, ``confirm``, ``uuid``) leads to
``/download?...``, which serves the bytes and honours ``Range`` with ``206`` and ``Content-Range``. It
also serves the quota page, a sign-in page, a "You need access" page, a 404, truncated bodies (``Content-Length`` larger than
what is sent) and, on request, ignores ``Range`` (answers ``200`` with the whole file).
"""

from __future__ import annotations

import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONFIRM_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>
<meta http-equiv="content-type" content="text/html; charset=utf-8"/></head><body>
<div class="uc-main"><div id="uc-text"><p class="uc-warning-caption">Google Drive can't scan this
file for viruses.</p><p class="uc-warning-subcaption"><span class="uc-name-size"><a href="/open?id={id}">
{name}</a> ({size})</span> is too large for Google to scan for viruses. Would you still like to
download this file?</p><form id="download-form" action="{action}" method="get">
<input type="submit" id="uc-download-link" class="goog-inline-block jfk-button jfk-button-action"
value="Download anyway"/><input type="hidden" name="id" value="{id}">
<input type="hidden" name="export" value="download"><input type="hidden" name="confirm" value="t">
<input type="hidden" name="uuid" value="{uuid}"></form></div></div></body></html>"""

QUOTA_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>
<div class="uc-main"><div id="uc-text"><p class="uc-error-caption">Sorry, you can't view or download
this file at this time.</p><p class="uc-error-subcaption">Too many users have viewed or downloaded
this file recently. Please try accessing the file again later. If the file you are trying to access
is particularly large or is shared with many people, it may take up to 24 hours to be able to view
or download the file.</p></div></div></body></html>"""

SIGNIN_PAGE = """<!DOCTYPE html><html><head><title>Google Drive: Sign-in</title></head><body>
<a href="https://accounts.google.com/ServiceLogin?service=wise&continue=https://drive.google.com">
Sign in</a></body></html>"""

ACCESS_PAGE = """<!DOCTYPE html><html><head><title>Google Drive</title></head><body>
<div><h1>You need access</h1><p>Request access, or switch to an account with access.</p>
<form action="/request" method="post"><textarea name="message"></textarea></form></div></body></html>"""

UUID = "0c9a3f5e-5d1b-4f4e-9a77-2b3c1d0e9f11"


@dataclass
class File:
    data: bytes
    truncate_first: int | None = None  # the first full request sends only this many bytes
    ignore_range: bool = False  # answer Range requests with 200 and the whole file
    served: int = 0


@dataclass
class DriveState:
    files: dict[str, File] = field(default_factory=dict)
    quota: set[str] = field(default_factory=set)
    signin: set[str] = field(default_factory=set)
    denied: set[str] = field(default_factory=set)
    hits: list[tuple[str, str | None]] = field(default_factory=list)  # (path?query, Range)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - http.server's name
        state: DriveState = self.server.state
        state.hits.append((self.path, self.headers.get("Range")))
        parts = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parts.query))
        file_id = query.get("id", "")
        if parts.path == "/uc" and query.get("export") == "download":
            if file_id in state.quota:
                return self._page(QUOTA_PAGE)
            if file_id in state.signin:
                return self._page(SIGNIN_PAGE)
            if file_id in state.denied:
                return self._page(ACCESS_PAGE)
            if file_id not in state.files:
                return self._error(404)
            action = f"http://localhost:{self.server.server_address[1]}/download"
            size = f"{len(state.files[file_id].data) / 1e6:.1f}M"
            return self._page(
                CONFIRM_PAGE.format(
                    id=file_id, name="models.tar.gz", size=size, action=action, uuid=UUID
                )
            )
        if parts.path == "/download" and file_id in state.files:
            if query.get("confirm") != "t" or query.get("uuid") != UUID:
                page = CONFIRM_PAGE.format(id=file_id, name="x", size="1M", action="/x", uuid="")
                return self._page(page)
            return self._file(state.files[file_id])
        return self._error(404)

    def _page(self, text: str) -> None:
        body = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, code: int) -> None:
        body = b"<html><body>Not Found</body></html>"
        self.send_response(code)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _file(self, item: File) -> None:
        data = item.data
        wanted = self.headers.get("Range")
        start = 0
        if wanted and not item.ignore_range:
            start = int(wanted.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Type", "application/x-gzip")
        self.send_header("Content-Disposition", 'attachment; filename="models.tar.gz"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        item.served += 1
        if item.truncate_first is not None and item.served == 1:
            self.wfile.write(body[: item.truncate_first])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class DriveServer:
    """``with DriveServer() as drive``: ``drive.state``, ``drive.url(file_id)``, ``drive.host``."""

    def __enter__(self) -> DriveServer:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.state = DriveState()
        self.state = self.httpd.state
        port = self.httpd.server_address[1]
        self.hosts = (f"127.0.0.1:{port}", f"localhost:{port}")
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        return self

    def url(self, file_id: str) -> str:
        return f"http://{self.hosts[0]}/uc?export=download&id={file_id}"

    def share_link(self, file_id: str) -> str:
        return f"http://{self.hosts[0]}/file/d/{file_id}/view?usp=sharing"

    def file_hits(self) -> list[tuple[str, str | None]]:
        return [hit for hit in self.state.hits if hit[0].startswith("/download")]

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
