"""Normalisation, summaries and diffs of real transcripts (the in-memory pair on a virtual
clock): two runs of one deployment normalise and diff equal; a change of profile, auth mode
or fallback policy is named; ignore patterns drop what they name."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from harness.loopback import ONE_WAY, Network
from harness.transcript import (
    compare,
    compare_baseline,
    diff,
    normalise,
    save_baseline,
    summary,
    validate,
)
from tests.harness.transcript_runs import run_documents
from velocity.core.hybrid import LIGHT, SECURE

SIDES = ("client", "server")


def messages(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["data"] for e in document["events"] if e["name"].startswith("velocity:message")]


@pytest.mark.parametrize("side", SIDES)
def test_two_runs_normalise_equal_and_stay_valid(side: str) -> None:
    """Seeds differ, so CIDs, randoms, secrets, tickets and the reference time differ."""
    one = run_documents(seed="one", grease=False)[side]
    two = run_documents(seed="two", grease=False)[side]
    assert one != two
    assert normalise(one) == normalise(two)
    assert validate(normalise(one)) == []


@pytest.mark.parametrize("side", SIDES)
def test_volatile_fields_are_replaced(side: str) -> None:
    document = run_documents(mode="discovery")[side]
    normal = normalise(document)
    assert normal["connection"] == {"original_dcid": "<cid>"}
    assert normal["reference_time"] == 0 and normal["peer"].endswith(":<port>")
    assert {e["time"] for e in normal["events"]} == {0}
    text = json.dumps(normal)
    digests = set(re.findall(r'"(?:secret|ecdh_secret|kem_secret|shared_secret)": "(\w+)"',
                             text))
    assert digests == {"0" * 16}
    assert set(re.findall(r'"age_add": (\d+)', text)) == {"0"}  # ticket randoms
    assert set(re.findall(r'"issued_ms": (\d+)', text)) <= {"0"}  # the client's ticket
    acks = [f for e in normal["events"] if e["name"].startswith("quic:packet_")
            for f in e["data"]["frames"] if f["frame_type"] == "ack"]
    assert acks and all(f == {"frame_type": "ack"} for f in acks)
    for name in ("quic:packet_sent", "quic:packet_received"):
        numbers: dict[str, list[int]] = {}
        for e in normal["events"]:
            if e["name"] == name:
                header = e["data"]["header"]
                numbers.setdefault(header["packet_type"], []).append(header["packet_number"])
        assert all(n == list(range(len(n))) for n in numbers.values()), numbers


@pytest.mark.parametrize("side", SIDES)
def test_grease_is_taken_out_of_messages_exactly(side: str) -> None:
    """With GREASE (random types, 0-16 random bytes) each message normalises to what it is
    without any: the same extensions and length as in a run that sends none."""
    plain = messages(normalise(run_documents(seed="g", grease=False)[side]))
    for seed in ("g1", "g2", "g3"):
        greased = run_documents(seed=seed)[side]
        assert any(ext[0] % 31 == 27 for m in messages(greased) for ext in m.get(
            "extensions", []))
        assert messages(normalise(greased)) == plain


def test_packet_sizes_that_grease_moves_diff_equal() -> None:
    runs = [run_documents(seed=seed) for seed in ("one", "two", "three")]
    for side in SIDES:
        sizes = {json.dumps(summary(r[side])["bytes_per_flight"]) for r in runs}
        assert len(sizes) > 1  # GREASE moved some flights' bytes...
        assert all(diff(runs[0][side], r[side]) == [] for r in runs[1:])  # ...within bounds


def test_the_summary_names_what_was_negotiated() -> None:
    client, server = run_documents(mode="discovery").values()
    facts = summary(client)
    assert {k: facts[k] for k in ("version", "outcome", "alpn", "profile", "aead", "auth_mode",
                                  "kem_backend", "fallback")} == {
        "version": "0x56553100", "outcome": "velocity", "alpn": "velocity/1",
        "profile": "balanced", "aead": "AES_128_GCM", "auth_mode": "discovery",
        "kem_backend": "cryptography", "fallback": None}
    assert facts["key_shares"] == {
        "group": "X25519MLKEM768",
        "client": {"length": 1216, "parts": [{"name": "ML-KEM-768", "length": 1184},
                                             {"name": "X25519", "length": 32}]},
        "server": {"length": 1120, "parts": [{"name": "ML-KEM-768", "length": 1088},
                                             {"name": "X25519", "length": 32}]}}
    assert facts["kem_operations"] == ["decapsulate ephemeral ML-KEM-768",
                                       "encapsulate static ML-KEM-768"]
    assert facts["close"] == {"local": "application 0x0", "remote": None}
    assert summary(server)["close"] == {"local": None, "remote": "application 0x0"}
    assert summary(server)["offered_alpn"] == ["velocity/1"]
    assert facts["handshake_ms"] == 40.0  # two round trips of 20 ms


def test_secure_shares_put_ecdh_first() -> None:
    shares = summary(run_documents(profile=SECURE)["client"])["key_shares"]
    assert shares["group"] == "SecP384r1MLKEM1024"
    assert shares["client"]["parts"] == [{"name": "P-384", "length": 97},
                                         {"name": "ML-KEM-1024", "length": 1568}]


def test_both_vantage_points_agree_on_packets_flights_and_amplification() -> None:
    client, server = (summary(d) for d in run_documents(mode="discovery").values())
    flip = {"sent": "received", "received": "sent"}
    assert server["packets_per_space"] == {
        space: {flip[k]: n for k, n in counts.items()}
        for space, counts in client["packets_per_space"].items()}
    assert [(flip[f["direction"]], f["bytes"]) for f in client["bytes_per_flight"]] == [
        (f["direction"], f["bytes"]) for f in server["bytes_per_flight"]]
    amplification = server["amplification"]
    assert client["amplification"] == amplification
    assert amplification["validated"] and amplification["client_bytes"] == 2400
    assert amplification["ratio"] == round(amplification["server_bytes"] / 2400, 3)
    assert 2 < amplification["ratio"] <= 3  # a certificate flight, within the limit


def test_the_server_side_counts_until_the_first_handshake_packet() -> None:
    """A fallback never validates the address: everything counts."""
    document = run_documents(mode="discovery", fallback_only=True)["server"]
    sent = sum(e["data"]["raw"]["length"] for e in document["events"]
               if e["name"] == "quic:packet_sent")
    received = sum(e["data"]["raw"]["length"] for e in document["events"]
                   if e["name"] == "quic:packet_received")
    assert summary(document)["amplification"] == {
        "server_bytes": sent, "client_bytes": received, "validated": False,
        "ratio": round(sent / received, 3)}


@pytest.mark.parametrize("side", SIDES)
def test_another_profile_is_named_with_its_share_sizes(side: str) -> None:
    differences = {d.path: d for d in diff(run_documents(seed="a")[side],
                                           run_documents(seed="b", profile=LIGHT)[side])}
    assert differences["profile"].before == "balanced"
    assert differences["profile"].after == "light"
    assert differences["profile"].description == 'profile: "balanced" -> "light"'
    assert (differences["key_shares.client.length"].before,
            differences["key_shares.client.length"].after) == (1216, 832)
    assert (differences["key_shares.server.parts.0.length"].before,
            differences["key_shares.server.parts.0.length"].after) == (1088, 768)
    assert "key_shares.group" in differences and "kem_operations" in differences


@pytest.mark.spec("VEL-FB-002")
@pytest.mark.parametrize("side", SIDES)
def test_a_fallback_only_server_is_named(side: str) -> None:
    differences = {d.path: d for d in diff(
        run_documents(mode="discovery")[side],
        run_documents(mode="discovery", fallback_only=True, seed="b")[side])}
    assert differences["outcome"].after == "fallback"
    assert differences["fallback"].before is None
    assert differences["fallback"].after == {
        "alpn": "h3", "host": "", "port": 443, "reason": 1, "reason_text": "fallback-only mode",
        "retry_after": 0, "authenticated": False}
    owner = "remote" if side == "client" else "local"
    assert differences[f"close.{owner}"].after == "NO_APPLICATION_PROTOCOL"
    assert differences["fallback"].description.startswith("fallback: absent -> {")


def test_an_authenticated_directive_differs_from_an_advisory_one() -> None:
    pdk = run_documents(mode="pdk", fallback_only=True)["client"]
    discovery = run_documents(mode="discovery", fallback_only=True)["client"]
    differences = {d.path: d for d in diff(pdk, discovery)}
    assert (differences["fallback.authenticated"].before,
            differences["fallback.authenticated"].after) == (True, False)


def test_ignore_patterns_drop_what_they_name() -> None:
    a, b = run_documents(seed="a")["client"], run_documents(seed="b", profile=LIGHT)["client"]
    everything = diff(a, b)
    assert diff(a, b, ignore=[d.path for d in everything]) == []
    no_shares = diff(a, b, ignore=["key_shares"])
    assert no_shares and not any(d.path.startswith("key_shares") for d in no_shares)
    no_parts = {d.path for d in diff(a, b, ignore=["key_shares.*.parts"])}
    assert "key_shares.client.length" in no_parts
    assert not any(".parts" in p for p in no_parts)
    assert "profile" in {d.path for d in diff(a, b, ignore=["prof", "profile.x", "*.profile"])}
    assert "profile" not in {d.path for d in diff(a, b, ignore=["*"])}


def test_byte_counts_compare_within_the_grease_allowance() -> None:
    facts = summary(normalise(run_documents()["client"]))
    moved = json.loads(json.dumps(facts))
    moved["bytes_per_flight"][1]["bytes"] += 40
    assert compare(facts, moved) == []
    moved["bytes_per_flight"][1]["bytes"] += 1
    assert [d.path for d in compare(facts, moved)] == ["bytes_per_flight.1.bytes"]
    moved = json.loads(json.dumps(facts))
    moved["bytes_per_flight"][1]["packets"] += 1  # counts have no allowance
    assert [d.path for d in compare(facts, moved)] == ["bytes_per_flight.1.packets"]


def test_a_different_number_of_flights_is_one_difference() -> None:
    facts = summary(run_documents()["client"])
    fewer = {**facts, "bytes_per_flight": facts["bytes_per_flight"][:1]}
    assert [d.path for d in compare(facts, fewer)] == ["bytes_per_flight"]


def _drop_one_server_datagram() -> Network:
    """The server's third datagram (a certificate part) is lost once: it is resent."""
    sent = {"s2c": 0}

    def network(direction: str, datagram: bytes, now: float) -> list[tuple[float, bytes]]:
        if direction == "s2c":
            sent["s2c"] += 1
            if sent["s2c"] == 3:
                return []
        return [(ONE_WAY, datagram)]

    return network


