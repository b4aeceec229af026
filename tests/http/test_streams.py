"""A long connection's many streams over real UDP on 127.0.0.1, answered, stopped or
cancelled: neither end keeps them once they are finished."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.http.helpers import WAIT, get, held, send_open, serving, small_site, until
from velocity.http.h1 import H1_NO_ERROR, H1_REQUEST_CANCELLED


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return small_site(tmp_path)


@pytest.mark.spec("VEL-HTTP-011")
async def test_a_long_connection_keeps_only_its_live_streams(site: Path) -> None:
    """200 rounds of a request answered, one answered before its body and one the client
    gave up on: more streams than the server allows at once (128), and neither end keeps
    any of them."""
    async with serving(site) as (server, client):
        for _ in range(200):
            assert (await get(client, "/small.txt")).status == 200
            unread = await send_open(client, b"POST /small.txt HTTP/1.1\r\nhost: x\r\n"
                                              b"content-length: 9999\r\n\r\n")
            assert (await asyncio.wait_for(unread.read(), WAIT)).startswith(b"HTTP/1.1 405")
            unread.close(H1_NO_ERROR)
            cancelled = await send_open(client, b"GET /small.txt HTTP/1.1\r\n")
            cancelled.close(H1_REQUEST_CANCELLED)
            assert held(server) < 30 and len(client.router.streams) < 30
        assert await until(lambda: held(server) == len(client.router.streams) == 0)


@pytest.mark.spec("VEL-HTTP-011")
async def test_streams_reset_before_any_data_are_ended_too(site: Path) -> None:
    """A stream whose first frame is RESET_STREAM still gets its sending side ended by the
    server: else it would count against the stream limit for good, and after 128 of them
    the client could open no stream."""
    async with serving(site) as (server, client):
        for _ in range(300):
            stream = await asyncio.wait_for(client.open_stream(), WAIT)
            stream.reset(H1_REQUEST_CANCELLED)
            stream.close(H1_REQUEST_CANCELLED)  # and STOP_SENDING after it
        assert (await get(client, "/small.txt")).status == 200
        assert await until(lambda: held(server) == 0)
