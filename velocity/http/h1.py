"""One HTTP/1.1 request/response per Velocity stream (VEL-HTTP-001..004), read and written
with h11. The stream's FIN ends each message."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import h11

from velocity.aio.streams import VelocityStream

H1_NO_ERROR = 0x0100
H1_MESSAGE_ERROR = 0x0101
H1_INTERNAL_ERROR = 0x0102
H1_REQUEST_CANCELLED = 0x0103
MAX_BODY = 64 << 20


@dataclass
class Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name.lower()), None)


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


Handler = Callable[[Request], Awaitable[Response]]


def _decode(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in headers]


Progress = Callable[[int, int | None], None]
"""Called as a response body arrives: (bytes so far, content-length or None)."""


async def _read_message(stream: VelocityStream, conn: h11.Connection,
                        progress: Progress | None = None
                        ) -> tuple[h11.Request | h11.Response, bytes]:
    head: h11.Request | h11.Response | None = None
    body = bytearray()
    total: int | None = None
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.read(65536))
            continue
        if isinstance(event, h11.Request | h11.Response):
            head = event
            length = dict(event.headers).get(b"content-length", b"")
            total = int(length) if length.isdigit() else None
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise h11.RemoteProtocolError("body too large")
            if progress is not None:
                progress(len(body), total)
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            if head is None:
                raise h11.RemoteProtocolError("stream ended before a message head")
            return head, bytes(body)


async def serve_request(stream: VelocityStream, handler: Handler, *, server: str) -> None:
    """Read one request from ``stream``, answer it with ``handler``, end the stream."""
    conn = h11.Connection(h11.SERVER)
    method = ""
    try:
        head, body = await _read_message(stream, conn)
    except h11.RemoteProtocolError as exc:
        if stream.at_eof and conn.their_state != h11.ERROR:
            stream.reset(H1_MESSAGE_ERROR)  # the stream ended with no request (VEL-HTTP-003)
            return
        response = Response(400, [("content-type", "text/plain")],
                            f"bad request: {exc}\n".encode())
    else:
        assert isinstance(head, h11.Request)
        request = Request(head.method.decode(), head.target.decode("latin-1"),
                          _decode(head.headers), body)
        method = request.method
        response = await handler(request)
    headers = [(k, v) for k, v in response.headers if k.lower() != "content-length"]
    length = response.header("content-length") or str(len(response.body))
    if response.status != 304:
        headers.append(("content-length", length))
    headers.append(("server", server))
    if method == "HEAD":
        response = Response(response.status, response.headers, b"")  # length of the GET
    data = conn.send(h11.Response(status_code=response.status, headers=headers))
    if response.body:
        data += conn.send(h11.Data(data=response.body))
    data += conn.send(h11.EndOfMessage())
    stream.write(data, end_stream=True)


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
        head, response_body = await _read_message(stream, conn, progress)
    finally:  # a response not read to its end (an error, a cancelled wait) is cancelled
        stream.close(H1_REQUEST_CANCELLED)
    assert isinstance(head, h11.Response)
    return Response(head.status_code, _decode(head.headers), response_body)
