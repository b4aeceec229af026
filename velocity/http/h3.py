"""The HTTP/3 fallback origin and client, on aioquic: where a FALLBACK directive sends legacy
clients (spec section 12). The origin serves the same application as the Velocity server,
under the same rules: bodies bounded by route, responses sent a chunk at a time as the
stream has room, 500 when the application fails (VEL-HTTP-008, -012, -014). TLS needs a
classical certificate, so it has its own ECDSA P-256 one."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aioquic.asyncio.client import connect as quic_connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.asyncio.server import serve as quic_serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.connection import ErrorCode as H3ErrorCode
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import NetworkAddress, QuicConnection
from aioquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    ProtocolNegotiated,
    QuicEvent,
    StopSendingReceived,
    StreamReset,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from velocity.aio.streams import HIGH_WATER
from velocity.crypto.pki import alt_names, write_public_file, write_secret_file
from velocity.http.h1 import Dispatch, Request, Response, Route, too_large
from velocity.logs import fields, raised_at

LOG = logging.getLogger(__name__)
T = TypeVar("T")


def ensure_tls_certificate(directory: Path, names: tuple[str, ...]) -> tuple[Path, Path]:
    """An ECDSA P-256 self-signed certificate for the HTTP/3 origin, created once."""
    cert_path, key_path = directory / "h3-cert.pem", directory / "h3-key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName(alt_names(names)), critical=False)
            .sign(key, hashes.SHA256()))
    write_public_file(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    write_secret_file(key_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return cert_path, key_path


class _Exchanges:
    """The client's HTTP/3 response state per stream: headers, body, completion."""

    def __init__(self) -> None:
        self.headers: dict[int, list[tuple[bytes, bytes]]] = {}
        self.bodies: dict[int, bytearray] = {}

    def feed(self, event: H3Event) -> int | None:
        """The stream id when ``event`` completed an exchange."""
        if isinstance(event, HeadersReceived):
            self.headers[event.stream_id] = list(event.headers)
            self.bodies.setdefault(event.stream_id, bytearray())
            return event.stream_id if event.stream_ended else None
        if isinstance(event, DataReceived):
            self.bodies.setdefault(event.stream_id, bytearray()).extend(event.data)
            return event.stream_id if event.stream_ended else None
        return None

    def forget(self, stream_id: int) -> None:
        self.headers.pop(stream_id, None)
        self.bodies.pop(stream_id, None)


@dataclass
class _Incoming:
    """A request whose headers arrived: its route (or the answer it gets whatever its body)
    and as much of its body as the route takes."""

    request: Request
    route: Route | Response
    body: bytearray = field(default_factory=bytearray)
    too_large: bool = False

    def take(self, data: bytes) -> None:
        """Keep ``data`` if the route takes it; past the route's bound keep nothing."""
        if not isinstance(self.route, Route) or self.too_large:
            return
        if len(self.body) + len(data) > self.route.max_body:
            self.too_large = True
            self.body.clear()
        else:
            self.body += data

    def response(self) -> Response:
        if isinstance(self.route, Response):
            return self.route
        if self.too_large:
            return too_large(self.route.max_body)
        self.request.body = bytes(self.body)
        return self.route.respond(self.request)


def _unacknowledged(quic: QuicConnection, stream_id: int) -> int:
    """Bytes written to a stream and not yet acknowledged: what its send buffer holds
    (aioquic has no public measure of it)."""
    stream = quic._streams.get(stream_id)
    return 0 if stream is None else len(stream.sender._buffer)


