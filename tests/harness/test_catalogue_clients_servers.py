"""The downgrade catalogue's role: client scenarios (scenarios/downgrade) measured against
the in-process reference server weakened in its FALLBACK directive: a MAC that does not
cover the CLIENT_HELLO it received, no MAC for a client that sent a server_key block, and
no MAC under the PSK for a resuming client. Each FAILs the scenario of the requirement it
breaks, while the reference PASSes it. Runs go through the engine over real UDP on
127.0.0.1, bounded by each scenario's budget."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.scenario.engine import run_scenario
from harness.scenario.loader import load_file
from harness.scenario.spec import requirements
from harness.scenario.verdict import Outcome, Verdict
from harness.targets import InProcessServer, Target
from velocity.core.handshake import server as handshake_server
from velocity.core.keyschedule import fallback_mac

ROOT = Path(__file__).resolve().parents[2]
STRIPPED = "scenarios/downgrade/stripped-alpn.yaml"
BALANCED = "downgrade/stripped-alpn-gets-an-authenticated-directive[profile=balanced]"
RESUMING = "downgrade/resuming-client-gets-a-psk-authenticated-directive"
REFUSED = "closed by the harness with DOWNGRADE_DETECTED (0x109)"


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    server = InProcessServer(tmp_path_factory.mktemp("target"))
    try:
        yield server.start()
    finally:
        server.stop()


async def verdict(target: Target, name: str, *, seed: str) -> Outcome:
    """One run; runs against the one server take distinct seeds (the same seed gives the
    same connection ids, which a server still closing the last run's connection drops)."""
    found = {s.name: s for s in load_file(ROOT / STRIPPED, STRIPPED, requirements())}
    return (await run_scenario(found[name], target, seed=seed, strict=False)).outcome


@pytest.mark.spec("VEL-FB-003")
async def test_a_directive_mac_that_does_not_cover_the_client_hello_fails(
        target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (await verdict(target, BALANCED, seed="reference")).verdict is Verdict.PASS

    def over_nothing(hash_name: str, secret: bytes, client_hello: bytes, unsigned: bytes,
                     **kwargs: Any) -> bytes:
        return fallback_mac(hash_name, secret, b"", unsigned, **kwargs)

    monkeypatch.setattr(handshake_server, "fallback_mac", over_nothing)
    outcome = await verdict(target, BALANCED, seed="over nothing")
    assert outcome.verdict is Verdict.FAIL
    assert REFUSED in outcome.reason
    assert outcome.expected == 'velocity:fallback_directed where data.authenticated = true'


@pytest.mark.spec("VEL-FB-003")
async def test_an_advisory_directive_to_a_pdk_client_fails(
        target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handshake_server, "fallback_mac", lambda *args, **kwargs: b"")
    outcome = await verdict(target, BALANCED, seed="advisory")
    assert outcome.verdict is Verdict.FAIL
    assert REFUSED in outcome.reason


@pytest.mark.spec("VEL-FB-010")
async def test_a_directive_to_a_resuming_client_without_the_psk_mac_fails(
        target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (await verdict(target, RESUMING, seed="reference")).verdict is Verdict.PASS
    monkeypatch.setattr(handshake_server.ServerHandshake, "_fallback_psk",
                        lambda self, hello, raw: None)
    outcome = await verdict(target, RESUMING, seed="no psk mac")
    assert outcome.verdict is Verdict.FAIL
    assert outcome.reason.startswith('no velocity:message_received where data.message_type = '
                                     '"fallback", data.reason = 0, data.mac_length gte 32')
