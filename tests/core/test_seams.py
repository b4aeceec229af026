"""The seams of velocity.core.seams, each used the way the scripted peer uses it, on the
in-memory pair (virtual clock, exact counts): frames in any space, the packet mutator, the
CRYPTO policy, the handshake-message hook, the key-share factories, the endpoint's
new-connection hook, the payload observer. And off, they change nothing."""

from __future__ import annotations

from dataclasses import replace

import pytest

from harness.loopback import ONE_WAY, Pair
from harness.pair import PairSpec
from tests.core.transport.helpers import both_completed, make, terminated
from velocity.core.connection import Connection
from velocity.core.entropy import Entropy
from velocity.core.errors import ErrorCode
from velocity.core.events import ConnectionTerminated
from velocity.core.frames import Ping, Stream
from velocity.core.handshake.common import FallbackDirected
from velocity.core.handshake.messages import ClientHello, Fallback, Message, ServerHello
from velocity.core.handshake.server import FallbackPolicy
from velocity.core.hybrid import ClientKeyShare, HybridSecret, Profile, server_key_share
from velocity.core.kem import KemBackend
from velocity.core.packet import Epoch, PacketType
from velocity.core.seams import HeaderEdits, KeyShare, PlannedPacket


def _server_closes(pair: Pair) -> list[int]:
    return [t.error_code for t in terminated(pair.server_events)]


def _client_closes(pair: Pair) -> list[int]:
    return [t.error_code for t in terminated(pair.client_events)]


def _received_packets(connection: Connection | None, packet_type: str) -> list[dict[str, object]]:
    assert connection is not None and connection.tracer is not None
    return [e["data"] for e in connection.tracer.events  # type: ignore[attr-defined]
            if e["name"] == "quic:packet_received"
            and e["data"]["header"]["packet_type"] == packet_type]


@pytest.mark.spec("VEL-FRM-004")
def test_frames_go_in_any_space_with_real_packet_numbers() -> None:
    """A STREAM frame in an Initial packet: the server closes with PROTOCOL_VIOLATION, and the
    packet took the Initial space's next number."""
    pair = make(trace=True)
    pair.connect()
    initial = pair.client.spaces[Epoch.INITIAL]
    before = initial.next_packet_number
    pair.client.send_frames(Epoch.INITIAL, [Stream(0, b"not here")])
    assert pair.run(lambda: bool(_server_closes(pair)))
    assert _server_closes(pair) == [ErrorCode.PROTOCOL_VIOLATION]
    assert initial.next_packet_number > before
    sent = [e["data"] for e in pair.client.tracer.events  # type: ignore[union-attr]
            if e["name"] == "quic:packet_sent"]
    assert any(d["header"]["packet_type"] == "initial"
               and any(f["frame_type"] == "stream" for f in d["frames"]) for d in sent)


def test_a_trailer_no_frame_encodes_follows_the_frames() -> None:
    """Bytes after the frames go unparsed into the packet: an unknown frame type (0x1f)
    after a PING closes the connection with FRAME_ENCODING_ERROR naming that type."""
    pair = make(trace=True)
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    pair.client.send_frames(Epoch.APPLICATION, [Ping()], trailer=bytes([0x1F]))
    assert pair.run(lambda: bool(_server_closes(pair)))
    assert _server_closes(pair) == [ErrorCode.FRAME_ENCODING_ERROR]
    (closed,) = terminated(pair.server_events)
    assert closed.frame_type == 0x1F


def test_a_ping_in_every_space_is_acknowledged_consistently() -> None:
    """Injected packets are recorded as sent: the server's ACKs of them are no violation."""
    pair = make()
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    pair.client.send_frames(Epoch.APPLICATION, [Ping()])
    pair.client.send_frames(Epoch.APPLICATION, [Ping()])
    largest = pair.client.spaces[Epoch.APPLICATION].next_packet_number - 1
    assert pair.run(lambda: pair.client.recovery.spaces[Epoch.APPLICATION].largest_acked
                    is not None and pair.client.recovery.spaces[
                        Epoch.APPLICATION].largest_acked >= largest)
    assert not terminated(pair.client_events) and not terminated(pair.server_events)


