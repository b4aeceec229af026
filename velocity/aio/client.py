"""The asyncio Velocity client: ``async with connect(host, port, config) as client`` runs the
handshake, then ``await client.open_stream()`` gives reader/writer streams."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from velocity.aio.base import DatagramDriver, StreamRouter, udp_socket
from velocity.aio.entropy import OsEntropy
from velocity.aio.streams import VelocityStream
from velocity.core.connection import Address, Connection, ConnectionConfig, StreamsExhausted
from velocity.core.entropy import Entropy
from velocity.core.errors import ErrorCode, UsageError
from velocity.core.events import (
    ApplicationKeysInstalled,
    ConnectionTerminated,
    Event,
    NewTokenReceived,
    StreamDataReceived,
    TicketReceived,
)
from velocity.core.handshake.common import FallbackDirected, HandshakeCompleted, ServerKeyLearned
from velocity.core.trace import Tracer


def shown(text: str, limit: int = 200) -> str:
    """Peer-chosen text made safe to print: control characters (escape sequences, new
    lines) as \\xNN, at most ``limit`` characters; the peer is not authenticated yet."""
    safe = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text[:limit])
    return safe + ("..." if len(text) > limit else "")


ADVICE = {
    ErrorCode.CONNECTION_REFUSED: "the server takes no new connection now; try again later",
    ErrorCode.STALE_KEM_KEY: "the server does not know the key this client sent",
    ErrorCode.KEM_KEY_REQUIRED: "the server wants its key supplied (--kem-file or --kem-b64)",
    ErrorCode.CERTIFICATE_INVALID: "the server's certificate failed this client's trust",
    ErrorCode.BAD_FINISHED: "the server could not prove it holds its key (possible attack)",
    ErrorCode.DOWNGRADE_DETECTED: "a directive this client cannot authenticate (possible "
                                  "attack); not followed",
}
"""What to tell the user beside the code, for the errors a user can act on."""


class FallbackError(ConnectionError):
    """The server sent a FALLBACK directive instead of speaking Velocity/1."""

    def __init__(self, directive: FallbackDirected) -> None:
        where = f"{shown(directive.host) or 'the same host'}:{directive.port}"
        super().__init__(f"server directs to {shown(directive.alpn)} at {where} "
                         f"({shown(directive.reason_text)})")
        self.directive = directive


class HandshakeError(ConnectionError):
    def __init__(self, terminated: ConnectionTerminated) -> None:
        code = terminated.error_code
        known = None if terminated.application else next(
            (e for e in ErrorCode if e.value == code), None)
        name = "application" if terminated.application else (
            known.name if known is not None else "unknown")
        advice = ADVICE.get(known) if known is not None else None
        reason = shown(terminated.reason) if terminated.by_peer else terminated.reason
        super().__init__(f"handshake failed ({name}, 0x{code:x}): {reason}"
                         + (f" ({advice})" if advice else ""))
        self.terminated = terminated
        self.error_code = code
        self.reason = terminated.reason


class VelocityClient(DatagramDriver):
    def __init__(self, connection: Connection, sock: socket.socket) -> None:
        super().__init__(connection, sock)
        self.connection = connection
        self.router = StreamRouter(connection, self.schedule_transmit, None)
        self.completed: HandshakeCompleted | None = None
        self.tickets: list[TicketReceived] = []
        self.new_token: bytes | None = None
        self.learned_key: ServerKeyLearned | None = None
        # ready: 1-RTT data may be sent (with the client's FINISHED in discovery mode);
        # handshake: the server is authenticated (its FINISHED verified)
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._handshake: asyncio.Future[HandshakeCompleted] = self._loop.create_future()
        for future in (self._ready, self._handshake):  # a failure nobody awaited is no error
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._progress = asyncio.Event()
        self._ticket = asyncio.Event()

    def datagram_received(self, data: bytes, address: Address, now: float,
                          arrived: float) -> None:
        self.connection.receive_datagram(data, address, now=now)

    def error_received(self, exc: OSError) -> None:
        self._fail_handshake(ConnectionError(f"network error: {exc}"))

    def _fail_handshake(self, exc: Exception) -> None:
        for future in (self._ready, self._handshake):
            if not future.done():
                future.set_exception(exc)

    def _route(self) -> None:
        while (event := self.connection.next_event()) is not None:
            self._on_event(event)
        self._progress.set()

    def _on_event(self, event: Event) -> None:
        if type(event) is StreamDataReceived:  # nearly every event: straight to its stream
            self.router.handle(event)
            return
        if isinstance(event, ApplicationKeysInstalled):
            if not self._ready.done():
                self._ready.set_result(None)
                self._let_application_write_first = True  # its request joins our FINISHED
        elif isinstance(event, HandshakeCompleted):
            self.completed = event
            if not self._handshake.done():
                self._handshake.set_result(event)
        elif isinstance(event, FallbackDirected):
            self._fail_handshake(FallbackError(event))
        elif isinstance(event, TicketReceived):
            self.tickets.append(event)
            self._ticket.set()
        elif isinstance(event, NewTokenReceived):
            self.new_token = event.token
        elif isinstance(event, ServerKeyLearned):
            self.learned_key = event
        elif isinstance(event, ConnectionTerminated):
            self._fail_handshake(HandshakeError(event))
            self._ticket.set()  # no ticket will come
        self.router.handle(event)

    def _after_transmit(self) -> None:
        self.router.update_writable()

    async def wait_ready(self) -> None:
        """Until 1-RTT data may be sent: the handshake is complete, or (discovery mode) the
        client's FINISHED is out and a request can travel with it."""
        self.schedule_transmit()  # an early connection's first flight may still wait
        await self._ready

    async def wait_handshake(self) -> HandshakeCompleted:
        """Until the server is authenticated (its FINISHED verified)."""
        self.schedule_transmit()
        return await self._handshake

    async def wait_ticket(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a session ticket (it comes after our FINISHED);
        whether one arrived."""
        if not self.tickets and self.router.terminated is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ticket.wait(), timeout)
        return bool(self.tickets)

    async def open_stream(self, *, unidirectional: bool = False) -> VelocityStream:
        """A new stream; waits while the server's stream limit is reached."""
        while True:
            if self.router.terminated is not None:
                raise ConnectionError(f"connection closed: {self.router.terminated.reason}")
            try:
                stream_id = self.connection.get_next_available_stream_id(
                    unidirectional=unidirectional)
            except StreamsExhausted:
                self._progress.clear()
                self.schedule_transmit()
                await self._progress.wait()
                continue
            stream = self.router.stream(stream_id)
            self.connection.send_stream_data(stream_id, b"")  # reserve the id
            return stream

    async def close(self, error_code: int = 0, reason: str = "") -> None:
        if self._transmit_scheduled:
            self._transmit()  # what waits (our FINISHED, say) leaves before the close
        self.connection.close(error_code, reason)
        self._transmit()
        await asyncio.sleep(0)
        self._stop()


def split_address(value: str, *, what: str = "address") -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 hosts in brackets) as (host, port); raises UsageError."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"{what} {value!r} is not HOST:PORT (for example 127.0.0.1:4433)")
    return host.strip("[]"), int(port)


