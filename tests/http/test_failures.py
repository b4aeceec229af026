"""An application that raises, over real UDP on 127.0.0.1 (VEL-HTTP-014): the request gets
500 from the Velocity server and from the HTTP/3 origin alike, or its stream is reset once
the response has begun; the server logs one line naming the peer, no task is left
with an exception nobody retrieves, and it serves on."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.http.helpers import CLIENT_HS, SERVER_HS, WAIT, get, small_site
from velocity.aio.client import VelocityClient, connect
from velocity.aio.server import HANDLER_ERROR, StreamHandler, serve
from velocity.aio.streams import StreamResetError, VelocityStream
from velocity.core.connection import Connection, ConnectionConfig
from velocity.core.endpoint import EndpointConfig
from velocity.http.h1 import (
    BODY_CHUNK,
    H1_INTERNAL_ERROR,
    SMALL_BODY,
    Request,
    Response,
    Route,
    serve_request,
)
from velocity.http.h3 import H3Client, ensure_tls_certificate, serve_h3
from velocity.http.static import StaticFiles


def failing(request: Request) -> Response:
    raise RuntimeError(f"a bug answering {request.target}")


class Breaking:
    """A body that fails after its first chunk (a disk that fails while a file is sent)."""

    def __init__(self) -> None:
        self.closed = False

    def __len__(self) -> int:
        return 3 * BODY_CHUNK

    def chunks(self) -> Iterator[bytes]:
        yield bytes(BODY_CHUNK)
        raise OSError("the disk failed")

    def close(self) -> None:
        self.closed = True


class Site:
    """The static files, but /fail/... fails: in routing (/fail/route) or in answering."""

    def __init__(self, root: Path) -> None:
        self.static = StaticFiles(root)
        self.bodies: list[Breaking] = []

    def route(self, request: Request) -> Route | Response:
        if request.target == "/fail/route":
            return failing(request)
        if request.target == "/breaks":
            self.bodies.append(Breaking())
            return Response(200, content=self.bodies[-1])
        if request.target.startswith("/fail/"):
            return Route(SMALL_BODY, failing)
        return self.static.route(request)

    async def __call__(self, stream: VelocityStream, _: Connection) -> None:
        await serve_request(stream, self.route, server="test")


@asynccontextmanager
async def serving(handler: StreamHandler) -> AsyncIterator[VelocityClient]:
    server = await serve("127.0.0.1", 0, EndpointConfig(ConnectionConfig(SERVER_HS)), handler)
    try:
        async with connect(*server.address, ConnectionConfig(CLIENT_HS)) as client:
            yield client
    finally:
        await server.close()


def logged(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, dict[str, object]]]:
    """(logger, message, fields) of every error record, once unreferenced tasks are gone
    (a task that kept an exception logs it then)."""
    gc.collect()
    return [(r.name, r.getMessage(), getattr(r, "fields", {})) for r in caplog.records
            if r.levelno >= logging.ERROR]


@pytest.mark.spec("VEL-HTTP-014")
async def test_a_failing_handler_gets_500_and_one_log_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with serving(Site(small_site(tmp_path))) as client:
        for target in ("/fail/route", "/fail/answer"):
            for method in ("GET", "HEAD"):
                response = await get(client, target, method)
                assert response.status == 500, (target, method)
        assert (await get(client, "/small.txt")).body == b"small file\n"  # it serves on
        records = logged(caplog)
    assert len(records) == 4 and all(
        (name, message) == ("velocity.aio.server", "stream handler failed")
        for name, message, _ in records), records
    assert all(str(fields["peer"]).startswith("127.0.0.1:")
               and str(fields["exception"]).startswith("RuntimeError: a bug answering /fail/")
               for _, _, fields in records)


@pytest.mark.spec("VEL-HTTP-014")
async def test_a_failing_stream_handler_resets_its_stream_only(
        caplog: pytest.LogCaptureFixture) -> None:
    async def handler(stream: VelocityStream, _: Connection) -> None:
        if await stream.read() == b"fail":
            raise ValueError("a bug in a stream handler")
        stream.write(b"fine", end_stream=True)

    async with serving(handler) as client:
        failed = await client.open_stream()
        failed.write(b"fail", end_stream=True)
        with pytest.raises(StreamResetError) as info:
            await asyncio.wait_for(failed.read(), WAIT)
        assert info.value.error_code == HANDLER_ERROR == H1_INTERNAL_ERROR
        fine = await client.open_stream()
        fine.write(b"ok", end_stream=True)
        assert await asyncio.wait_for(fine.read(), WAIT) == b"fine"
        records = logged(caplog)
    assert [(n, m) for n, m, _ in records] == [("velocity.aio.server", "stream handler failed")]
    assert records[0][2]["exception"] == "ValueError: a bug in a stream handler"
    assert str(records[0][2]["at"]).startswith("test_failures.py:")


@pytest.mark.spec("VEL-HTTP-014")
async def test_the_origin_answers_500_when_the_application_fails(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cert, key = ensure_tls_certificate(tmp_path / "certs", ("127.0.0.1",))
    origin = await serve_h3("127.0.0.1", 0, Site(small_site(tmp_path)).route,
                            certificate=cert, key=key)
    try:
        async with H3Client(*origin.address, verify=False, timeout=5.0) as h3:
            for target in ("/fail/route", "/fail/answer"):
                assert (await h3.request("GET", target)).status == 500, target
            assert (await h3.request("GET", "/small.txt")).body == b"small file\n"
    finally:
        origin.close()
    records = logged(caplog)
    assert [(n, m) for n, m, _ in records] == [("velocity.http.h3", "HTTP/3 request failed")] * 2
    assert all(str(fields["peer"]).startswith("127.0.0.1:") for _, _, fields in records)


@pytest.mark.spec("VEL-HTTP-014")
async def test_a_body_that_fails_midway_resets_the_stream(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    site = Site(small_site(tmp_path))
    async with serving(site) as client:
        stream = await client.open_stream()
        stream.write(b"GET /breaks HTTP/1.1\r\nhost: x\r\n\r\n", end_stream=True)
        got = b""
        with pytest.raises(StreamResetError) as info:
            for _ in range(100):  # reads: each brings data or the reset
                chunk = await asyncio.wait_for(stream.read(BODY_CHUNK), WAIT)
                assert chunk, "the stream ended as if the body were whole"
                got += chunk
        assert info.value.error_code == H1_INTERNAL_ERROR  # and none of it passed for whole
        assert len(got) < 3 * BODY_CHUNK and b"HTTP/1.1 500" not in got
        assert (await get(client, "/small.txt")).status == 200
        records = logged(caplog)
    assert site.bodies[0].closed
    assert [(r[1], r[2]["exception"]) for r in records] == [
        ("stream handler failed", "OSError: the disk failed")]


@pytest.mark.spec("VEL-HTTP-014")
async def test_an_origin_body_that_fails_midway_resets_the_stream(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    site = Site(small_site(tmp_path))
    cert, key = ensure_tls_certificate(tmp_path / "certs", ("127.0.0.1",))
    origin = await serve_h3("127.0.0.1", 0, site.route, certificate=cert, key=key)
    try:
        async with H3Client(*origin.address, verify=False, timeout=5.0) as h3:
            with pytest.raises(ConnectionError, match=re.escape("reset the stream (error 0x102)")):
                await h3.request("GET", "/breaks")
            assert (await h3.request("GET", "/small.txt")).status == 200
    finally:
        origin.close()
    records = logged(caplog)
    assert site.bodies[0].closed
    assert [(r[1], r[2]["exception"]) for r in records] == [
        ("HTTP/3 request failed", "OSError: the disk failed")]
