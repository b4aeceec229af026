"""The targets of the coverage-guided fuzzer (harness.fuzz.guided) and their seed corpora.

A target takes the fuzzer's bytes and returns when the code under test behaved: it decoded
them, or refused them with a ``ProtocolError`` (what a peer's bad bytes must become). Any
other exception, or a value that does not survive its own encoding, escapes: a finding.
The fuzzer imports this module under atheris' instrumentation, so the ``velocity`` modules
it imports first are the ones whose branches guide the search."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.loopback import CLIENT_ADDR, SERVER_ADDR
from harness.pair import PairSpec, make_configs, server_identity
from velocity.core.buffer import Writer
from velocity.core.connection import Connection, ConnectionConfig
from velocity.core.entropy import SeededEntropy
from velocity.core.errors import ProtocolError
from velocity.core.events import InternalErrorRaised, TicketReceived
from velocity.core.frames import ConnectionClose, Ping, decode_frames, encode_frames
from velocity.core.handshake.common import ReplayFilter
from velocity.core.handshake.messages import MessageReader, decode_message, encode_message
from velocity.core.handshake.server import ServerConfig
from velocity.core.hybrid import BALANCED
from velocity.core.kem import KemParams
from velocity.core.packet import (
    VELOCITY_VERSION,
    Epoch,
    LongHeader,
    PacketType,
    ShortHeader,
    decode_retry,
    decode_version_negotiation,
    encode_retry,
    encode_version_negotiation,
    parse_header,
    pull_long_header,
    pull_short_header,
    push_long_header,
    push_short_header,
)
from velocity.core.protection import initial_keys
from velocity.core.state import State
from velocity.core.transport_params import (
    decode_transport_parameters,
    encode_transport_parameters,
)
from velocity.crypto.kem import PreferredKem, kem_backend

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "vectors"
PACKET_TYPES = (PacketType.INITIAL, PacketType.ZERO_RTT, PacketType.HANDSHAKE,
                PacketType.ONE_RTT)
SHORT_DCID_LENGTH = 8  # a short header's DCID length, as our server's connection ids


class RoundTripError(AssertionError):
    """A decoded value that its own encoding does not decode back to."""


def _round_trip(value: object, again: object) -> None:
    if again != value:
        raise RoundTripError(f"decoded {value!r}, re-encoded it, decoded {again!r}")


def fuzz_frames(data: bytes) -> None:
    """A packet payload; the first byte picks the packet type whose frame rules apply."""
    if not data:
        return
    packet_type = PACKET_TYPES[data[0] % len(PACKET_TYPES)]
    try:
        frames = decode_frames(data[1:], packet_type)
    except ProtocolError:
        return
    _round_trip(frames, decode_frames(encode_frames(frames), packet_type))


def fuzz_headers(data: bytes) -> None:
    """A packet: its header as a receiver parses it, then the unprotected form of that kind
    (the header-protected bits read as they are)."""
    try:
        header = parse_header(data, short_dcid_length=SHORT_DCID_LENGTH)
        kind = header.packet_type
        if kind == PacketType.VERSION_NEGOTIATION:
            negotiation = decode_version_negotiation(data)
            _round_trip(negotiation,
                        decode_version_negotiation(encode_version_negotiation(negotiation)))
        elif kind == PacketType.RETRY:
            retry = decode_retry(data)
            _round_trip(retry, decode_retry(encode_retry(retry)))
        elif kind == PacketType.ONE_RTT:
            short = pull_short_header(data, SHORT_DCID_LENGTH)
            writer = Writer()
            push_short_header(writer, short)
            _round_trip(short, pull_short_header(writer.data(), SHORT_DCID_LENGTH))
        else:
            long = pull_long_header(data[: header.end])
            writer = Writer()
            push_long_header(writer, long)
            _round_trip(long, pull_long_header(writer.data()))
    except ProtocolError:
        return


def fuzz_messages(data: bytes) -> None:
    """A handshake byte stream: split into messages, each decoded."""
    try:
        for msg_type, body, _ in MessageReader().feed(data):
            message = decode_message(msg_type, body)
            raw = encode_message(message)
            _round_trip(message, decode_message(raw[0], raw[4:]))
    except ProtocolError:
        return


def fuzz_params(data: bytes) -> None:
    """Transport parameters; the first byte's low bit says whether a server sent them."""
    if not data:
        return
    from_server = bool(data[0] & 1)
    try:
        params = decode_transport_parameters(data[1:], from_server=from_server)
    except ProtocolError:
        return
    _round_trip(params, decode_transport_parameters(encode_transport_parameters(params),
                                                    from_server=from_server))


