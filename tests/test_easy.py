"""EasyClient against a real server on 127.0.0.1: key discovery and caching, PDK on the next
client, one connection for many requests, the blocking form, and following a FALLBACK
directive to a real HTTP/3 origin (aioquic)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import itertools
import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from harness.netsim import Impairment, UdpRelay
from harness.pair import PairSpec, make_configs, server_identity
from harness.peer import ServerPeer
from velocity.aio.client import FallbackError, HandshakeError, connect
from velocity.aio.server import serve
from velocity.core.connection import ConnectionConfig
from velocity.core.endpoint import EndpointConfig
from velocity.core.errors import ErrorCode
from velocity.core.handshake.client import PinnedServerKey
from velocity.core.handshake.common import FallbackDirected
from velocity.core.handshake.messages import Finished
from velocity.core.handshake.server import FallbackPolicy
from velocity.core.hybrid import BALANCED
from velocity.crypto.sealing import ticket_sealer
from velocity.easy import (
    MAX_DIRECTIVE_LIFETIME,
    AsyncEasyClient,
    EasyClient,
    EasyClientConfig,
    KeyChanged,
)
from velocity.http.app import Application
from velocity.http.h1 import request
from velocity.http.h3 import ensure_tls_certificate, serve_h3
from velocity.http.static import StaticFiles
from velocity.keystore import CachedKey, KeyCache

CLIENT_HS, SERVER_HS = make_configs(PairSpec(mode="discovery", server={"publish_key": True}))


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "public"
    root.mkdir()
    (root / "index.html").write_text("<h1>home</h1>")
    (root / "big.bin").write_bytes(hashlib.shake_256(b"big").digest(300_000))
    return root


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_bytes(server_identity(BALANCED).ca_certificate.public_bytes(Encoding.PEM))
    return path


def application(root: Path) -> Application:
    return Application(StaticFiles(root), api=True, clock=lambda: dt.datetime.now(dt.UTC))


@asynccontextmanager
async def velocity_server(root: Path, **server: Any) -> AsyncIterator[str]:
    config = EndpointConfig(ConnectionConfig(replace(SERVER_HS, **server)))
    running = await serve("127.0.0.1", 0, config, application(root))
    try:
        yield f"127.0.0.1:{running.address[1]}"
    finally:
        await running.close()


@pytest.mark.spec("VEL-FB-005")
async def test_discovers_caches_then_pdk_and_reuses_one_connection(
        site: Path, ca_file: Path, tmp_path: Path) -> None:
    async with velocity_server(site) as target:
        config = (EasyClientConfig.builder(target).hostname("localhost").trust_ca(ca_file)
                  .key_cache(tmp_path / "cache").build())
        async with AsyncEasyClient(config) as client:
            first = await client.fetch("/index.html")
            big = await client.fetch("/big.bin")
            status = await client.fetch_json("/api/status")
            echo = await client.fetch_json("/api/echo", payload={"hello": "velocity"})
        assert echo["headers"]["host"] == "localhost", "the server name is the authority"
        assert first.status == 200 and first.text() == "<h1>home</h1>"
        assert big.body == (site / "big.bin").read_bytes()
        assert first.handshake is not None and first.handshake.mode.value == "discovery"
        assert first.key_cached and list((tmp_path / "cache" / "keys").glob("*.json"))
        assert big.handshake is first.handshake  # the same connection carried every request
        assert status["auth_mode"] == "discovery" and echo["method"] == "POST"
        async with AsyncEasyClient(config) as again:
            second = await again.fetch("/index.html")
        assert second.handshake is not None and second.handshake.mode.value == "pdk"
        assert second.via == "velocity/1" and not second.key_cached


@contextmanager
def server_thread(root: Path) -> Iterator[str]:
    """A Velocity server on its own event loop, for the blocking client."""
    ready: list[str] = []
    started = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        async with velocity_server(root) as target:
            ready.append(target)
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),))
    thread.start()
    try:
        assert started.wait(10)
        yield ready[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def test_blocking_client_keeps_its_connection_between_calls(site: Path, ca_file: Path,
                                                            tmp_path: Path) -> None:
    with server_thread(site) as target:
        config = EasyClientConfig(target, hostname="localhost", ca_file=ca_file,
                                  key_cache_dir=tmp_path / "cache")
        with EasyClient(config) as client:
            assert client.fetch_text("/index.html") == "<h1>home</h1>"
            assert client.fetch_json("/api/status")["velocity"] is True
            first = client.fetch("/index.html")
            later = [client.fetch("/index.html") for _ in range(3)]
        assert first.handshake is not None
        assert all(got.handshake is first.handshake for got in later)


@pytest.mark.spec("VEL-FB-005", "VEL-FB-006")
async def test_follows_fallback_to_http3_origin(site: Path, tmp_path: Path) -> None:
    cert, key = ensure_tls_certificate(tmp_path / "certs", ("127.0.0.1",))
    origin = await serve_h3("127.0.0.1", 0, application(site).route, certificate=cert,
                            key=key)
    policy = FallbackPolicy(port=origin.address[1], mode="fallback-only")
    try:
        async with velocity_server(site, fallback=policy) as target:
            config = EasyClientConfig(target, insecure=True, key_cache_dir=tmp_path / "c")
            async with AsyncEasyClient(config) as client:
                got = await client.fetch("/big.bin")
                status = await client.fetch_json("/api/status")
                echo = await client.fetch_json("/api/echo", payload={"over": "h3"})
            assert origin.accepted == 1  # one HTTP/3 connection carried all three
            assert echo["method"] == "POST" and json.loads(echo["body"]) == {"over": "h3"}
            assert got.via == "h3" and got.status == 200 and got.handshake is None
            assert got.body == (site / "big.bin").read_bytes()
            assert got.fallback is not None and got.fallback.port == origin.address[1]
            assert status == {"velocity": False}
            refusing = EasyClientConfig(target, insecure=True, follow_fallback=False,
                                        key_cache_dir=tmp_path / "c")
            with pytest.raises(FallbackError, match="h3"):
                async with AsyncEasyClient(refusing) as client:
                    await client.fetch("/index.html")
    finally:
        origin.close()


@pytest.mark.spec("VEL-RES-006")
async def test_resumed_connection_sends_its_get_as_zero_rtt(site: Path, ca_file: Path,
                                                           tmp_path: Path) -> None:
    async with velocity_server(site) as target:
        config = EasyClientConfig(target, hostname="localhost", ca_file=ca_file,
                                  key_cache_dir=tmp_path / "cache")
        async with AsyncEasyClient(config) as client:
            first = await client.fetch("/index.html")
            await client.close()  # keeps the ticket from the connection it closes
            resumed = await client.fetch("/big.bin")
            after = await client.fetch("/index.html")
        assert not first.early_data and first.handshake is not None
        assert resumed.early_data and resumed.handshake is not None
        assert resumed.handshake.mode.value == "resumption"
        assert resumed.body == (site / "big.bin").read_bytes()
        assert not after.early_data and after.handshake is resumed.handshake
        no_early = EasyClientConfig(target, hostname="localhost", ca_file=ca_file,
                                    key_cache_dir=tmp_path / "cache", early_data=False)
        async with AsyncEasyClient(no_early) as client:
            await client.fetch("/index.html")
            await client.close()
            plain = await client.fetch("/index.html")
        assert not plain.early_data and plain.status == 200


@pytest.mark.spec("VEL-HTTP-005")
async def test_server_answers_unsafe_early_requests_with_425(site: Path) -> None:
    async with velocity_server(site) as target:
        host, port = target.split(":")
        async with connect(host, int(port), ConnectionConfig(CLIENT_HS)) as first:
            await request(await first.open_stream(), "GET", "/", authority=target)
            await asyncio.sleep(0.05)  # the ticket follows the handshake
            ticket = first.tickets[-1]
        resumed = ConnectionConfig(replace(CLIENT_HS, ticket=ticket.ticket, early_data=True),
                                   remembered_transport_parameters=ticket.transport_parameters)
        async with connect(host, int(port), resumed, early=True) as client:
            early = [asyncio.ensure_future(request(await client.open_stream(), method, path,
                                                   authority=target, body=body))
                     for method, path, body in (("POST", "/api/echo", b"twice?"),
                                                ("GET", "/index.html", b""))]
            await client.wait_handshake()
            refused, allowed = await asyncio.gather(*early)
            assert client.connection.early_data_accepted
            late = await request(await client.open_stream(), "POST", "/api/echo",
                                 authority=target, body=b"once")
        assert refused.status == 425 and b"0-RTT" in refused.body
        assert allowed.status == 200 and allowed.body == b"<h1>home</h1>"
        assert late.status == 200 and b"once" in late.body


async def test_progress_follows_the_body(site: Path, ca_file: Path, tmp_path: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    async with velocity_server(site) as target:
        config = EasyClientConfig(target, hostname="localhost", ca_file=ca_file,
                                  key_cache_dir=tmp_path / "cache")
        async with AsyncEasyClient(config) as client:
            got = await client.fetch("/big.bin", progress=lambda n, total: seen.append((n, total)))
    size = len(got.body)
    assert size == 300_000 and seen[-1] == (size, size) and len(seen) > 1
    assert all(a[0] < b[0] for a, b in itertools.pairwise(seen))


@asynccontextmanager
async def fallback_origin(site: Path, tmp_path: Path, **policy: Any) -> AsyncIterator[
        tuple[str, Any, Any]]:
    """A fallback-only Velocity server in front of a real HTTP/3 origin: (target, the
    Velocity server, the origin)."""
    cert, key = ensure_tls_certificate(tmp_path / "certs", ("127.0.0.1",))
    origin = await serve_h3("127.0.0.1", 0, application(site).route, certificate=cert,
                            key=key)
    config = EndpointConfig(ConnectionConfig(replace(SERVER_HS, fallback=FallbackPolicy(
        port=origin.address[1], mode="fallback-only", **policy))))
    running = await serve("127.0.0.1", 0, config, application(site))
    try:
        yield f"127.0.0.1:{running.address[1]}", running, origin
    finally:
        await running.close()
        origin.close()


@pytest.mark.spec("VEL-FB-008", "VEL-FB-009", "VEL-AUTH-011")
async def test_stale_key_never_leads_to_an_unauthenticated_fallback(site: Path,
                                                                     tmp_path: Path) -> None:
    """The attack of a forged STALE_KEM_KEY, then a forged FALLBACK into the rediscovery, as an
    honest server plays it: a rotated-out cached key, a fallback-only server. The client
    knows the origin speaks Velocity/1: it rediscovers, refuses the unauthenticated directive
    (DOWNGRADE_DETECTED), never reaches the HTTP/3 origin, and keeps its cached key (before
    the fix it dropped the key and followed the directive)."""
    stale = server_identity(BALANCED, seed=77)
    cache = KeyCache(tmp_path / "cache")
    cached = CachedKey("balanced", stale.key_id.hex(),
                       base64.b64encode(stale.encapsulation_key).decode(), "00" * 32)
    async with fallback_origin(site, tmp_path) as (target, _, origin):
        host, port = target.rsplit(":", 1)
        cache.put(host, int(port), cached)
        config = EasyClientConfig(target, insecure=True, key_cache_dir=tmp_path / "cache")
        async with AsyncEasyClient(config) as client:
            with pytest.raises(HandshakeError) as failed:
                await client.fetch("/index.html")
        assert failed.value.error_code == ErrorCode.DOWNGRADE_DETECTED
        assert "possible downgrade attack" in str(failed.value)
        assert str(tmp_path / "cache") in str(failed.value), "it says what to clear"
        assert origin.accepted == 0
        assert cache.get(host, int(port)) == cached


@pytest.mark.spec("VEL-FB-012", "VEL-FB-003")
async def test_an_authenticated_directive_is_kept_and_an_advisory_one_is_not(
        site: Path, tmp_path: Path) -> None:
    async with fallback_origin(site, tmp_path) as (target, running, origin):
        pinned = PinnedServerKey(BALANCED, server_identity(BALANCED).encapsulation_key)
        config = EasyClientConfig(target, insecure=True, pinned_key=pinned,
                                  key_cache_dir=tmp_path / "cache")
        async with AsyncEasyClient(config) as client:
            first = await client.fetch("/index.html")
            heard = running.datagrams_received
            again = await client.fetch("/index.html")
        assert first.fallback is not None and first.fallback.authenticated
        assert again.via == "h3" and running.datagrams_received == heard, (
            "retry_after 0: the authenticated directive holds for the client's life")
        advisory = EasyClientConfig(target, insecure=True, key_cache_dir=tmp_path / "other")
        async with AsyncEasyClient(advisory) as client:
            first = await client.fetch("/index.html")
            heard = running.datagrams_received
            again = await client.fetch("/index.html")
        assert first.fallback is not None and not first.fallback.authenticated
        assert again.via == "h3" and running.datagrams_received > heard, (
            "an unauthenticated directive served one request only")
        assert origin.accepted == 2


@pytest.mark.spec("VEL-FB-012", "VEL-FB-013")
@pytest.mark.parametrize(("retry_after", "kept"), [
    (30, 30.0), (0, MAX_DIRECTIVE_LIFETIME), (10 * 24 * 3600, MAX_DIRECTIVE_LIFETIME)])
async def test_an_authenticated_directive_lasts_its_retry_after_and_at_most_a_day(
        retry_after: int, kept: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the loop's clock: kept until retry_after has passed (0: the client's life, which
    is at most a day, as any longer value); an unauthenticated one is never kept."""
    loop = asyncio.get_running_loop()
    now = [loop.time()]
    monkeypatch.setattr(loop, "time", lambda: now[0])
    client = AsyncEasyClient(EasyClientConfig("127.0.0.1:9", insecure=True))
    directive = FallbackDirected("h3", "127.0.0.1", 443, 1, "", retry_after, True)
    client._keep_directive(directive)
    start = now[0]
    now[0] = start + kept - 0.001
    assert client._kept_directive() is directive
    now[0] = start + kept
    assert client._kept_directive() is None
    client._keep_directive(replace(directive, authenticated=False))
    assert client._kept_directive() is None


