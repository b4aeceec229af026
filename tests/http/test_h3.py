"""The HTTP/3 fallback origin routes each request by its headers, as the Velocity server
does: a body is kept only up to its route's bound."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from velocity.http.app import ECHO_MAX_BODY, Application
from velocity.http.h1 import SMALL_BODY
from velocity.http.h3 import H3Client, ensure_tls_certificate, serve_h3
from velocity.http.static import StaticFiles


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