# --- one server connection fed datagrams ------------------------------------------------

# How a chunk of a connection input becomes a datagram: sent as it is, or its bytes are the
# plaintext payload of one client packet of that space, sealed under the keys the server
# reads that space with (the Initial keys anyone derives from the DCID; the Handshake and
# 1-RTT keys of this seeded server). An Initial is padded to 1200 bytes with PADDING.
RAW, INITIAL, HANDSHAKE, ONE_RTT = range(4)
PAIR_SEED = "guided"
MAX_DATAGRAMS = 16
STEP = 0.010  # virtual seconds between datagrams
WAIT = 0.250  # virtual seconds per unit of a chunk's wait: timers (PTO, loss, idle) fire
MAX_TIMERS = 8  # timer runs before one datagram
CLIENT_SCID = bytes.fromhex("5ca1ab1e")
PING_PAYLOAD = encode_frames([Ping()])
CLOSE_PAYLOAD = encode_frames([ConnectionClose(0, 0, b"")])


def split_chunks(data: bytes) -> list[tuple[int, bytes]]:
    """A connection input: (mode byte, 2-byte big-endian length, bytes) repeated; a short
    last chunk takes what is left. At most ``MAX_DATAGRAMS`` chunks. The mode byte's low two
    bits are the mode, its upper six a wait before the datagram (``WAIT`` seconds each)."""
    chunks: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data) and len(chunks) < MAX_DATAGRAMS:
        mode = data[pos]
        length = int.from_bytes(data[pos + 1 : pos + 3], "big")
        chunks.append((mode, data[pos + 3 : pos + 3 + length]))
        pos += 3 + length
    return chunks


def join_chunks(chunks: list[tuple[int, bytes]]) -> bytes:
    return b"".join(bytes([mode]) + len(body).to_bytes(2, "big") + body
                    for mode, body in chunks)


class _SeededKem(PreferredKem):
    """kyber-py, the backend whose encapsulation takes its randomness from the entropy (so
    the seeded server's keys are the same each run), memoised: an input that keeps the
    CLIENT_HELLO of the transcript costs no pure-Python encapsulation."""

    def __init__(self) -> None:
        super().__init__("kyber-py")

    @functools.lru_cache(maxsize=256)  # noqa: B019  (one instance, for the process)
    def encapsulate(self, params: KemParams, encapsulation_key: bytes,
                    m: bytes) -> tuple[bytes, bytes]:
        return super().encapsulate(params, encapsulation_key, m)


@functools.cache
def _server_handshake() -> ServerConfig:
    """The pair's server; its static key decapsulates on OpenSSL (deterministic anyway)."""
    config = make_configs(PairSpec())[1]
    static = server_identity(BALANCED).static_key(kem_backend("cryptography"))
    return replace(config, kem=_SeededKem(), static_keys=(static,))


def server_connection(first: bytes) -> Connection:
    """The server connection a ``ServerEndpoint`` with this seeded entropy makes for a
    client's first datagram (its DCID and SCID; a fixed pair when it has no long header).
    A fresh replay filter each time, so every input runs alike."""
    try:
        header = parse_header(first, short_dcid_length=SHORT_DCID_LENGTH)
        dcid, scid = header.dcid, header.scid
    except ProtocolError:
        dcid, scid = bytes(8), bytes(4)
    if len(dcid) < 8:
        dcid = bytes(8)
    config = ConnectionConfig(replace(_server_handshake(), replay_filter=ReplayFilter()))
    return Connection(config, entropy=SeededEntropy(PAIR_SEED).fork("server"),
                      original_dcid=dcid, peer_cid=scid)


def client_initial(dcid: bytes, number: int, payload: bytes, *,
                   scid: bytes = CLIENT_SCID) -> bytes:
    """A client Initial carrying ``payload`` under the Initial keys of ``dcid`` (anyone can
    build one, VEL-PROT-003), PADDING making the datagram 1200 bytes."""
    header_size = 1 + 4 + 1 + len(dcid) + 1 + len(scid) + 1 + 2 + 4
    payload += bytes(max(0, 1200 - header_size - 16 - len(payload)))
    writer = Writer()
    push_long_header(writer, LongHeader(PacketType.INITIAL, VELOCITY_VERSION, dcid, scid,
                                        number, 4, 4 + len(payload) + 16))
    return initial_keys(dcid, is_client=True)[0].encrypt_packet(writer.data(), payload, number)


