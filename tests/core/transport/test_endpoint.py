"""The server endpoint: Retry, Version Negotiation, refusal, the anti-amplification limit with
post-quantum-sized flights, resumption with 0-RTT over packets, and stray datagrams."""

from __future__ import annotations

import random
from typing import Any

import pytest

from harness.loopback import CLIENT_ADDR, ONE_WAY, SERVER_ADDR, Pair, perfect
from harness.pair import PairSpec, make_configs
from tests.core.transport.helpers import (
    TOKENS,
    both_completed,
    make,
    requested,
    resumable,
    terminated,
)
from velocity.core.buffer import Writer
from velocity.core.connection import ConnectionConfig
from velocity.core.errors import ErrorCode
from velocity.core.events import TicketReceived
from velocity.core.frames import ConnectionClose, Crypto, decode_frames, encode_frames
from velocity.core.handshake.common import FallbackDirected, ServerKeyLearned
from velocity.core.handshake.server import FallbackPolicy
from velocity.core.hybrid import BALANCED, LIGHT, SECURE, Profile
from velocity.core.packet import (
    VELOCITY_VERSION,
    Epoch,
    LongHeader,
    PacketType,
    parse_header,
    push_long_header,
)
from velocity.core.protection import initial_keys
from velocity.core.sender import MAX_DATAGRAMS_PER_CALL
from velocity.core.state import State


@pytest.mark.spec("VEL-RTY-001", "VEL-RTY-002", "VEL-RTY-003", "VEL-RTY-004", "VEL-RTY-005",
                  "VEL-RTY-007")
@pytest.mark.parametrize("mode", ["pdk", "discovery"])
def test_retry_always(mode: str) -> None:
    pair = make(mode, retry="always", tokens=TOKENS)
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    assert pair.endpoint.retries_sent >= 1  # one per token-less Initial datagram
    server = pair.server
    assert server is not None and server.address_validated
    assert server.retry_scid is not None and pair.client.retry_scid == server.retry_scid


def test_retry_under_load_only_when_loaded() -> None:
    pair = make(retry="under-load", tokens=TOKENS)
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    assert pair.endpoint.retries_sent == 0


def test_tampered_retry_is_ignored() -> None:
    def tamper(direction: str, datagram: bytes, now: float) -> list[tuple[float, bytes]]:
        if direction == "s2c" and datagram[0] & 0xF0 == 0xF0:  # a Retry packet
            return [(ONE_WAY, datagram[:-1] + bytes([datagram[-1] ^ 1]))]
        return [(ONE_WAY, datagram)]

    pair = make(retry="always", tokens=TOKENS, network=tamper)
    pair.connect()
    assert not pair.run(lambda: both_completed(pair), max_time=3)
    assert pair.client.retry_scid is None


@pytest.mark.spec("VEL-VN-001", "VEL-VN-002", "VEL-VN-004", "VEL-VN-005")
def test_version_negotiation() -> None:
    pair = make()
    pair.connect()
    (datagram, _), *_ = pair.client.datagrams_to_send(now=0.0)
    other = bytearray(datagram)
    other[1:5] = (0x00000001).to_bytes(4, "big")
    pair.endpoint.receive_datagram(bytes(other[:1199]), CLIENT_ADDR, now=0.0)
    assert pair.endpoint.datagrams_to_send(now=0.0) == []  # never for < 1200 bytes
    pair.endpoint.receive_datagram(bytes(other), CLIENT_ADDR, now=0.0)
    ((answer, _),) = pair.endpoint.datagrams_to_send(now=0.0)
    header = parse_header(answer, short_dcid_length=8)
    assert header.packet_type == PacketType.VERSION_NEGOTIATION
    assert VELOCITY_VERSION.to_bytes(4, "big") in answer and not pair.endpoint.connections
    pair.client.receive_datagram(answer, SERVER_ADDR, now=0.01)  # lists our version
    assert pair.client.state != State.TERMINATED
    foreign = answer.replace(VELOCITY_VERSION.to_bytes(4, "big"), b"\x00\x00\x00\x01")
    pair.client.receive_datagram(foreign, SERVER_ADDR, now=0.01)
    assert pair.client.state == State.TERMINATED


