"""The scripted peer as a server: the reference server's asyncio driver around a
ServerEndpoint whose new connections the engine may set seams on (``configure``), serving
the reference application, with one ``View`` per connection and one of the whole wire, and
an ``answer`` hook that sees each datagram before the endpoint (to send hand-written packets
first, or to keep the datagram from it). Tests clients."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from harness.peer.view import View
from velocity.aio.base import udp_socket
from velocity.aio.entropy import OsEntropy
from velocity.aio.server import StreamHandler, VelocityServer
from velocity.core.connection import Address, Connection
from velocity.core.endpoint import EndpointConfig, ServerEndpoint, TokenSealer
from velocity.core.entropy import Entropy
from velocity.core.trace import Tracer


class ServerPeer(VelocityServer):
    """Listens on ``host`` port 0; ``views`` gets one View per accepted connection, in order,
    and ``wire`` sees every datagram."""

    def __init__(self, endpoint: ServerEndpoint, handler: StreamHandler, host: str,
                 views: list[View], port: int = 0) -> None:
        super().__init__(endpoint, handler, udp_socket(host, port))
        self.views = views
        loop = asyncio.get_running_loop()
        self.wire = View(loop)
        self.configure: Callable[[Connection], None] | None = None
        self.keep_payloads = False  # each new connection's View keeps the payloads it opens
        # sees each datagram first; False keeps it from the endpoint
        self.answer: Callable[[bytes, Address], bool] | None = None
        self._connected = asyncio.Event()
        endpoint.on_connection = self._on_connection

    @classmethod
    def listen(cls, config: EndpointConfig, handler: StreamHandler, *, host: str = "127.0.0.1",
               port: int = 0, entropy: Entropy | None = None,
               tokens: TokenSealer | None = None) -> ServerPeer:
        loop = asyncio.get_running_loop()
        views: list[View] = []

        def tracer() -> Tracer:
            views.append(View(loop))
            return views[-1].transcript

        endpoint = ServerEndpoint(config, entropy=entropy or OsEntropy(), tokens=tokens,
                                  tracers=tracer)
        return cls(endpoint, handler, host, views, port)

    def _on_connection(self, connection: Connection) -> None:
        if self.keep_payloads:  # the View of its tracer, just made
            connection.seams.payload_observer = self.views[-1].opened
        if self.configure is not None:
            self.configure(connection)
        self._connected.set()

    def datagram_received(self, data: bytes, address: Address, now: float,
                          arrived: float) -> None:
        self.wire.received(data, f"{address[0]}:{address[1]}")
        if self.answer is None or self.answer(data, address):
            super().datagram_received(data, address, now, arrived)

    def send_raw(self, data: bytes, address: Address) -> None:
        """A hand-written datagram from the server's socket."""
        if self._sender is not None:
            self._sender.send([(data, address)])
            self.wire.sent([data], origin="harness")

    def _on_sent(self, datagrams: list[tuple[bytes, Address]]) -> None:
        super()._on_sent(datagrams)
        self.wire.sent([d for d, _ in datagrams])

    def _route(self) -> None:
        super()._route()
        for view in self.views:
            view.changed()

    async def wait_connection(self, timeout: float, *, index: int = 0) -> View | None:
        """The View of the ``index``-th connection, once a client opened it."""
        deadline = self._loop.time() + timeout
        while len(self.views) <= index:
            left = deadline - self._loop.time()
            if left <= 0:
                return None
            self._connected.clear()
            try:
                await asyncio.wait_for(self._connected.wait(), left)
            except TimeoutError:
                break
        return self.views[index] if len(self.views) > index else None
