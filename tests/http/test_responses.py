"""Responses written a chunk at a time over real UDP on 127.0.0.1 (VEL-HTTP-012): a client
that acknowledges nothing makes the server hold no more of each response than the stream's
high-water mark and one chunk, on the Velocity server and on the HTTP/3 origin alike; and
what arrives is still the whole file, or the range asked for, or for HEAD only the head."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from harness.netsim import UdpRelay
from tests.http.helpers import (
    CLIENT_HS,
    WAIT,
    get,
    relayed,
    running,
    send_open,
    serving,
    serving_h3,
    stop_code,
    until,
)
from velocity.aio.client import connect
from velocity.aio.streams import HIGH_WATER
from velocity.core.connection import ConnectionConfig
from velocity.http.h1 import BODY_CHUNK, H1_NO_ERROR, Response
from velocity.http.h3 import H3Client, H3Origin

STREAMS = 4
SIZE = 2 * HIGH_WATER + BODY_CHUNK // 2  # several chunks, and more than the mark
BOUND = HIGH_WATER + BODY_CHUNK  # what one response may hold at most (its head included)
REQUEST = b"GET /big.bin HTTP/1.1\r\nhost: localhost\r\n\r\n"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "public"
    root.mkdir()
    (root / "big.bin").write_bytes(hashlib.shake_256(b"big").digest(SIZE))
    return root


async def held_unacknowledged(relay: UdpRelay, buffered: Callable[[], list[int]]) -> list[int]:
    """Once every response has begun, let nothing through until each stream holds at least
    the high-water mark: what each one holds then. Then let the responses go on."""
    assert await until(lambda: len(buffered()) == STREAMS and all(buffered()))
    relay.impairment.loss = 1.0
    try:
        assert await until(lambda: min(buffered()) >= HIGH_WATER)
        return buffered()
    finally:
        relay.impairment.loss = 0.0


@pytest.mark.spec("VEL-HTTP-012")
async def test_a_response_holds_at_most_the_streams_high_water_mark(site: Path) -> None:
    data = (site / "big.bin").read_bytes()
    async with serving(site) as (server, _), relayed(server.address) as (relay, front), \
            connect(*front, ConnectionConfig(CLIENT_HS)) as client:
        streams = [await asyncio.wait_for(client.open_stream(), WAIT) for _ in range(STREAMS)]
        for stream in streams:
            stream.write(REQUEST, end_stream=True)

        def buffered() -> list[int]:  # the relayed connection's (the other has none)
            return [c.stream_buffered(s.stream_id) for c in server.endpoint.connections
                    for s in streams if s.stream_id in c.streams]

        held = await held_unacknowledged(relay, buffered)
        assert max(held) < BOUND, held
        replies = await asyncio.wait_for(
            asyncio.gather(*(stream.read() for stream in streams)), WAIT)
    assert all(reply.split(b"\r\n", 1)[0] == b"HTTP/1.1 200 " for reply in replies)
    assert all(reply.split(b"\r\n\r\n", 1)[1] == data for reply in replies)


@pytest.mark.spec("VEL-HTTP-010", "VEL-HTTP-012")
async def test_a_request_is_stopped_as_its_answer_begins(site: Path) -> None:
    """A GET left open is stopped with the response's head, not once its body is all
    written: else a client that holds the body back (acknowledging nothing) could go on
    sending into a stream nobody reads."""
    data = (site / "big.bin").read_bytes()
    async with serving(site) as (server, _), relayed(server.address) as (relay, front), \
            connect(*front, ConnectionConfig(CLIENT_HS)) as client:
        stream = await send_open(client, REQUEST)
        reply = await asyncio.wait_for(stream.read(BODY_CHUNK), WAIT)
        assert reply.startswith(b"HTTP/1.1 200 ")
        relay.impairment.loss = 1.0  # the rest of the body waits
        try:
            assert await stop_code(stream, seconds=2.0) == H1_NO_ERROR
        finally:
            relay.impairment.loss = 0.0
        reply += await asyncio.wait_for(stream.read(), WAIT)
    assert reply.split(b"\r\n\r\n", 1)[1] == data


def origin_buffered(origin: H3Origin) -> list[int]:
    """Bytes each request stream of the origin holds unacknowledged (aioquic's own record:
    its send buffer)."""
    return [len(stream.sender._buffer) for protocol in set(origin.server._protocols.values())
            for stream_id, stream in protocol._quic._streams.items() if stream_id % 4 == 0]


@pytest.mark.spec("VEL-HTTP-012")
async def test_an_origin_response_holds_at_most_the_high_water_mark(
        site: Path, tmp_path: Path) -> None:
    data = (site / "big.bin").read_bytes()
    async with serving_h3(site, tmp_path / "certs") as origin, relayed(origin.address) as (
            relay, front), H3Client(*front, verify=False, timeout=WAIT) as h3:
        gets = [asyncio.create_task(h3.request("GET", "/big.bin")) for _ in range(STREAMS)]
        try:
            held = await held_unacknowledged(relay, lambda: origin_buffered(origin))
            assert max(held) < BOUND, held
        finally:  # whatever happened, no request is left to fail unseen
            responses = await asyncio.gather(*gets, return_exceptions=True)
    assert all(isinstance(r, Response) and r.status == 200 and r.body == data
               for r in responses)


Fetch = Callable[[str, list[tuple[str, str]]], Awaitable[Response]]


async def check_chunked_answers(fetch: Fetch, data: bytes, *, head: bool = True) -> None:
    first, last = BODY_CHUNK - 5, 3 * BODY_CHUNK + 7  # across three chunk boundaries
    whole = await fetch("GET", [])
    assert whole.status == 200 and whole.body == data
    part = await fetch("GET", [("range", f"bytes={first}-{last}")])
    assert part.status == 206 and part.body == data[first : last + 1]
    assert part.header("content-range") == f"bytes {first}-{last}/{len(data)}"
    if head:
        only = await fetch("HEAD", [("range", f"bytes={first}-")])
        assert only.status == 206 and only.body == b""
        assert only.header("content-length") == str(len(data) - first)
    etag, modified = whole.header("etag") or "", whole.header("last-modified") or ""
    for validator in (("if-none-match", etag), ("if-modified-since", modified)):
        cached = await fetch("GET", [validator])
        assert cached.status == 304 and cached.body == b"" and cached.header("etag") == etag


@pytest.mark.spec("VEL-HTTP-012")
async def test_files_ranges_and_head_over_velocity(site: Path) -> None:
    async with running(site) as client:
        await check_chunked_answers(
            lambda method, headers: get(client, "/big.bin", method, headers),
            (site / "big.bin").read_bytes())


@pytest.mark.spec("VEL-HTTP-012")
async def test_files_and_ranges_over_http3(site: Path, tmp_path: Path) -> None:
    """Not HEAD: aioquic's client takes a HEAD response's content-length for its body's."""
    async with serving_h3(site, tmp_path / "certs") as origin, H3Client(
            *origin.address, verify=False, timeout=WAIT) as h3:
        await check_chunked_answers(
            lambda method, headers: h3.request(method, "/big.bin", headers=headers),
            (site / "big.bin").read_bytes(), head=False)