@pytest.mark.spec("VEL-RES-006")
async def test_every_resumed_fetch_keeps_a_ticket_for_the_next(site: Path, ca_file: Path,
                                                               tmp_path: Path) -> None:
    """Clients that keep tickets on disk, one after the other: each resumes and sends its GET
    as 0-RTT. The answer to a 0-RTT GET can arrive before the client's FINISHED leaves, and so
    before the ticket the server issues on it: a client that closed at once left no ticket,
    and every second fetch was a full handshake."""
    async with velocity_server(site) as target:
        host, port = target.rsplit(":", 1)
        # 30 ms each way: the 0-RTT answer is back a round trip before the ticket
        relay = UdpRelay((host, int(port)), Impairment(delay=0.03))
        front = await relay.start()
        config = EasyClientConfig(f"{front[0]}:{front[1]}", hostname="localhost",
                                  ca_file=ca_file, key_cache_dir=tmp_path / "cache",
                                  keep_tickets=True)
        modes = []
        try:
            for _ in range(4):
                async with AsyncEasyClient(config) as client:
                    got = await client.fetch("/index.html")
                assert got.handshake is not None
                modes.append((got.handshake.mode.value, got.early_data))
        finally:
            relay.close()
    assert modes == [("discovery", False)] + [("resumption", True)] * 3


