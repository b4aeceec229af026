"""HTTP over Velocity on 127.0.0.1: files of several sizes, validators, ranges, HEAD,
listings, the JSON API, malformed requests, and every way out of the root."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tests.http.helpers import get, running
from velocity.core.errors import UsageError
from velocity.http.h1 import H1_MESSAGE_ERROR
from velocity.http.static import StaticFiles

SIZES = {"empty.bin": 0, "small.txt": 13, "page.html": 5_000, "big.bin": 1_500_000}


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "public"
    (root / "docs").mkdir(parents=True)
    for name, size in SIZES.items():
        (root / name).write_bytes(hashlib.shake_256(name.encode()).digest(size))
    (root / "index.html").write_text("<h1>home</h1>")
    (root / "docs" / "a.txt").write_text("doc a")
    (tmp_path / "secret.txt").write_text("outside the root")
    os.symlink(tmp_path / "secret.txt", root / "escape.txt")
    os.symlink(tmp_path, root / "escape-dir")
    (root / ".velocity" / "certs").mkdir(parents=True)
    (root / ".velocity" / "certs" / "balanced-kem.key").write_text("outside the root: a key")
    return root


@pytest.mark.spec("VEL-HTTP-001", "VEL-HTTP-002")
async def test_files_of_several_sizes(site: Path) -> None:
    async with running(site) as client:
        for name, size in SIZES.items():
            response = await get(client, f"/{name}")
            assert response.status == 200
            assert hashlib.sha256(response.body).digest() == hashlib.sha256(
                (site / name).read_bytes()).digest()
            assert int(response.header("content-length") or -1) == size
        index = await get(client, "/")
        assert index.status == 200 and index.body == b"<h1>home</h1>"
        assert index.header("content-type") == "text/html"


async def test_head_validators_and_ranges(site: Path) -> None:
    async with running(site) as client:
        head = await get(client, "/page.html", "HEAD")
        assert head.status == 200 and head.body == b""
        assert head.header("content-length") == "5000"
        etag = head.header("etag")
        assert etag
        cached = await get(client, "/page.html", headers=[("if-none-match", etag)])
        assert cached.status == 304 and cached.body == b""
        data = (site / "page.html").read_bytes()
        part = await get(client, "/page.html", headers=[("range", "bytes=100-199")])
        assert part.status == 206 and part.body == data[100:200]
        assert part.header("content-range") == "bytes 100-199/5000"
        tail = await get(client, "/page.html", headers=[("range", "bytes=-10")])
        assert tail.body == data[-10:]
        bad = await get(client, "/page.html", headers=[("range", "bytes=9000-")])
        assert bad.status == 416
        assert (await get(client, "/page.html", "POST", body=b"x")).status == 405


@pytest.mark.spec("VEL-HTTP-006")
@pytest.mark.parametrize("target", [
    "/../secret.txt", "/docs/../../secret.txt", "/%2e%2e/secret.txt", "/docs/%2e%2e/%2e%2e/x",
    "/..%2fsecret.txt", "/docs%2f..%2f..%2fsecret.txt", "/..%5csecret.txt", "/..\\secret.txt",
    "/escape.txt", "/escape-dir/secret.txt", "//etc/passwd", "/%00", "/docs/%c0%ae%c0%ae/x",
    "secret.txt", "/.velocity/certs/balanced-kem.key", "/%2evelocity/certs/balanced-kem.key",
])
async def test_no_way_out_of_the_root(site: Path, target: str) -> None:
    async with running(site) as client:
        response = await get(client, target)
        assert response.status in (400, 404), (target, response.status)
        assert b"outside the root" not in response.body


async def test_directory_listing_only_when_enabled(site: Path) -> None:
    async with running(site) as client:
        assert (await get(client, "/docs/")).status == 404
    async with running(site, listing=True) as client:
        listing = await get(client, "/docs/")
        assert listing.status == 200 and b"a.txt" in listing.body


async def test_json_api(site: Path) -> None:
    async with running(site) as client:
        status = json.loads((await get(client, "/api/status")).body)
        assert status["velocity"] and status["profile"] == "balanced"
        assert status["auth_mode"] == "pdk" and status["alpn"] == "velocity/1"
        echo = json.loads((await get(client, "/api/echo", "POST", body=b"ping")).body)
        assert echo["method"] == "POST" and echo["body"] == "ping"
        now = json.loads((await get(client, "/api/time")).body)
        assert now["iso"].startswith("2026-11-25")


@pytest.mark.spec("VEL-HTTP-003", "VEL-HTTP-004")
async def test_malformed_requests(site: Path) -> None:
    async with running(site) as client:
        stream = await client.open_stream()
        stream.write(b"NOT HTTP AT ALL\r\n\r\n", end_stream=True)
        reply = await stream.read()
        assert reply.startswith(b"HTTP/1.1 400")
        empty = await client.open_stream()
        empty.write_eof()
        with pytest.raises(ConnectionError) as info:
            await empty.read()
        assert getattr(info.value, "error_code", None) == H1_MESSAGE_ERROR


def test_unreadable_root_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        StaticFiles(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError):
        StaticFiles(tmp_path / "file")
