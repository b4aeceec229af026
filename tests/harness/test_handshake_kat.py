"""The independent check of the recorded handshakes (harness.vectors.handshake_kat): it runs
without ``velocity``, it fails vectors regenerated from a reference that gets a secret wrong
in both endpoints alike (which the regeneration check cannot see), and its PSK binder and
FALLBACK MACs hold on bytes built here from the spec's formulas."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import hmac
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.layers import messages as ml
from harness.vectors import VECTORS_DIR, handshake_kat, handshakes
from harness.vectors.check import Outcome, run
from velocity.core.handshake import client as client_module
from velocity.core.handshake import server as server_module
from velocity.core.hybrid import ClientKeyShare, HybridSecret
from velocity.core.keyschedule import KeySchedule

ROOT = Path(__file__).resolve().parents[2]
HANDSHAKE_FILES = sorted((VECTORS_DIR / "handshakes").glob("*.json"))


def _document(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS_DIR / "handshakes" / f"{name}.json").read_text())
    return data


def _failed(results: list[tuple[str, object, object]]) -> list[str]:
    return [what for what, recomputed, recorded in results if recomputed != recorded]


# --- independence ----------------------------------------------------------------------

INDEPENDENT_RUN = """
import json, sys
from pathlib import Path
from harness.vectors import handshake_kat
failed = [what for path in sys.argv[1:]
          for what, mine, theirs in handshake_kat.check(json.loads(Path(path).read_text()))
          if mine != theirs]
print(json.dumps({"failed": failed,
                  "velocity": sorted(m for m in sys.modules if m.split(".")[0] == "velocity")}))
"""


@pytest.mark.spec("VEL-GEN-003")
def test_the_independent_check_runs_without_velocity() -> None:
    """Run the whole check on the committed files in a fresh interpreter: it passes and no
    ``velocity`` module (so no ``velocity.core``) was ever imported."""
    done = subprocess.run([sys.executable, "-c", INDEPENDENT_RUN, *map(str, HANDSHAKE_FILES)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, check=True)
    report = json.loads(done.stdout)
    assert report == {"failed": [], "velocity": []}


# --- a reference wrong in both endpoints ----------------------------------------------


def _drop_kem_half(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hybrid secret is the X25519 secret alone, in both endpoints."""
    def weaken(secret: HybridSecret) -> HybridSecret:
        return dataclasses.replace(secret, shared_secret=secret.ecdh_secret)

    finish, share = ClientKeyShare.finish, server_module.server_key_share
    monkeypatch.setattr(ClientKeyShare, "finish", lambda self, peer: weaken(finish(self, peer)))

    def server_share(*args: Any) -> tuple[bytes, HybridSecret]:
        wire, secret = share(*args)
        return wire, weaken(secret)

    monkeypatch.setattr(server_module, "server_key_share", server_share)