@pytest.mark.spec("VEL-CONN-005")
def test_full_server_refuses_with_connection_refused() -> None:
    pair = make(max_sessions=0)
    pair.connect()
    assert pair.run(lambda: bool(terminated(pair.client_events)), max_time=5)
    (end,) = terminated(pair.client_events)
    assert end.by_peer and end.error_code == ErrorCode.CONNECTION_REFUSED
    assert pair.endpoint.refused >= 1 and not pair.endpoint.connections


@pytest.mark.spec("VEL-CONN-001", "VEL-SIZE-002")
@pytest.mark.parametrize("spec", [PairSpec(mode="discovery"), PairSpec(SECURE, "discovery")],
                         ids=["balanced", "secure"])
def test_amplification_limit_holds_for_pq_flights(spec: PairSpec) -> None:
    ratios: list[float] = []
    pair: Pair

    def watch(direction: str, datagram: bytes, now: float) -> list[tuple[float, bytes]]:
        server = pair.server
        if direction == "s2c" and server is not None and not server.address_validated:
            ratios.append(pair.sent["s2c"] / max(server.bytes_received, 1))
        return perfect(direction, datagram, now)

    client_hs, server_hs = make_configs(spec)
    pair = Pair(ConnectionConfig(client_hs), ConnectionConfig(server_hs), network=watch)
    pair.connect()
    assert pair.run(lambda: both_completed(pair), max_time=10)
    assert ratios and max(ratios) <= 3.0, max(ratios)


@pytest.mark.spec("VEL-RES-006", "VEL-RES-009", "VEL-RTY-008")
@pytest.mark.parametrize("accepted", [True, False])
def test_zero_rtt_request_over_packets(accepted: bool) -> None:
    server: dict[str, Any] = {"max_early_data": 65536 if accepted else 0}
    if not accepted:  # a fresh replay filter that already saw everything
        server["replay_filter"] = _RejectAll()
    second = resumable(server=server)
    second.connect()
    sid = second.client.get_next_available_stream_id()
    second.client.send_stream_data(sid, b"GET / HTTP/1.1\r\n\r\n", end_stream=True)
    assert second.run(lambda: second.finished_stream("server", sid)
                      and second.client.handshake_complete)
    assert second.client.early_data_accepted is accepted
    server = second.server
    assert server is not None and server.address_validated  # the NEW_TOKEN validated it


class _RejectAll:
    def accept(self, binder: bytes, now_ms: int, expires_ms: int) -> bool:
        return False


def test_stray_datagrams_do_not_create_state_or_stop_service() -> None:
    pair = make()
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    for junk in (b"", b"\x00" * 50, b"\xc0" + bytes(1300), b"\x40" + bytes(30), bytes(range(256))):
        pair.endpoint.receive_datagram(junk, ("127.0.0.9", 9), now=pair.now)
    assert len(pair.endpoint.connections) == 1
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(sid, b"still serving", end_stream=True)
    assert pair.run(lambda: pair.received("server", sid) == (b"still serving", True))


@pytest.mark.spec("VEL-CONN-004")
def test_a_datagram_visits_only_its_own_connection() -> None:
    pairs = []
    first = make(seed="busy-0")
    first.connect()
    assert first.run(lambda: both_completed(first))
    endpoint = first.endpoint
    for index in range(1, 20):  # more clients on the same endpoint
        other = make(seed=f"busy-{index}")
        other.endpoint = endpoint
        other.connect()
        assert other.run(lambda o=other, n=index: both_completed(o)
                         or len(endpoint.connections) > n)
        pairs.append(other)
    endpoint.datagrams_to_send(now=first.now)  # flush what earlier steps left marked
    visits: dict[int, int] = {}
    for connection in endpoint.connections:
        original = connection.datagrams_to_send

        def counted(*, now: float, c: Any = connection, f: Any = original) -> Any:
            visits[id(c)] = visits.get(id(c), 0) + 1
            return f(now=now)

        connection.datagrams_to_send = counted  # type: ignore[method-assign]
    sid = first.client.get_next_available_stream_id()
    first.client.send_stream_data(sid, b"one", end_stream=True)
    ((datagram, _),) = first.client.datagrams_to_send(now=first.now)
    endpoint.receive_datagram(datagram, ("127.0.0.1", 40000), now=first.now + 0.01)
    endpoint.datagrams_to_send(now=first.now + 0.01)
    assert list(visits.values()) == [1] and len(endpoint.connections) >= 20


