"""Measuring the handshake catalogue: each scenario below runs, through the engine, against a
reference server and against one weakened to break the requirement the scenario checks (a
configuration, or one check monkeypatched away); it passes against the first and fails
against the second. Both servers are built the same way (the in-process target's
application, three profiles, one CA each) on 127.0.0.1:0 in the test's event loop. And the
in-process target itself takes the catalogue's bursts of refused handshakes. Waits are the
scenarios' own budgets; nothing counts datagrams or times."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

import velocity.core.endpoint
import velocity.core.handshake.server
from harness.scenario.engine import run_scenario
from harness.scenario.loader import load_file
from harness.scenario.spec import requirements
from harness.scenario.verdict import Outcome, Verdict
from harness.targets import IN_PROCESS, LOOPBACK, InProcessServer, Target
from velocity.aio.entropy import OsEntropy
from velocity.aio.server import serve
from velocity.core.connection import ConnectionConfig
from velocity.core.endpoint import EndpointConfig, ServerEndpoint
from velocity.core.errors import StaleKemKey
from velocity.core.handshake.client import PinnedServerKey
from velocity.core.handshake.common import ReplayFilter
from velocity.core.handshake.messages import ClientHello
from velocity.core.handshake.server import ServerConfig, ServerHandshake
from velocity.core.hybrid import PROFILES_BY_NAME
from velocity.crypto.identity import ServerIdentity
from velocity.crypto.kem import kem_backend
from velocity.crypto.sealing import ticket_sealer
from velocity.http.app import Application
from velocity.http.static import StaticFiles

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("localhost", LOOPBACK)
Chain = Callable[[ServerIdentity], tuple[bytes, ...]]


def leaf_only(identity: ServerIdentity) -> tuple[bytes, ...]:
    return (identity.leaf_der,)


def with_anchor(identity: ServerIdentity) -> tuple[bytes, ...]:
    """The chain with its trust anchor, which VEL-HS-050 omits."""
    return identity.leaf_der, identity.ca_certificate.public_bytes(serialization.Encoding.DER)


@contextlib.asynccontextmanager
async def server(directory: Path, *, names: tuple[str, ...] = NAMES, chain: Chain = leaf_only,
                 **handshake: Any) -> AsyncIterator[Target]:
    """A server like the in-process target, with ``handshake`` overriding ServerConfig
    fields, leaves issued for ``names`` and CERTIFICATE carrying ``chain``."""
    now, entropy, kem = dt.datetime.now(dt.UTC), OsEntropy(), kem_backend()
    identities = [ServerIdentity.create(p, entropy=entropy, now=now, names=names)
                  for p in PROFILES_BY_NAME.values()]
    directory.mkdir()
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(b"".join(i.ca_certificate.public_bytes(serialization.Encoding.PEM)
                                 for i in identities))
    (directory / "index.html").write_text("<p>weakened?</p>\n")
    keys = tuple(dataclasses.replace(i.static_key(kem), certificate_chain=chain(i))
                 for i in identities)
    config = ServerConfig(kem=kem, static_keys=keys, ticket_sealer=ticket_sealer(
        entropy.random(32)), replay_filter=ReplayFilter(), **handshake)
    app = Application(StaticFiles(directory), api=False, clock=lambda: dt.datetime.now(dt.UTC))
    running = await serve(LOOPBACK, 0, EndpointConfig(ConnectionConfig(config)), app,
                          entropy=entropy)
    try:
        yield Target("in-process", f"server {running.address}", IN_PROCESS,
                     address=running.address, server_name="localhost", ca_file=ca_file,
                     keys=tuple(PinnedServerKey(i.profile, i.encapsulation_key)
                                for i in identities))
    finally:
        await running.close(grace=0.2)


async def outcome(target: Target, file: str, name: str, *, strict: bool = False) -> Outcome:
    """The verdict of scenario ``name`` (with its parameters) of ``file`` against ``target``."""
    (scenario,) = [s for s in load_file(ROOT / file, file, requirements()) if s.name == name]
    return (await run_scenario(scenario, target, seed=0, strict=strict)).outcome


async def reference_passes(tmp_path: Path, file: str, name: str) -> None:
    async with server(tmp_path / "reference") as reference:
        result = await outcome(reference, file, name)
    assert result.verdict is Verdict.PASS, result


AUTH = "scenarios/auth/discovery.yaml"
STALE = "scenarios/auth/stale-key.yaml"
VERSION = "scenarios/version/negotiation.yaml"
BASIC = "scenarios/handshake/basic.yaml"
SIZE = "scenarios/size/first-flight.yaml"


@pytest.mark.spec("VEL-HS-070")
async def test_a_server_that_accepts_any_client_finished_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = "auth/client-finished-wrong-pdk[profile=balanced]"
    await reference_passes(tmp_path, AUTH, name)
    monkeypatch.setattr(velocity.core.handshake.server, "macs_equal", lambda a, b: True)
    async with server(tmp_path / "weak") as weak:
        result = await outcome(weak, AUTH, name)
    assert result.verdict is Verdict.FAIL
    assert result.expected == "CONNECTION_CLOSE with BAD_FINISHED (0x107)"


@pytest.mark.spec("VEL-AUTH-011")
async def test_a_server_that_ignores_a_key_id_it_does_not_hold_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = "auth/unknown-key-id-is-stale[alpn=0e0268330a782d6c65676163792d31]"
    await reference_passes(tmp_path, STALE, name)
    checked = ServerHandshake._static_secret

    def lenient(self: ServerHandshake, hello: ClientHello) -> Any:  # the block as if absent
        try:
            return checked(self, hello)
        except StaleKemKey:
            return None, None

    monkeypatch.setattr(ServerHandshake, "_static_secret", lenient)
    async with server(tmp_path / "weak") as weak:
        result = await outcome(weak, STALE, name)
    assert result.verdict is Verdict.FAIL
    assert "error_code = 260" in (result.expected or "")


@pytest.mark.spec("VEL-VN-002")
async def test_a_server_that_answers_small_datagrams_with_version_negotiation_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = "version/small-datagram-is-not-answered"
    await reference_passes(tmp_path, VERSION, name)
    monkeypatch.setattr(velocity.core.endpoint, "MIN_INITIAL_DATAGRAM", 0)
    async with server(tmp_path / "weak") as weak:
        result = await outcome(weak, VERSION, name)
    assert result.verdict is Verdict.FAIL
    assert result.event is not None and result.event["name"] == "quic:datagrams_received"


@pytest.mark.spec("VEL-VN-001")
async def test_a_server_that_never_sends_version_negotiation_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = ("version/unknown-version-is-answered[version=00000001-cids=0810111213141516172840"
            "4142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f6061626364656667-"
            "padded=1145]")
    await reference_passes(tmp_path, VERSION, name)
    monkeypatch.setattr(ServerEndpoint, "_version_negotiation", lambda *args: None)
    async with server(tmp_path / "weak") as weak:
        result = await outcome(weak, VERSION, name)
    assert result.verdict is Verdict.FAIL
    assert result.reason.startswith("no quic:datagrams_received on connection main")


@pytest.mark.spec("VEL-SIZE-002", "VEL-HS-050")
async def test_a_server_whose_discovery_flight_carries_the_trust_anchor_fails(
        tmp_path: Path) -> None:
    """With the CA certificate the balanced flight outgrows three times the client's two
    Initial datagrams: the amplification limit holds the CERTIFICATE back."""
    name = "size/first-flight-discovery"
    await reference_passes(tmp_path, SIZE, name)
    async with server(tmp_path / "weak", chain=with_anchor) as weak:
        result = await outcome(weak, SIZE, name)
    assert result.verdict is Verdict.FAIL
    assert result.expected == 'velocity:message_received where data.message_type = "certificate"'


@pytest.mark.spec("VEL-CERT-002")
async def test_a_server_whose_certificate_does_not_name_it_fails(tmp_path: Path) -> None:
    name = "handshake/discovery-per-profile-and-aead[profile=balanced-aead=AES_128_GCM]"
    await reference_passes(tmp_path, BASIC, name)
    async with server(tmp_path / "weak", names=("other.example",)) as weak:
        result = await outcome(weak, BASIC, name)
    assert result.verdict is Verdict.FAIL
    assert "CERTIFICATE_INVALID" in result.reason and "not valid for localhost" in result.reason


@pytest.mark.spec("VEL-HS-080")
async def test_a_server_issuing_tickets_for_more_than_seven_days_fails(tmp_path: Path) -> None:
    name = "resumption/new-session-ticket"
    await reference_passes(tmp_path, "scenarios/resumption/tickets.yaml", name)
    async with server(tmp_path / "weak", ticket_lifetime=8 * 86400) as weak:
        result = await outcome(weak, "scenarios/resumption/tickets.yaml", name)
    assert result.verdict is Verdict.FAIL
    assert "ILLEGAL_PARAMETER" in result.reason and "lifetime" in result.reason


@pytest.mark.spec("VEL-EXT-003")
async def test_a_server_without_grease_fails_the_should_level_check(tmp_path: Path) -> None:
    name = "extensions/server-sends-grease"
    file = "scenarios/extensions/grease.yaml"
    await reference_passes(tmp_path, file, name)
    async with server(tmp_path / "weak", grease=False) as weak:
        result = await outcome(weak, file, name)
    assert result.verdict is Verdict.FAIL
    assert requirements()["VEL-EXT-003"].strict_only  # pytest: a warning, a failure under --strict


@pytest.mark.spec("VEL-AUTH-020")
async def test_a_server_that_does_not_publish_takes_the_kem_key_required_branch(
        tmp_path: Path) -> None:
    async with server(tmp_path / "unpublished", publish_key=False) as unpublished:
        either = await outcome(unpublished, AUTH, "auth/discovery-or-kem-key-required")
        discovery = await outcome(
            unpublished, BASIC,
            "handshake/discovery-per-profile-and-aead[profile=balanced-aead=AES_128_GCM]")
    assert either.verdict is Verdict.PASS, either
    assert discovery.verdict is Verdict.FAIL
    assert "KEM_KEY_REQUIRED" in discovery.reason


async def test_the_in_process_target_serves_on_after_a_burst_of_refused_handshakes(
        tmp_path: Path) -> None:
    """A connection the server closed during its handshake counts as half-open while it is
    closing; the catalogue runs such scenarios back to back from one address."""
    refused = "".join(f"  - connect: {{name: c{i}, wait: none, hooks: {{key_share: short}}}}\n"
                      for i in range(40))
    closes = "".join(f"  - expect_close: {{conn: c{i}, codes: [ILLEGAL_PARAMETER]}}\n"
                     for i in range(40))
    path = tmp_path / "burst.yaml"
    path.write_text("id: t/burst\ntitle: t\nspec: [VEL-PROF-005]\nrole: client\n"
                    "budget: {timeout: 20}\nsteps:\n" + refused + closes
                    + "  - connect: {}\n  - expect: {event: velocity:handshake_completed}\n")
    (scenario,) = load_file(path, "burst.yaml", requirements())
    (tmp_path / "target").mkdir()
    in_process = InProcessServer(tmp_path / "target")
    try:
        result = await run_scenario(scenario, in_process.start(), seed=0, strict=False)
    finally:
        in_process.stop()
    assert result.outcome.verdict is Verdict.PASS, result.outcome