def _drop_static_from_pdk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The PDK handshake secret takes ss_eph only (the 64 bytes of the balanced profile)."""
    enter = KeySchedule.enter_handshake
    monkeypatch.setattr(KeySchedule, "enter_handshake",
                        lambda self, ikm: enter(self, ikm[:64]))


def _fallback_mac_over_body(monkeypatch: pytest.MonkeyPatch) -> None:
    """The FALLBACK MAC covers the CLIENT_HELLO without its 4-byte header."""
    for module in (client_module, server_module):
        mac = module.fallback_mac
        monkeypatch.setattr(module, "fallback_mac",
                            lambda h, s, hello, fb, mac=mac, **kw: mac(h, s, hello[4:], fb,
                                                                       **kw))


BROKEN_REFERENCES: dict[str, tuple[Callable[[pytest.MonkeyPatch], None],
                                   dict[str, set[str]]]] = {
    "hybrid secret without ML-KEM": (_drop_kem_half, {
        case: {"recorded hybrid shared secret", "server FINISHED", "client FINISHED",
               "NEW_SESSION_TICKET 1 PSK"}
        for case in ("pdk", "discovery", "hrr", "resumption-0rtt")}
        | {"fallback-resumption": {"ticket handshake: server FINISHED", "FALLBACK mac"}}),
    "PDK schedule without the static secret": (_drop_static_from_pdk, {
        "pdk": {"server FINISHED", "client FINISHED", "recorded client key schedule",
                "recorded server key schedule", "NEW_SESSION_TICKET 1 PSK"}}),
    "FALLBACK MAC over the wrong bytes": (_fallback_mac_over_body, {
        "fallback": {"FALLBACK mac"}, "fallback-resumption": {"FALLBACK mac"}}),
}


def _regenerate_and_run(directory: Path) -> Iterator[Outcome]:
    handshakes.regenerate(directory / "handshakes", VECTORS_DIR / "handshakes")
    yield from run("handshake", directory)


@pytest.mark.spec("VEL-PROF-002", "VEL-KS-001", "VEL-FB-003")
@pytest.mark.parametrize("broken", list(BROKEN_REFERENCES))
def test_a_reference_wrong_on_both_sides_fails_the_independent_check(
        broken: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Regenerated from the broken reference, every case still passes the regeneration
    check, and the independent check fails exactly the cases it touches, naming what
    differs."""
    patch, expected = BROKEN_REFERENCES[broken]
    patch(monkeypatch)
    outcomes = list(_regenerate_and_run(tmp_path))
    failed: dict[str, set[str]] = {}
    for outcome in outcomes:
        if not outcome.ok:
            case, _, what = outcome.name.partition(": ")
            failed.setdefault(case, set()).add(what)
    assert not [w for names in failed.values() for w in names if w.startswith("regenerated")]
    assert set(failed) == set(expected)
    for case, names in expected.items():
        assert names <= failed[case], (case, failed[case])


def test_the_unbroken_reference_regenerates_vectors_that_pass(tmp_path: Path) -> None:
    outcomes = list(_regenerate_and_run(tmp_path))
    assert [o for o in outcomes if not o.ok] == []
    for path in HANDSHAKE_FILES:
        assert (tmp_path / "handshakes" / path.name).read_text() == path.read_text()


# --- MACs on bytes built here ---------------------------------------------------------


def _expand_label(secret: bytes, label: bytes, context: bytes) -> bytes:
    """HKDF-Expand-Label with SHA-384 (spec section 5), on ``cryptography``'s HKDF-Expand."""
    full = b"velocity1 " + label
    info = (48).to_bytes(2, "big") + bytes([len(full)]) + full + bytes([len(context)]) + context
    return HKDFExpand(hashes.SHA384(), 48, info).derive(secret)


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, hashlib.sha384(data).digest(), "sha384").digest()


def _binder(psk: bytes, transcript_before: bytes, truncated: bytes) -> bytes:
    """VEL-RES-003, from the formulas: early_secret = HKDF-Extract(0, PSK), binder_key =
    Derive-Secret(early_secret, "res binder", ""), then a FINISHED-style MAC."""
    early = hmac.new(bytes(48), psk, "sha384").digest()
    binder_key = _expand_label(early, b"res binder", hashlib.sha384(b"").digest())
    return _hmac(_expand_label(binder_key, b"finished", b""), transcript_before + truncated)


def _client_hello(profile: int, ticket: bytes, binder_of: Callable[[bytes], bytes]) -> bytes:
    """A CLIENT_HELLO offering ``ticket``; ``binder_of`` gets the truncated message."""
    def build(binder: bytes) -> bytes:
        offer = ml.VPreSharedKey(identity=ticket, obfuscated_age=7, binder=binder)
        return bytes(ml.VClientHello(
            random=bytes(range(32)), alpn=[ml.VProtocol(protocol=b"velocity/1")],
            profiles=[0xFE70, 0x11EC], aeads=[1], key_share_profile=profile,
            key_share=b"\x01" * 40, extensions=[
                ml.VExtension(type=ml.TRANSPORT_PARAMETERS, value=b"tp"),
                ml.VExtension(type=ml.PRE_SHARED_KEY, value=bytes(offer))]))
    placeholder = build(bytes(48))
    return build(binder_of(placeholder[:-49]))


