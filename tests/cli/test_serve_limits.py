"""``velocity serve --handshake-timeout --max-half-open-per-address``: the flags reach the
server. A ClientHello that never finishes holds the address's one half-open slot, so the
next client from that address is refused, until the handshake timeout frees the slot."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.pair import PairSpec, make_configs
from tests.cli.processes import server
from velocity.aio.client import HandshakeError, connect
from velocity.core.connection import Connection, ConnectionConfig
from velocity.core.entropy import SeededEntropy
from velocity.core.errors import ErrorCode
from velocity.core.handshake.client import ClientConfig
from velocity.core.hybrid import BALANCED, SECURE
from velocity.crypto.kem import kem_backend
from velocity.crypto.pki import X509Verifier

VELOCITY = [sys.executable, "-m", "velocity.cli"]
CLIENT_HS, _ = make_configs(PairSpec(mode="discovery"))


def half_open(host: str, port: int) -> None:
    """Send one ClientHello from a socket of its own, and never answer."""
    client = Connection(ConnectionConfig(CLIENT_HS), entropy=SeededEntropy("half-open"))
    client.connect((host, port), now=0.0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for datagram, address in client.datagrams_to_send(now=0.0):
            sock.sendto(datagram, address)


@pytest.mark.spec("VEL-CONN-008", "VEL-CONN-010")
async def test_serve_bounds_half_open_connections(tmp_path: Path) -> None:
    (tmp_path / "public").mkdir()
    (tmp_path / "public" / "small.txt").write_text("small")
    env = {**os.environ, "VELOCITY_CACHE_DIR": str(tmp_path / "cache")}
    process = subprocess.Popen(
        [*VELOCITY, "serve", "--root", str(tmp_path / "public"), "--self-signed",
         "--publish-kem", "--listen", "127.0.0.1:0", "--handshake-timeout", "3",
         "--max-half-open-per-address", "1"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stderr is not None
        banner = process.stderr.readline()
        target = banner.split("udp://", 1)[1].split(" ", 1)[0]
        host, port = target.rsplit(":", 1)
        half_open(host, int(port))
        with pytest.raises(HandshakeError) as refused:
            async with connect(host, int(port), ConnectionConfig(CLIENT_HS), timeout=5):
                pass
        assert refused.value.error_code == ErrorCode.CONNECTION_REFUSED
        deadline = time.monotonic() + 20
        for _ in range(20):  # the slot frees once the half-open handshake times out
            fetched = subprocess.run([*VELOCITY, "fetch", target, "/small.txt"], env=env,
                                     capture_output=True, text=True, timeout=30, check=False)
            if fetched.returncode == 0 or time.monotonic() > deadline:
                break
            assert "too many handshakes" in fetched.stderr, fetched.stderr
            time.sleep(0.5)
        assert fetched.returncode == 0 and fetched.stdout == "small", fetched.stderr
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.spec("VEL-HS-020", "VEL-AUTH-020")
def test_a_server_of_one_profile_retries_a_client_to_it(site: Path, env: dict[str, str]) -> None:
    """`serve --profile secure` holds only a secure key: a client offering balanced first
    gets HELLO_RETRY to secure and completes (it used to get KEM_KEY_REQUIRED: the server
    took balanced without a key to show for it)."""
    async def handshake(target: str) -> str:
        host, port = target.rsplit(":", 1)
        config = ClientConfig(kem=kem_backend(), profiles=(BALANCED, SECURE),
                              verifier=X509Verifier(insecure=True,
                                                    clock=lambda: dt.datetime.now(dt.UTC)))
        async with connect(host, int(port), ConnectionConfig(config), timeout=10) as client:
            done = await asyncio.wait_for(client.wait_handshake(), 10)
        return done.profile

    with server(site, env, "--publish-kem", "--profile", "secure") as target:
        assert asyncio.run(handshake(target)) == "secure"
