"""Connection transcripts on an in-memory pair: schema-valid, reproducible from a seed,
consistent with what crossed the network, and free of raw secrets."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import pytest

from harness.loopback import Network, Pair, lossy
from harness.pair import PairSpec
from harness.schemas import schema_errors
from tests.core.transport.helpers import both_completed, make
from velocity.core import receiver
from velocity.core.connection import Connection
from velocity.core.trace import Transcript


def transfer(pair: Pair, size: int = 30_000) -> Connection:
    """Handshake, one upload, close; the server's connection (gone from the endpoint)."""
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    server = pair.server
    assert server is not None
    stream = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(stream, bytes(size), end_stream=True)
    assert pair.run(lambda: pair.finished_stream("server", stream))
    pair.client.close(0, "done")
    pair.run(lambda: False, max_time=pair.now + 5)
    return server


def documents(pair: Pair, server: Connection) -> dict[str, dict[str, Any]]:
    out = {}
    for side, connection in (("client", pair.client), ("server", server)):
        assert isinstance(connection.tracer, Transcript)
        out[side] = connection.tracer.document(
            producer={"name": "velocity", "version": "test"}, vantage_point=side,
            target="127.0.0.1:4433", scenario={"id": "test/transfer", "seed": 7})
    return out


def names(document: dict[str, Any]) -> Counter[str]:
    return Counter(e["name"] for e in document["events"])


def test_transcripts_validate_and_reproduce_from_a_seed() -> None:
    runs = []
    for _ in range(2):
        pair = make("discovery", spec=PairSpec(mode="discovery", client_backend="kyber-py",
                                                server_backend="kyber-py"),
                    trace=True, seed="trace")
        runs.append(documents(pair, transfer(pair)))
    for document in runs[0].values():
        assert schema_errors("transcript", document) == []
    assert runs[0] == runs[1]  # byte for byte, secrets' digests included


def test_server_transcript_shows_the_pq_handshake() -> None:
    pair = make("discovery", trace=True)
    server = documents(pair, transfer(pair))["server"]
    data = {e["name"]: e["data"] for e in server["events"]}
    share = data["velocity:key_share"]
    assert (share["group"], share["client_share_length"], share["server_share_length"]) == (
        "X25519MLKEM768", 1216, 1120)
    kem = [(e["data"]["operation"], e["data"]["key"]) for e in server["events"]
           if e["name"] == "velocity:kem_operation"]
    assert kem == [("encapsulate", "ephemeral"), ("decapsulate", "static")]
    assert data["velocity:handshake_completed"]["mode"] == "discovery"
    sent = [e["data"]["message_type"] for e in server["events"]
            if e["name"] == "velocity:message_sent"]
    assert sent[:3] == ["server_hello", "encrypted_extensions", "certificate"]
    assert data["quic:connection_closed"] == {"owner": "remote", "error_code": 0,
                                              "frame_type": 0, "reason": "done",
                                              "application": True}
    text = json.dumps(server)
    assert not re.search(r"[0-9a-f]{32}", text)  # no raw secret, key or CID


def test_packets_in_the_transcripts_match_the_wire() -> None:
    pair = make(trace=True)
    docs = documents(pair, transfer(pair))
    sent = [(e["data"]["header"]["packet_type"], e["data"]["header"]["packet_number"])
            for e in docs["client"]["events"] if e["name"] == "quic:packet_sent"]
    received = [(e["data"]["header"]["packet_type"], e["data"]["header"]["packet_number"])
                for e in docs["server"]["events"] if e["name"] == "quic:packet_received"]
    assert received == sent[: len(received)]  # then the server drained and heard no more
    late = len(sent) - len(received)  # the client's closes answering late ACKs: 1st, 2nd, 4th..
    assert late <= 4, late
    sent_bytes = sum(e["data"]["raw"]["length"] for e in docs["client"]["events"]
                     if e["name"] == "quic:packet_sent")
    assert sent_bytes == pair.sent["c2s"]


def test_duplicates_are_traced_as_dropped() -> None:
    pair = make(network=lossy("dup", duplicate=0.3), trace=True)
    dropped = [e["data"] for e in documents(pair, transfer(pair))["server"]["events"]
               if e["name"] == "quic:packet_dropped"]
    assert dropped and {d["trigger"] for d in dropped} <= {"duplicate", "key_unavailable"}
    assert any(d["trigger"] == "duplicate" for d in dropped)


def test_tracing_does_not_change_what_crosses_the_network(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A traced connection reads 1-RTT packets through the general path (it records their
    frames), an untraced one through the short-header path: over the same seeded lossy,
    reordering network both send the same bytes and emit the same events."""
    short_reads: list[int] = []
    receive_short = receiver._receive_short

    def counted(*args: Any) -> None:
        short_reads.append(1)
        receive_short(*args)

    monkeypatch.setattr(receiver, "_receive_short", counted)
    runs, reads = [], []
    for trace in (False, True):
        short_reads.clear()
        wire: list[tuple[str, bytes]] = []
        network = lossy("same-wire", loss=0.05, reorder=0.2, duplicate=0.05)

        def recording(direction: str, datagram: bytes, now: float,
                      wire: list[tuple[str, bytes]] = wire,
                      network: Network = network) -> list[tuple[float, bytes]]:
            wire.append((direction, datagram))
            return network(direction, datagram, now)

        pair = make(spec=PairSpec(client_backend="kyber-py", server_backend="kyber-py"),
                    network=recording, trace=trace, seed="same-wire")
        transfer(pair, size=200_000)
        runs.append((wire, pair.client_events, pair.server_events))
        reads.append(len(short_reads))
    assert reads[0] > 100 and reads[1] == 0  # each run took the path it is meant to
    (wire, client, server), (traced_wire, traced_client, traced_server) = runs
    assert len(wire) > 150 and wire == traced_wire
    assert client == traced_client and server == traced_server