@pytest.mark.spec("VEL-AUTH-022", "VEL-CERT-002", "VEL-FB-009")
async def test_a_cached_key_serves_only_its_name_and_trust(site: Path, ca_file: Path,
                                                           tmp_path: Path) -> None:
    """A key learned with --insecure is not used by a client that trusts a CA, nor a key
    learned for one name by a client asking for another: each discovers and validates again
    (before, the cached key skipped validation and PDK showed no certificate). A key a CA
    validated serves trust on first use and insecure mode too."""
    async with velocity_server(site) as target:
        cache = tmp_path / "cache"
        insecure = EasyClientConfig(target, hostname="localhost", insecure=True,
                                    key_cache_dir=cache)
        trusting = replace(insecure, insecure=False, ca_file=ca_file)
        modes = []
        for config in (insecure, insecure, trusting, trusting):
            async with AsyncEasyClient(config) as client:
                got = await client.fetch("/index.html")
            assert got.handshake is not None
            modes.append(got.handshake.mode.value)
        assert modes == ["discovery", "pdk", "discovery", "pdk"]
        for weaker in (replace(insecure, insecure=False), insecure):  # tofu, insecure
            async with AsyncEasyClient(weaker) as client:
                got = await client.fetch("/index.html")
            assert got.handshake is not None and got.handshake.mode.value == "pdk"
        other = replace(trusting, hostname="other.example")
        async with AsyncEasyClient(other) as client:
            with pytest.raises(HandshakeError) as failed:
                await client.fetch("/index.html")
        assert failed.value.error_code == ErrorCode.CERTIFICATE_INVALID


