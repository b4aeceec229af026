"""The client-side wire catalogue (scenarios/clients: hello-retry, retry, resumption,
trust-modes, packets) measured against deliberately weakened clients: the reference
AsyncEasyClient, the in-process target, monkeypatched to take a HELLO_RETRY it must refuse,
a Retry or Version Negotiation packet it must discard, to restart its packet numbers, to
send early data a ticket does not allow, to stop probing, or to forget its first-use pin.
Each weakening FAILs the scenario of the requirement it breaks, at the step that checks
it, while the reference PASSes the same scenario. Runs go through the engine over real UDP
on 127.0.0.1 (harness server and client in one process, so each weakening is confined to
the client side); every wait is bounded by the scenario's budget."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from harness.scenario.verdict import Verdict
from tests.harness.test_catalogue_clients import ROOT, scenario, verdict
from velocity.core import receiver
from velocity.core.connection import Address, Connection
from velocity.core.handshake import client as handshake_client
from velocity.core.handshake.messages import HelloRetry, Message
from velocity.core.hybrid import PROFILES
from velocity.core.packet import Epoch
from velocity.crypto.pki import X509Verifier

HELLO_RETRY = "scenarios/clients/hello-retry.yaml"
RETRY = "scenarios/clients/retry.yaml"
RESUMPTION = "scenarios/clients/resumption.yaml"
TRUST = "scenarios/clients/trust-modes.yaml"
PACKETS = "scenarios/clients/packets.yaml"
Patch = tuple[Any, str, Callable[..., Any]]


def takes_any_hello_retry(self: handshake_client.ClientHandshake, message: Message,
                          raw: bytes) -> None:
    """VEL-HS-021 broken: any selected_profile is taken, offered and shared for or not."""
    assert isinstance(message, HelloRetry)
    chosen = PROFILES[message.selected_profile]
    self._retried = True
    self._early_data = False
    self.transcript.replace_with_message_hash(chosen.hash_name)
    self.transcript.add(raw)
    self._send_client_hello(self._offered_profiles(), chosen)
    self._transition(handshake_client.ClientState.WAIT_SH)


def any_version_negotiation(conn: Connection, data: bytes) -> None:
    """VEL-VN-004 broken: a Version Negotiation packet listing our version ends the attempt."""
    conn.abandon("version negotiation", trigger="version_mismatch")


def ignores_version_negotiation(conn: Connection, data: bytes) -> None:
    """VEL-VN-004 broken: no common version does not end the attempt."""


original_on_retry = receiver._on_retry


def restarts_numbers_after_retry(conn: Connection, data: bytes, now: float) -> None:
    """VEL-RTY-003 broken: the Initial after Retry starts again at packet number 0."""
    original_on_retry(conn, data, now)
    conn.spaces[Epoch.INITIAL].next_packet_number = 0


original_connect = Connection.connect


def numbers_from_one(self: Connection, address: Address, *, now: float) -> None:
    """VEL-PKT-008 broken: every space starts at packet number 1."""
    for space in self.spaces.values():
        space.next_packet_number = 1
    original_connect(self, address, now=now)


original_init = handshake_client.ClientHandshake.__init__


def early_data_whatever_the_ticket(self: handshake_client.ClientHandshake,
                                   config: handshake_client.ClientConfig,
                                   **kwargs: Any) -> None:
    """VEL-RES-006 broken: a ticket's max_early_data of 0 does not stop 0-RTT."""
    original_init(self, config, **kwargs)
    self._early_data = bool(config.ticket and config.early_data)


original_probe = Connection._probe


def client_never_probes(self: Connection, epoch: Epoch) -> None:
    """VEL-CONN-002 broken: a client's PTO sends nothing."""
    if not self.is_client:
        original_probe(self, epoch)


WEAKENED: list[tuple[str, str, str, str, list[Patch]]] = [
    (HELLO_RETRY, "clients/hello-retry-for-the-shared-profile-is-refused", "expect_close",
     "VEL-HS-021", [(handshake_client.ClientHandshake, "_on_hello_retry",
                     takes_any_hello_retry)]),
    (HELLO_RETRY, "clients/hello-retry-for-an-unoffered-profile-is-refused[profile=secure]",
     "expect_close", "VEL-HS-021",
     [(handshake_client.ClientHandshake, "_on_hello_retry", takes_any_hello_retry)]),
    (RETRY, "clients/invalid-retry-is-discarded[retry=bad_tag]", "expect", "VEL-RTY-002",
     [(receiver, "retry_tag_valid", lambda *args, **kwargs: True)]),
    (RETRY, "clients/invalid-retry-is-discarded[retry=late]", "expect", "VEL-RTY-002",
     [(receiver, "_awaiting_first_answer", lambda conn: conn.is_client)]),
    (RETRY, "clients/invalid-retry-is-discarded[retry=twice]", "expect", "VEL-RTY-002",
     [(receiver, "_awaiting_first_answer", lambda conn: conn.is_client)]),
    (RETRY, "clients/retry-is-followed-with-the-token", "assert", "VEL-RTY-003",
     [(receiver, "_on_retry", restarts_numbers_after_retry)]),
    (RETRY, "clients/version-negotiation-that-does-not-apply-is-discarded[vn=ours]",
     "expect", "VEL-VN-004", [(receiver, "_on_version_negotiation", any_version_negotiation)]),
    (RETRY, "clients/version-negotiation-that-does-not-apply-is-discarded[vn=late]",
     "expect", "VEL-VN-004", [(receiver, "_awaiting_first_answer", lambda conn: conn.is_client)]),
    (RETRY, "clients/version-negotiation-without-its-version-ends-the-attempt",
     "expect_client", "VEL-VN-004",
     [(receiver, "_on_version_negotiation", ignores_version_negotiation)]),
    (PACKETS, "clients/packet-numbers-start-at-zero-and-increase", "expect", "VEL-PKT-008",
     [(Connection, "connect", numbers_from_one)]),
    (PACKETS, "clients/client-probes-a-silent-server", "expect", "VEL-CONN-002",
     [(Connection, "_probe", client_never_probes)]),
    (RESUMPTION, "clients/no-early-data-when-the-ticket-allows-none", "assert",
     "VEL-RES-006", [(handshake_client.ClientHandshake, "__init__",
                      early_data_whatever_the_ticket)]),
    (TRUST, "clients/first-use-pin-refuses-a-changed-key", "expect_client", "VEL-CERT-003",
     [(X509Verifier, "_trust_on_first_use", lambda self, name, digest: None)]),
]


@pytest.mark.parametrize(("path", "name", "step", "requirement", "patches"), [
    pytest.param(*case, id=case[1], marks=pytest.mark.spec(case[3])) for case in WEAKENED])
async def test_a_weakened_client_fails_the_scenario_of_the_rule_it_breaks(
        monkeypatch: pytest.MonkeyPatch, path: str, name: str, step: str, requirement: str,
        patches: list[Patch]) -> None:
    assert requirement in scenario(path, name).spec
    assert (await verdict(path, name)).verdict is Verdict.PASS
    for owner, attribute, replacement in patches:
        monkeypatch.setattr(owner, attribute, replacement)
    outcome = await verdict(path, name)
    assert outcome.verdict is Verdict.FAIL, outcome.reason
    assert outcome.step is not None and _step_kind(outcome.step) == step, outcome.step


def _step_kind(where: str) -> str:
    """The kind of the step at ``path:LINE`` (the ``- kind:`` on that line)."""
    path, line = where.rsplit(":", 1)
    text = (ROOT / path).read_text().splitlines()[int(line) - 1]
    return text.strip().removeprefix("- ").split(":", 1)[0]
