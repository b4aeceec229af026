"""The scripted peer as a client: the reference client's asyncio driver around a
velocity.core Connection whose seams the engine sets before it starts, recording the
harness's view (``View``) of every datagram and connection event, and able to send raw
datagrams. Tests servers."""

from __future__ import annotations

import asyncio
import socket

from harness.peer.view import View
from velocity.aio.base import udp_socket
from velocity.aio.client import VelocityClient
from velocity.core.connection import Address, Connection, ConnectionConfig
from velocity.core.entropy import Entropy
from velocity.http.h1 import Response, request


def local_address_for(host: str) -> str:
    """The address to bind to reach ``host``: loopback stays on loopback."""
    if ":" in host:
        return "::1" if host == "::1" else "::"
    return "127.0.0.1" if host.startswith("127.") else "0.0.0.0"


class ClientPeer(VelocityClient):
    """One connection to ``target``. Build its Connection with ``make_connection`` (the
    transcript is its tracer), set seams on it, then ``start``."""

    def __init__(self, connection: Connection, sock: socket.socket, target: Address,
                 view: View) -> None:
        super().__init__(connection, sock)
        self.target = target
        self.view = view

    @staticmethod
    def make_connection(config: ConnectionConfig, *, entropy: Entropy,
                        view: View) -> Connection:
        return Connection(config, entropy=entropy, tracer=view.transcript)

    @classmethod
    async def start(cls, connection: Connection, target: Address, *,
                    view: View) -> ClientPeer:
        """Bind a socket (port 0) and send the first flight."""
        sock = udp_socket(local_address_for(target[0]), 0)
        peer = cls(connection, sock, target, view)
        connection.connect(target, now=asyncio.get_running_loop().time())
        peer._transmit()
        return peer

    # --- what the driver does, seen ----------------------------------------------------

    def datagram_received(self, data: bytes, address: Address, now: float) -> None:
        self.view.received(data, f"{address[0]}:{address[1]}")
        super().datagram_received(data, address, now)

    def _on_sent(self, sizes: list[int]) -> None:
        self.view.sent(sizes)

    def _route(self) -> None:
        super()._route()
        self.view.changed()

    # --- what the engine does ----------------------------------------------------------

    def send_datagram(self, data: bytes, *, to: Address | None = None) -> None:
        """A datagram written by hand (no connection involved), to the target by default."""
        if self._sender is not None:
            self._sender.send([(data, to or self.target)])
            self.view.sent([len(data)], raw=True)

    def flush(self) -> None:
        """Send what the connection has now (after the engine used a seam)."""
        self.schedule_transmit()

    async def request(self, method: str, path: str, *, authority: str,
                      headers: list[tuple[str, str]] | None = None,
                      body: bytes = b"") -> Response:
        """One HTTP/1.1 exchange on a new stream (VEL-HTTP-001)."""
        stream = await self.open_stream()
        return await request(stream, method, path, authority=authority, headers=headers,
                             body=body)