async def resolve(host: str, port: int) -> Address:
    """The first UDP address for ``host:port``; raises OSError with a clear message."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve {host}: {exc.strerror}") from None
    *_, sockaddr = infos[0]
    return str(sockaddr[0]), int(sockaddr[1])


@asynccontextmanager
async def connect(host: str, port: int, config: ConnectionConfig, *,
                  entropy: Entropy | None = None, timeout: float = 10.0,
                  early: bool = False,
                  tracer: Tracer | None = None) -> AsyncIterator[VelocityClient]:
    """Connect and run the handshake until 1-RTT data may be sent (``wait_ready``: in
    discovery mode that is before the server's FINISHED, so a first request leaves with the
    client's FINISHED; ``wait_handshake`` waits for the server's). Raises FallbackError,
    HandshakeError, OSError or TimeoutError; closes the connection with NO_ERROR on exit.
    With ``early`` (a resumption with early data configured) it yields before the first
    flight leaves: streams written now travel as 0-RTT with it (the flight leaves with the
    first write, or when ``wait_ready`` or ``wait_handshake`` is awaited)."""
    loop = asyncio.get_running_loop()
    address = await resolve(host, port)
    connection = Connection(config, entropy=entropy or OsEntropy(), tracer=tracer)
    sock = udp_socket("::" if ":" in address[0] else "0.0.0.0", 0)
    client = VelocityClient(connection, sock)
    try:
        connection.connect(address, now=loop.time())
        if early:  # the first flight leaves with the first write (its 0-RTT data) or wait
            yield client
            return
        client._transmit()
        try:
            async with asyncio.timeout(timeout):
                await client.wait_ready()
        except TimeoutError:
            raise TimeoutError(f"no Velocity/1 handshake with {host}:{port} within "
                               f"{timeout:g} s") from None
        yield client
    finally:
        await client.close()