def test_a_connection_stopped_by_the_batch_bound_stays_due() -> None:
    """``datagrams_to_send`` stops a connection at MAX_DATAGRAMS_PER_CALL; the endpoint visits
    it again on the next call without waiting for an ACK, a timer or a write."""
    pair = make()
    server, sid = requested(pair)
    pair.endpoint.datagrams_to_send(now=pair.now)
    server.recovery.cc.window = 1 << 30  # neither the window nor the pacer stops it here
    server.send_stream_data(sid, bytes(400_000), end_stream=True)
    pair.endpoint.mark(server)
    first = pair.endpoint.datagrams_to_send(now=pair.now)
    second = pair.endpoint.datagrams_to_send(now=pair.now)
    assert len(first) == MAX_DATAGRAMS_PER_CALL and second


@pytest.mark.spec("VEL-HS-090", "VEL-FB-002")
@pytest.mark.parametrize("mode", ["pdk", "discovery"])
def test_fallback_directive_travels_with_its_close(mode: str) -> None:
    spec = PairSpec(mode=mode, server={"fallback": FallbackPolicy(host="h3.example",
                                                                  mode="fallback-only")})
    pair = make(spec=spec)
    pair.connect()
    assert pair.run(lambda: bool(terminated(pair.client_events)))
    directives = [e for e in pair.client_events if isinstance(e, FallbackDirected)]
    assert [(d.host, d.authenticated) for d in directives] == [("h3.example", mode == "pdk")]
    (end,) = terminated(pair.client_events)
    assert end.error_code == ErrorCode.NO_APPLICATION_PROTOCOL and end.by_peer
    assert not pair.endpoint.connections or pair.run(lambda: not pair.endpoint.connections)


@pytest.mark.spec("VEL-SIZE-001", "VEL-SIZE-002")
@pytest.mark.parametrize("mode", ["pdk", "discovery"])
@pytest.mark.parametrize("profile", [LIGHT, BALANCED, SECURE], ids=lambda p: p.name)
def test_client_hello_is_cut_into_equal_datagrams(profile: Profile, mode: str) -> None:
    """Every CLIENT_HELLO leaves in at least two Initial datagrams of one size (at least
    1200 bytes), each carrying a part of it; the balanced ones fit two of 1452 bytes."""
    pair = make(spec=PairSpec(mode=mode, profile=profile))
    pair.connect()
    flight = [d for d, _ in pair.client.datagrams_to_send(now=0.0)]
    assert len(flight) >= 2 and len({len(d) for d in flight}) == 1 and len(flight[0]) >= 1200
    if profile is BALANCED:
        assert len(flight) == 2 and len(flight[0]) <= 1452
    _, server_receives = initial_keys(pair.client.original_dcid, is_client=False)
    carried = 0
    for datagram in flight:
        header = parse_header(datagram, short_dcid_length=8)
        assert header.packet_type == PacketType.INITIAL and header.end == len(datagram)
        _, payload, _ = server_receives.decrypt_packet(datagram, header.pn_offset, 0)
        carried += sum(len(f.data) for f in decode_frames(payload, PacketType.INITIAL)
                       if isinstance(f, Crypto))
    assert carried == pair.client.spaces[Epoch.INITIAL].crypto_send.write_offset


