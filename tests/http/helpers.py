"""A Velocity server running the reference Application on 127.0.0.1 (directly, or behind an
impairment relay), and helpers to send requests, open streams and wait for what the server
holds."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from harness.netsim import Impairment, UdpRelay
from harness.pair import PairSpec, make_configs
from velocity.aio.client import VelocityClient, connect
from velocity.aio.server import VelocityServer, serve
from velocity.aio.streams import StreamResetError, VelocityStream
from velocity.core.connection import ConnectionConfig
from velocity.core.endpoint import EndpointConfig
from velocity.http.app import Application
from velocity.http.h1 import DEFAULT_TIMEOUTS, Response, Timeouts, request
from velocity.http.h3 import H3Origin, ensure_tls_certificate, serve_h3
from velocity.http.static import StaticFiles

CLIENT_HS, SERVER_HS = make_configs(PairSpec(mode="pdk"))
WAIT = 20.0  # seconds any one exchange may take before the test fails


def application(root: Path, *, listing: bool = False,
                timeouts: Timeouts = DEFAULT_TIMEOUTS) -> Application:
    return Application(StaticFiles(root, listing=listing), api=True, timeouts=timeouts,
                       clock=lambda: dt.datetime(2026, 11, 25, tzinfo=dt.UTC))


@asynccontextmanager
async def serving(root: Path, *, listing: bool = False, timeouts: Timeouts = DEFAULT_TIMEOUTS
                  ) -> AsyncIterator[tuple[VelocityServer, VelocityClient]]:
    app = application(root, listing=listing, timeouts=timeouts)
    server = await serve("127.0.0.1", 0, EndpointConfig(ConnectionConfig(SERVER_HS)), app)
    try:
        async with connect(*server.address, ConnectionConfig(CLIENT_HS)) as client:
            yield server, client
    finally:
        await server.close()


@asynccontextmanager
async def relayed(address: tuple[str, int]
                  ) -> AsyncIterator[tuple[UdpRelay, tuple[str, int]]]:
    """A relay in front of ``address`` and the address it listens on; unimpaired until a
    test sets its impairment."""
    relay = UdpRelay(address, Impairment())
    front = await relay.start()
    try:
        yield relay, front
    finally:
        relay.close()


@asynccontextmanager
async def serving_h3(root: Path, certificates: Path) -> AsyncIterator[H3Origin]:
    """The HTTP/3 origin running the same Application, its certificate made in
    ``certificates``."""
    cert, key = ensure_tls_certificate(certificates, ("127.0.0.1",))
    origin = await serve_h3("127.0.0.1", 0, application(root).route, certificate=cert,
                            key=key)
    try:
        yield origin
    finally:
        origin.close()


@asynccontextmanager
async def running(root: Path, *, listing: bool = False) -> AsyncIterator[VelocityClient]:
    async with serving(root, listing=listing) as (_, client):
        yield client


async def get(client: VelocityClient, target: str, method: str = "GET",
              headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> Response:
    async def exchange() -> Response:
        return await request(await client.open_stream(), method, target,
                             authority="localhost", headers=headers, body=body)

    return await asyncio.wait_for(exchange(), WAIT)


def small_site(tmp_path: Path) -> Path:
    """A root with one file, small.txt."""
    root = tmp_path / "public"
    root.mkdir()
    (root / "small.txt").write_text("small file\n")
    return root


async def until(condition: Callable[[], bool], seconds: float = WAIT) -> bool:
    """Whether ``condition`` came true within ``seconds`` (polled every 10 ms)."""
    for _ in range(int(seconds / 0.01)):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


def held(server: VelocityServer) -> int:
    """Streams the server keeps objects for, over all its connections."""
    return sum(len(router.streams) for router in server._routers.values())


async def send_open(client: VelocityClient, data: bytes) -> VelocityStream:
    """A stream carrying ``data`` and left open (no FIN)."""
    stream = await asyncio.wait_for(client.open_stream(), WAIT)
    stream.write(data)
    return stream


async def stop_code(stream: VelocityStream, seconds: float = WAIT) -> int | None:
    """The STOP_SENDING code the server sent on ``stream`` (None if none came within
    ``seconds``): writing then fails with it."""
    for _ in range(int(seconds / 0.01)):
        try:
            stream.write(b"")
        except StreamResetError as exc:
            return exc.error_code
        await asyncio.sleep(0.01)
    return None
