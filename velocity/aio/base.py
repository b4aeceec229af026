"""What the asyncio client and server share: a datagram protocol that feeds a sans-I/O
object, sends what it produces in batches (with UDP GSO where the kernel has it), keeps one
timer armed, and routes connection events to stream objects."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

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

UDP_SEGMENT = 103  # linux/udp.h: send several datagrams in one call (GSO)
UDP_GRO = 104  # linux/udp.h: receive several datagrams of a flow in one call (GRO)
GSO_MAX_SEGMENTS = 32
# asm-generic/socket.h: the kernel's receive time (CLOCK_REALTIME, struct timespec) with
# each datagram, so the server knows how long one waited before it was read
SO_TIMESTAMPNS = 35
SOCKET_BUFFER = 4 << 20  # bytes; bursts of a large window overflow the default buffers
RECEIVE_BUFFER = 1 << 16  # one datagram, or one GRO batch of them
READS_PER_WAKEUP = 64  # bounded, so one busy socket cannot starve the loop
# datagrams handled in one wakeup before what they produced (ACKs above all) is sent: a
# backlog of a whole window read in one go would otherwise be acknowledged only at its end,
# and the sender would wait for it with nothing in flight
TRANSMIT_EVERY = 64
SEND_QUEUE_LIMIT = 1024  # datagrams kept while the socket is full; beyond that they are lost


def udp_socket(host: str, port: int, *, timestamps: bool = False) -> socket.socket:
    """A bound, non-blocking UDP socket with large buffers and, where the kernel has them,
    GRO (several datagrams per read) and, with ``timestamps``, receive timestamps."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_UDP, UDP_GRO, 1)
        if timestamps:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _control(ancdata: list[tuple[int, int, bytes]]) -> tuple[int | None, float | None]:
    """(GRO segment size, kernel receive time on the wall clock) from a read's ancillary
    data, each None when absent."""
    size = received = None
    for level, kind, value in ancdata:
        if level == socket.SOL_UDP and kind == UDP_GRO and len(value) >= 2:
            size = int.from_bytes(value[:2], sys.byteorder)
        elif level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
            seconds, nanoseconds = struct.unpack("qq", value[:16])
            received = seconds + nanoseconds * 1e-9
    return size, received


