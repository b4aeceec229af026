"""The role: server catalogue (scenarios/clients, scenarios/certificates) measured against
deliberately weakened clients: the reference AsyncEasyClient, the in-process target,
monkeypatched to follow a FALLBACK it could not authenticate, to compare MACs by presence
only, to forget its relationship with the origin when it rediscovers after STALE_KEM_KEY,
to follow a directive to a protocol it never offered, or to leave its Initial datagrams
unpadded. Each weakening FAILs the scenario of the requirement it breaks, naming it, while
the reference PASSes the same scenario. Runs go through the engine (harness.scenario) over
real UDP on 127.0.0.1; every wait is bounded by the scenario's budget."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from harness.scenario.engine import run_scenario
from harness.scenario.loader import load_file
from harness.scenario.model import Scenario
from harness.scenario.spec import requirements
from harness.scenario.verdict import Outcome, Verdict
from harness.targets import IN_PROCESS, Target
from velocity import easy
from velocity.core import sender
from velocity.core.handshake import client as handshake_client
from velocity.core.handshake.common import FallbackDirected
from velocity.core.handshake.messages import Fallback, Message
from velocity.crypto import aead

ROOT = Path(__file__).resolve().parents[2]
CLIENT = Target("in-process", "in-process reference client", IN_PROCESS)


def scenario(path: str, name: str) -> Scenario:
    """The scenario named ``name`` (id and parameters, as pytest shows it) of ``path``."""
    found = {s.name: s for s in load_file(ROOT / path, path, requirements())}
    return found[name]


def step_line(path: str, scenario_id: str, step: str) -> str:
    """``path:LINE`` of the first ``- step:`` line of scenario ``scenario_id`` in ``path``."""
    lines = (ROOT / path).read_text().splitlines()
    start = lines.index(f"id: {scenario_id}")
    found = next(i for i in range(start, len(lines)) if lines[i].lstrip().startswith(f"- {step}:"))
    return f"{path}:{found + 1}"


async def verdict(path: str, name: str) -> Outcome:
    result = await run_scenario(scenario(path, name), CLIENT, seed=0, strict=False)
    return result.outcome


def follows_any_fallback(self: handshake_client.ClientHandshake, message: Message,
                         raw: bytes) -> None:
    """VEL-FB-004 broken: every directive is taken, MACed or not."""
    assert isinstance(message, Fallback)
    self._emit(FallbackDirected(message.alpn.decode(), message.host.decode(), message.port,
                                message.reason, message.reason_text.decode(),
                                message.retry_after, False))
    self._transition(handshake_client.ClientState.FALLBACK)


FORGED = "scenarios/clients/trust.yaml"
DOWNGRADE = "scenarios/clients/downgrade.yaml"
HELLO = "scenarios/clients/client-hello.yaml"
STALE_THEN_FORGED = "clients/stale-key-then-unauthenticated-fallback-is-not-followed"


@pytest.mark.spec("VEL-FB-004", "VEL-FB-008")
@pytest.mark.parametrize("mac", ["none", "wrong"])
async def test_a_client_that_follows_an_unauthenticated_fallback_fails(
        monkeypatch: pytest.MonkeyPatch, mac: str) -> None:
    name = f"clients/forged-fallback-is-not-followed[mac={mac}]"
    assert (await verdict(FORGED, name)).verdict is Verdict.PASS
    monkeypatch.setattr(handshake_client.ClientHandshake, "_on_fallback", follows_any_fallback)
    outcome = await verdict(FORGED, name)
    assert outcome.verdict is Verdict.FAIL
    assert outcome.reason.startswith("the client contacted the fallback port")
    assert outcome.step == step_line(FORGED, scenario(FORGED, name).id, "expect_no_contact")


@pytest.mark.spec("VEL-FB-004")
async def test_a_client_that_checks_only_that_a_mac_is_there_fails_the_wrong_mac(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Comparing MACs by presence (its FINISHED check too) lets a wrong MAC through: the
    wrong-MAC scenario FAILs, the missing-MAC one still PASSes (two distinct checks)."""
    monkeypatch.setattr(handshake_client, "macs_equal", lambda got, expected: bool(got))
    wrong = await verdict(FORGED, "clients/forged-fallback-is-not-followed[mac=wrong]")
    assert wrong.verdict is Verdict.FAIL
    assert wrong.reason.startswith("the client contacted the fallback port")
    missing = await verdict(FORGED, "clients/forged-fallback-is-not-followed[mac=none]")
    assert missing.verdict is Verdict.PASS, missing


