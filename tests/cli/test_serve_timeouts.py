"""``velocity serve --header-timeout / --body-timeout``: a slow request to the real server
process gets 408, and a value that is no number of seconds is a usage error."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from tests.cli.test_flows import VELOCITY, server
from velocity.easy import AsyncEasyClient, EasyClientConfig

WAIT = 20.0


@pytest.mark.spec("VEL-HTTP-009")
def test_serve_times_out_slow_requests(tmp_path: Path) -> None:
    site = tmp_path / "public"
    site.mkdir()
    (site / "small.txt").write_text("small file\n")
    env = {**os.environ, "VELOCITY_CACHE_DIR": str(tmp_path / "cache")}
    with server(site, env, "--publish-kem", "--api", "--header-timeout", "0.3",
                "--body-timeout", "0.3") as target:
        config = EasyClientConfig(target, insecure=True, key_cache_dir=tmp_path / "easy")

        async def slow(request: bytes) -> bytes:
            async with AsyncEasyClient(config) as client:
                assert (await client.fetch("/small.txt")).status == 200
                assert client._session is not None
                stream = await client._session.client.open_stream()
                stream.write(request)  # never ended
                return await asyncio.wait_for(stream.read(), WAIT)

        head = asyncio.run(slow(b"GET /small.txt HTTP/1.1\r\nhost: x\r\n"))
        body = asyncio.run(slow(b"POST /api/echo HTTP/1.1\r\nhost: x\r\ncontent-length: 9\r\n\r\n"))
    assert head.startswith(b"HTTP/1.1 408") and body.startswith(b"HTTP/1.1 408")


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_a_timeout_must_be_a_number_of_seconds(value: str, tmp_path: Path) -> None:
    for flag in ("--header-timeout", "--body-timeout"):
        result = subprocess.run([*VELOCITY, "serve", "--root", str(tmp_path), "--self-signed",
                                 flag, value], capture_output=True, text=True, timeout=30,
                                check=False)
        assert result.returncode == 2 and flag in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
