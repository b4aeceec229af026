"""One HTTP/1.1 request/response per Velocity stream (VEL-HTTP-001..004), read and written
with h11. The stream's FIN ends each message. A server reads a request's head within its
header timeout, picks the route, and reads the body within its body timeout and the route's
bound (VEL-HTTP-008, VEL-HTTP-009); whatever it does not read is stopped with STOP_SENDING.
It writes the response's body a chunk at a time, each once the stream has room for it
(VEL-HTTP-012), and answers 500 if the route's handler fails (VEL-HTTP-014)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import h11

from velocity.aio.streams import VelocityStream

H1_NO_ERROR = 0x0100
H1_MESSAGE_ERROR = 0x0101
H1_INTERNAL_ERROR = 0x0102
H1_REQUEST_CANCELLED = 0x0103
MAX_RESPONSE_BODY = 64 << 20  # what a client reads of one response
READ_SIZE = 1 << 16  # bytes handed to h11 at a time
SMALL_BODY = 1 << 10  # bytes of body a route with no use for one still takes
BODY_CHUNK = 1 << 16  # bytes of a response body read and written at a time
T = TypeVar("T")


@dataclass
class Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name.lower()), None)


class Content(Protocol):
    """A response body read only as it is sent (a static file's range): its length is known
    at once, its bytes come as chunks of at most BODY_CHUNK, and ``close`` lets go of what it
    holds (an open file)."""

    def __len__(self) -> int: ...

    def chunks(self) -> Iterator[bytes]: ...

    def close(self) -> None: ...


@dataclass
class Response:
    """A response; a server's may carry its body as ``content``, read as it is sent, instead
    of ``body``. Whoever sends it closes it."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    content: Content | None = None

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    @property
    def length(self) -> int:
        return len(self.body) if self.content is None else len(self.content)

    def chunks(self) -> Iterator[bytes]:
        """The body, at most BODY_CHUNK bytes at a time."""
        if self.content is not None:
            yield from self.content.chunks()
        else:
            for start in range(0, len(self.body), BODY_CHUNK):
                yield self.body[start : start + BODY_CHUNK]

    def close(self) -> None:
        if self.content is not None:
            self.content.close()


Handler = Callable[[Request], Response]


@dataclass(frozen=True)
class Route:
    """Where a request goes once its head is read: the most body bytes the route takes
    (beyond that it answers 413 without reading more) and what answers it."""

    max_body: int
    respond: Handler


Dispatch = Callable[[Request], Route | Response]
"""The route for a request head (without its body), or the response to give at once."""


@dataclass(frozen=True)
class Timeouts:
    """Seconds a server waits for a request's head, and then for its body (VEL-HTTP-009)."""

    header: float = 10.0
    body: float = 30.0


DEFAULT_TIMEOUTS = Timeouts()


class _BodyTooLarge(Exception):
    pass


class _NoRequest(Exception):
    """The stream ended before any request."""


class _ApplicationFailed(Exception):
    """The application raised ``error`` while routing or answering ``request``."""

    def __init__(self, request: Request, error: Exception) -> None:
        super().__init__(request.target)
        self.request = request
        self.error = error


def _apply(function: Callable[[Request], T], request: Request) -> T:
    try:
        return function(request)
    except Exception as exc:
        raise _ApplicationFailed(request, exc) from None


def _decode(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in headers]


def _text(status: int, message: str) -> Response:
    return Response(status, [("content-type", "text/plain")], f"{message}\n".encode())


def too_large(limit: int) -> Response:
    """413 Content Too Large for a body over a route's ``limit`` (VEL-HTTP-008)."""
    return _text(413, f"the body may have at most {limit} bytes here")


Progress = Callable[[int, int | None], None]
"""Called as a response body arrives: (bytes so far, content-length or None)."""


async def _next_event(stream: VelocityStream, conn: h11.Connection) -> object:
    while (event := conn.next_event()) is h11.NEED_DATA:
        conn.receive_data(await stream.read(READ_SIZE))
    return event


async def _read_head(stream: VelocityStream, conn: h11.Connection
                     ) -> h11.Request | h11.Response:
    while True:
        event = await _next_event(stream, conn)
        if isinstance(event, h11.Request | h11.Response):
            return event
        if isinstance(event, h11.ConnectionClosed):
            raise h11.RemoteProtocolError("stream ended before a message head")


def _declared_length(head: h11.Request | h11.Response) -> int | None:
    length = dict(head.headers).get(b"content-length", b"")
    return int(length) if length.isdigit() else None


async def _read_body(stream: VelocityStream, conn: h11.Connection, limit: int,
                     progress: Progress | None = None, total: int | None = None) -> bytes:
    """The body up to ``limit`` bytes; raises _BodyTooLarge, never holding more than that."""
    body = bytearray()
    while not isinstance(event := await _next_event(stream, conn),
                         h11.EndOfMessage | h11.ConnectionClosed):
        if isinstance(event, h11.Data):
            if len(body) + len(event.data) > limit:
                raise _BodyTooLarge
            body += event.data
            if progress is not None:
                progress(len(body), total)
    return bytes(body)


async def _receive(stream: VelocityStream, conn: h11.Connection, dispatch: Dispatch,
                   timeouts: Timeouts) -> tuple[Request | None, Response]:
    """The request (None if its head could not be read) and the response it gets."""
    try:
        async with asyncio.timeout(timeouts.header):
            head = await _read_head(stream, conn)
    except TimeoutError:
        return None, _text(408, "no complete request head in time")
    except h11.RemoteProtocolError as exc:
        if stream.at_eof and conn.their_state != h11.ERROR:
            raise _NoRequest from None
        return None, _text(400, f"bad request: {exc}")
    assert isinstance(head, h11.Request)  # h11 reads only requests as a server
    request = Request(head.method.decode(), head.target.decode("latin-1"),
                      _decode(head.headers))
    route = _apply(dispatch, request)
    if isinstance(route, Response):
        return request, route
    if (_declared_length(head) or 0) > route.max_body:
        return request, too_large(route.max_body)
    try:
        async with asyncio.timeout(timeouts.body):
            request.body = await _read_body(stream, conn, route.max_body)
    except TimeoutError:
        return request, _text(408, "no complete request body in time")
    except _BodyTooLarge:
        return request, too_large(route.max_body)
    except h11.RemoteProtocolError as exc:
        return request, _text(400, f"bad request: {exc}")
    return request, _apply(route.respond, request)


async def _send(stream: VelocityStream, conn: h11.Connection, response: Response, *,
                method: str, server: str, stop: int) -> None:
    """Write ``response``, then close it: its head; then stop reading the request with
    STOP_SENDING ``stop`` (its head is read, and any body the route takes); then its body a
    chunk at a time, each once the stream holds less than its high-water mark
    (VEL-HTTP-012). HEAD gets the head alone, with the length of the GET."""
    try:
        headers = [(k, v) for k, v in response.headers if k.lower() != "content-length"]
        if response.status != 304:
            headers.append(("content-length", str(response.length)))
        headers.append(("server", server))
        stream.write(conn.send(h11.Response(status_code=response.status, headers=headers)))
        stream.stop_reading(stop)
        if method != "HEAD":
            for chunk in response.chunks():
                await stream.drain()
                stream.write(conn.send(h11.Data(data=chunk)))
        stream.write(conn.send(h11.EndOfMessage()), end_stream=True)
    finally:
        response.close()


async def serve_request(stream: VelocityStream, dispatch: Dispatch, *, server: str,
                        timeouts: Timeouts = DEFAULT_TIMEOUTS) -> None:
    """Read one request from ``stream``, answer it through ``dispatch`` and end the stream,
    stopping what is left of the request unread as soon as the answer begins (VEL-HTTP-008,
    VEL-HTTP-009). If the application raises, the request gets 500 and the exception goes
    on to the stream's owner, which logs it (VEL-HTTP-014)."""
    conn = h11.Connection(h11.SERVER)
    try:
        request, response = await _receive(stream, conn, dispatch, timeouts)
    except _NoRequest:
        stream.reset(H1_MESSAGE_ERROR)  # the stream ended with no request (VEL-HTTP-003)
        return
    except _ApplicationFailed as failed:  # 500, and the stream's owner logs why
        with contextlib.suppress(ConnectionError):  # the client has gone: still a bug
            await _send(stream, conn, _text(500, "internal server error"),
                        method=failed.request.method, server=server, stop=H1_NO_ERROR)
        raise failed.error from None
    await _send(stream, conn, response, method=request.method if request else "",
                server=server,
                stop=H1_REQUEST_CANCELLED if response.status == 408 else H1_NO_ERROR)


async def request(stream: VelocityStream, method: str, target: str, *, authority: str,
                  headers: list[tuple[str, str]] | None = None, body: bytes = b"",
                  progress: Progress | None = None) -> Response:
    """Send one request on a fresh stream and read the whole response, reporting its body's
    arrival to ``progress``; then close the stream."""
    conn = h11.Connection(h11.CLIENT)
    fields = [("host", authority), *(headers or [])]
    if body:
        fields.append(("content-length", str(len(body))))
    data = conn.send(h11.Request(method=method, target=target, headers=fields))
    if body:
        data += conn.send(h11.Data(data=body))
    data += conn.send(h11.EndOfMessage())
    stream.write(data, end_stream=True)
    try:
        head = await _read_head(stream, conn)
        response_body = await _read_body(stream, conn, MAX_RESPONSE_BODY, progress,
                                         _declared_length(head))
    except _BodyTooLarge:
        raise h11.RemoteProtocolError("response body too large") from None
    finally:  # a response not read to its end (an error, a cancelled wait) is cancelled
        stream.close(H1_REQUEST_CANCELLED)
    assert isinstance(head, h11.Response)  # h11 reads only responses as a client
    return Response(head.status_code, _decode(head.headers), response_body)
