"""The static file server (VEL-HTTP-006, VEL-HTTP-007): index files, MIME types, HEAD, single
byte ranges (VEL-HTTP-013), ETag and Last-Modified validators, directory listings only when
enabled, and no way out of the root through "..", encoded separators, backslashes, NUL bytes
or symlinks. A file's body is read from the open file only as it is sent (VEL-HTTP-012).
Hidden paths (a component starting with ".") are never served, whether named in the request
or reached through a symlink: the server's own keys live in ROOT/.velocity/. Every file,
directory and index file is judged by its final, symlink-free path, and every filesystem
error answers 404."""

from __future__ import annotations

import contextlib
import email.utils
import html
import mimetypes
import os
import re
import stat
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from velocity.core.errors import UsageError
from velocity.http.h1 import BODY_CHUNK, SMALL_BODY, Request, Response, Route

_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")
# read-only, no controlling terminal, no blocking on a FIFO swapped in, and no symlink swapped
# in for the final component after the path was resolved
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC


def _text(status: int, message: str) -> Response:
    return Response(status, [("content-type", "text/plain; charset=utf-8")],
                    f"{message}\n".encode())


def _not_found() -> Response:
    return _text(404, "not found")


class StaticFiles:
    def __init__(self, root: Path, *, index: str = "index.html", listing: bool = False) -> None:
        try:
            self.root = Path(os.path.realpath(root, strict=True))
        except OSError as exc:
            raise UsageError(f"cannot serve {root}: {exc.strerror or exc}") from None
        if not self.root.is_dir():
            raise UsageError(f"cannot serve {root}: not a directory")
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise UsageError(f"cannot serve {root}: this user may not read it")
        self.index = index
        self.listing = listing

    def route(self, request: Request) -> Route | Response:
        """GET and HEAD, with no body beyond SMALL_BODY; any other method gets 405 at once."""
        if request.method not in ("GET", "HEAD"):
            return Response(405, [("allow", "GET, HEAD")], b"")
        return Route(SMALL_BODY, self.respond)

    def _served(self, path: str) -> Path | None:
        """``path`` with every symlink resolved, if that lies inside the root and is not
        hidden; None otherwise, or if it does not exist or cannot be reached."""
        try:
            real = Path(os.path.realpath(path, strict=True))
        except OSError:  # ENOENT, ENAMETOOLONG, ELOOP, EACCES, ENOTDIR...
            return None
        if not real.is_relative_to(self.root):
            return None  # a symlink leading out of the root
        if any(part.startswith(".") for part in real.relative_to(self.root).parts):
            return None  # a symlink to a hidden file or directory (.velocity/ keys)
        return real

    def resolve(self, target: str) -> Path | Response:
        """The file or directory ``target`` names inside the root, or the error response."""
        path = target.split("?", 1)[0].split("#", 1)[0]
        lowered = path.lower()
        if not path.startswith("/") or "%2f" in lowered or "%5c" in lowered or "\\" in path:
            return _text(400, "bad path")
        try:
            decoded = urllib.parse.unquote(path, errors="strict")
        except UnicodeDecodeError:
            return _text(400, "bad path")
        if "\x00" in decoded or "\\" in decoded:
            return _text(400, "bad path")
        if any(part.startswith(".") for part in decoded.split("/")):
            return _not_found()  # "..", and hidden files such as .velocity/ keys
        found = self._served(os.path.join(self.root, decoded.lstrip("/")))
        return _not_found() if found is None else found

    def respond(self, request: Request) -> Response:
        found = self.resolve(request.target)
        if isinstance(found, Response):
            return found
        try:
            if found.is_dir():
                index = self._served(os.path.join(found, self.index))
                if index is None or not index.is_file():
                    return self._listing(found, request.target) if self.listing else _not_found()
                found = index
            return self._file(found, request)
        except OSError:  # EACCES, gone since it was resolved, ELOOP (a symlink swapped in)...
            return _not_found()

    def _listing(self, directory: Path, target: str) -> Response:
        base = target.split("?", 1)[0].rstrip("/")
        with os.scandir(directory) as entries:
            names = sorted((e.name, e.is_dir()) for e in entries if not e.name.startswith("."))
        items = "".join(
            f'<li><a href="{html.escape(base + "/" + urllib.parse.quote(name))}">'
            f"{html.escape(name)}{'/' if is_dir else ''}</a></li>" for name, is_dir in names)
        body = f"<!doctype html><title>{html.escape(base or '/')}</title><ul>{items}</ul>\n"
        return Response(200, [("content-type", "text/html; charset=utf-8")], body.encode())

    def _file(self, path: Path, request: Request) -> Response:
        """The file's validators and the response to ``request``, its body (the whole file or
        the range asked for) read from the open file only as it is sent (VEL-HTTP-012)."""
        with contextlib.ExitStack() as owned:
            file = owned.enter_context(
                open(path, "rb", opener=lambda name, _: os.open(name, _OPEN_FLAGS)))
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):
                return _not_found()  # a FIFO, socket or device, or a directory swapped in
            etag = f'"{info.st_size:x}-{info.st_mtime_ns:x}"'
            modified = email.utils.formatdate(info.st_mtime, usegmt=True)
            headers = [("content-type", mimetypes.guess_type(path.name)[0]
                        or "application/octet-stream"), ("etag", etag),
                       ("last-modified", modified), ("accept-ranges", "bytes")]
            if request.header("if-none-match") == etag or (
                    request.header("if-none-match") is None
                    and request.header("if-modified-since") == modified):
                return Response(304, headers, b"")
            size, wanted = info.st_size, request.header("range")
            status, (start, stop) = 200, (0, size)
            if wanted is not None:
                selected = byte_range(wanted, size)
                if selected is None:
                    return Response(416, [("content-range", f"bytes */{size}")], b"")
                status, (start, stop) = 206, selected
                headers.append(("content-range", f"bytes {start}-{stop - 1}/{size}"))
            owned.pop_all()  # the file is the response's now: whoever sends it closes it
            return Response(status, headers, content=FilePart(file, start, stop - start))


class FilePart:
    """``length`` bytes of an open file from ``start``, read BODY_CHUNK bytes at a time."""

    def __init__(self, file: BinaryIO, start: int, length: int) -> None:
        self.file, self.start, self.length = file, start, length

    def __len__(self) -> int:
        return self.length

    def chunks(self) -> Iterator[bytes]:
        self.file.seek(self.start)
        left = self.length
        while left > 0:
            chunk = self.file.read(min(left, BODY_CHUNK))
            if not chunk:
                raise OSError(f"{self.file.name} shrank while it was being sent")
            left -= len(chunk)
            yield chunk

    def close(self) -> None:
        self.file.close()


def _position(digits: str, size: int) -> int:
    """A position in a Range header, at most ``size``. One with more digits than ``size``
    lies past the end, whatever its value: int() is never given it (it refuses more than
    4300 digits)."""
    digits = digits.lstrip("0")
    return size if len(digits) > len(str(size)) else min(int(digits or "0"), size)


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The bytes [start, stop) of a ``size``-byte file that a Range header selects, or None
    if it is not one byte range or selects no byte (VEL-HTTP-013). A suffix longer than the
    file selects the whole file."""
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = (None if digits == "" else _position(digits, size)
                   for digits in match.groups())
    if first is None:
        return (size - last, size) if last else None
    stop = size if last is None else min(last + 1, size)
    return (first, stop) if first < stop else None
