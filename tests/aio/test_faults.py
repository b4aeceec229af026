"""A fault of the implementation inside one connection of the asyncio server over real UDP:
that connection closes with INTERNAL_ERROR, one ERROR line names its peer, the server serves
on and its active-connections gauge comes back to 0."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from harness.pair import PairSpec, make_configs
from velocity.aio.client import connect
from velocity.aio.server import serve
from velocity.aio.streams import VelocityStream
from velocity.core import receiver
from velocity.core.connection import Connection, ConnectionConfig
from velocity.core.endpoint import EndpointConfig
from velocity.core.errors import ErrorCode
from velocity.core.frames import ResetStream
from velocity.metrics import ServerMetrics

CLIENT_HS, SERVER_HS = make_configs(PairSpec(mode="pdk"))


async def echo(stream: VelocityStream, connection: Connection) -> None:
    stream.write(await stream.read(), end_stream=True)


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


@pytest.mark.spec("VEL-ERR-005", "VEL-ERR-006")
async def test_an_internal_fault_is_logged_once_and_the_server_serves_on(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def broken(conn: Connection, frame: ResetStream, *args: Any) -> None:
        if not conn.is_client:
            raise RuntimeError("injected fault")

    monkeypatch.setitem(receiver._HANDLERS, ResetStream, broken)
    caplog.set_level(logging.INFO, logger="velocity.aio.server")
    metrics = ServerMetrics()
    running = await serve("127.0.0.1", 0, EndpointConfig(ConnectionConfig(SERVER_HS)), echo,
                          metrics=metrics)
    try:
        host, port = running.address
        async with connect(host, port, ConnectionConfig(CLIENT_HS)) as victim:
            stream = await victim.open_stream()
            stream.write(b"request")
            stream.reset(7)  # the server's RESET_STREAM handler raises
            assert await until(lambda: victim.router.terminated is not None)
            end = victim.router.terminated
            assert end is not None and end.by_peer
            assert end.error_code == ErrorCode.INTERNAL_ERROR
            victim_port = victim.address[1]
        async with connect(host, port, ConnectionConfig(CLIENT_HS)) as other:
            stream = await other.open_stream()
            stream.write(b"still served", end_stream=True)
            assert await asyncio.wait_for(stream.read(), 10) == b"still served"
        assert await until(lambda: metrics.registry.get_sample_value(
            "velocity_active_connections") == 0)
    finally:
        await running.close()
    errors = [(r.getMessage(), getattr(r, "fields", {})) for r in caplog.records
              if r.levelno >= logging.ERROR]
    assert [(message, values["peer"]) for message, values in errors] == [
        ("internal error", f"127.0.0.1:{victim_port}")]
    assert "injected fault" in errors[0][1]["exception"]