def test_a_retransmission_is_not_drift() -> None:
    clean = run_documents(mode="discovery")
    lossy = run_documents(mode="discovery", network=_drop_one_server_datagram(), seed="lost")
    packets = [sum(e["name"] == "quic:packet_sent" for e in run["server"]["events"])
               for run in (clean, lossy)]
    assert packets[1] > packets[0]  # the lost packet's data went out again
    for side in SIDES:
        assert diff(clean[side], lossy[side]) == []


def _delay_the_servers_last_flight() -> Network:
    """The server's datagrams from the seventh on (its last flight) arrive 2 s late: the
    client's probe timer fires first and it sends a PING."""
    sent = {"s2c": 0}

    def network(direction: str, datagram: bytes, now: float) -> list[tuple[float, bytes]]:
        if direction == "s2c":
            sent["s2c"] += 1
            if sent["s2c"] >= 7:
                return [(ONE_WAY + 2.0, datagram)]
        return [(ONE_WAY, datagram)]

    return network


def test_a_probe_is_not_drift() -> None:
    clean = run_documents(mode="discovery")
    late = run_documents(mode="discovery", network=_delay_the_servers_last_flight(),
                         seed="late")
    pings = [sum(f["frame_type"] == "ping" for e in run["client"]["events"]
                 if e["name"] == "quic:packet_sent" for f in e["data"]["frames"])
             for run in (clean, late)]
    assert pings[1] > pings[0]  # the client probed
    for side in SIDES:
        assert diff(clean[side], late[side]) == []


