"""Requests a hostile client shapes over real UDP on 127.0.0.1: bodies past their route's
bound, bodies nobody wants, heads and bodies that never finish."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.http.helpers import (
    WAIT,
    get,
    held,
    send_open,
    serving,
    small_site,
    stop_code,
    until,
)
from velocity.http.app import ECHO_MAX_BODY
from velocity.http.h1 import H1_NO_ERROR, H1_REQUEST_CANCELLED, SMALL_BODY, Timeouts

HUGE = 50 << 20  # a declared body length no route takes
SHORT = Timeouts(header=0.3, body=0.3)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return small_site(tmp_path)


@pytest.mark.spec("VEL-HTTP-008")
async def test_bodies_are_bounded_by_their_route(site: Path) -> None:
    async with serving(site) as (_, client):
        fits = await get(client, "/api/echo", "POST", body=b"e" * ECHO_MAX_BODY)
        assert fits.status == 200 and len(json.loads(fits.body)["body"]) == ECHO_MAX_BODY
        over = await get(client, "/api/echo", "POST", body=b"e" * (ECHO_MAX_BODY + 1))
        assert over.status == 413
        assert (await get(client, "/small.txt", body=b"b" * SMALL_BODY)).status == 200
        assert (await get(client, "/small.txt", body=b"b" * (SMALL_BODY + 1))).status == 413
        assert (await get(client, "/api/time", body=b"b" * (SMALL_BODY + 1))).status == 413


@pytest.mark.spec("VEL-HTTP-008", "VEL-HTTP-010")
async def test_a_chunked_body_past_its_bound_is_cut_short(site: Path) -> None:
    """No length is declared: the server reads up to the bound, answers 413 while the body
    is still arriving, and stops the rest with STOP_SENDING H1_NO_ERROR."""
    chunk = b"%x\r\n%s\r\n" % (16 << 10, b"c" * (16 << 10))
    async with serving(site) as (_, client):
        stream = await send_open(client, b"POST /api/echo HTTP/1.1\r\nhost: localhost\r\n"
                                         b"transfer-encoding: chunked\r\n\r\n"
                                 + chunk * (ECHO_MAX_BODY // (16 << 10) + 1))
        reply = await asyncio.wait_for(stream.read(), WAIT)
        assert reply.startswith(b"HTTP/1.1 413")
        assert await stop_code(stream) == H1_NO_ERROR


@pytest.mark.spec("VEL-HTTP-008", "VEL-HTTP-010")
@pytest.mark.parametrize(("head", "status"), [
    (b"POST /small.txt HTTP/1.1", b"405"),  # a method the static files do not take
    (b"PUT /api/nothing HTTP/1.1", b"404"),  # no such route
    (b"POST /api/echo HTTP/1.1", b"413"),  # a declared length past the bound
    (b"GET /small.txt HTTP/1.1", b"413"),
], ids=["405", "404", "413-echo", "413-static"])
async def test_unwanted_bodies_are_answered_unread(site: Path, head: bytes,
                                                   status: bytes) -> None:
    """The client declares 50 MiB and sends a few bytes: the answer comes at once, and the
    rest of the body is stopped."""
    async with serving(site) as (_, client):
        stream = await send_open(client, head + b"\r\nhost: localhost\r\n"
                                 b"content-length: %d\r\n\r\nfirst bytes" % HUGE)
        reply = await asyncio.wait_for(stream.read(), WAIT)
        assert reply.split(b" ", 2)[:2] == [b"HTTP/1.1", status]
        assert await stop_code(stream) == H1_NO_ERROR


@pytest.mark.spec("VEL-HTTP-009")
@pytest.mark.parametrize("sent", [
    b"G",  # one byte
    b"GET /small.txt HTTP/1.1\r\nhost: localhost\r\n",  # a head without its end
    b"POST /api/echo HTTP/1.1\r\nhost: localhost\r\ncontent-length: 100\r\n\r\nten bytes!",
], ids=["one-byte", "unended-head", "short-body"])
async def test_slow_requests_time_out(site: Path, sent: bytes) -> None:
    """408, STOP_SENDING H1_REQUEST_CANCELLED, and the server forgets the stream."""
    async with serving(site, timeouts=SHORT) as (server, client):
        stream = await send_open(client, sent)
        reply = await asyncio.wait_for(stream.read(), WAIT)
        assert reply.startswith(b"HTTP/1.1 408")
        assert await stop_code(stream) == H1_REQUEST_CANCELLED
        assert await until(lambda: held(server) == 0)
        assert (await get(client, "/small.txt")).status == 200  # the connection serves on
