"""The asyncio Velocity server: one UDP socket in front of a ``ServerEndpoint``. Each
peer-initiated stream is handed to the application's handler as a ``VelocityStream``."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from velocity import __version__
from velocity.aio.base import DatagramDriver, StreamRouter, udp_socket
from velocity.aio.entropy import OsEntropy
from velocity.aio.heap import SETTLE_EVERY, HeapReturn
from velocity.aio.streams import VelocityStream
from velocity.core.connection import Address, Connection
from velocity.core.endpoint import EndpointConfig, ServerEndpoint, TokenSealer
from velocity.core.entropy import Entropy
from velocity.core.errors import ErrorCode, UsageError
from velocity.core.events import ConnectionTerminated, Event, InternalErrorRaised
from velocity.core.handshake.common import FallbackDirected, HandshakeCompleted
from velocity.core.handshake.server import ServerConfig
from velocity.core.trace import Transcript
from velocity.logs import fields, raised_at
from velocity.metrics import ServerMetrics

StreamHandler = Callable[[VelocityStream, Connection], Awaitable[None]]
HANDLER_ERROR = 0x0102  # application error sent when a handler raises
HANDLER_DONE = 0x0100  # what stops the directions a finished handler left open
LOG = logging.getLogger(__name__)


def _log_event(connection: Connection, event: Event, age: float) -> None:
    """Log the events an operator follows; every other event costs one type check."""
    fault = None
    if isinstance(event, HandshakeCompleted):
        level, message = logging.INFO, "handshake completed"
        values = {"profile": event.profile, "mode": event.mode.value, "aead": event.aead,
                  "early_data": event.early_data_accepted, "ms": round(age * 1000, 2)}
    elif isinstance(event, FallbackDirected):
        level, message = logging.INFO, "fallback directive sent"
        values = {"alpn": event.alpn, "port": event.port, "reason": event.reason_text}
    elif isinstance(event, ConnectionTerminated):
        ours = not event.by_peer and event.error_code not in (
            0, ErrorCode.NO_APPLICATION_PROTOCOL)
        level = logging.WARNING if ours else logging.INFO  # we closed it over an error
        message = "connection closed"
        values = {"error": f"0x{event.error_code:x}", "reason": event.reason,
                  "by_peer": event.by_peer, "seconds": round(age, 3)}
    elif isinstance(event, InternalErrorRaised):  # a bug: closed with INTERNAL_ERROR
        level, message, fault = logging.ERROR, "internal error", event.exception
        values = {"exception": f"{type(fault).__name__}: {fault}", "at": raised_at(fault)}
    else:
        return
    if LOG.isEnabledFor(level):
        peer = connection.peer_address
        LOG.log(level, message, exc_info=fault,
                extra=fields(peer=f"{peer[0]}:{peer[1]}" if peer else "?", **values))


class TranscriptWriter:
    """Writes each traced connection's transcript to ``directory`` as
    ``<time>-<odcid>.json`` once the connection is over (``serve --transcripts``)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.written = 0

    def write(self, connection: Connection, target: Address, loop_now: float) -> Path:
        trace = connection.tracer
        assert isinstance(trace, Transcript)
        start = loop_now if trace.start is None else trace.start
        started = time.time() - (loop_now - start)  # the loop's clock is not the wall clock
        peer = connection.peer_address
        document = trace.document(
            producer={"name": "velocity", "version": __version__}, vantage_point="server",
            target=f"{target[0]}:{target[1]}", peer=f"{peer[0]}:{peer[1]}" if peer else None,
            scenario=None, reference_time=round(started, 6),
            connection={"original_dcid": connection.original_dcid.hex()})
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started))
        path = self.directory / f"{stamp}-{connection.original_dcid.hex()}.json"
        path.write_text(json.dumps(document, indent=1))
        self.written += 1
        return path