class _OriginProtocol(QuicConnectionProtocol):
    """One connection to the origin. Its responses' bodies are sent by tasks kept in
    ``tasks`` (the origin's, so that closing it ends them all), a chunk at a time."""

    def __init__(self, *args: Any, dispatch: Dispatch, tasks: set[asyncio.Task[None]],
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._dispatch = dispatch
        self._http: H3Connection | None = None
        self._incoming: dict[int, _Incoming] = {}
        self._tasks = tasks
        self._sending: dict[int, asyncio.Task[None]] = {}
        self._arrived = asyncio.Event()  # a datagram arrived: it may acknowledge data
        self._peer = "?"

    def datagram_received(self, data: bytes | str, addr: NetworkAddress) -> None:
        self._peer = f"{addr[0]}:{addr[1]}"
        super().datagram_received(data, addr)
        self._arrived.set()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated) and event.alpn_protocol in H3_ALPN:
            self._http = H3Connection(self._quic)
        if isinstance(event, StreamReset | StopSendingReceived):
            self._incoming.pop(event.stream_id, None)  # a request the client gave up
        if isinstance(event, StopSendingReceived) and event.stream_id in self._sending:
            self._sending[event.stream_id].cancel()  # aioquic has reset the stream
        if isinstance(event, ConnectionTerminated):
            for task in self._sending.values():
                task.cancel()
        if self._http is None:
            return
        for h3_event in self._http.handle_event(event):
            if isinstance(h3_event, HeadersReceived | DataReceived):
                self._received(h3_event)

    def _received(self, event: HeadersReceived | DataReceived) -> None:
        """Route a request by its headers (VEL-HTTP-008): its body is kept only up to the
        route's bound; answer it once it ends, 500 if the application fails on it."""
        incoming = self._incoming.get(event.stream_id)
        if incoming is None and isinstance(event, HeadersReceived):
            fields = {k.decode(): v.decode("latin-1") for k, v in event.headers}
            request = Request(fields.get(":method", "GET"), fields.get(":path", "/"),
                              [(k, v) for k, v in fields.items() if not k.startswith(":")])
            incoming = self._incoming[event.stream_id] = _Incoming(
                request, self._applied(event.stream_id, lambda: self._dispatch(request)))
        elif incoming is not None and isinstance(event, DataReceived):
            incoming.take(event.data)
        if incoming is not None and event.stream_ended:
            del self._incoming[event.stream_id]
            self._answer(event.stream_id, incoming.request.method,
                         self._applied(event.stream_id, incoming.response))

    def _applied(self, stream_id: int, function: Callable[[], T]) -> T | Response:
        """What the application answers, or if it raises, 500 and one log line
        (VEL-HTTP-014)."""
        try:
            return function()
        except Exception as exc:
            self._failed(stream_id, exc)
            return Response(500, [("content-type", "text/plain")], b"internal server error\n")

    def _failed(self, stream_id: int, exc: Exception) -> None:
        LOG.error("HTTP/3 request failed", extra=fields(
            peer=self._peer, stream=stream_id, exception=f"{type(exc).__name__}: {exc}",
            at=raised_at(exc)))

    def _answer(self, stream_id: int, method: str, response: Response) -> None:
        """Send the head of ``response`` now, and its body (none for HEAD) from a task."""
        assert self._http is not None
        headers = [(b":status", str(response.status).encode()),
                   *((k.lower().encode(), v.encode()) for k, v in response.headers)]
        if response.status != 304:
            headers.append((b"content-length", str(response.length).encode()))
        with_body = method != "HEAD" and response.length > 0
        try:
            self._http.send_headers(stream_id, headers, end_stream=not with_body)
        except RuntimeError:  # aioquic: the client stopped the stream (STOP_SENDING) first
            with_body = False
        self.transmit()
        if not with_body:
            response.close()
            return
        task = self._loop.create_task(self._send_body(stream_id, response))
        self._tasks.add(task)
        self._sending[stream_id] = task
        task.add_done_callback(self._tasks.discard)

    async def _send_body(self, stream_id: int, response: Response) -> None:
        """Send the body a chunk at a time, each once the stream holds less than HIGH_WATER
        unacknowledged bytes (VEL-HTTP-012), and end the stream; reset it if the body
        cannot be read to its end."""
        assert self._http is not None
        try:
            for chunk in response.chunks():
                while _unacknowledged(self._quic, stream_id) >= HIGH_WATER:
                    self._arrived.clear()
                    await self._arrived.wait()
                self._http.send_data(stream_id, chunk, end_stream=False)
                self.transmit()
            self._http.send_data(stream_id, b"", end_stream=True)
        except Exception as exc:
            self._failed(stream_id, exc)
            self._quic.reset_stream(stream_id, H3ErrorCode.H3_INTERNAL_ERROR)
        finally:
            response.close()
            self._sending.pop(stream_id, None)
        self.transmit()


@dataclass
class H3Origin:
    """A running HTTP/3 origin, the UDP address it is bound to, and how many QUIC
    connections it has accepted."""

    server: QuicServer
    address: tuple[str, int]
    accepted: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)  # bodies being sent

    def close(self) -> None:
        self.server.close()
        for task in self.tasks:
            task.cancel()


async def serve_h3(host: str, port: int, dispatch: Dispatch, *, certificate: Path,
                   key: Path) -> H3Origin:
    """An HTTP/3 origin on ``host:port`` (port 0 picks a free one) answering through
    ``dispatch``, as the Velocity server does."""
    configuration = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    configuration.load_cert_chain(str(certificate), str(key))
    def protocol(*args: Any, **kwargs: Any) -> _OriginProtocol:
        made = _OriginProtocol(*args, dispatch=dispatch, tasks=origin.tasks, **kwargs)
        origin.accepted += 1
        return made

    server = await quic_serve(host, port, configuration=configuration,
                              create_protocol=protocol)
    transport = server._transport  # aioquic exposes the bound socket only here
    assert transport is not None
    sockname = transport.get_extra_info("sockname")
    origin = H3Origin(server, (str(sockname[0]), int(sockname[1])))
    return origin


