"""The HTTP/3 fallback origin routes each request by its headers, as the Velocity server
does: a body is kept only up to its route's bound; and a client that stops a request
before its answer costs it nothing."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import pytest
from aioquic.h3.connection import ErrorCode

from tests.http.helpers import WAIT, serving_h3, small_site, until
from velocity.http.app import ECHO_MAX_BODY, Application
from velocity.http.h1 import SMALL_BODY
from velocity.http.h3 import H3Client, ensure_tls_certificate, serve_h3
from velocity.http.static import StaticFiles

H3_REQUEST_CANCELLED = ErrorCode.H3_REQUEST_CANCELLED


@pytest.mark.spec("VEL-HTTP-008")
async def test_the_origin_bounds_bodies_by_their_route(tmp_path: Path) -> None:
    root = tmp_path / "public"
    root.mkdir()
    (root / "small.txt").write_text("small file\n")
    app = Application(StaticFiles(root), api=True, clock=lambda: dt.datetime.now(dt.UTC))
    cert, key = ensure_tls_certificate(tmp_path / "certs", ("127.0.0.1",))
    origin = await serve_h3("127.0.0.1", 0, app.route, certificate=cert, key=key)
    try:
        async with H3Client(*origin.address, verify=False) as h3:
            fits = await h3.request("POST", "/api/echo", body=b"e" * ECHO_MAX_BODY)
            assert fits.status == 200 and len(json.loads(fits.body)["body"]) == ECHO_MAX_BODY
            over = await h3.request("POST", "/api/echo", body=b"e" * (ECHO_MAX_BODY + 1))
            assert over.status == 413
            assert (await h3.request("GET", "/small.txt")).body == b"small file\n"
            big = await h3.request("GET", "/small.txt", body=b"b" * (SMALL_BODY + 1))
            assert big.status == 413
            assert (await h3.request("POST", "/small.txt", body=b"x" * 200_000)).status == 405
    finally:
        origin.close()


async def test_the_origin_survives_requests_stopped_before_their_answer(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """STOP_SENDING before the request ends (and before its headers): aioquic has reset the
    stream when the answer is ready, and the origin writes nothing on it, raising nothing."""
    root = small_site(tmp_path)
    async with serving_h3(root, tmp_path / "certs") as origin, H3Client(
            *origin.address, verify=False, timeout=WAIT) as h3:
        client = h3._protocol
        assert client is not None
        for stop_first in (True, False):
            stream_id = client._quic.get_next_available_stream_id()
            if stop_first:
                client._quic.send_stream_data(stream_id, b"")
                client._quic.stop_stream(stream_id, H3_REQUEST_CANCELLED)
            client._http.send_headers(stream_id, [
                (b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost"),
                (b":path", b"/small.txt")])
            if not stop_first:
                client._quic.stop_stream(stream_id, H3_REQUEST_CANCELLED)
            client._http.send_data(stream_id, b"", end_stream=True)
            client.transmit()
        assert (await h3.request("GET", "/small.txt")).body == b"small file\n"
        assert await until(lambda: not origin.tasks)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
