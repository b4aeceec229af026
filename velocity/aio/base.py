"""What the asyncio client and server share: a datagram protocol that feeds a sans-I/O
object, sends what it produces in batches (with UDP GSO where the kernel has it), keeps one
timer armed, and routes connection events to stream objects."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from typing import Protocol, cast

from velocity.aio.streams import StreamResetError, VelocityStream
from velocity.core.connection import Address, Connection
from velocity.core.events import (
    ConnectionTerminated,
    Event,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)
from velocity.core.sender import MAX_DATAGRAMS_PER_CALL

UDP_SEGMENT = 103  # linux/udp.h
GSO_MAX_SEGMENTS = 32
SOCKET_BUFFER = 4 << 20  # bytes; bursts of a large window overflow the default buffers


def udp_socket(host: str, port: int) -> socket.socket:
    """A bound, non-blocking UDP socket (we keep it: asyncio's wrapper has no sendmsg)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class Sender:
    """Sends datagrams: consecutive equal-size datagrams to one address go out as one
    ``sendmsg`` with UDP_SEGMENT (GSO) when supported, the rest with ``sendto``."""

    def __init__(self, transport: asyncio.DatagramTransport, sock: socket.socket) -> None:
        self._transport = transport
        self._socket: socket.socket | None = sock if self._gso_works(sock) else None
        self.gso_batches = 0

    @staticmethod
    def _gso_works(sock: socket.socket | None) -> bool:
        if sock is None or not hasattr(socket, "SOL_UDP"):
            return False
        try:
            sock.getsockopt(socket.SOL_UDP, UDP_SEGMENT)
        except OSError:
            return False
        return True

    def send(self, datagrams: list[tuple[bytes, Address]]) -> None:
        index = 0
        while index < len(datagrams):
            data, address = datagrams[index]
            run = 1
            while (index + run < len(datagrams) and run < GSO_MAX_SEGMENTS
                   and datagrams[index + run][1] == address
                   and len(datagrams[index + run][0]) == len(data)):
                run += 1
            if run > 1 and self._socket is not None and self._send_gso(
                    [d for d, _ in datagrams[index : index + run]], address):
                index += run
                continue
            self._transport.sendto(data, address)
            index += 1

    def _send_gso(self, segments: list[bytes], address: Address) -> bool:
        assert self._socket is not None
        try:
            self._socket.sendmsg([b"".join(segments)],
                                 [(socket.SOL_UDP, UDP_SEGMENT,
                                   struct.pack("H", len(segments[0])))], 0, address)
        except (BlockingIOError, OSError):
            return False
        self.gso_batches += 1
        return True


class StreamRouter:
    """Keeps the stream objects of one connection and feeds them its events."""

    def __init__(self, connection: Connection, transmit: Callable[[], None],
                 on_new_stream: Callable[[VelocityStream], None] | None) -> None:
        self.connection = connection
        self._transmit = transmit
        self._on_new_stream = on_new_stream
        self.streams: dict[int, VelocityStream] = {}
        self.terminated: ConnectionTerminated | None = None

    def stream(self, stream_id: int) -> VelocityStream:
        stream = self.streams.get(stream_id)
        if stream is None:
            stream = self.streams[stream_id] = VelocityStream(self.connection, stream_id,
                                                              self._transmit)
        return stream

    def handle(self, event: Event) -> None:
        if isinstance(event, StreamDataReceived):
            new = event.stream_id not in self.streams
            stream = self.stream(event.stream_id)
            stream.feed(event.data, event.end_stream)
            if new and self._on_new_stream is not None:
                self._on_new_stream(stream)
        elif isinstance(event, StreamReset | StopSendingReceived):
            self.stream(event.stream_id).fail(StreamResetError(event.stream_id,
                                                               event.error_code))
        elif isinstance(event, ConnectionTerminated):
            self.terminated = event
            error = ConnectionError(f"connection closed (0x{event.error_code:x}): "
                                    f"{event.reason}")
            for stream in self.streams.values():
                stream.fail(error)

    def update_writable(self) -> None:
        for stream in self.streams.values():
            stream.update_writable()


class SansIo(Protocol):
    """What a driver drives: a Connection (client) or a ServerEndpoint (server)."""

    def datagrams_to_send(self, *, now: float) -> list[tuple[bytes, Address]]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, *, now: float) -> None: ...


class DatagramDriver(asyncio.DatagramProtocol):
    """Feeds a sans-I/O object from its UDP socket, sends what it produces (coalescing the
    writes of one loop iteration), and keeps one timer at its ``get_timer()``."""

    def __init__(self, machine: SansIo, sock: socket.socket) -> None:
        self._machine = machine
        self._socket = sock
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.DatagramTransport | None = None
        self._sender: Sender | None = None
        self._transmit_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)
        self._sender = Sender(self._transport, self._socket)

    def _route(self) -> None:
        """Deliver the sans-I/O object's pending events (each driver knows its own)."""
        raise NotImplementedError

    def _after_transmit(self) -> None:
        """Wake writers whose streams drained."""

    def _on_sent(self, sizes: list[int]) -> None:
        """Account sent datagrams (the server's metrics)."""

    def schedule_transmit(self) -> None:
        if not self._transmit_scheduled:
            self._transmit_scheduled = True
            self._loop.call_soon(self._transmit)

    def _transmit(self) -> None:
        self._transmit_scheduled = False
        if self._sender is None:
            return
        datagrams = self._machine.datagrams_to_send(now=self._loop.time())
        self._sender.send(datagrams)
        self._on_sent([len(d) for d, _ in datagrams])
        if len(datagrams) >= MAX_DATAGRAMS_PER_CALL:
            self.schedule_transmit()  # more is ready; let the loop breathe first
        self._after_transmit()
        self._route()
        deadline = self._machine.get_timer()
        if deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = (None if deadline is None
                           else self._loop.call_at(deadline, self._on_timer))

    def _on_timer(self) -> None:
        self._timer_at = None
        self._machine.handle_timer(now=self._loop.time())
        self._route()
        self._transmit()

    def _stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._transport.close()