def forgets_the_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    """VEL-FB-008/009 broken: STALE_KEM_KEY starts a rediscovery even for a key the user
    gave, and the rediscovering handshake no longer counts the relationship it had."""
    monkeypatch.setattr(easy.AsyncEasyClient, "_may_rediscover", lambda self: None)
    real = handshake_client.ClientHandshake.__init__

    def init(self: handshake_client.ClientHandshake, config: handshake_client.ClientConfig,
             **kwargs: Any) -> None:
        real(self, dataclasses.replace(config, known_origin=False), **kwargs)

    monkeypatch.setattr(handshake_client.ClientHandshake, "__init__", init)


@pytest.mark.spec("VEL-FB-008", "VEL-FB-009")
async def test_a_client_that_forgets_the_origin_after_stale_kem_key_follows_the_forgery(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert (await verdict(DOWNGRADE, STALE_THEN_FORGED)).verdict is Verdict.PASS
    forgets_the_origin(monkeypatch)
    outcome = await verdict(DOWNGRADE, STALE_THEN_FORGED)
    assert outcome.verdict is Verdict.FAIL
    assert outcome.reason.startswith("the client contacted the fallback port")
    assert "VEL-FB-008" in scenario(DOWNGRADE, STALE_THEN_FORGED).spec


@pytest.mark.spec("VEL-FB-006")
async def test_a_client_that_follows_a_directive_to_any_protocol_fails(
        monkeypatch: pytest.MonkeyPatch) -> None:
    name = "clients/fallback-to-an-unoffered-protocol-is-not-followed"
    assert (await verdict(DOWNGRADE, name)).verdict is Verdict.PASS
    real = easy.AsyncEasyClient._follow

    async def follow(self: easy.AsyncEasyClient, directive: FallbackDirected,
                     *args: Any) -> easy.Fetched:
        return await real(self, dataclasses.replace(directive, alpn="h3"), *args)

    monkeypatch.setattr(easy.AsyncEasyClient, "_follow", follow)
    outcome = await verdict(DOWNGRADE, name)
    assert outcome.verdict is Verdict.FAIL
    assert outcome.reason.startswith("the client contacted the fallback port")


@pytest.mark.spec("VEL-PKT-011")
async def test_a_client_that_does_not_pad_its_initials_fails_the_padding_scenario(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Unpadded, its CLIENT_HELLO datagrams are discarded (VEL-PKT-012): it never connects."""
    name = "clients/initial-datagrams-are-padded[client_key=none]"
    assert (await verdict(HELLO, name)).verdict is Verdict.PASS
    monkeypatch.setattr(sender, "MIN_INITIAL_DATAGRAM", 0)
    outcome = await verdict(HELLO, name)
    assert outcome.verdict is Verdict.FAIL
    assert outcome.reason == "the target client did not connect within 3 s"
    assert scenario(HELLO, name).spec == ("VEL-PKT-011",)


@pytest.mark.spec("VEL-PKT-011")
async def test_a_client_that_pads_only_its_first_initial_fails_the_padding_scenario(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Its second CLIENT_HELLO datagram is short: the scenario names the Initial packet that
    did not come padded (whether the harness's server then reads it or drops it)."""
    real = sender._seal
    sealed: dict[int, int] = {}

    def seal(conn: Any, plans: Any, now: float, pad_to: int) -> bytes:
        if conn.is_client:
            sealed[id(conn)] = sealed.get(id(conn), 0) + 1
            pad_to = pad_to if sealed[id(conn)] == 1 else 0
        return real(conn, plans, now, pad_to)

    monkeypatch.setattr(sender, "_seal", seal)
    padded = await verdict(HELLO, "clients/initial-datagrams-are-padded[client_key=none]")
    assert padded.verdict is Verdict.FAIL
    assert "data.raw.length gte 1200" in padded.reason and "1 of 2 came" in padded.reason


@pytest.mark.spec("VEL-EXT-003")
async def test_a_client_without_grease_fails_the_should_level_grease_scenario(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Its unknown extension is not of the GREASE form 31·N + 27: a FAIL the plugin turns into
    a warning unless --strict (VEL-EXT-003 is a SHOULD)."""
    name = "clients/client-hello-carries-grease"
    assert (await verdict(HELLO, name)).verdict is Verdict.PASS
    monkeypatch.setattr(handshake_client, "GREASE_BASE", 28)
    outcome = await verdict(HELLO, name)
    assert outcome.verdict is Verdict.FAIL
    assert outcome.reason == "assert 'max(types) % 31 == 27' does not hold"
    assert all(requirements()[i].strict_only for i in scenario(HELLO, name).spec)


LIFETIME = "scenarios/clients/directive-lifetime.yaml"


@pytest.mark.spec("VEL-FB-012")
@pytest.mark.parametrize("when", ["on-receipt", "at-exit"])
@pytest.mark.parametrize("name", [
    "clients/an-unauthenticated-directive-is-not-kept-for-the-next-run",
    "clients/an-authenticated-directive-is-kept-no-longer-than-its-retry-after",
    "clients/a-directive-for-the-visit-ends-with-the-run"])
async def test_a_client_that_keeps_every_directive_for_good_fails(
        monkeypatch: pytest.MonkeyPatch, name: str, when: str) -> None:
    """VEL-FB-012 broken: every directive followed, authenticated or not, is kept for good and
    for every later client (as if written to the key cache and read back by the next run),
    as it arrives or only when the client closes (a cache written at exit, which the first
    run reaches only because run_client ends it): the second run never contacts Velocity/1."""
    assert (await verdict(LIFETIME, name)).verdict is Verdict.PASS
    kept: list[FallbackDirected] = []
    pending: dict[int, list[FallbackDirected]] = {}
    close = easy.AsyncEasyClient.close

    def keep(self: easy.AsyncEasyClient, directive: FallbackDirected) -> None:
        (kept if when == "on-receipt" else pending.setdefault(id(self), [])).append(directive)

    async def close_and_keep(self: easy.AsyncEasyClient) -> None:
        kept.extend(pending.pop(id(self), []))
        await close(self)

    monkeypatch.setattr(easy.AsyncEasyClient, "_keep_directive", keep)
    monkeypatch.setattr(easy.AsyncEasyClient, "_kept_directive",
                        lambda self: kept[-1] if kept else None)
    monkeypatch.setattr(easy.AsyncEasyClient, "close", close_and_keep)
    outcome = await verdict(LIFETIME, name)
    assert outcome.verdict is Verdict.FAIL
    assert outcome.reason == "the target client did not connect within 3 s"
    assert outcome.step == step_line(LIFETIME, scenario(LIFETIME, name).id, "run_client")


async def test_a_client_that_never_follows_the_directive_fails_at_expect_contact(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The lifetime scenarios first check that the client followed the directive: one that
    stops at the directive fails there, not at the second run (which it would pass)."""
    async def refuse(self: easy.AsyncEasyClient, directive: FallbackDirected,
                     *args: Any) -> easy.Fetched:
        raise easy.FallbackError(directive)

    monkeypatch.setattr(easy.AsyncEasyClient, "_follow", refuse)
    name = "clients/a-directive-for-the-visit-ends-with-the-run"
    outcome = await verdict(LIFETIME, name)
    assert outcome.verdict is Verdict.FAIL
    assert outcome.reason.startswith("the client did not contact the fallback port")
    assert outcome.step == step_line(LIFETIME, scenario(LIFETIME, name).id, "expect_contact")


AEADS = ("clients/aes-gcm-first-where-the-cpu-accelerates-aes",
         "clients/chacha20-first-where-aes-is-in-software")


@pytest.mark.spec("VEL-PROF-010")
@pytest.mark.parametrize("accelerated", [True, False], ids=["aes", "no-aes"])
async def test_a_client_that_ignores_its_cpu_fails_the_aead_order_scenario(
        monkeypatch: pytest.MonkeyPatch, accelerated: bool) -> None:
    """On a CPU claimed with (without) AES instructions the reference client offers AES-GCM
    (ChaCha20-Poly1305) first and passes; one with the other order fails."""
    claim = "aes-accelerated" if accelerated else "aes-in-software"
    other = "aes-in-software" if accelerated else "aes-accelerated"
    target = dataclasses.replace(CLIENT, capabilities=CLIENT.capabilities - {other} | {claim})
    name = AEADS[0] if accelerated else AEADS[1]
    monkeypatch.setattr(aead, "cpu_accelerates_aes", lambda: accelerated)
    result = await run_scenario(scenario(HELLO, name), target, seed=0, strict=False)
    assert result.outcome.verdict is Verdict.PASS, result.outcome
    monkeypatch.setattr(aead, "cpu_accelerates_aes", lambda: not accelerated)
    result = await run_scenario(scenario(HELLO, name), target, seed=0, strict=False)
    assert result.outcome.verdict is Verdict.FAIL, result.outcome
    assert "first_aead" in result.outcome.reason
