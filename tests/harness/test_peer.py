"""The scripted peer over real UDP on 127.0.0.1 against the reference server, and as a
server against the reference client: what it sees, what it can send, the hostile inputs by
name. Waits are bounded; nothing counts datagrams exactly."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from harness.pair import PairSpec, make_configs, server_identity
from harness.peer import ClientPeer, ServerPeer, View
from harness.peer.hostile import crypto_chunks, key_share, packet_mutator
from harness.peer.view import PAYLOAD_BYTES
from velocity.aio.entropy import OsEntropy
from velocity.aio.server import VelocityServer, serve
from velocity.core.connection import ConnectionConfig
from velocity.core.endpoint import EndpointConfig
from velocity.core.errors import ErrorCode
from velocity.core.frames import Stream
from velocity.core.handshake.client import PinnedServerKey
from velocity.core.handshake.messages import Fallback
from velocity.core.handshake.server import FallbackPolicy
from velocity.core.hybrid import BALANCED, SECURE
from velocity.core.packet import Epoch, PacketType
from velocity.easy import AsyncEasyClient, EasyClientConfig
from velocity.http.app import Application
from velocity.http.static import StaticFiles

CLIENT_HS, SERVER_HS = make_configs(PairSpec(mode="pdk"))
SECURE_CLIENT, SECURE_SERVER = make_configs(PairSpec(SECURE, mode="pdk"))


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "public"
    root.mkdir()
    (root / "index.html").write_text("<h1>peer</h1>")
    return root


def _app(root: Path) -> Application:
    return Application(StaticFiles(root), api=True, clock=lambda: dt.datetime.now(dt.UTC))


@asynccontextmanager
async def reference(root: Path, handshake: Any = SERVER_HS) -> AsyncIterator[VelocityServer]:
    running = await serve("127.0.0.1", 0, EndpointConfig(ConnectionConfig(handshake)),
                          _app(root))
    try:
        yield running
    finally:
        await running.close()


async def _start(running: VelocityServer, handshake: Any = CLIENT_HS, *,
                 prepare: Any = None) -> ClientPeer:
    view = View(asyncio.get_running_loop())
    connection = ClientPeer.make_connection(ConnectionConfig(handshake), entropy=OsEntropy(),
                                            view=view)
    if prepare is not None:
        prepare(connection)
    return await ClientPeer.start(connection, running.address, view=view)


def _named(name: str, owner: str | None = None) -> Any:
    def match(event: dict[str, Any]) -> bool:
        return event["name"] == name and (owner is None or event["data"].get("owner") == owner)
    return match


async def _closed_by_server(peer: ClientPeer) -> int | None:
    found = await peer.view.wait_for(_named("quic:connection_closed", "remote"), timeout=5)
    return None if found is None else int(found[1]["data"]["error_code"])


async def test_the_peer_completes_a_handshake_and_a_request(site: Path) -> None:
    async with reference(site) as running:
        peer = await _start(running)
        try:
            done = await peer.view.wait_for(_named("velocity:handshake_completed"), timeout=5)
            assert done is not None and done[1]["data"]["mode"] == "pdk"
            response = await asyncio.wait_for(peer.request(
                "GET", "/index.html", authority="localhost"), 5)
            assert response.status == 200 and response.body == b"<h1>peer</h1>"
            view = peer.view
            assert view.datagrams_sent >= 2 and view.datagrams_received >= 1
            assert any(e["name"] == "quic:datagrams_received" for e in view.events)
        finally:
            await peer.close()


@pytest.mark.spec("VEL-FRM-004")
async def test_frames_in_the_wrong_space_over_udp(site: Path) -> None:
    async with reference(site) as running:
        peer = await _start(running)
        try:
            await peer.wait_ready()
            peer.connection.send_frames(Epoch.HANDSHAKE, [Stream(0, b"wrong space")])
            peer.flush()
            assert await _closed_by_server(peer) == ErrorCode.PROTOCOL_VIOLATION
        finally:
            await peer.close()


@pytest.mark.spec("VEL-PROF-005", "VEL-PROF-006", "VEL-HS-011")
@pytest.mark.parametrize(("share", "profile"), [
    ("short", "balanced"), ("long", "balanced"), ("zero_ecdh", "balanced"),
    ("mlkem_coefficient_q", "balanced"), ("mlkem_coefficient_q", "secure"),
    ("p384_off_curve", "secure"), ("zero_ecdh", "secure")])
async def test_each_hostile_key_share_is_illegal_parameter(site: Path, share: str,
                                                           profile: str) -> None:
    client, server = (SECURE_CLIENT, SECURE_SERVER) if profile == "secure" else (
        CLIENT_HS, SERVER_HS)
    async with reference(site, server) as running:
        peer = await _start(running, client, prepare=lambda c: setattr(
            c.handshake, "key_share_factory", key_share(share)))
        try:
            assert await _closed_by_server(peer) == ErrorCode.ILLEGAL_PARAMETER
        finally:
            await peer.close()


@pytest.mark.spec("VEL-HS-003", "VEL-PKT-011")
async def test_a_client_hello_in_reversed_overlapping_pieces_over_udp(site: Path) -> None:
    async with reference(site) as running:
        peer = await _start(running, prepare=lambda c: setattr(
            c.seams, "crypto_policy", crypto_chunks([300], order="reverse", overlap=20,
                                                    duplicate=True)))
        try:
            assert await peer.view.wait_for(_named("velocity:handshake_completed"),
                                            timeout=5) is not None
            sent = [e["data"] for e in peer.view.events if e["name"] == "quic:datagrams_sent"]
            first = [size["length"] for d in sent for size in d["raw"]][:6]
            assert len(first) == 6 and min(first) >= 1200  # padded Initial datagrams
        finally:
            await peer.close()


async def test_a_dropped_first_flight_is_sent_again(site: Path) -> None:
    async with reference(site) as running:
        peer = await _start(running, prepare=lambda c: setattr(
            c.seams, "packet_mutator", packet_mutator(drop=(0, 1))))
        try:
            assert await peer.view.wait_for(_named("velocity:handshake_completed"),
                                            timeout=10) is not None
        finally:
            await peer.close()


@pytest.mark.spec("VEL-PKT-012")
async def test_raw_datagrams_reach_the_target(site: Path) -> None:
    """A 1200-byte long header of an unknown version draws Version Negotiation; the same
    header in 1199 bytes draws nothing (VEL-VN-002)."""
    async with reference(site) as running:
        peer = await _start(running)
        try:
            header = (bytes([0xC0]) + (0x0A0A0A0A).to_bytes(4, "big") + bytes([8]) + b"d" * 8
                      + bytes([8]) + b"s" * 8)

            def negotiations(start: int) -> list[bytes]:
                return [d for d in peer.view.received_since(start)
                        if d[0] & 0x80 and d[1:5] == bytes(4)]
            start = len(peer.view.events)
            peer.send_datagram(header + bytes(1199 - len(header)))
            await asyncio.sleep(0.3)
            assert negotiations(start) == []
            start = len(peer.view.events)
            peer.send_datagram(header + bytes(1200 - len(header)))
            await peer.view.wait_for(lambda e: bool(negotiations(start)), start=start, timeout=3)
            (answer,) = negotiations(start)
            assert answer[6:14] == b"s" * 8 and answer[15:23] == b"d" * 8  # CIDs swapped
        finally:
            await peer.close()


@pytest.mark.spec("VEL-FB-004", "VEL-FB-008")
async def test_the_peer_as_server_forges_a_directive_for_the_reference_client(
        site: Path, tmp_path: Path) -> None:
    """A fallback-only ServerPeer whose hook strips the directive's MAC: the reference client
    holding the key reports DOWNGRADE_DETECTED and never follows."""
    server_hs = replace(SERVER_HS, fallback=FallbackPolicy(port=9, mode="fallback-only"))
    peer = ServerPeer.listen(EndpointConfig(ConnectionConfig(server_hs)), _app(site))
    peer.configure = lambda c: setattr(c.handshake, "message_hook", lambda m: replace(
        m, mac=b"") if isinstance(m, Fallback) else m)
    ca = tmp_path / "ca.pem"
    ca.write_bytes(server_identity(BALANCED).ca_certificate.public_bytes(Encoding.PEM))
    config = EasyClientConfig(f"127.0.0.1:{peer.address[1]}", hostname="localhost",
                              ca_file=ca, key_cache_dir=tmp_path / "cache",
                              pinned_key=PinnedServerKey(
                                  BALANCED, server_identity(BALANCED).encapsulation_key))
    try:
        async with AsyncEasyClient(config) as client:
            with pytest.raises(ConnectionError, match="possible downgrade attack"):
                await client.fetch("/index.html")
        view = await peer.wait_connection(1)
        assert view is not None
        sent = [e["data"] for e in view.events if e["name"] == "velocity:message_sent"]
        assert sent[0]["message_type"] == "fallback" and sent[0]["mac_length"] == 0
    finally:
        await peer.close()


async def test_a_view_keeps_payloads_up_to_its_bound() -> None:
    """A target sends what it likes: a View keeps the first PAYLOAD_BYTES of payloads it
    opened, whole packets only, and judging them is bounded with them."""
    view = View(asyncio.get_running_loop())
    packet = bytes(1000)
    for number in range(PAYLOAD_BYTES // 1000 + 50):
        view.opened(PacketType.ONE_RTT, number, packet)
    assert len(view.payloads) == PAYLOAD_BYTES // 1000
    assert [n for _, n, _ in view.payloads] == list(range(PAYLOAD_BYTES // 1000))