def test_the_packet_mutator_drops_repeats_and_rewrites() -> None:
    """Drop the client's first datagram: loss recovery resends it and the handshake completes.
    Repeat every packet of the next one: the server drops the copies as duplicates."""
    pair = make()
    calls: list[list[PlannedPacket]] = []

    def mutator(packets: list[PlannedPacket]) -> list[PlannedPacket]:
        calls.append(packets)
        if len(calls) <= 2:  # the CLIENT_HELLO's two datagrams
            return []
        return packets + packets
    pair.client.seams.packet_mutator = mutator
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    assert all(p.epoch == Epoch.INITIAL for p in calls[0])
    assert pair.now >= 0.3, "the first flight was lost and resent after a PTO"
    rewritten = make()
    rewritten.client.seams.packet_mutator = lambda packets: [
        replace(p, payload=bytes([0x1F]) + p.payload) if p.epoch == Epoch.INITIAL else p
        for p in packets]  # an unknown frame type first
    rewritten.connect()
    assert rewritten.run(lambda: bool(_server_closes(rewritten)))
    assert _server_closes(rewritten) == [ErrorCode.FRAME_ENCODING_ERROR]


def _edit_next(connection: Connection, epoch: Epoch, edits: HeaderEdits) -> None:
    """The packet mutator writes ``edits`` into the next packet of ``epoch``, once."""
    def mutator(packets: list[PlannedPacket]) -> list[PlannedPacket]:
        out = [replace(p, header=edits) if p.epoch == epoch else p for p in packets]
        if out != packets:
            connection.seams.packet_mutator = None
        return out
    connection.seams.packet_mutator = mutator


@pytest.mark.parametrize("pn_length", [1, 2, 3, 4])
def test_header_edits_set_the_packet_number_length(pn_length: int) -> None:
    """A 1-RTT PING whose packet number takes ``pn_length`` bytes: the server opens it (the
    number decoded against its largest) and acknowledges it; on the wire, under header
    protection, its first byte says ``pn_length`` and the number takes that many bytes."""
    c2s: list[bytes] = []

    def recording(direction: str, datagram: bytes, now: float) -> list[tuple[float, bytes]]:
        if direction == "c2s":
            c2s.append(datagram)
        return [(ONE_WAY, datagram)]

    pair = make(network=recording, trace=True)
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    number = pair.client.spaces[Epoch.APPLICATION].next_packet_number
    _edit_next(pair.client, Epoch.APPLICATION, HeaderEdits(pn_length=pn_length))
    pair.client.send_frames(Epoch.APPLICATION, [Ping()])
    assert pair.run(lambda: any(d["header"]["packet_number"] == number
                                for d in _received_packets(pair.server, "1RTT")))
    keys = pair.server.spaces[Epoch.APPLICATION].recv_keys
    assert keys is not None
    pn_offset = 1 + len(pair.client.peer_cid)
    headers = [keys.remove_header_protection(d, pn_offset, number) for d in c2s
               if not d[0] & 0x80]
    (header,) = [h for h, pn in headers if pn == number]
    assert (header[0] & 0x03) + 1 == pn_length and len(header) == pn_offset + pn_length
    acked = pair.client.recovery.spaces[Epoch.APPLICATION]
    assert pair.run(lambda: acked.largest_acked is not None and acked.largest_acked >= number)
    assert not terminated(pair.server_events)


@pytest.mark.parametrize(("epoch", "edits"), [
    (Epoch.APPLICATION, HeaderEdits(dcid=b"\x00" * 8)),
    (Epoch.INITIAL, HeaderEdits(version=0x1A2A3A4A)),
    (Epoch.INITIAL, HeaderEdits(length=5000))])
def test_header_edits_of_connection_ids_versions_and_lengths_are_dropped(
        epoch: Epoch, edits: HeaderEdits) -> None:
    """A 1-RTT packet for another connection ID, an Initial of another version or with a
    Length past the datagram: the server drops it and the connection goes on."""
    pair = make(trace=True)
    if epoch == Epoch.INITIAL:
        _edit_next(pair.client, epoch, edits)
    pair.connect()
    assert pair.run(lambda: both_completed(pair))  # a dropped Initial is resent
    if epoch == Epoch.INITIAL:  # the server's connection began with the resent Initial
        assert 0 not in [d["header"]["packet_number"]
                         for d in _received_packets(pair.server, "initial")]
    if epoch == Epoch.APPLICATION:
        dropped = pair.client.spaces[epoch].next_packet_number  # the edited packet's
        _edit_next(pair.client, epoch, edits)
        pair.client.send_frames(epoch, [Ping()])
        pair.client.send_frames(epoch, [Ping()])
        assert pair.run(lambda: any(d["header"]["packet_number"] > dropped for d in
                                    _received_packets(pair.server, "1RTT")))
        assert not any(d["header"]["packet_number"] == dropped
                       for d in _received_packets(pair.server, "1RTT"))
    assert not terminated(pair.server_events)


