"""Load shedding over real UDP (VEL-CONN-015): the server reads the kernel's receive time of
each datagram, so a new client's Initial that waited in the socket while the server's loop
was busy opens no connection, while an established connection's datagram that waited as
long is served; once the server reads promptly again, the client's next Initial is taken.
The loop is blocked for longer than the bound, so every wait is at least that long whatever
the machine's load."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from harness.pair import PairSpec, make_configs
from tests.aio.test_faults import echo, until
from velocity.aio.client import connect
from velocity.aio.entropy import OsEntropy
from velocity.aio.server import serve
from velocity.core.connection import Connection, ConnectionConfig
from velocity.core.endpoint import EndpointConfig

CLIENT_HS, SERVER_HS = make_configs(PairSpec(mode="pdk"))
SHED_AFTER = 0.5
BLOCKED = 2 * SHED_AFTER


def first_flight(target: tuple[str, int]) -> list[bytes]:
    client = Connection(ConnectionConfig(CLIENT_HS), entropy=OsEntropy())
    client.connect(target, now=0.0)
    return [datagram for datagram, _ in client.datagrams_to_send(now=0.0)]


@pytest.mark.spec("VEL-CONN-015")
async def test_a_server_behind_sheds_new_handshakes_and_serves_established_ones() -> None:
    config = EndpointConfig(ConnectionConfig(SERVER_HS), retry="never", shed_after=SHED_AFTER)
    running = await serve("127.0.0.1", 0, config, echo)
    endpoint = running.endpoint
    target = running.address
    flight = first_flight(target)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as newcomer:
            newcomer.bind(("127.0.0.1", 0))

            def busy() -> None:  # the newcomer's Initial arrives while the loop is busy
                for datagram in flight:
                    newcomer.sendto(datagram, target)
                time.sleep(BLOCKED)

            async with connect(*target, ConnectionConfig(CLIENT_HS)) as client:
                await client.wait_handshake()
                stream = await client.open_stream()
                stream.write(b"still served", end_stream=True)  # sent before busy() runs
                asyncio.get_running_loop().call_soon(busy)
                assert await asyncio.wait_for(stream.read(), 10) == b"still served"
                assert endpoint.shed >= 1
                assert len(endpoint.connections) == 1  # the client's own
                for _ in range(20):  # the newcomer retransmits until it is taken
                    for datagram in flight:
                        newcomer.sendto(datagram, target)
                    if await until(lambda: len(endpoint.connections) == 2, 0.5):
                        break
                assert len(endpoint.connections) == 2
    finally:
        await running.close()
