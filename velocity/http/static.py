"""The static file server (VEL-HTTP-006): index files, MIME types, HEAD, single byte ranges,
ETag and Last-Modified validators, directory listings only when enabled, and no way out of
the root through "..", encoded separators, backslashes, NUL bytes or symlinks. Hidden paths
(a component starting with ".") are never served: the server's own keys live in
ROOT/.velocity/."""

from __future__ import annotations

import email.utils
import html
import mimetypes
import os
import re
import urllib.parse
from pathlib import Path

from velocity.core.errors import UsageError
from velocity.http.h1 import Request, Response

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _text(status: int, message: str) -> Response:
    return Response(status, [("content-type", "text/plain; charset=utf-8")],
                    f"{message}\n".encode())


class StaticFiles:
    def __init__(self, root: Path, *, index: str = "index.html", listing: bool = False) -> None:
        try:
            self.root = root.resolve(strict=True)
        except OSError as exc:
            raise UsageError(f"cannot serve {root}: {exc.strerror or exc}") from None
        if not self.root.is_dir():
            raise UsageError(f"cannot serve {root}: not a directory")
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise UsageError(f"cannot serve {root}: this user may not read it")
        self.index = index
        self.listing = listing

    def resolve(self, target: str) -> Path | Response:
        """The file ``target`` names inside the root, or the error response."""
        path = target.split("?", 1)[0].split("#", 1)[0]
        lowered = path.lower()
        if not path.startswith("/") or "%2f" in lowered or "%5c" in lowered or "\\" in path:
            return _text(400, "bad path")
        decoded = urllib.parse.unquote(path, errors="strict")
        if "\x00" in decoded or "\\" in decoded:
            return _text(400, "bad path")
        if any(part.startswith(".") for part in decoded.split("/")):
            return _text(404, "not found")  # "..", and hidden files such as .velocity/ keys
        candidate = (self.root / decoded.lstrip("/")).resolve()
        if not candidate.is_relative_to(self.root):
            return _text(404, "not found")  # a symlink leading out of the root
        if candidate.is_dir():
            index = candidate / self.index
            if index.is_file() and index.resolve().is_relative_to(self.root):
                return index.resolve()
            return candidate if self.listing else _text(404, "not found")
        return candidate if candidate.is_file() else _text(404, "not found")

    async def __call__(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response(405, [("allow", "GET, HEAD")], b"")
        try:
            found = self.resolve(request.target)
        except UnicodeDecodeError:
            return _text(400, "bad path")
        if isinstance(found, Response):
            return found
        if found.is_dir():
            return self._listing(found, request.target)
        return self._file(found, request)

    def _listing(self, directory: Path, target: str) -> Response:
        base = target.split("?", 1)[0].rstrip("/")
        items = "".join(
            f'<li><a href="{html.escape(base + "/" + urllib.parse.quote(p.name))}">'
            f"{html.escape(p.name)}{'/' if p.is_dir() else ''}</a></li>"
            for p in sorted(directory.iterdir()) if not p.name.startswith("."))
        body = f"<!doctype html><title>{html.escape(base or '/')}</title><ul>{items}</ul>\n"
        return Response(200, [("content-type", "text/html; charset=utf-8")], body.encode())

    def _file(self, path: Path, request: Request) -> Response:
        stat = path.stat()
        etag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
        modified = email.utils.formatdate(stat.st_mtime, usegmt=True)
        headers = [("content-type", mimetypes.guess_type(path.name)[0]
                    or "application/octet-stream"),
                   ("etag", etag), ("last-modified", modified), ("accept-ranges", "bytes")]
        if request.header("if-none-match") == etag or (
                request.header("if-none-match") is None
                and request.header("if-modified-since") == modified):
            return Response(304, headers, b"")
        data = path.read_bytes()
        wanted = request.header("range")
        if wanted is None:
            return Response(200, headers, data)
        match = _RANGE.match(wanted.strip())
        size = len(data)
        if match is None or match.group(1) == match.group(2) == "":
            return Response(416, [("content-range", f"bytes */{size}")], b"")
        first, last = match.groups()
        start, stop = ((size - int(last), size) if first == "" else
                       (int(first), min(int(last) + 1, size) if last else size))
        if start < 0 or start >= stop:
            return Response(416, [("content-range", f"bytes */{size}")], b"")
        headers.append(("content-range", f"bytes {start}-{stop - 1}/{size}"))
        return Response(206, headers, data[start:stop])