class Sender:
    """Sends datagrams: consecutive equal-size datagrams to one address go out as one
    ``sendmsg`` with UDP_SEGMENT (GSO) when supported, the rest one by one. What the socket
    cannot take now waits (bounded) until it is writable."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self._socket = sock
        self._loop = loop
        self._gso = self._gso_works(sock)
        self._waiting: deque[tuple[bytes, Address, int]] = deque()  # data, to, segment size
        self.gso_batches = 0

    @staticmethod
    def _gso_works(sock: socket.socket) -> bool:
        if not hasattr(socket, "SOL_UDP"):
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
            while (self._gso and index + run < len(datagrams) and run < GSO_MAX_SEGMENTS
                   and datagrams[index + run][1] == address
                   and len(datagrams[index + run][0]) == len(data)):
                run += 1
            if run > 1:
                self._write(b"".join(d for d, _ in datagrams[index : index + run]), address,
                            len(data))
                self.gso_batches += 1
            else:
                self._write(data, address, 0)
            index += run

    def _write(self, data: bytes, address: Address, segment: int) -> None:
        if self._waiting:  # keep the order: behind what already waits
            if len(self._waiting) < SEND_QUEUE_LIMIT:
                self._waiting.append((data, address, segment))
            return
        try:
            self._sendmsg(data, address, segment)
        except (BlockingIOError, InterruptedError):
            self._waiting.append((data, address, segment))
            self._loop.add_writer(self._socket.fileno(), self._flush)
        except OSError:
            pass  # e.g. an unreachable peer: like a lost datagram, recovery deals with it

    def _sendmsg(self, data: bytes, address: Address, segment: int) -> None:
        if segment:
            self._socket.sendmsg([data], [(socket.SOL_UDP, UDP_SEGMENT,
                                           struct.pack("H", segment))], 0, address)
        else:
            self._socket.sendto(data, address)

    def _flush(self) -> None:
        while self._waiting:
            data, address, segment = self._waiting[0]
            try:
                self._sendmsg(data, address, segment)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                pass
            self._waiting.popleft()
        self._loop.remove_writer(self._socket.fileno())

    def close(self) -> None:
        if self._waiting:
            self._loop.remove_writer(self._socket.fileno())
            self._waiting.clear()


class StreamRouter:
    """Keeps the stream objects of one connection and feeds them its events. A stream whose
    user is done with it (``VelocityStream.close``) is forgotten once the connection has
    forgotten it too, both directions finished or reset: a long connection holds only its
    live streams, and the connection ignores whatever still arrives for a forgotten one."""

    def __init__(self, connection: Connection, transmit: Callable[[], None],
                 on_new_stream: Callable[[VelocityStream], None] | None) -> None:
        self.connection = connection
        self._transmit = transmit
        self._on_new_stream = on_new_stream
        self.streams: dict[int, VelocityStream] = {}
        self._released: set[int] = set()
        self.terminated: ConnectionTerminated | None = None

    def stream(self, stream_id: int) -> VelocityStream:
        stream = self.streams.get(stream_id)
        if stream is None:
            stream = self.streams[stream_id] = VelocityStream(
                self.connection, stream_id, self._transmit, self._release)
        return stream

    def _release(self, stream_id: int) -> None:
        if stream_id in self.streams:
            self._released.add(stream_id)

    def handle(self, event: Event) -> None:
        if isinstance(event, StreamDataReceived | StreamReset | StopSendingReceived):
            new = event.stream_id not in self.streams
            stream = self.stream(event.stream_id)
            if isinstance(event, StreamDataReceived):
                stream.feed(event.data, event.end_stream)
            else:  # RESET_STREAM ends our reading, STOP_SENDING our writing
                reset = isinstance(event, StreamReset)
                stream.fail(StreamResetError(event.stream_id, event.error_code),
                            reading=reset, writing=not reset)
            if new and self._on_new_stream is not None:
                self._on_new_stream(stream)  # whatever came first: its handler ends it
        elif isinstance(event, ConnectionTerminated):
            self.terminated = event
            error = ConnectionError(f"connection closed (0x{event.error_code:x}): "
                                    f"{event.reason}")
            for stream in self.streams.values():
                stream.fail(error)

    def update_writable(self) -> None:
        """After a transmission: wake the writers whose streams drained, and forget the
        released streams the connection has forgotten."""
        for stream in self.streams.values():
            stream.update_writable()
        live = self.connection.streams
        for stream_id in [s for s in self._released if s not in live]:
            self._released.discard(stream_id)
            del self.streams[stream_id]


class SansIo(Protocol):
    """What a driver drives: a Connection (client) or a ServerEndpoint (server)."""

    def datagrams_to_send(self, *, now: float) -> list[tuple[bytes, Address]]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, *, now: float) -> None: ...


class DatagramDriver:
    """Feeds a sans-I/O object from its UDP socket (every datagram the socket holds, up to a
    bound, split from GRO batches), sends what it produces (GSO batches) once they are read,
    or every TRANSMIT_EVERY datagrams while a backlog is read, and keeps one timer at its
    ``get_timer()``."""

    def __init__(self, machine: SansIo, sock: socket.socket) -> None:
        self._machine = machine
        self._socket = sock
        self._loop = asyncio.get_running_loop()
        self._sender: Sender | None = Sender(sock, self._loop)
        self._transmit_scheduled = False
        # set while handling a read that woke the application with something to answer at
        # once (the client's completed handshake): what the read produced waits one turn
        # of the loop, so that the application's first data leaves in the same datagram
        self._let_application_write_first = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._space = socket.CMSG_SPACE(4) + socket.CMSG_SPACE(16)  # GRO, timestamp
        self._loop.add_reader(sock.fileno(), self._on_readable)

    @property
    def address(self) -> Address:
        host, port = self._socket.getsockname()[:2]
        return str(host), int(port)

    def _on_readable(self) -> None:
        receive = self._socket.recvmsg
        unanswered = 0  # datagrams handled since the last transmission
        for _ in range(READS_PER_WAKEUP):
            if self._sender is None:
                return  # stopped while handling what was read
            if unanswered >= TRANSMIT_EVERY:
                self._route()
                self._transmit()
                unanswered = 0
            try:
                data, ancdata, _, peer = receive(RECEIVE_BUFFER, self._space)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.error_received(exc)
                break
            now = self._loop.time()
            address = (str(peer[0]), int(peer[1]))
            segment, received = _control(ancdata)
            size = segment or len(data)
            # on the loop's clock: how long it waited is what the two clocks agree on
            arrived = now if received is None else now - max(0.0, time.time() - received)
            if size >= len(data):
                self.datagram_received(data, address, now, arrived)
                unanswered += 1
            else:
                for start in range(0, len(data), size):
                    self.datagram_received(data[start : start + size], address, now, arrived)
                unanswered += -(-len(data) // size)
        self._route()
        if self._let_application_write_first:
            self._let_application_write_first = False
            self.schedule_transmit()
        else:
            self._transmit()

    def datagram_received(self, data: bytes, address: Address, now: float,
                          arrived: float) -> None:
        """One datagram for the sans-I/O object, read at ``now``, that reached the host at
        ``arrived`` (the same as ``now`` without receive timestamps; events and sending
        follow per batch)."""
        raise NotImplementedError

    def error_received(self, exc: OSError) -> None:
        """The socket reported an error (e.g. ICMP port unreachable)."""

    def _route(self) -> None:
        """Deliver the sans-I/O object's pending events (each driver knows its own)."""
        raise NotImplementedError

    def _after_transmit(self) -> None:
        """Wake writers whose streams drained."""

    def _on_sent(self, datagrams: list[tuple[bytes, Address]]) -> None:
        """Account sent datagrams (the server's metrics, the harness's transcripts)."""

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
        self._on_sent(datagrams)
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
        # an event loop may run a timer up to its clock's resolution early (uvloop's is a
        # millisecond): handled at the loop's time, the deadline would still lie ahead, be
        # armed again, fire at once, and spin until the clock caught up
        due, self._timer_at = self._timer_at, None
        self._machine.handle_timer(now=max(self._loop.time(), due or 0.0))
        self._route()
        self._transmit()

    def _stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._sender is not None:
            self._sender.close()
            self._sender = None
            self._loop.remove_reader(self._socket.fileno())
            self._socket.close()