def seal(conn: Connection, mode: int, payload: bytes) -> bytes | None:
    """``payload`` in one client packet of ``mode``'s space, or None without those keys.
    An Initial goes to the client's first DCID, which any server still routes to it."""
    epoch = {INITIAL: Epoch.INITIAL, HANDSHAKE: Epoch.HANDSHAKE, ONE_RTT: Epoch.APPLICATION}[
        mode]
    keys = conn.spaces[epoch].recv_keys
    if keys is None:
        return None
    received = conn.spaces[epoch].received
    number = received.bounds()[1] if received else 0
    if mode == INITIAL:
        return client_initial(conn.original_dcid, number, payload, scid=conn.peer_cid)
    writer = Writer()
    if mode == ONE_RTT:
        push_short_header(writer, ShortHeader(conn.host_cid, number, 4,
                                              key_phase=bool(conn._recv_phase)))
    else:
        push_long_header(writer, LongHeader(PacketType.HANDSHAKE, VELOCITY_VERSION,
                                            conn.host_cid, conn.peer_cid, number, 4,
                                            4 + len(payload) + 16))
    return keys.encrypt_packet(writer.data(), payload, number)


@dataclass
class ConnectionRun:
    """What one connection input did: the datagrams the server read, and whether each was
    built from raw bytes or Initial keys only (so any server can be sent them)."""

    datagrams: list[bytes] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)  # seconds before each, beyond STEP
    portable: bool = True
    dcid: bytes = b""  # the server connection's original DCID


def run_timers(conn: Connection, now: float) -> None:
    """Every timer due by ``now``, each at its own time, and what each sends."""
    for _ in range(MAX_TIMERS):
        timer = conn.get_timer()
        if timer is None or timer > now:
            return
        conn.handle_timer(now=timer)
        conn.datagrams_to_send(now=timer)
        _raise_internal_errors(conn)


def _raise_internal_errors(conn: Connection) -> None:
    while (event := conn.next_event()) is not None:
        if isinstance(event, InternalErrorRaised):
            raise event.exception


def deliver(conn: Connection, datagram: bytes, now: float) -> list[bytes]:
    """One datagram to the server, then its answers and due timer; a non-protocol exception
    inside it (InternalErrorRaised) is re-raised here."""
    conn.receive_datagram(datagram, CLIENT_ADDR, now=now)
    answers = [d for d, _ in conn.datagrams_to_send(now=now)]
    if (timer := conn.get_timer()) is not None and timer <= now:
        conn.handle_timer(now=now)
        answers += [d for d, _ in conn.datagrams_to_send(now=now)]
    _raise_internal_errors(conn)
    return answers


def run_connection(data: bytes, run: ConnectionRun | None = None) -> ConnectionRun:
    """Feed a fresh server connection the datagrams of ``data``. After each one (and the
    datagrams and timers it causes) the connection is fine or closing: a non-protocol
    exception inside it is re-raised (``deliver``), a finding."""
    run = run if run is not None else ConnectionRun()
    chunks = split_chunks(data)
    if not chunks:
        return run
    conn: Connection | None = None
    now = 0.0
    for mode_byte, body in chunks:
        mode, wait = mode_byte & 0x03, mode_byte >> 2
        if conn is None:
            conn = server_connection(body)
            run.dcid = conn.original_dcid
        now += STEP + wait * WAIT
        run_timers(conn, now)
        if conn.state in (State.DRAINING, State.TERMINATED):
            break
        datagram = body if mode == RAW else seal(conn, mode, body)
        if datagram is None:
            continue
        run.datagrams.append(datagram)
        run.waits.append(wait * WAIT)
        run.portable = run.portable and mode in (RAW, INITIAL)
        deliver(conn, datagram, now)
        if conn.state in (State.DRAINING, State.TERMINATED):
            break
    return run


def fuzz_connection(data: bytes) -> None:
    run_connection(data)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "frames": fuzz_frames,
    "headers": fuzz_headers,
    "messages": fuzz_messages,
    "params": fuzz_params,
    "connection": fuzz_connection,
}


# --- seed corpora -----------------------------------------------------------------------


def _hex_values(node: Any, keys: frozenset[str]) -> Iterator[bytes]:
    """Every hex string under one of ``keys`` anywhere in a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in keys and isinstance(value, str):
                try:
                    yield bytes.fromhex(value)
                except ValueError:
                    continue
            else:
                yield from _hex_values(value, keys)
    elif isinstance(node, list):
        for item in node:
            yield from _hex_values(item, keys)


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _handshake_messages() -> list[bytes]:
    return [bytes.fromhex(m) for path in sorted((VECTORS / "handshakes").glob("*.json"))
            for flight in _json(path)["flights"] for m in flight["messages"]]


@dataclass
class Live:
    """Seeded in-memory connections of the reference client to ``server_connection``'s
    server (PDK, discovery, then a 0-RTT resumption of the discovery ticket), each until
    its handshake is done and one stream answered: the client's datagrams of each in order,
    which the fuzzer's server reads all of, and the transport parameters each side got."""

    transcripts: dict[str, list[bytes]]
    params: list[tuple[bool, bytes]]

    @property
    def client_datagrams(self) -> list[bytes]:
        return self.transcripts["pdk"]


