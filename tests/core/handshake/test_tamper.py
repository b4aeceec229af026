"""Every field of every handshake message, altered in flight, ends the handshake with the
error code the spec names for it; a truncated message is a DECODE_ERROR. The expected codes
follow from the spec: values a receiver can check are refused directly (ILLEGAL_PARAMETER,
NO_APPLICATION_PROTOCOL, CERTIFICATE_INVALID, DOWNGRADE_DETECTED); anything else changes the
transcript or a secret and is caught by FINISHED (BAD_FINISHED) or the binder (BAD_BINDER)."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from typing import Any

import pytest

from harness.pair import PairSpec, make_pair, run_handshake
from tests.core.handshake.helpers import closed_with, completed, events_of, rewrite
from tests.core.handshake.test_resumption import SEALER, first_ticket
from velocity.core.errors import ErrorCode as E
from velocity.core.handshake.common import TicketIssued
from velocity.core.handshake.messages import MESSAGE_CLASSES, MessageType
from velocity.core.handshake.server import FallbackPolicy
from velocity.core.hybrid import BALANCED, LIGHT, SECURE
from velocity.core.packet import Epoch
from velocity.core.protection import Aead

FLOWS: dict[str, PairSpec] = {
    "pdk": PairSpec(mode="pdk", seed="tamper"),
    "discovery": PairSpec(mode="discovery", seed="tamper"),
    "retry": PairSpec(mode="discovery", seed="tamper", client={"profiles": (LIGHT, BALANCED)},
                      server={"profiles": (BALANCED,)}),
    "fallback": PairSpec(mode="pdk", seed="tamper",
                         server={"fallback": FallbackPolicy(mode="fallback-only")}),
}


def flip(value: bytes) -> bytes:
    return value[:-1] + bytes([value[-1] ^ 0x01]) if value else b"\x01"


def mutate(name: str, value: Any) -> Any:
    """One change per field type: flip a byte, bump an integer, alter a list."""
    if isinstance(value, bytes):
        return b"velocity/2" if name == "alpn" and value == b"velocity/1" else flip(value)
    if name == "lifetime":
        return 604801  # one second past the 7-day limit
    if isinstance(value, int):
        return value + 1
    if name == "alpn":
        return (*value, b"h3x")
    if name == "profiles":
        return (*value, SECURE.code)
    if name == "aeads":
        return tuple(reversed(value))
    if name == "certificates":
        return (flip(value[0]), *value[1:])
    if name == "extensions":
        return tuple((t, flip(v)) for t, v in value) or ((27, b"grease"),)
    raise AssertionError(f"no mutation for {name}")


# (flow, message, field) -> (error code, side that detects it)
EXPECTED: dict[tuple[str, str, str], tuple[int, str]] = {
    **{("pdk", "CLIENT_HELLO", f): (E.BAD_FINISHED, "client")
       for f in ("random", "alpn", "profiles", "aeads", "key_share", "extensions")},
    ("pdk", "CLIENT_HELLO", "key_share_profile"): (E.ILLEGAL_PARAMETER, "server"),
    ("pdk", "SERVER_HELLO", "random"): (E.BAD_FINISHED, "client"),
    ("pdk", "SERVER_HELLO", "selected_profile"): (E.ILLEGAL_PARAMETER, "client"),
    ("pdk", "SERVER_HELLO", "selected_aead"): (E.ILLEGAL_PARAMETER, "client"),
    ("pdk", "SERVER_HELLO", "key_share"): (E.BAD_FINISHED, "client"),
    ("pdk", "SERVER_HELLO", "psk_status"): (E.ILLEGAL_PARAMETER, "client"),
    ("pdk", "SERVER_HELLO", "server_key_status"): (E.ILLEGAL_PARAMETER, "client"),
    ("pdk", "SERVER_HELLO", "extensions"): (E.BAD_FINISHED, "client"),
    ("pdk", "ENCRYPTED_EXTENSIONS", "alpn"): (E.NO_APPLICATION_PROTOCOL, "client"),
    ("pdk", "ENCRYPTED_EXTENSIONS", "aead"): (E.ILLEGAL_PARAMETER, "client"),
    ("pdk", "ENCRYPTED_EXTENSIONS", "extensions"): (E.BAD_FINISHED, "client"),
    ("pdk", "FINISHED/server", "verify_data"): (E.BAD_FINISHED, "client"),
    ("pdk", "FINISHED/client", "verify_data"): (E.BAD_FINISHED, "server"),
    ("pdk", "NEW_SESSION_TICKET", "lifetime"): (E.ILLEGAL_PARAMETER, "client"),
    **{("discovery", "CLIENT_HELLO", f): (E.BAD_FINISHED, "server")
       for f in ("random", "alpn", "profiles", "aeads", "key_share", "extensions")},
    ("discovery", "CLIENT_HELLO", "key_share_profile"): (E.ILLEGAL_PARAMETER, "server"),
    ("discovery", "SERVER_HELLO", "random"): (E.BAD_FINISHED, "server"),
    ("discovery", "SERVER_HELLO", "key_share"): (E.BAD_FINISHED, "server"),
    ("discovery", "SERVER_HELLO", "extensions"): (E.BAD_FINISHED, "server"),
    ("discovery", "ENCRYPTED_EXTENSIONS", "extensions"): (E.BAD_FINISHED, "server"),
    ("discovery", "CERTIFICATE", "certificates"): (E.CERTIFICATE_INVALID, "client"),
    ("discovery", "KEM_CIPHERTEXT", "ciphertext"): (E.BAD_FINISHED, "server"),
    ("discovery", "FINISHED/client", "verify_data"): (E.BAD_FINISHED, "server"),
    ("discovery", "FINISHED/server", "verify_data"): (E.BAD_FINISHED, "client"),
    ("retry", "HELLO_RETRY", "selected_profile"): (E.ILLEGAL_PARAMETER, "client"),
    ("retry", "HELLO_RETRY", "extensions"): (E.BAD_FINISHED, "server"),
    **{("fallback", "FALLBACK", f): (E.DOWNGRADE_DETECTED, "client")
       for f in ("alpn", "host", "port", "reason", "reason_text", "retry_after", "mac")},
}


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for flow in FLOWS:
        for key in EXPECTED:
            if key[0] == flow:
                cases.append(key)
    return cases


def _message_fields(name: str) -> list[str]:
    cls = MESSAGE_CLASSES[MessageType[name.split("/", maxsplit=1)[0]]]
    return [f.name for f in dataclasses.fields(cls)]


def test_the_table_covers_every_field_of_every_message_in_each_flow() -> None:
    for flow, messages in (("pdk", ["CLIENT_HELLO", "SERVER_HELLO", "ENCRYPTED_EXTENSIONS",
                                    "FINISHED/server", "FINISHED/client"]),
                           ("discovery", ["CERTIFICATE", "KEM_CIPHERTEXT"]),
                           ("retry", ["HELLO_RETRY"]), ("fallback", ["FALLBACK"])):
        for message in messages:
            for field in _message_fields(message):
                assert (flow, message, field) in EXPECTED, (flow, message, field)


@pytest.mark.spec("VEL-HS-002", "VEL-HS-030", "VEL-HS-032", "VEL-HS-040", "VEL-HS-070",
                  "VEL-KS-004", "VEL-FB-004", "VEL-AUTH-021")
@pytest.mark.parametrize(("flow", "message", "field"), _cases(),
                         ids=["/".join(c) for c in _cases()])
def test_tampered_field(flow: str, message: str, field: str) -> None:
    msg_type = MessageType[message.split("/", maxsplit=1)[0]]
    sender = message.split("/")[1] if "/" in message else None
    client, server = make_pair(FLOWS[flow])
    tamper = rewrite(msg_type, lambda m: replace(m, **{field: mutate(field, getattr(m, field))}),
                     sender=sender)
    code, side = EXPECTED[(flow, message, field)]
    closed_with(run_handshake(client, server, tamper=tamper), code, side)


@pytest.mark.spec("VEL-HS-002")
@pytest.mark.parametrize("flow", ["pdk", "discovery", "retry", "fallback"])
def test_every_truncated_message_is_a_decode_error(flow: str) -> None:
    client, server = make_pair(FLOWS[flow])
    reference = run_handshake(client, server)
    messages = [(f.sender, m) for f in reference.flights for m in f.messages
                if f.epoch != Epoch.APPLICATION and m[0] != MessageType.FINISHED]
    for index, (sender, _) in enumerate(messages):
        seen = [0]

        def cut(who: str, epoch: Epoch, raw: bytes, target: int = index,
                seen: list[int] = seen) -> bytes:
            if epoch == Epoch.APPLICATION or raw[0] == MessageType.FINISHED:
                return raw
            seen[0] += 1
            if seen[0] - 1 != target:
                return raw
            body = raw[4:-1]
            return bytes([raw[0]]) + len(body).to_bytes(3, "big") + body

        client, server = make_pair(FLOWS[flow])
        run = run_handshake(client, server, tamper=cut)
        closed_with(run, E.DECODE_ERROR, "server" if sender == "client" else "client")


def test_resumed_client_hello_fields_are_bound_by_the_binder() -> None:
    ticket = first_ticket()
    for field in ("random", "alpn", "profiles", "aeads", "key_share"):
        client, server = make_pair(PairSpec(mode="discovery", seed="bind", client={
            "ticket": ticket, "early_data": True}, server={"ticket_sealer": SEALER}))
        change = rewrite(MessageType.CLIENT_HELLO,
                         lambda m, f=field: replace(m, **{f: mutate(f, getattr(m, f))}))
        run = run_handshake(client, server, tamper=change)
        closed_with(run, E.BAD_BINDER, "server")
    client, server = make_pair(PairSpec(mode="discovery", seed="bind", client={"ticket": ticket},
                                        server={"ticket_sealer": SEALER}))
    assert events_of(run_handshake(client, server).client_events, TicketIssued)
    assert completed(run_handshake(*make_pair(PairSpec(aeads=(Aead.AES_128_GCM,)))))
