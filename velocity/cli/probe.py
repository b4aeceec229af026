"""``velocity probe`` (what a server speaks), ``velocity handshake-demo`` (the PQ path and
the legacy downgrade path, for CI smoke use) and ``velocity json-api-demo`` (the JSON API
over Velocity/1).

Exit codes of ``probe``: 0 Velocity/1 negotiated (or the server requires a known key),
10 the server directed the client elsewhere (FALLBACK), 1 failure."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import click

from velocity.aio.client import FallbackError, HandshakeError, connect
from velocity.aio.entropy import OsEntropy
from velocity.aio.server import VelocityServer, serve
from velocity.cli.common import parse_address, parse_alpn, run
from velocity.core.connection import Connection, ConnectionConfig
from velocity.core.endpoint import EndpointConfig
from velocity.core.errors import ErrorCode
from velocity.core.handshake.client import ClientConfig, PinnedServerKey
from velocity.core.handshake.common import CertificateVerifier
from velocity.core.handshake.server import FallbackPolicy, ServerConfig
from velocity.core.hybrid import BALANCED, PROFILES_BY_NAME
from velocity.core.trace import Transcript, flights
from velocity.crypto.aead import client_aeads
from velocity.crypto.identity import ServerIdentity
from velocity.crypto.kem import kem_backend
from velocity.crypto.pki import X509Verifier, fingerprint
from velocity.easy import AsyncEasyClient, EasyClientConfig
from velocity.http.app import Application

EXIT_VELOCITY, EXIT_FALLBACK, EXIT_FAILURE = 0, 10, 1


async def probe_target(host: str, port: int, *, alpn: tuple[bytes, ...], profile: str,
                       server_key: PinnedServerKey | None = None, timeout: float = 5.0,
                       server_name: str | None = None,
                       verifier: CertificateVerifier | None = None,
                       transcript: Transcript | None = None) -> dict[str, Any]:
    """Connect once (discovery unless a key is given) and describe what happened. The
    server name defaults to ``host``, the verifier to accepting any certificate; the
    connection's events go to ``transcript`` when one is given."""
    config = ClientConfig(kem=kem_backend(), alpn=alpn, profiles=(PROFILES_BY_NAME[profile],),
                          aeads=client_aeads(),
                          server_name=server_name or host, server_key=server_key,
                          verifier=verifier or X509Verifier(
                              insecure=True, clock=lambda: dt.datetime.now(dt.UTC)))
    started = time.perf_counter()
    result: dict[str, Any] = {"target": f"{host}:{port}", "offered_alpn": [a.decode()
                                                                           for a in alpn]}
    transcript = transcript if transcript is not None else Transcript()
    connection: Connection | None = None
    try:
        async with connect(host, port, ConnectionConfig(config), timeout=timeout,
                           tracer=transcript) as client:
            done = await asyncio.wait_for(client.wait_handshake(), timeout)
            learned = client.learned_key
            connection = client.connection
            result.update(outcome="velocity", alpn=done.alpn, profile=done.profile,
                          aead=done.aead, auth_mode=done.mode.value,
                          key_published=learned is not None or server_key is not None,
                          key_id=(done.key_id or b"").hex() or None,
                          fingerprint=(fingerprint(learned.certificate_chain[0])
                                       if learned else None))
    except FallbackError as exc:
        d = exc.directive
        result.update(outcome="fallback", fallback={
            "alpn": d.alpn, "host": d.host or host, "port": d.port, "reason": d.reason,
            "reason_text": d.reason_text, "retry_after": d.retry_after,
            "authenticated": d.authenticated})
    except HandshakeError as exc:
        if exc.error_code == ErrorCode.KEM_KEY_REQUIRED:
            result.update(outcome="velocity", key_published=False,
                          note="the server speaks Velocity/1 but requires a known key")
        else:
            known = {e.value: e.name for e in ErrorCode}
            result.update(outcome="failure", reason=exc.reason,
                          error=known.get(exc.error_code, hex(exc.error_code)))
    except (OSError, TimeoutError, ConnectionError) as exc:
        result.update(outcome="failure", reason=str(exc))
    result["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 2)
    if connection is not None:  # counted once the connection is closed
        result.update(bytes_sent=connection.bytes_sent,
                      bytes_received=connection.bytes_received)
    result["flights"] = flights(transcript.events)
    done_at = [e["time"] for e in transcript.events if e["name"] in (
        "velocity:handshake_completed", "velocity:fallback_directed")]
    if done_at:
        result["handshake_ms"] = done_at[0]
    return result


def _flights(result: dict[str, Any]) -> str:
    return ", ".join(f"{'>' if f['direction'] == 'sent' else '<'} {f['bytes']} B "
                     f"({'+'.join(f['spaces'])})" for f in result["flights"])


def _describe(result: dict[str, Any]) -> str:
    if result["outcome"] == "velocity" and "profile" in result:
        key = (f"key published (id {result['key_id']}, fingerprint {result['fingerprint']})"
               if result.get("fingerprint") else f"key id {result.get('key_id')}")
        return (f"{result['target']}: Velocity/1, profile {result['profile']}, "
                f"{result['aead']}, ALPN {result['alpn']}, {result['auth_mode']}, {key}, "
                f"handshake {result['handshake_ms']} ms, {result['bytes_sent']} B sent / "
                f"{result['bytes_received']} B received; flights: {_flights(result)}")
    if result["outcome"] == "velocity":
        return f"{result['target']}: Velocity/1; {result['note']}"
    if result["outcome"] == "fallback":
        f = result["fallback"]
        return (f"{result['target']}: FALLBACK to {f['alpn']} at {f['host']}:{f['port']} "
                f"({f['reason_text']}; {'authenticated' if f['authenticated'] else 'advisory'})")
    return f"{result['target']}: no Velocity/1 handshake: {result.get('reason', '')}"


@click.command()
@click.argument("target")
@click.option("--alpn", default="velocity/1,h3", show_default=True,
              help="Comma-separated ALPN identifiers to offer.")
@click.option("--profile", type=click.Choice(list(PROFILES_BY_NAME)), default="balanced",
              show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--timeout", type=click.FloatRange(0.1), default=5.0, show_default=True)
def probe(target: str, alpn: str, profile: str, as_json: bool, timeout: float) -> None:
    """What TARGET (HOST:PORT) negotiates. Exit 0: Velocity/1, 10: fallback, 1: failure."""
    host, port = parse_address(target, what="TARGET")
    offered = parse_alpn(alpn)
    result = run(probe_target(host, port, alpn=offered, profile=profile, timeout=timeout))
    click.echo(json.dumps(result, indent=1) if as_json else _describe(result))
    raise SystemExit({"velocity": EXIT_VELOCITY, "fallback": EXIT_FALLBACK}.get(
        result["outcome"], EXIT_FAILURE))


async def _local_server(identity: ServerIdentity, *, fallback_only: bool) -> VelocityServer:
    kem = kem_backend()
    policy = FallbackPolicy(mode="fallback-only" if fallback_only else "off")
    config = ServerConfig(kem=kem, static_keys=(identity.static_key(kem),), fallback=policy)
    app = Application(None, api=True, clock=lambda: dt.datetime.now(dt.UTC))
    return await serve("127.0.0.1", 0, EndpointConfig(ConnectionConfig(config)), app)


@asynccontextmanager
async def _local_servers(*fallback_only: bool) -> AsyncIterator[tuple[ServerIdentity,
                                                                      list[VelocityServer]]]:
    """Servers on 127.0.0.1 sharing a fresh identity, one per ``fallback_only`` flag."""
    identity = ServerIdentity.create(BALANCED, entropy=OsEntropy(), names=("127.0.0.1",),
                                     now=dt.datetime.now(dt.UTC))
    servers: list[VelocityServer] = []
    try:
        for flag in fallback_only:
            servers.append(await _local_server(identity, fallback_only=flag))
        yield identity, servers
    finally:
        for server in servers:
            await server.close(grace=0.2)


async def _demo(target: str | None) -> list[tuple[str, bool, str]]:
    if target is not None:
        host, port = parse_address(target, what="--target")
        return await _demo_checks((host, port), (host, port), None)
    async with _local_servers(False, True) as (identity, servers):
        return await _demo_checks(servers[0].address, servers[1].address,
                                  PinnedServerKey(BALANCED, identity.encapsulation_key))


async def _demo_checks(pq_at: tuple[str, int], fallback_at: tuple[str, int],
                       pinned: PinnedServerKey | None) -> list[tuple[str, bool, str]]:
    checks: list[tuple[str, bool, str]] = []
    pq = await probe_target(*pq_at, alpn=(b"velocity/1", b"h3"), profile="balanced")
    checks.append(("post-quantum path", pq["outcome"] == "velocity"
                   and pq.get("profile") == "balanced", _describe(pq)))
    legacy = await probe_target(*fallback_at, alpn=(b"h3",), profile="balanced")
    checks.append(("legacy client is sent to h3", legacy["outcome"] == "fallback"
                   and legacy["fallback"]["alpn"] == "h3", _describe(legacy)))
    if pinned is not None:
        signed = await probe_target(*fallback_at, alpn=(b"velocity/1", b"h3"),
                                    profile="balanced", server_key=pinned)
        checks.append(("fallback is authenticated with a pinned key",
                       signed["outcome"] == "fallback"
                       and signed["fallback"]["authenticated"], _describe(signed)))
    return checks


@click.command("handshake-demo")
@click.option("--target", help="HOST:PORT of a deployment (default: local servers).")
def handshake_demo(target: str | None) -> None:
    """Run the PQ path and the legacy downgrade path; exit 1 if either is wrong."""
    if target is not None:
        parse_address(target, what="--target")
    checks = run(_demo(target))
    for name, ok, detail in checks:
        click.echo(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    if not all(ok for _, ok, _ in checks):
        raise SystemExit(1)



API_CALLS = (("GET", "/api/status", b""),
             ("POST", "/api/echo", json.dumps({"hello": "velocity"}).encode()),
             ("GET", "/api/time", b""))


async def _api_demo(target: str | None, insecure: bool) -> list[tuple[str, int, Any]]:
    if target is not None:
        return await _api_calls(EasyClientConfig(target, insecure=insecure,
                                                 follow_fallback=False))
    async with _local_servers(False) as (identity, servers):
        host, port = servers[0].address
        return await _api_calls(EasyClientConfig(
            f"{host}:{port}", follow_fallback=False,
            pinned_key=PinnedServerKey(BALANCED, identity.encapsulation_key)))


async def _api_calls(config: EasyClientConfig) -> list[tuple[str, int, Any]]:
    results: list[tuple[str, int, Any]] = []
    async with AsyncEasyClient(config) as client:
        for method, path, body in API_CALLS:
            got = await client.fetch(path, method=method, body=body,
                                     headers=[("content-type", "application/json")]
                                     if body else None)
            results.append((f"{method} {path}", got.status,
                            got.json() if got.status == 200 else got.text()))
    return results


@click.command("json-api-demo")
@click.option("--target", help="HOST:PORT of a server run with --api (default: a local one).")
@click.option("--insecure", is_flag=True, help="Accept any certificate when discovering.")
def json_api_demo(target: str | None, insecure: bool) -> None:
    """Call /api/status, /api/echo and /api/time over Velocity/1 and print the answers;
    exit 1 unless all three succeed."""
    if target is not None:
        parse_address(target, what="--target")
    results = run(_api_demo(target, insecure))
    for name, status, answer in results:
        click.echo(f"{name} -> {status}\n{json.dumps(answer, indent=1)}")
    if any(status != 200 for _, status, _ in results):
        raise SystemExit(1)