class VelocityServer(DatagramDriver):
    def __init__(self, endpoint: ServerEndpoint, handler: StreamHandler,
                 sock: socket.socket, metrics: ServerMetrics | None = None,
                 transcripts: TranscriptWriter | None = None) -> None:
        super().__init__(endpoint, sock)
        self.endpoint = endpoint
        self.metrics = metrics
        self.transcripts = transcripts
        self._retries_counted = self._shed_counted = 0
        self._handler = handler
        self._routers: dict[Connection, StreamRouter] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.datagrams_received = 0
        self.heap = HeapReturn(before_trim=self._compact)
        self._settle = self._loop.call_later(SETTLE_EVERY, self._settle_heap)

    def _compact(self) -> None:
        """Before a trim: shrink what outgrew a drained table (the endpoint's maps, the
        stream routers' map, the anti-replay filter's expired binders)."""
        self.endpoint.compact()
        self._routers = dict(self._routers)
        handshake = self.endpoint.config.connection.handshake
        if isinstance(handshake, ServerConfig) and handshake.replay_filter is not None:
            handshake.replay_filter.expire(int(self._loop.time() * 1000))

    def _settle_heap(self) -> None:
        self.heap.settle(self.datagrams_received)
        self._settle = self._loop.call_later(SETTLE_EVERY, self._settle_heap)

    def datagram_received(self, data: bytes, address: Address, now: float,
                          arrived: float) -> None:
        self.datagrams_received += 1
        if self.metrics is not None:
            self.metrics.datagrams("in", [len(data)])
        self.endpoint.receive_datagram(data, address, now=now, arrived=arrived)

    def _route(self) -> None:
        while (item := self.endpoint.next_event()) is not None:
            connection, event = item
            now = self._loop.time()
            started = now if connection.started_at is None else connection.started_at
            if self.metrics is not None:
                self.metrics.observe(connection, event, started, now)
            _log_event(connection, event, now - started)
            router = self._routers.get(connection)
            if router is None:
                router = self._routers[connection] = StreamRouter(
                    connection, functools.partial(self._wake, connection),
                    functools.partial(self._spawn, connection=connection))
            router.handle(event)
            if router.terminated is not None:
                self._routers.pop(connection, None)

    def _spawn(self, stream: VelocityStream, connection: Connection) -> None:
        task = self._loop.create_task(self._run_handler(stream, connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_handler(self, stream: VelocityStream, connection: Connection) -> None:
        """Run the handler; then close the stream: what the handler left open of it is
        ended, and the stream is forgotten once finished. A handler's exception (a bug) is
        logged in one line and resets the stream; the task itself never fails."""
        code = HANDLER_DONE
        try:
            await self._handler(stream, connection)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the peer went away or reset the stream
        except Exception as exc:
            code = HANDLER_ERROR
            peer = connection.peer_address
            LOG.error("stream handler failed", extra=fields(
                peer=f"{peer[0]}:{peer[1]}" if peer else "?", stream=stream.stream_id,
                exception=f"{type(exc).__name__}: {exc}", at=raised_at(exc)))
        finally:
            with contextlib.suppress(ConnectionError, UsageError):  # the connection is gone
                stream.close(code)

    def _on_sent(self, datagrams: list[tuple[bytes, Address]]) -> None:
        if self.metrics is not None:
            self.metrics.datagrams("out", [len(d) for d, _ in datagrams])

    def _wake(self, connection: Connection) -> None:
        """An application write on ``connection``: send it with the next transmission."""
        self.endpoint.mark(connection)
        self.schedule_transmit()

    def _after_transmit(self) -> None:
        for router in self._routers.values():
            router.update_writable()
        self.heap.table(len(self.endpoint.connections))
        if self.transcripts is not None:
            while self.endpoint.finished:
                self.transcripts.write(self.endpoint.finished.popleft(), self.address,
                                       self._loop.time())
        if self.metrics is not None:
            self.metrics.active.set(len(self.endpoint.connections))
            self.metrics.retries.inc(self.endpoint.retries_sent - self._retries_counted)
            self._retries_counted = self.endpoint.retries_sent
            self.metrics.shed.inc(self.endpoint.shed - self._shed_counted)
            self._shed_counted = self.endpoint.shed

    async def close(self, *, grace: float = 1.0) -> None:
        """Close every connection with NO_ERROR, give the closes time to leave, stop."""
        self.endpoint.close_all(now=self._loop.time())
        self._transmit()
        for task in list(self._tasks):
            task.cancel()
        deadline = self._loop.time() + grace
        while self.endpoint.connections and self._loop.time() < deadline:
            await asyncio.sleep(0.01)
        if self.transcripts is not None:  # what finished, and what did not in time
            for connection in [*self.endpoint.finished, *self.endpoint.connections]:
                self.transcripts.write(connection, self.address, self._loop.time())
            self.endpoint.finished.clear()
        self._settle.cancel()
        self._stop()


KEY_ROTATION = 12 * 3600.0  # seconds between ticket and Retry-token key rotations


class Rotating(Protocol):
    """A sealer with rotating keys (velocity.crypto.sealing)."""

    def rotate(self, key: bytes) -> None: ...


class KeyRotation:
    """Gives each (sealer, key length) a fresh key every ``every`` seconds on the running
    loop; the previous key keeps opening what it sealed until the next rotation
    (VEL-RES-002, VEL-RTY-005)."""

    def __init__(self, keys: list[tuple[Rotating, int]], entropy: Entropy, *,
                 every: float = KEY_ROTATION) -> None:
        self._keys, self._entropy, self._every = keys, entropy, every
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_later(every, self._rotate)
        self.rotations = 0

    def _rotate(self) -> None:
        for sealer, length in self._keys:
            sealer.rotate(self._entropy.random(length))
        self.rotations += 1
        self._handle = self._loop.call_later(self._every, self._rotate)

    def stop(self) -> None:
        self._handle.cancel()


async def serve(host: str, port: int, config: EndpointConfig, handler: StreamHandler, *,
                entropy: Entropy | None = None, tokens: TokenSealer | None = None,
                metrics: ServerMetrics | None = None,
                transcripts: Path | None = None) -> VelocityServer:
    """Listen on ``host:port`` (port 0 picks a free one). Raises OSError if it is taken.
    With ``transcripts`` every connection is traced and its transcript written there."""
    writer = TranscriptWriter(transcripts) if transcripts is not None else None
    endpoint = ServerEndpoint(config, entropy=entropy or OsEntropy(), tokens=tokens,
                              tracers=Transcript if writer is not None else None)
    return VelocityServer(endpoint, handler, udp_socket(host, port, timestamps=True), metrics,
                          writer)