class _ClientProtocol(QuicConnectionProtocol):
    """The client's side of one HTTP/3 connection. Every future it makes is awaited by one
    caller, and settled only while nobody has given up on it (a caller's timeout cancels
    it): none is left holding an exception nobody retrieves."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._http = H3Connection(self._quic)
        self._exchanges = _Exchanges()
        self.handshake: asyncio.Future[None] = self._loop.create_future()
        self._waiting: dict[int, asyncio.Future[Response]] = {}
        self.closed_because: str | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted) and not self.handshake.done():
            self.handshake.set_result(None)
        if isinstance(event, ConnectionTerminated):
            self.closed_because = event.reason_phrase or f"error 0x{event.error_code:x}"
            pending: list[asyncio.Future[Any]] = [self.handshake, *self._waiting.values()]
            for future in pending:
                if not future.done():
                    future.set_exception(ConnectionError(self.closed_because))
            self._waiting.clear()
        if isinstance(event, StreamReset):  # the response cut short: no waiting for it
            self._exchanges.forget(event.stream_id)
            waiting = self._waiting.pop(event.stream_id, None)
            if waiting is not None and not waiting.done():
                waiting.set_exception(ConnectionError(
                    f"the origin reset the stream (error 0x{event.error_code:x})"))
        for h3_event in self._http.handle_event(event):
            stream_id = self._exchanges.feed(h3_event)
            if stream_id is not None and stream_id in self._waiting:
                fields = [(k.decode(), v.decode("latin-1"))
                          for k, v in self._exchanges.headers.pop(stream_id, [])]
                status = int(dict(fields).get(":status", "0"))
                body = bytes(self._exchanges.bodies.pop(stream_id, b""))
                future = self._waiting.pop(stream_id)
                if not future.done():
                    future.set_result(
                        Response(status, [f for f in fields if not f[0].startswith(":")], body))

    async def request(self, authority: str, method: str, path: str,
                      headers: list[tuple[str, str]], body: bytes) -> Response:
        if self.closed_because is not None:
            raise ConnectionError(self.closed_because)
        stream_id = self._quic.get_next_available_stream_id()
        self._http.send_headers(stream_id, [
            (b":method", method.encode()), (b":scheme", b"https"),
            (b":authority", authority.encode()), (b":path", path.encode()),
            *((k.lower().encode(), v.encode()) for k, v in headers)], end_stream=not body)
        if body:
            self._http.send_data(stream_id, body, end_stream=True)
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiting[stream_id] = future
        self.transmit()
        return await future


class H3Client:
    """One HTTP/3 connection (aioquic) to ``host:port`` that carries any number of requests,
    one stream each: ``async with H3Client(...) as h3: await h3.request("GET", "/")``.
    Failures raise ConnectionError or TimeoutError saying why."""

    def __init__(self, host: str, port: int, *, verify: bool, timeout: float = 10.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._verify = verify
        self._stack = AsyncExitStack()
        self._protocol: _ClientProtocol | None = None

    @property
    def closed(self) -> bool:
        return self._protocol is None or self._protocol.closed_because is not None

    def _failed(self, why: str) -> ConnectionError:
        hint = " (use --insecure for a test origin)" if self._verify else ""
        return ConnectionError(f"HTTP/3 to {self.host}:{self.port} failed: {why}{hint}")

    async def __aenter__(self) -> H3Client:
        configuration = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN,
                                          server_name=self.host)
        if not self._verify:
            configuration.verify_mode = ssl.CERT_NONE
        made: list[_ClientProtocol] = []

        def protocol(*args: Any, **kwargs: Any) -> _ClientProtocol:
            made.append(_ClientProtocol(*args, **kwargs))
            return made[-1]

        try:
            async with asyncio.timeout(self.timeout):
                client = await self._stack.enter_async_context(quic_connect(
                    self.host, self.port, configuration=configuration, create_protocol=protocol,
                    wait_connected=False))  # aioquic's own wait leaves its future unretrieved
                assert isinstance(client, _ClientProtocol)
                client.transmit()
                await client.handshake
        except ConnectionError:
            await self._stack.aclose()
            raise self._failed(made[-1].closed_because or "no reply" if made
                               else "no connection") from None
        except TimeoutError:
            await self._stack.aclose()
            raise TimeoutError(f"no HTTP/3 reply from {self.host}:{self.port} within "
                               f"{self.timeout:g} s") from None
        self._protocol = client
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._protocol = None
        await self._stack.aclose()

    async def request(self, method: str, path: str, *,
                      headers: list[tuple[str, str]] | None = None,
                      body: bytes = b"") -> Response:
        if self._protocol is None:
            raise ConnectionError(f"HTTP/3 to {self.host}:{self.port} is closed")
        try:
            async with asyncio.timeout(self.timeout):
                return await self._protocol.request(f"{self.host}:{self.port}", method, path,
                                                    headers or [], body)
        except ConnectionError as exc:
            raise self._failed(str(exc)) from None
        except TimeoutError:
            raise TimeoutError(f"no HTTP/3 reply from {self.host}:{self.port} within "
                               f"{self.timeout:g} s") from None