@pytest.mark.parametrize("epoch", [Epoch.INITIAL, Epoch.APPLICATION])
def test_header_edits_of_reserved_bits_are_a_protocol_violation(epoch: Epoch) -> None:
    """Reserved bits set under header protection (VEL-PKT-004)."""
    pair = make()
    if epoch == Epoch.INITIAL:
        _edit_next(pair.client, epoch, HeaderEdits(reserved_bits=1))
    pair.connect()
    if epoch == Epoch.APPLICATION:
        assert pair.run(lambda: both_completed(pair))
        _edit_next(pair.client, epoch, HeaderEdits(reserved_bits=2))
        pair.client.send_frames(epoch, [Ping()])
    assert pair.run(lambda: bool(_server_closes(pair)))
    assert _server_closes(pair) == [ErrorCode.PROTOCOL_VIOLATION]


@pytest.mark.spec("VEL-HS-003")
def test_the_crypto_policy_splits_reorders_overlaps_and_repeats() -> None:
    """The CLIENT_HELLO as five overlapping pieces, last first, one repeated, each in a
    datagram of its own: the server reassembles it and the handshake completes."""
    pair = make(trace=True)

    def policy(epoch: Epoch, offset: int, data: bytes) -> list[list[tuple[int, bytes]]]:
        if epoch != Epoch.INITIAL:
            return [[(offset, data)]]
        step = len(data) // 5 + 1
        pieces = [(offset + i, data[i : i + step + 16]) for i in range(0, len(data), step)]
        return [[p] for p in [*reversed(pieces), pieces[2]]]
    pair.client.seams.crypto_policy = policy
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    server = pair.server
    assert server is not None
    initials = _received_packets(server, "initial")
    assert len(initials) >= 6
    assert all(d["raw"]["length"] >= 1200 - 64 for d in initials[:6])  # padded datagrams


def test_the_message_hook_changes_and_drops_what_is_sent() -> None:
    """The client offers only h3: the server answers FALLBACK reason 0. A server hook that
    strips the directive's MAC makes a PDK client detect the downgrade."""
    pair = make("discovery", trace=True)

    def offer_h3(message: Message) -> Message:
        return replace(message, alpn=(b"h3",)) if isinstance(message, ClientHello) else message
    pair.client.handshake.message_hook = offer_h3
    pair.connect()
    assert pair.run(lambda: any(isinstance(e, FallbackDirected) for e in pair.client_events))
    directive = next(e for e in pair.client_events if isinstance(e, FallbackDirected))
    assert directive.reason == 0
    sent = next(e["data"] for e in pair.client.tracer.events  # type: ignore[union-attr]
                if e["name"] == "velocity:message_sent")
    assert sent["message_type"] == "client_hello" and sent["alpn"] == ["h3"]

    stripped = make(spec=PairSpec(mode="pdk", server={
        "fallback": FallbackPolicy(mode="fallback-only")}))

    def strip_mac(message: Message) -> Message:
        return replace(message, mac=b"") if isinstance(message, Fallback) else message
    stripped.endpoint.on_connection = lambda c: setattr(c.handshake, "message_hook", strip_mac)
    stripped.connect()
    assert stripped.run(lambda: bool(_client_closes(stripped)))
    assert _client_closes(stripped) == [ErrorCode.DOWNGRADE_DETECTED]

    silent = make()
    silent.endpoint.on_connection = lambda c: setattr(
        c.handshake, "message_hook", lambda m: None if isinstance(m, ServerHello) else m)
    silent.connect()
    silent.run(lambda: False, max_time=2.0)
    assert not any(isinstance(e, ConnectionTerminated) and e.reason != "handshake timeout"
                   for e in silent.client_events)
    assert not both_completed(silent), "no SERVER_HELLO ever left"


class _ZeroX25519(KeyShare):
    """A balanced share whose X25519 half is all zero (the server's result is all zero)."""

    def __init__(self, profile: Profile, kem: KemBackend, entropy: Entropy) -> None:
        real = ClientKeyShare(profile, kem, entropy)
        self.profile = profile
        self.share = real.share[:-32] + bytes(32)

    def finish(self, server_share: bytes) -> HybridSecret:
        raise AssertionError("the server must refuse the share")


