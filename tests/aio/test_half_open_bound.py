"""The bound on half-open connections per address at its boundary over real UDP
(VEL-CONN-010): with ``max_half_open_per_address`` N, N handshakes in progress from one IP
address are taken and the next one is refused with CONNECTION_REFUSED."""

from __future__ import annotations

import asyncio
import socket

import pytest

from harness.pair import PairSpec, make_configs
from velocity.aio.client import HandshakeError, connect
from velocity.aio.entropy import OsEntropy
from velocity.aio.server import serve
from velocity.aio.streams import VelocityStream
from velocity.core.connection import Connection, ConnectionConfig
from velocity.core.endpoint import EndpointConfig
from velocity.core.errors import ErrorCode
from velocity.crypto.sealing import RetryTokens

CLIENT_HS, SERVER_HS = make_configs(PairSpec(mode="pdk"))
BOUND = 3


async def ignore(stream: VelocityStream, connection: Connection) -> None:
    pass


async def half_open(target: tuple[str, int], sock: socket.socket, taken: int,
                    connections: list[Connection]) -> bool:
    """Send one first flight from ``sock`` (again, as a client's PTO would, until it is in
    the table) and never go on; whether the table grew to ``taken``."""
    client = Connection(ConnectionConfig(CLIENT_HS), entropy=OsEntropy())
    client.connect(target, now=0.0)
    flight = [datagram for datagram, _ in client.datagrams_to_send(now=0.0)]
    for _ in range(20):
        for datagram in flight:
            sock.sendto(datagram, target)
        for _ in range(50):
            if len(connections) >= taken:
                return True
            await asyncio.sleep(0.01)
    return False


@pytest.mark.spec("VEL-CONN-010")
@pytest.mark.parametrize("retry", ["never", "under-load"])
async def test_the_bound_takes_n_half_open_connections_and_refuses_the_next(
        retry: str) -> None:
    # shedding is not under test: a loaded machine must not drop a first flight here
    config = EndpointConfig(ConnectionConfig(SERVER_HS), retry=retry,
                            max_half_open_per_address=BOUND, shed_after=60.0)
    running = await serve("127.0.0.1", 0, config, ignore, tokens=RetryTokens(bytes(16)))
    endpoint = running.endpoint
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(BOUND)]
    try:
        for taken, sock in enumerate(sockets, start=1):
            sock.bind(("127.0.0.1", 0))
            assert await half_open(running.address, sock, taken, endpoint.connections)
        assert endpoint.refused == 0
        assert not any(c.handshake_complete for c in endpoint.connections)
        with pytest.raises(HandshakeError) as refused:
            async with connect(*running.address, ConnectionConfig(CLIENT_HS), timeout=10):
                pass
        assert refused.value.error_code == ErrorCode.CONNECTION_REFUSED
        assert "too many handshakes" in str(refused.value)
        assert endpoint.refused >= 1 and len(endpoint.connections) == BOUND
    finally:
        for sock in sockets:
            sock.close()
        await running.close()