def _edit(document: dict[str, Any], name: str, part: str,
          change: dict[str, Any]) -> dict[str, Any]:
    """``document`` with ``change`` applied to every ``name`` event's ``part``: its data,
    its packet header, or its frames of that type."""
    document = copy.deepcopy(document)
    events = [e["data"] for e in document["events"] if e["name"] == name]
    assert events
    for data in events:
        targets = ([data] if part == "data" else [data["header"]] if part == "header"
                   else [f for f in data["frames"] if f["frame_type"] == part])
        for target in targets:
            target.update(change)
    return document


HOSTILE = [  # schema-valid values the reference never writes
    ("quic:connection_closed", "data", {"error_code": 2.0}),
    ("quic:connection_closed", "data", {"error_code": 2**70, "application": True}),
    ("velocity:message_received", "data", {"extensions": [[27, 2**70], [58, 3]]}),
    ("velocity:message_received", "data", {"extensions": [["a", 1], [27]]}),
    ("velocity:message_received", "data", {"extensions": "none", "alpn": [1, None]}),
    ("quic:packet_received", "crypto", {"offset": -5, "data_length": 2**70}),
    ("quic:packet_received", "crypto", {"offset": "x", "data_length": None}),
    ("quic:packet_received", "crypto", {"stream_id": [1], "extra": {"a": [1]}}),
    ("quic:packet_received", "header", {"packet_number": 2**60}),
    ("velocity:key_share", "data", {"client_share_length": 1.0, "group": ""}),
    ("velocity:handshake_completed", "data", {"alpn": "", "kem_backend": "x" * 1000}),
]


@pytest.mark.parametrize(("name", "part", "change"), HOSTILE)
def test_any_valid_transcript_normalises_summarises_and_diffs(
        name: str, part: str, change: dict[str, Any], tmp_path: Path) -> None:
    """A hostile but schema-valid file (a peer's, or edited) never raises: the schema
    types what the summary relies on, the rest is read with care."""
    clean = run_documents(mode="discovery")["client"]
    document = _edit(clean, name, part, change)
    assert validate(document) == []
    assert validate(normalise(document)) == []
    json.dumps(summary(document), allow_nan=False)
    assert diff(document, document) == []
    diff(clean, document)
    save_baseline(tmp_path, "fuzz/any", {}, document)
    compare_baseline(tmp_path, "fuzz/any", {}, clean)