@pytest.mark.spec("VEL-PROF-006", "VEL-HS-030")
def test_the_key_share_factories() -> None:
    client_side = make()
    client_side.client.handshake.key_share_factory = _ZeroX25519  # type: ignore[union-attr]
    client_side.connect()
    assert client_side.run(lambda: bool(_server_closes(client_side)))
    assert _server_closes(client_side) == [ErrorCode.ILLEGAL_PARAMETER]

    server_side = make()

    def short_share(profile: Profile, kem: KemBackend, share: bytes,
                    entropy: Entropy) -> tuple[bytes, HybridSecret]:
        wire, secret = server_key_share(profile, kem, share, entropy)
        return wire[:-1], secret
    server_side.endpoint.on_connection = lambda c: setattr(
        c.handshake, "server_share_factory", short_share)
    server_side.connect()
    assert server_side.run(lambda: bool(_client_closes(server_side)))
    assert _client_closes(server_side) == [ErrorCode.ILLEGAL_PARAMETER]


def test_the_payload_observer_sees_every_packet_opened_as_it_was_sent() -> None:
    """Without a tracer (the 1-RTT bulk path would be taken): each packet the client opened,
    its payload byte for byte as the server's packet mutator saw it planned (then padded with
    zeros; the mutator sees the bulk path's packets too), once; a datagram the network
    delivered twice after the handshake is not shown again."""
    pair = make()
    planned: dict[tuple[PacketType, int], bytes] = {}

    def mutator(packets: list[PlannedPacket]) -> list[PlannedPacket]:
        for packet in packets:
            planned[packet.packet_type, packet.packet_number] = packet.payload
        return packets

    pair.endpoint.on_connection = lambda c: setattr(c.seams, "packet_mutator", mutator)
    seen: list[tuple[PacketType, int, bytes]] = []
    pair.client.seams.payload_observer = lambda *packet: seen.append(packet)
    doubled: list[bytes] = []
    network = pair.network

    def twice(direction: str, datagram: bytes, now: float) -> list[tuple[float, bytes]]:
        delivered = network(direction, datagram, now)
        if direction == "s2c" and pair.client.handshake_confirmed and not doubled:
            doubled.append(datagram)
            return delivered + delivered
        return delivered

    pair.network = twice
    pair.connect()
    assert pair.run(lambda: both_completed(pair) and pair.client.handshake_confirmed)
    pair.client.send_stream_data(0, b"request", end_stream=True)
    assert pair.run(lambda: pair.finished_stream("server", 0))
    assert pair.server is not None
    pair.server.send_stream_data(0, bytes(range(256)) * 40, end_stream=True)
    assert pair.run(lambda: pair.finished_stream("client", 0))
    assert doubled
    kinds = {kind for kind, _, _ in seen}
    assert {PacketType.INITIAL, PacketType.HANDSHAKE, PacketType.ONE_RTT} <= kinds
    assert len({(kind, number) for kind, number, _ in seen}) == len(seen)  # each once
    for kind, number, payload in seen:
        sent = planned[kind, number]
        assert payload[:len(sent)] == sent and not payload[len(sent):].strip(b"\0")
    assert pair.received("client", 0) == (bytes(range(256)) * 40, True)


def test_unused_seams_are_off_and_change_no_byte() -> None:
    """Two seeded pairs (kyber-py, deterministic), one with a pass-through mutator, message
    hook and endpoint hook set: the same bytes on the wire."""
    def record(pair: Pair) -> list[bytes]:
        seen: list[bytes] = []
        network = pair.network

        def tap(direction: str, datagram: bytes, now: float) -> list[tuple[float, bytes]]:
            seen.append(datagram)
            return network(direction, datagram, now)
        pair.network = tap
        pair.connect()
        assert pair.run(lambda: both_completed(pair) and pair.client.handshake_confirmed)
        return seen

    seeded = PairSpec(client_backend="kyber-py", server_backend="kyber-py")  # deterministic
    plain = make(spec=seeded)
    assert plain.client.seams.packet_mutator is None and plain.client.seams.crypto_policy is None
    assert plain.client.seams.payload_observer is None
    assert plain.client.handshake.message_hook is None
    seamed = make(spec=seeded)
    seamed.client.seams.packet_mutator = lambda packets: packets
    seamed.client.seams.payload_observer = lambda kind, number, payload: None
    seamed.client.handshake.message_hook = lambda message: message
    seamed.endpoint.on_connection = lambda c: None
    assert record(plain) == record(seamed)