@pytest.mark.spec("VEL-SIZE-002", "VEL-CONN-001")
@pytest.mark.parametrize("profile", [LIGHT, BALANCED], ids=lambda p: p.name)
def test_discovery_flight_is_not_held_by_the_amplification_limit(profile: Profile) -> None:
    """A discovering client's CLIENT_HELLO would fit one datagram; it goes in two padded
    ones, so the server's whole flight (share, certificate) leaves at once: the client's
    next datagram already carries its KEM ciphertext, not an ACK to unblock the server."""
    pair = make(spec=PairSpec(mode="discovery", profile=profile))
    pair.connect()
    first_flight = [d for d, _ in pair.client.datagrams_to_send(now=0.0)]
    assert len(first_flight) == 2 and all(len(d) >= 1200 for d in first_flight)
    for datagram in first_flight:
        pair.endpoint.receive_datagram(datagram, CLIENT_ADDR, now=0.01)
    server_flight = [d for d, _ in pair.endpoint.datagrams_to_send(now=0.01)]
    for datagram in server_flight:
        pair.client.receive_datagram(datagram, SERVER_ADDR, now=0.02)
    events = []
    while (event := pair.client.next_event()) is not None:
        events.append(event)
    assert any(isinstance(e, ServerKeyLearned) for e in events)  # the certificate arrived
    assert sum(map(len, server_flight)) <= 3 * sum(map(len, first_flight))


@pytest.mark.spec("VEL-RES-006")
def test_early_data_is_reported_only_for_data_that_travelled_as_0rtt() -> None:
    """The server accepts early data whenever the client offers it; a stream written only
    after the handshake completed did not travel as 0-RTT and is not reported as such."""
    pair = resumable()
    pair.connect()
    early = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(early, b"GET / HTTP/1.1\r\n\r\n", end_stream=True)
    assert pair.run(lambda: both_completed(pair))
    late = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(late, b"GET / HTTP/1.1\r\n\r\n", end_stream=True)
    assert pair.run(lambda: pair.finished_stream("server", late))
    assert pair.client.early_data_accepted
    assert pair.client.sent_early(early) and not pair.client.sent_early(late)


@pytest.mark.spec("VEL-PKT-014", "VEL-CONN-004")
def test_a_first_initial_with_a_short_dcid_creates_no_state() -> None:
    """A client's first DCID is at least 8 unpredictable bytes; a valid Initial with a 4-byte
    DCID is dropped without state (before the fix it opened a connection)."""
    pair = make()
    client = pair.client
    client.original_dcid = client.peer_cid = b"abcd"
    client._install_initial_keys(b"abcd")
    pair.connect()
    for datagram, _ in client.datagrams_to_send(now=pair.now):
        pair.endpoint.receive_datagram(datagram, CLIENT_ADDR, now=pair.now)
    assert pair.endpoint.connections == []
    assert pair.endpoint.datagrams_to_send(now=pair.now) == []
    assert len(make().client.original_dcid) >= 8


@pytest.mark.spec("VEL-CONN-004", "VEL-CONN-009")
def test_initials_that_do_not_open_take_no_slot_and_evict_no_one() -> None:
    """Random 1200-byte Initials (any DCID) are dropped before any state: they neither fill
    the table nor evict a legitimate handshake from a full one (before the fix each opened a
    half-open connection, and with eviction each pushed out the oldest real one)."""
    pair = make(max_sessions=1)
    pair.connect()
    for datagram, _ in pair.client.datagrams_to_send(now=pair.now):
        pair.endpoint.receive_datagram(datagram, CLIENT_ADDR, now=pair.now)
    (legitimate,) = pair.endpoint.connections
    rng = random.Random(5)
    for index in range(50):
        junk = (bytes([0xC0]) + (0x56553100).to_bytes(4, "big") + bytes([8]) + rng.randbytes(8)
                + bytes([8]) + rng.randbytes(8) + b"\x00" + b"\x44\xb0" + rng.randbytes(1200))
        pair.endpoint.receive_datagram(junk, ("192.0.2.1", 1000 + index), now=pair.now)
    assert pair.endpoint.connections == [legitimate]
    answers = pair.endpoint.datagrams_to_send(now=pair.now)
    assert answers and {to for _, to in answers} == {CLIENT_ADDR}  # the real answer only
    assert pair.run(lambda: both_completed(pair))