@pytest.mark.spec("VEL-FB-009", "VEL-AUTH-011")
async def test_stale_kem_key_never_rediscovers_under_another_trust(site: Path, ca_file: Path,
                                                                   tmp_path: Path) -> None:
    """A user-given key, or a key cached under a CA, is not replaced by a rediscovery that a
    weaker trust would judge: the fetch fails in one line naming what to do (before, any
    client rediscovered under its own trust and cached what it found)."""
    stale = server_identity(BALANCED, seed=78)
    async with velocity_server(site) as target:
        host, port = target.rsplit(":", 1)
        pinned = replace(EasyClientConfig(target, hostname="localhost", insecure=True,
                                          key_cache_dir=tmp_path / "given"),
                         pinned_key=PinnedServerKey(BALANCED, stale.encapsulation_key))
        async with AsyncEasyClient(pinned) as client:
            with pytest.raises(KeyChanged, match="does not know the key it was given"):
                await client.fetch("/index.html")
        cache = KeyCache(tmp_path / "cache")
        cache.put(host, int(port), CachedKey(
            "balanced", stale.key_id.hex(), base64.b64encode(stale.encapsulation_key).decode(),
            "00" * 32, "localhost", "ca:0123456789abcdef"))
        tofu = EasyClientConfig(target, hostname="localhost", key_cache_dir=tmp_path / "cache")
        async with AsyncEasyClient(tofu) as client:
            with pytest.raises(KeyChanged, match="velocity keys forget"):
                await client.fetch("/index.html")
        assert cache.get(host, int(port)) is not None and cache.get(
            host, int(port)).trust == "ca:0123456789abcdef"  # type: ignore[union-attr]
        other_ca = replace(tofu, ca_file=ca_file)  # not the stored CA: the key is not used
        async with AsyncEasyClient(other_ca) as client:
            got = await client.fetch("/index.html")
        assert got.handshake is not None and got.handshake.mode.value == "discovery"


