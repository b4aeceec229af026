"""The scripted peer as a client: the reference client's asyncio driver around a
velocity.core Connection whose seams the engine sets before it starts, recording the
harness's view (``View``) of every datagram and connection event, and able to send raw
datagrams. Tests servers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

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
    def make_connection(config: ConnectionConfig, *, entropy: Entropy, view: View,
                        payloads: bool = False) -> Connection:
        """The connection, its transcript in ``view`` (and, with ``payloads``, every packet
        payload it opens)."""
        connection = Connection(config, entropy=entropy, tracer=view.transcript)
        if payloads:
            connection.seams.payload_observer = view.opened
        return connection

    @classmethod
    async def start(cls, connection: Connection, target: Address, *, view: View,
                    hold: bool = False) -> ClientPeer:
        """Bind a socket (port 0) and send the first flight (with ``hold``, plan it and keep
        it until ``transmit`` sends it: the ``client_initial`` template)."""
        sock = udp_socket(local_address_for(target[0]), 0)
        peer = cls(connection, sock, target, view)
        connection.connect(target, now=asyncio.get_running_loop().time())
        if not hold:
            peer._transmit()
        return peer

    # --- what the driver does, seen ----------------------------------------------------

    def datagram_received(self, data: bytes, address: Address, now: float,
                          arrived: float) -> None:
        self.view.received(data, f"{address[0]}:{address[1]}")
        super().datagram_received(data, address, now, arrived)

    def _on_sent(self, datagrams: list[tuple[bytes, Address]]) -> None:
        self.view.sent([d for d, _ in datagrams])

    def _route(self) -> None:
        super()._route()
        self.view.changed()

    # --- what the engine does ----------------------------------------------------------

    def send_datagram(self, data: bytes, *, to: Address | None = None,
                      origin: str = "harness") -> None:
        """A datagram written by hand (no connection involved), to the target by default."""
        if self._sender is not None:
            self._sender.send([(data, to or self.target)])
            self.view.sent([data], origin=origin)

    def transmit(self, edit: Callable[[list[bytes]], list[bytes]]
                 ) -> tuple[list[bytes], list[bytes]]:
        """Send what the connection has now, its datagrams passed through ``edit`` first
        (reordered, repeated, left out: what the network could do to them); (the datagrams
        the connection made, those sent)."""
        made = [d for d, _ in self.connection.datagrams_to_send(now=self._loop.time())]
        sent = edit(made) if self._sender is not None else []
        if self._sender is not None:
            self._sender.send([(d, self.target) for d in sent])
            self.view.sent(sent)
        self.schedule_transmit()  # arms the connection's timer
        return made, sent

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


class RawPeer(asyncio.DatagramProtocol):
    """A bare UDP socket (port 0) towards ``target``: sends datagrams it is given and
    records them and whatever answers them in ``view`` (a replay from a new port)."""

    def __init__(self, target: Address, view: View) -> None:
        self.target = target
        self.view = view
        self._transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(cls, target: Address, view: View) -> RawPeer:
        loop = asyncio.get_running_loop()
        transport, peer = await loop.create_datagram_endpoint(
            lambda: cls(target, view), local_addr=(local_address_for(target[0]), 0))
        peer._transport = transport
        return peer

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.view.received(data, f"{addr[0]}:{addr[1]}")

    def send(self, datagrams: list[bytes], *, origin: str) -> None:
        if self._transport is not None:
            for data in datagrams:
                self._transport.sendto(data, self.target)
            self.view.sent(datagrams, origin=origin)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