def _psk_handshake(messages: list[tuple[str, bytes]], psk: bytes,
                   ticket: bytes) -> handshake_kat.Handshake:
    suite = handshake_kat.SUITES_BY_NAME["balanced"]
    read = [handshake_kat.Msg(sender, ml.dissect_messages(raw)[0], raw)
            for sender, raw in messages]
    return handshake_kat.Handshake(read, {}, {}, suite, [handshake_kat.Issued(ticket, psk,
                                                                              suite)])


@pytest.mark.spec("VEL-RES-003", "VEL-HS-022")
@pytest.mark.parametrize("synthetic", [True, False], ids=["message_hash", "plain CH1"])
def test_the_binder_after_hello_retry_covers_the_synthetic_message(synthetic: bool) -> None:
    psk, ticket = hashlib.sha384(b"psk").digest(), b"ticket 1"
    ch1 = _client_hello(0xFE70, ticket, lambda truncated: _binder(psk, b"", truncated))
    retry = bytes(ml.VHelloRetry(selected_profile=0x11EC, extensions=[]))
    digest = hashlib.sha384(ch1).digest()
    first = b"\xfe" + len(digest).to_bytes(3, "big") + digest if synthetic else ch1
    ch2 = _client_hello(0x11EC, ticket,
                        lambda truncated: _binder(psk, first + retry, truncated))
    hs = _psk_handshake([("client", ch1), ("server", retry), ("client", ch2)], psk, ticket)
    handshake_kat.check_psk_offers(hs)
    expected_failures = [] if synthetic else ["CLIENT_HELLO 2 PSK binder"]
    assert _failed(hs.results) == expected_failures
    assert len(hs.results) == 4 and hs.psk is not None


def _resuming_fallback(label: bytes) -> dict[str, Any]:
    """The recorded resuming CLIENT_HELLO answered by a FALLBACK built here, MACed as the
    lead's rule for a resuming client says (with ``label``; the rule's is "res fallback")."""
    document = copy.deepcopy(_document("resumption-0rtt"))
    client_hello = bytes.fromhex(document["flights"][0]["messages"][0])
    psk = bytes.fromhex(document["secrets"]["psk"])
    fallback = ml.VFallback(alpn=b"h3", host=b"", port=443, reason=1,
                            reason_text=b"fallback-only mode", retry_after=0, mac=b"")
    fb_secret = hmac.new(bytes(48), psk, "sha384").digest()
    key = _expand_label(fb_secret, label, hashlib.sha384(client_hello).digest())
    fallback.mac = _hmac(key, client_hello + bytes(fallback))
    document["flights"] = [document["flights"][0],
                           {"sender": "server", "epoch": "INITIAL",
                            "messages": [bytes(fallback).hex()]}]
    document["inputs"]["server"]["encapsulations"] = []
    document["secrets"].update(hybrid_shared_secret=None, client_schedule=[],
                               server_schedule=[])
    return document


@pytest.mark.spec("VEL-FB-003")
@pytest.mark.parametrize(("label", "failures"), [(b"res fallback", []),
                                                 (b"fallback", ["FALLBACK mac"])])
def test_a_fallback_to_a_resuming_client_is_maced_under_the_psk(label: bytes,
                                                                failures: list[str]) -> None:
    assert _failed(handshake_kat.check(_resuming_fallback(label))) == failures


# --- bad vector files -----------------------------------------------------------------