@pytest.mark.spec("VEL-CERT-003", "VEL-HS-101")
async def test_a_first_use_pin_is_written_only_after_the_servers_finished(
        site: Path, tmp_path: Path) -> None:
    """A server whose FINISHED does not verify (one that relays a real certificate without
    holding its key) leaves no pin and no cached key behind; the honest server then gets
    both."""
    def bad_finished(message: Any) -> Any:
        if isinstance(message, Finished):
            return replace(message, verify_data=bytes(len(message.verify_data)))
        return message
    peer = ServerPeer.listen(EndpointConfig(ConnectionConfig(SERVER_HS)), application(site))
    peer.configure = lambda c: setattr(c.handshake, "message_hook", bad_finished)
    target = f"127.0.0.1:{peer.address[1]}"
    config = EasyClientConfig(target, hostname="localhost", key_cache_dir=tmp_path / "c")
    pins = tmp_path / "c" / "pins"
    try:
        async with AsyncEasyClient(config) as client:
            with pytest.raises(ConnectionError, match="0x107"):  # BAD_FINISHED
                await client.fetch("/index.html")
        assert not pins.exists() or not any(pins.glob("*"))
        assert KeyCache(tmp_path / "c").get("127.0.0.1", peer.address[1]) is None
        peer.configure = None
        async with AsyncEasyClient(config) as client:
            got = await client.fetch("/index.html")
        assert got.status == 200 and any(pins.glob("*"))
        assert KeyCache(tmp_path / "c").get("127.0.0.1", peer.address[1]) is not None
    finally:
        await peer.close()


@pytest.mark.spec("VEL-FB-009", "VEL-FB-010")
async def test_a_refused_resumption_is_retried_in_pdk_mode(site: Path, ca_file: Path,
                                                          tmp_path: Path) -> None:
    """The server restarted with a new ticket key and went fallback-only: it cannot open the
    client's ticket, so its directive to the resuming client is unauthenticated. The client
    refuses that one, retries once in PDK mode with its cached key, and gets (and follows)
    a MACed directive."""
    cert, key = ensure_tls_certificate(tmp_path / "certs", ("127.0.0.1",))
    origin = await serve_h3("127.0.0.1", 0, application(site).route, certificate=cert,
                            key=key)
    config = EndpointConfig(ConnectionConfig(SERVER_HS))
    running = await serve("127.0.0.1", 0, config, application(site))
    target = f"127.0.0.1:{running.address[1]}"
    client_config = EasyClientConfig(target, hostname="localhost", ca_file=ca_file,
                                     key_cache_dir=tmp_path / "cache", keep_tickets=True,
                                     insecure=False)
    try:
        async with AsyncEasyClient(client_config) as client:
            assert (await client.fetch("/index.html")).status == 200
        restarted = replace(SERVER_HS, ticket_sealer=ticket_sealer(bytes([7]) * 32),
                            fallback=FallbackPolicy(port=origin.address[1],
                                                    mode="fallback-only"))
        running.endpoint.config = replace(config, connection=ConnectionConfig(restarted))
        async with AsyncEasyClient(replace(client_config, insecure=True, ca_file=None)
                                   ) as client:
            got = await client.fetch("/index.html")
        assert got.via == "h3" and got.fallback is not None and got.fallback.authenticated
    finally:
        await running.close()
        origin.close()