def _converse(client: Connection, early: bool) -> tuple[list[bytes], Connection]:
    client.connect(SERVER_ADDR, now=0.0)
    if early:
        client.send_stream_data(0, b"GET / early\r\n", end_stream=True)
    sent: list[bytes] = []
    server: Connection | None = None
    now = 0.0
    for _ in range(32):
        outgoing = [d for d, _ in client.datagrams_to_send(now=now)]
        for datagram in outgoing:
            sent.append(datagram)
            server = server or server_connection(datagram)
            now += STEP
            for answer in deliver(server, datagram, now):
                client.receive_datagram(answer, SERVER_ADDR, now=now)
        if client.handshake_complete and not client.streams and not early:
            client.send_stream_data(0, b"GET / fuzz\r\n", end_stream=True)
        elif not outgoing:
            break
    assert server is not None and server.handshake_complete, "the seeded pair did not connect"
    return sent, server


@functools.cache
def live_transcript() -> Live:
    entropy = SeededEntropy(PAIR_SEED).fork("client")
    transcripts, params = {}, []
    ticket: TicketReceived | None = None
    for mode in ("pdk", "discovery", "resumption"):
        handshake = make_configs(PairSpec(mode="pdk" if mode == "pdk" else "discovery"))[0]
        config = ConnectionConfig(handshake)
        if mode == "resumption":
            assert ticket is not None, "the discovery connection received no ticket"
            config = ConnectionConfig(replace(handshake, ticket=ticket.ticket, early_data=True),
                                      remembered_transport_parameters=ticket.transport_parameters)
        client = Connection(config, entropy=entropy.fork(mode))
        transcripts[mode], server = _converse(client, early=mode == "resumption")
        while (event := client.next_event()) is not None:
            if isinstance(event, TicketReceived):
                ticket = event
        assert server.peer_params is not None and client.peer_params is not None
        params += [(False, encode_transport_parameters(server.peer_params)),
                   (True, encode_transport_parameters(client.peer_params))]
    return Live(transcripts, params)


def seeds(target: str) -> list[bytes]:
    """The seed corpus of a target: the repository's known-answer vectors (vectors/) and
    the seeded pair's live transcript."""
    frames = _json(VECTORS / "frames.json")["vectors"]
    initial = _json(VECTORS / "initial.json")
    if target == "frames":
        payloads = [bytes.fromhex(v["hex"]) for v in frames]
        payloads += list(_hex_values(initial["packets"], frozenset({"payload"})))
        return [bytes([kind]) + p for p in payloads for kind in range(len(PACKET_TYPES))]
    if target == "headers":
        found = [bytes.fromhex(v["hex"]) for v in _json(VECTORS / "headers.json")["vectors"]]
        found += list(_hex_values(_json(VECTORS / "retry.json"), frozenset({"packet"})))
        found += list(_hex_values(initial["packets"], frozenset({"protected", "packet"})))
        return found + live_transcript().client_datagrams
    if target == "messages":
        return _handshake_messages()
    if target == "params":
        return [bytes([from_server]) + raw for from_server, raw in live_transcript().params]
    if target == "connection":
        live = live_transcript().transcripts
        transcript = [(RAW, d) for d in live["pdk"]]
        # the live flights, then the frames vectors as 1-RTT and Handshake plaintexts
        vector_initial = bytes.fromhex(initial["packets"][0]["protected"])
        return [*(join_chunks([(RAW, d) for d in flights]) for flights in live.values()),
                join_chunks(transcript[:1]),
                join_chunks([*transcript[:2], (RAW | 16 << 2, b"")]),  # 4 s on: PTOs fire
                join_chunks([(RAW, vector_initial)]),
                *(join_chunks([*transcript, (ONE_RTT, bytes.fromhex(v["hex"]))])
                  for v in frames),
                *(join_chunks([transcript[0], (HANDSHAKE, bytes.fromhex(v["hex"]))])
                  for v in frames[:8]),
                *(join_chunks([(INITIAL, bytes.fromhex(v["hex"]))]) for v in frames[:8])]
    raise KeyError(target)