def _broken_copy(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> list[Outcome]:
    document = _document("pdk")
    edit(document)
    (tmp_path / "handshakes").mkdir()
    (tmp_path / "handshakes" / "pdk.json").write_text(json.dumps(document))
    return [o for o in run("handshake", tmp_path) if not o.ok]


def _truncate_server_hello(document: dict[str, Any]) -> None:
    document["flights"][1]["messages"][0] = document["flights"][1]["messages"][0][:-2]


def _drop_an_input(document: dict[str, Any]) -> None:
    document["inputs"]["server"]["encapsulations"] = []


def _change_the_ticket_key(document: dict[str, Any]) -> None:
    document["inputs"]["ticket_key"] = "00" * 32


def _tamper_server_finished(document: dict[str, Any]) -> None:
    flight = document["flights"][2]["messages"]
    flight[1] = flight[1][:-2] + ("00" if flight[1][-2:] != "00" else "01")


@pytest.mark.parametrize(("edit", "named"), [
    (_truncate_server_hello, "run pdk.json: ValueError: flight 2 (server, INITIAL)"),
    (_drop_an_input, "run pdk.json: ValueError: inputs.server.encapsulations"),
    (_change_the_ticket_key, "pdk: NEW_SESSION_TICKET 1 opens"),
    (_tamper_server_finished, "pdk: server FINISHED"),
])
def test_a_bad_vector_file_fails_naming_the_problem(
        tmp_path: Path, edit: Callable[[dict[str, Any]], None], named: str) -> None:
    failed = _broken_copy(tmp_path, edit)
    assert any(f"{o.name}: {o.detail}".startswith(named) for o in failed), failed


@st.composite
def damaged_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A committed handshake vector with one flight message or one recorded input cut,
    changed, dropped or moved, as a careless edit or a hostile file would."""
    document = copy.deepcopy(_document(draw(st.sampled_from([p.stem for p in HANDSHAKE_FILES]))))
    if draw(st.booleans()):
        flight = draw(st.sampled_from(document["flights"]))
        messages = flight["messages"]
        index = draw(st.integers(0, len(messages) - 1))
        raw = bytes.fromhex(messages[index])
        action = draw(st.sampled_from(["cut", "flip", "drop", "move"]))
        if action == "cut":
            messages[index] = raw[: draw(st.integers(0, len(raw) - 1))].hex()
        elif action == "flip":
            at = draw(st.integers(0, len(raw) - 1))
            messages[index] = (raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))])
                               + raw[at + 1 :]).hex()
        elif action == "drop":
            del messages[index]
        else:
            messages.insert(0, messages.pop(index))
    else:
        side = document["inputs"][draw(st.sampled_from(["client", "server"]))]
        values = side[draw(st.sampled_from(sorted(side)))]
        if values and draw(st.booleans()):
            values.pop()
        else:
            values.append(draw(st.binary(max_size=70)).hex())
    return document


@settings(max_examples=60, deadline=None)
@given(damaged_documents())
def test_a_damaged_vector_fails_or_is_refused_never_crashes(document: dict[str, Any]) -> None:
    """The check names what no longer matches, or refuses the file with a ValueError (which
    the command line reports as one failed vector); nothing else escapes."""
    try:
        results = handshake_kat.check(document)
    except ValueError as exc:
        assert str(exc)
        return
    assert all(isinstance(what, str) for what, _, _ in results)


COMPLETED = ["pdk", "discovery", "hrr", "resumption-0rtt"]


@st.composite
def flipped_transcripts(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A completed handshake with one byte changed in a message the FINISHED MACs cover."""
    document = copy.deepcopy(_document(draw(st.sampled_from(COMPLETED))))
    spots = [(f, i) for f in document["flights"] for i, m in enumerate(f["messages"])
             if not m.startswith("04")]  # NEW_SESSION_TICKET is outside the transcript
    flight, index = draw(st.sampled_from(spots))
    raw = bytearray(bytes.fromhex(flight["messages"][index]))
    at = draw(st.integers(0, len(raw) - 1))
    raw[at] ^= draw(st.integers(1, 255))
    flight["messages"][index] = raw.hex()
    return document, f"{document['name']} message {raw[0]:#04x} byte {at}"


@pytest.mark.spec("VEL-HS-104", "VEL-HS-070")
@settings(max_examples=40, deadline=None)
@given(flipped_transcripts())
def test_a_changed_transcript_byte_is_noticed(case: tuple[dict[str, Any], str]) -> None:
    document, where = case
    try:
        failed = _failed(handshake_kat.check(document))
    except ValueError:
        return
    assert failed, where
