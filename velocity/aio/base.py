"""What the asyncio client and server share: a datagram protocol that feeds a sans-I/O
object, sends what it produces in batches (with UDP GSO where the kernel has it), keeps one
timer armed, and routes connection events to stream objects."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable

from velocity.aio.streams import StreamResetError, VelocityStream
from velocity.core.connection import Address, Connection
from velocity.core.events import (
    ConnectionTerminated,
    Event,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)

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


class TimerMixin:
    """One ``call_at`` handle kept at the sans-I/O object's ``get_timer()``."""

    _loop: asyncio.AbstractEventLoop
    _timer: asyncio.TimerHandle | None = None
    _timer_at: float | None = None

    def _arm(self, deadline: float | None, callback: Callable[[], None]) -> None:
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = None if deadline is None else self._loop.call_at(deadline, callback)