def _resumable_with_limit(limit: int) -> Pair:
    """A second connection resuming a ticket that allows ``limit`` bytes of 0-RTT."""
    first = make(spec=PairSpec(mode="discovery", server={"max_early_data": limit}))
    first.connect()
    assert first.run(lambda: any(isinstance(e, TicketReceived) for e in first.client_events))
    ticket = next(e for e in first.client_events if isinstance(e, TicketReceived))
    second = make(spec=PairSpec(mode="discovery", client={"ticket": ticket.ticket,
                                                          "early_data": True}),
                  client={"remembered_transport_parameters": ticket.transport_parameters})
    second.now = first.now + 1.0
    return second


@pytest.mark.spec("VEL-HS-081", "VEL-RES-006")
def test_a_client_sends_no_more_0rtt_than_the_ticket_allows() -> None:
    pair = _resumable_with_limit(100)
    pair.connect()
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(sid, bytes(1000), end_stream=True)
    assert pair.run(lambda: pair.finished_stream("server", sid))
    server = pair.server
    assert server is not None and server.early_data_accepted
    assert 0 < server.flow.early_used <= 100
    assert pair.received("server", sid) == (bytes(1000), True)  # the rest in 1-RTT


@pytest.mark.spec("VEL-HS-081")
def test_0rtt_beyond_max_early_data_is_protocol_violation() -> None:
    """A hostile client that ignores the ticket's limit."""
    pair = _resumable_with_limit(100)
    pair.connect()
    pair.client.flow.early_limit = 1 << 20
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(sid, bytes(1000), end_stream=True)
    assert pair.run(lambda: bool(terminated(pair.server_events)))
    assert [t.error_code for t in terminated(pair.server_events)] == [
        ErrorCode.PROTOCOL_VIOLATION]


@pytest.mark.spec("VEL-HS-090")
def test_a_lost_fallback_is_sent_again_with_the_close() -> None:
    """The server's FALLBACK datagram is lost; the client's retransmitted CLIENT_HELLO gets
    the directive again (it used to get a bare CONNECTION_CLOSE)."""
    lost = [False]

    def drop_first_answer(direction: str, datagram: bytes, now: float) -> list[
            tuple[float, bytes]]:
        if direction == "s2c" and not lost[0] and len(datagram) > 100:  # not a bare ACK
            lost[0] = True
            return []
        return [(ONE_WAY, datagram)]
    pair = make(spec=PairSpec(mode="pdk", server={
        "fallback": FallbackPolicy(mode="fallback-only")}), network=drop_first_answer)
    pair.connect()
    assert pair.run(lambda: any(isinstance(e, FallbackDirected) for e in pair.client_events))
    directive = next(e for e in pair.client_events if isinstance(e, FallbackDirected))
    assert lost[0] and directive.authenticated


@pytest.mark.spec("VEL-PKT-012")
def test_a_short_initial_datagram_is_dropped_for_an_existing_connection_too() -> None:
    """A 60-byte Initial carrying CONNECTION_CLOSE for a connection the server holds is not
    read (it drained the connection before the fix); the same close padded to 1200 is."""
    pair = make()
    pair.connect()
    for datagram, _ in pair.client.datagrams_to_send(now=pair.now):
        pair.endpoint.receive_datagram(datagram, CLIENT_ADDR, now=pair.now)
    (server,) = pair.endpoint.connections

    def initial_close(pn: int, pad_to: int) -> bytes:
        send, _ = initial_keys(pair.client.original_dcid, is_client=True)
        payload = encode_frames([ConnectionClose(0, 0, b"x")])
        payload += bytes(max(0, pad_to - 44 - len(payload)))
        writer = Writer()
        push_long_header(writer, LongHeader(PacketType.INITIAL, VELOCITY_VERSION,
                                            pair.client.original_dcid, pair.client.host_cid,
                                            pn, 2, 2 + len(payload) + 16))
        return send.encrypt_packet(writer.data(), payload, pn)

    short = initial_close(50, 0)
    assert len(short) < 1200
    pair.endpoint.receive_datagram(short, CLIENT_ADDR, now=pair.now)
    assert server.state is State.HANDSHAKE
    padded = initial_close(51, 1200)
    assert len(padded) >= 1200
    pair.endpoint.receive_datagram(padded, CLIENT_ADDR, now=pair.now)
    assert server.state is State.DRAINING
