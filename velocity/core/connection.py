"""A Velocity/1 connection, sans-I/O (architecture habit 1): driven by ``receive_datagram``,
``handle_timer`` and commands, read with ``datagrams_to_send``, ``next_event`` and
``get_timer``. ``now`` is always an argument (seconds); randomness comes from ``Entropy``.

This module owns the connection's state machine: packet spaces and their keys, the
handshake, frames in and out, flow control, closing and draining. Packet assembly lives in
``velocity.core.sender`` and loss recovery in ``velocity.core.recovery``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Any

from velocity.core.entropy import Entropy
from velocity.core.errors import (
    AeadLimitReached,
    AuthenticationFailed,
    ConnectionIdLimitError,
    ErrorCode,
    FlowControlError,
    KeyUpdateError,
    PacketDropped,
    ProtocolError,
    ProtocolViolation,
    StreamLimitError,
    StreamStateError,
    TransportParameterError,
    UsageError,
)
from velocity.core.events import (
    ConnectionTerminated,
    Event,
    HandshakeConfirmed,
    NewTokenReceived,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
    TicketReceived,
)
from velocity.core.frames import (
    Ack,
    ApplicationClose,
    ConnectionClose,
    Crypto,
    DataBlocked,
    Frame,
    HandshakeDone,
    MaxData,
    MaxStreamData,
    MaxStreamsBidi,
    MaxStreamsUni,
    NewConnectionId,
    NewToken,
    Padding,
    PathChallenge,
    PathResponse,
    Ping,
    ResetStream,
    RetireConnectionId,
    StopSending,
    Stream,
    StreamDataBlocked,
    StreamsBlockedBidi,
    StreamsBlockedUni,
    decode_frames,
    stream_frame_at,
)
from velocity.core.handshake.client import ClientConfig, ClientHandshake
from velocity.core.handshake.common import (
    FallbackDirected,
    HandshakeCompleted,
    HandshakeEvent,
    KeysReady,
    ServerKeyLearned,
    TicketIssued,
)
from velocity.core.handshake.server import ServerConfig, ServerHandshake
from velocity.core.packet import (
    EPOCH_OF,
    EPOCHS,
    FIXED_BIT,
    VELOCITY_VERSION,
    Epoch,
    PacketType,
    decode_retry,
    decode_version_negotiation,
    parse_header,
)
from velocity.core.protection import (
    CONFIDENTIALITY_LIMIT,
    INTEGRITY_LIMIT,
    PacketKeys,
    initial_keys,
    retry_tag_valid,
)
from velocity.core.rangeset import RangeSet
from velocity.core.recovery import Recovery
from velocity.core.sender import build_datagrams
from velocity.core.streams import ReceiveBuffer, SendBuffer, StreamState, is_unidirectional
from velocity.core.trace import (
    QLOG_PACKET_TYPES,
    Tracer,
    describe,
    digest,
    packet_data,
    type_name,
)
from velocity.core.transport_params import (
    TransportParameters,
    decode_transport_parameters,
    encode_transport_parameters,
)

Address = tuple[str, int]
CRYPTO_BUFFER_LIMIT = 65536


@dataclass(frozen=True)
class ConnectionConfig:
    """Transport settings; ``handshake`` is a ClientConfig or a ServerConfig."""

    handshake: ClientConfig | ServerConfig
    cid_length: int = 8
    max_datagram_size: int = 1452
    idle_timeout: float = 30.0
    max_data: int = 16 * 1024 * 1024
    max_stream_data: int = 4 * 1024 * 1024
    max_streams_bidi: int = 128
    max_streams_uni: int = 128
    max_ack_delay: float = 0.025
    ack_delay_exponent: int = 3
    ack_every: int = 2  # 1-RTT ack-eliciting packets per ACK, unless max_ack_delay is first
    remembered_transport_parameters: bytes | None = None  # for 0-RTT (client)
    token: bytes = b""  # NEW_TOKEN from an earlier connection (client)

    @property
    def is_client(self) -> bool:
        return isinstance(self.handshake, ClientConfig)


class State(Enum):
    HANDSHAKE = auto()
    CONNECTED = auto()
    CLOSING = auto()
    DRAINING = auto()
    TERMINATED = auto()


@dataclass
class SpaceState:
    """Per packet-number space: keys, CRYPTO streams, received packets and ACK state."""

    send_keys: PacketKeys | None = None
    recv_keys: PacketKeys | None = None
    crypto_send: SendBuffer = field(default_factory=SendBuffer)
    crypto_recv: ReceiveBuffer = field(
        default_factory=lambda: ReceiveBuffer(CRYPTO_BUFFER_LIMIT, crypto=True))
    next_packet_number: int = 0
    received: RangeSet = field(default_factory=RangeSet)
    ack_floor: int = 0  # packet numbers below were acknowledged in an ACK the peer saw
    largest_received_time: float = 0.0
    ack_needed: bool = False
    ack_eliciting_since_ack: int = 0
    ack_deadline: float | None = None
    probes: int = 0
    discarded: bool = False


@dataclass
class FlowState:
    """Connection-level flow control in both directions."""

    max_send: int = 0
    sent: int = 0
    max_recv: int = 0
    max_recv_sent: int = 0
    received: int = 0
    consumed: int = 0
    window: int = 0
    blocked_sent_at: int = -1


class Connection:
    """One Velocity/1 connection (client or server)."""

    def __init__(self, config: ConnectionConfig, *, entropy: Entropy,
                 original_dcid: bytes | None = None, peer_cid: bytes | None = None,
                 retry_scid: bytes | None = None, address_validated: bool = False,
                 tracer: Tracer | None = None) -> None:
        self.config, self.tracer, self._entropy = config, tracer, entropy
        self._now = 0.0  # the time of the current call, for trace events
        self.is_client = config.is_client
        self.state = State.HANDSHAKE
        self.host_cid = entropy.random(config.cid_length)
        self.spaces = {epoch: SpaceState() for epoch in EPOCHS}
        self._zero_rtt_send: PacketKeys | None = None
        self._zero_rtt_recv: PacketKeys | None = None
        self.recovery = Recovery(config.max_datagram_size, is_client=self.is_client)
        self.recovery.max_ack_delay = config.max_ack_delay
        self._events: deque[Event | _DataRun] = deque()
        self.streams: dict[int, StreamState] = {}
        self.flow = FlowState(max_recv=config.max_data, max_recv_sent=config.max_data,
                              window=config.max_data)
        self.peer_params: TransportParameters | None = None
        self._peer_streams_bidi = 0  # limits the peer gave us
        self._peer_streams_uni = 0
        self._local_streams_next = {False: 0, True: 0}  # by unidirectional
        self._peer_streams_opened = {False: 0, True: 0}
        self._local_streams_limit = {False: config.max_streams_bidi,
                                     True: config.max_streams_uni}
        self._streams_closed_by_peer = {False: 0, True: 0}
        self._max_streams_pending = {False: False, True: False}
        self._control: deque[Frame] = deque()  # control frames waiting to be sent
        self.handshake_complete = self.handshake_confirmed = self.early_data_accepted = False
        self._received_retry = False
        self._handshake_done_pending = self._handshake_done_received = False
        self.address_validated = self.is_client or address_validated
        self.bytes_received = self.bytes_sent = 0
        self.started_at: float | None = None  # when it was started or first heard from
        self.early_streams: set[int] = set()  # peer streams that carried 0-RTT data (server)
        self._close: tuple[int, int, str, bool] | None = None  # code, frame type, reason, app
        # close_pending: CONNECTION_CLOSE to send (on closing, then once per datagram heard)
        self.close_pending = False
        self._closing_heard = 0  # datagrams received while closing
        self._early_crypto = bytearray()  # 1-RTT CRYPTO held until the handshake completes
        self._close_deadline: float | None = None
        self._last_activity = 0.0
        self.peer_address: Address | None = None
        self.retry_scid = retry_scid
        self._retry_token = config.token
        self._peer_cid_set = not self.is_client
        self._peer_cids: dict[int, bytes] = {}
        self._send_phase = self._recv_phase = self._forgeries = 0
        self._previous_recv_keys: PacketKeys | None = None
        self.paced_until: float | None = None
        self._first_server_scid: bytes | None = None  # checked against its parameters
        self._zero_rtt_frames: list[tuple[int, int, int, bool]] = []
        self._init_connection_ids(original_dcid, peer_cid)
        self.handshake = self._make_handshake()
        self._peer_params_final = False
        self.handshake_summary: HandshakeCompleted | None = None
        self._use_remembered_params()

    # --- setup -------------------------------------------------------------------------

    def _trace(self, name: str, data: dict[str, Any]) -> None:
        if self.tracer is not None:
            self.tracer.event(self._now, name, data)

    def _trace_started(self) -> None:
        self._trace("quic:connection_started", {
            "role": "client" if self.is_client else "server", "version": f"{VELOCITY_VERSION:#x}",
            "src_cid_length": len(self.host_cid), "dst_cid_length": len(self.peer_cid)})

    def _init_connection_ids(self, original_dcid: bytes | None, peer_cid: bytes | None) -> None:
        """The client picks the first DCID; a server takes the client's, and derives its
        Initial keys from the DCID the client used (the Retry SCID after a Retry)."""
        if self.is_client:
            self.original_dcid = self.peer_cid = self._entropy.random(8)
            self._install_initial_keys(self.original_dcid)
            return
        if original_dcid is None or peer_cid is None:
            raise UsageError("a server connection needs the client's DCID and SCID")
        self.original_dcid, self.peer_cid = original_dcid, peer_cid
        self._install_initial_keys(self.retry_scid or original_dcid)

    def _use_remembered_params(self) -> None:
        """0-RTT runs under the limits the server gave last time (VEL-RES-009)."""
        remembered = self.config.remembered_transport_parameters
        if self.is_client and remembered and getattr(self.config.handshake, "early_data",
                                                     False):
            self._use_peer_params(decode_transport_parameters(remembered, from_server=True))

    def _make_handshake(self) -> ClientHandshake | ServerHandshake:
        params = encode_transport_parameters(self._local_params())
        config = self.config.handshake
        handshake: ClientHandshake | ServerHandshake = (
            ClientHandshake(config, entropy=self._entropy, transport_parameters=params)
            if isinstance(config, ClientConfig) else
            ServerHandshake(config, entropy=self._entropy, transport_parameters=params))
        if self.tracer is not None:
            handshake.trace = self._trace
        return handshake

    def _local_params(self) -> TransportParameters:
        config = self.config
        params = TransportParameters(
            max_idle_timeout=int(config.idle_timeout * 1000),
            max_udp_payload_size=max(config.max_datagram_size, 1200),
            initial_max_data=config.max_data,
            initial_max_stream_data_bidi_local=config.max_stream_data,
            initial_max_stream_data_bidi_remote=config.max_stream_data,
            initial_max_stream_data_uni=config.max_stream_data,
            initial_max_streams_bidi=config.max_streams_bidi,
            initial_max_streams_uni=config.max_streams_uni,
            ack_delay_exponent=config.ack_delay_exponent,
            max_ack_delay=int(config.max_ack_delay * 1000),
            initial_source_connection_id=self.host_cid,
            grease=self._entropy.random(2))
        if not self.is_client:
            params = params.with_changes(original_destination_connection_id=self.original_dcid,
                                         retry_source_connection_id=self.retry_scid)
        return params

    def _install_initial_keys(self, dcid: bytes) -> None:
        send, receive = initial_keys(dcid, is_client=self.is_client)
        space = self.spaces[Epoch.INITIAL]
        space.send_keys, space.recv_keys = send, receive

    # --- commands ------------------------------------------------------------------------

    def connect(self, address: Address, *, now: float) -> None:
        """Client: start the handshake towards ``address``."""
        if not self.is_client:
            raise UsageError("only a client connects")
        self.peer_address = address
        self.started_at = self._last_activity = self._now = now
        self._trace_started()
        assert isinstance(self.handshake, ClientHandshake)
        self.handshake.start(now_ms=int(now * 1000))
        self._pump_handshake(now)

    def get_next_available_stream_id(self, *, unidirectional: bool = False) -> int:
        """The id of the next stream this endpoint may open; raises ``StreamsExhausted``
        (and tells the peer with STREAMS_BLOCKED) when the peer's limit is reached."""
        index = self._local_streams_next[unidirectional]
        limit = self._peer_streams_uni if unidirectional else self._peer_streams_bidi
        if index >= limit:
            blocked = StreamsBlockedUni(limit) if unidirectional else StreamsBlockedBidi(limit)
            if blocked not in self._control:
                self._control.append(blocked)
            raise StreamsExhausted(f"the peer allows {limit} streams of this kind")
        return index * 4 + (0 if self.is_client else 1) + (2 if unidirectional else 0)

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        stream = self._local_stream(stream_id)
        stream.require_sender("STREAM").write(data, end_stream)

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        sender = self._local_stream(stream_id).require_sender("RESET_STREAM")
        if sender.reset_code is None:
            sender.reset_code = error_code
            self._control.append(ResetStream(stream_id, error_code, sender.sent_max))

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        self._local_stream(stream_id).require_receiver("STOP_SENDING")
        self._control.append(StopSending(stream_id, error_code))

    def queue_after_handshake(self, frame: Frame) -> None:
        """A 1-RTT control frame (NEW_TOKEN) to send once 1-RTT keys exist."""
        self._control.append(frame)

    def stream_buffered(self, stream_id: int) -> int:
        """Bytes written to a stream and not yet acknowledged (for back-pressure)."""
        stream = self.streams.get(stream_id)
        return stream.sender.buffered if stream is not None and stream.sender else 0

    def close(self, error_code: int = ErrorCode.NO_ERROR, reason: str = "", *,
              application: bool = True, frame_type: int = 0) -> None:
        """Close the connection; CONNECTION_CLOSE goes out with the next datagrams."""
        if self.state in (State.CLOSING, State.DRAINING, State.TERMINATED):
            return
        self._close = (error_code, frame_type, reason, application)
        self.close_pending = True
        self._trace("quic:connection_closed", {
            "owner": "local", "error_code": error_code, "frame_type": frame_type,
            "reason": reason, "application": application})
        self.state = State.CLOSING
        self._events.append(ConnectionTerminated(error_code, frame_type, reason, False))

    def next_event(self) -> Event | None:
        if not self._events:
            return None
        event = self._events.popleft()
        if not isinstance(event, _DataRun):
            return event
        chunks = event.chunks
        return StreamDataReceived(event.stream_id,
                                  chunks[0] if len(chunks) == 1 else b"".join(chunks),
                                  event.end_stream)

    # --- streams -------------------------------------------------------------------------

    def _local_stream(self, stream_id: int) -> StreamState:
        stream = self.streams.get(stream_id)
        if stream is not None:
            return stream
        local = (stream_id & 0x01) == (0 if self.is_client else 1)
        if not local:
            raise UsageError(f"stream {stream_id} was not opened by the peer yet")
        unidirectional = is_unidirectional(stream_id)
        if stream_id // 4 >= (self._peer_streams_uni if unidirectional
                              else self._peer_streams_bidi):
            raise StreamsExhausted(f"stream {stream_id} is beyond the peer's stream limit")
        self._local_streams_next[unidirectional] = max(
            self._local_streams_next[unidirectional], stream_id // 4 + 1)
        return self._new_stream(stream_id, local=True)

    def _new_stream(self, stream_id: int, *, local: bool) -> StreamState:
        params = self.peer_params or TransportParameters()
        if is_unidirectional(stream_id):
            max_send = params.initial_max_stream_data_uni
        elif local:
            max_send = params.initial_max_stream_data_bidi_remote
        else:
            max_send = params.initial_max_stream_data_bidi_local
        stream = StreamState(stream_id, local=local, is_client=self.is_client, max_send=max_send,
                        window=self.config.max_stream_data)
        self.streams[stream_id] = stream
        return stream

    def _peer_stream(self, stream_id: int, frame: str) -> StreamState:
        """The stream a frame names, opening peer-initiated streams up to the limit."""
        stream = self.streams.get(stream_id)
        if stream is not None:
            return stream
        local = (stream_id & 0x01) == (0 if self.is_client else 1)
        unidirectional = is_unidirectional(stream_id)
        if local:
            if stream_id // 4 < self._local_streams_next[unidirectional]:
                raise _Closed  # a stream of ours that is already gone
            raise StreamStateError(f"stream {stream_id} was never opened",
                                   field=f"{frame}.stream_id")
        if stream_id // 4 >= self._local_streams_limit[unidirectional]:
            raise StreamLimitError(f"stream {stream_id} exceeds the stream limit",
                                   field=f"{frame}.stream_id")
        if stream_id // 4 < self._peer_streams_opened[unidirectional]:
            raise _Closed
        # opening a stream opens every lower-numbered one of its type (RFC 9000 3.2)
        base = stream_id & 0x03
        for index in range(self._peer_streams_opened[unidirectional], stream_id // 4):
            self._new_stream(index * 4 + base, local=False)
        self._peer_streams_opened[unidirectional] = stream_id // 4 + 1
        return self._new_stream(stream_id, local=False)

    def _discard_closed_streams(self) -> None:
        for stream_id in [sid for sid, s in self.streams.items() if s.closed]:
            del self.streams[stream_id]
            peer_opened = (stream_id & 0x01) != (0 if self.is_client else 1)
            if peer_opened:
                unidirectional = is_unidirectional(stream_id)
                self._streams_closed_by_peer[unidirectional] += 1
                initial = (self.config.max_streams_uni if unidirectional
                           else self.config.max_streams_bidi)
                limit = self._streams_closed_by_peer[unidirectional] + initial
                if limit - self._local_streams_limit[unidirectional] >= max(initial // 2, 1):
                    self._local_streams_limit[unidirectional] = limit
                    self._max_streams_pending[unidirectional] = True

    # --- receiving -----------------------------------------------------------------------

    def receive_datagram(self, data: bytes, address: Address, *, now: float) -> None:
        """Process one UDP datagram; a protocol error closes this connection only."""
        if self.state in (State.DRAINING, State.TERMINATED):
            return
        self._now = now
        if self.started_at is None:
            self.started_at = now
            self._trace_started()
        self.bytes_received += len(data)
        if self.peer_address is None:
            self.peer_address = address
        if self.state == State.CLOSING:
            # answer the peer's datagrams with the close, at a falling rate: after the 1st,
            # 2nd, 4th, 8th... (RFC 9000 section 10.2.1)
            self._closing_heard += 1
            self.close_pending = not self._closing_heard & (self._closing_heard - 1)
            return
        offset = 0
        try:
            while offset < len(data):
                if not data[offset] & 0x80 and self.tracer is None:
                    self._receive_short(data, offset, now)  # always the last packet
                    break
                offset = self._receive_packet(data, offset, now)
        except ProtocolError as exc:
            self._fail(exc)
            self._pump_handshake(now)  # what the handshake produced before it failed

    def _receive_packet(self, data: bytes, offset: int, now: float) -> int:
        """Handle the packet at ``offset``; return where the next one starts."""
        try:
            header = parse_header(data, offset, short_dcid_length=self.config.cid_length)
        except (PacketDropped, ProtocolError):
            self._trace_dropped(None, len(data) - offset, "header_parse_error")
            return len(data)  # an undecodable header ends the datagram (VEL-PKT-005)
        if header.packet_type == PacketType.VERSION_NEGOTIATION:
            self._on_version_negotiation(data[offset:])
            return len(data)
        if header.version != VELOCITY_VERSION:
            self._trace_dropped(None, len(data) - offset, "unsupported_version")
            return len(data)
        if header.packet_type == PacketType.RETRY:
            self._on_retry(data[offset:], now)
            return len(data)
        end = header.end
        packet = data if offset == 0 and end == len(data) else data[offset:end]
        epoch = EPOCH_OF[header.packet_type]
        space = self.spaces[epoch]
        opened = self._open(packet, header.packet_type, header.pn_offset - offset, space)
        if opened is None:
            return end
        plain, payload, packet_number = opened
        if header.packet_type == PacketType.ONE_RTT and not self.is_client and (
                not self.spaces[Epoch.HANDSHAKE].discarded):
            self._server_done_with_handshake_keys(client_completed=True)
        if plain[0] & (0x0C if plain[0] & 0x80 else 0x18):
            raise ProtocolViolation("reserved bits are not 0", field="first_byte")
        if packet_number < space.ack_floor or packet_number in space.received:
            self._trace_dropped(header.packet_type, end - offset, "duplicate")
            return end
        if self.is_client and not self._peer_cid_set and header.packet_type in (
                PacketType.INITIAL, PacketType.HANDSHAKE):
            self.peer_cid, self._peer_cid_set = header.scid, True
            self._first_server_scid = header.scid
        if not self.is_client and epoch == Epoch.HANDSHAKE:
            self.address_validated = True
            self._discard_space(Epoch.INITIAL)
        frames = decode_frames(payload, header.packet_type)
        if self.tracer is not None:
            self._trace("quic:packet_received",
                        packet_data(header.packet_type, packet_number, end - offset, frames))
        expected = space.received.bounds()[1] if space.received else space.ack_floor
        if packet_number >= expected:
            space.largest_received_time = now  # for the ACK delay field
        space.received.add(packet_number)
        self._last_activity = now
        ack_eliciting = False
        for frame in frames:
            ack_eliciting |= frame.ACK_ELICITING
            self._handle_frame(frame, epoch, header.packet_type, now)
        if ack_eliciting:
            self._note_ack_eliciting(space, epoch, now, in_order=packet_number == expected)
        return end

    def _receive_short(self, data: bytes, offset: int, now: float) -> None:
        """A 1-RTT packet: it runs to the end of the datagram. Everything ``_receive_packet``
        does for one, without building a header or, for the STREAM frames that lead a bulk
        payload, frame objects (a tracer, which records frames, takes the general path)."""
        packet = data[offset:] if offset else data
        if not packet[0] & FIXED_BIT:
            self._trace_dropped(None, len(packet), "header_parse_error")
            return
        space = self.spaces[Epoch.APPLICATION]
        keys = space.recv_keys
        if keys is None or space.discarded:
            self._trace_dropped(PacketType.ONE_RTT, len(packet), "key_unavailable")
            return
        received = space.received
        expected = received.bounds()[1] if received else space.ack_floor
        try:
            plain, packet_number = keys.remove_header_protection(
                packet, 1 + self.config.cid_length, expected)
            if (plain[0] >> 2) & 1 == self._recv_phase:
                payload = keys.open_payload(packet, plain, packet_number)
            else:
                payload = self._open_other_phase(packet, plain, packet_number, expected)
        except PacketDropped as exc:  # AuthenticationFailed included
            self._not_opened(PacketType.ONE_RTT, len(packet), keys, exc)
            return
        if not self.is_client and not self.spaces[Epoch.HANDSHAKE].discarded:
            self._server_done_with_handshake_keys(client_completed=True)
        if plain[0] & 0x18:
            raise ProtocolViolation("reserved bits are not 0", field="first_byte")
        if packet_number < space.ack_floor or packet_number in received:
            return
        streams, start, size = [], 0, len(payload)
        while start < size and (stream := stream_frame_at(payload, start)) is not None:
            streams.append(stream)
            start = stream[4]
        frames = decode_frames(payload, PacketType.ONE_RTT, start) if (
            start < size or not start) else []
        if packet_number >= expected:
            space.largest_received_time = now  # for the ACK delay field
        received.add(packet_number)
        self._last_activity = now
        for stream_id, stream_offset, chunk, fin, _ in streams:
            self._stream_data(stream_id, stream_offset, chunk, fin)
        ack_eliciting = bool(streams)
        for frame in frames:
            ack_eliciting |= frame.ACK_ELICITING
            self._handle_frame(frame, Epoch.APPLICATION, PacketType.ONE_RTT, now)
        if ack_eliciting:
            self._note_ack_eliciting(space, Epoch.APPLICATION, now,
                                     in_order=packet_number == expected)

    def _open(self, packet: bytes, packet_type: PacketType, pn_offset: int,
              space: SpaceState) -> tuple[bytes, bytes, int] | None:
        """(header, payload, packet number), or None for a packet to drop."""
        keys = self._zero_rtt_recv if packet_type == PacketType.ZERO_RTT else space.recv_keys
        if keys is None or space.discarded:
            self._trace_dropped(packet_type, len(packet), "key_unavailable")
            return None
        expected = space.received.bounds()[1] if space.received else space.ack_floor
        try:
            if packet_type != PacketType.ONE_RTT:
                return keys.decrypt_packet(packet, pn_offset, expected)
            header, packet_number = keys.remove_header_protection(packet, pn_offset, expected)
            if (header[0] >> 2) & 1 == self._recv_phase:
                return header, keys.open_payload(packet, header, packet_number), packet_number
            return header, self._open_other_phase(packet, header, packet_number,
                                                  expected), packet_number
        except PacketDropped as exc:  # AuthenticationFailed included
            self._not_opened(packet_type, len(packet), keys, exc)
        return None

    def _not_opened(self, packet_type: PacketType, length: int, keys: PacketKeys,
                    exc: PacketDropped) -> None:
        """A packet that could not be opened is dropped; forgeries count towards the AEAD's
        integrity limit (VEL-PROT-012)."""
        if not isinstance(exc, AuthenticationFailed):
            self._trace_dropped(packet_type, length, "invalid")
            return
        self._forgeries += 1
        if self._forgeries > INTEGRITY_LIMIT[keys.aead]:
            raise AeadLimitReached("too many packets failed authentication",
                                   field="payload") from None
        self._trace_dropped(packet_type, length, "decryption_failure")

    def _trace_dropped(self, packet_type: PacketType | None, length: int, trigger: str) -> None:
        if self.tracer is not None:
            header = {} if packet_type is None else {
                "packet_type": QLOG_PACKET_TYPES[packet_type]}
            self._trace("quic:packet_dropped", {"header": header, "raw": {"length": length},
                                                "trigger": trigger})

    def _open_other_phase(self, packet: bytes, header: bytes, packet_number: int,
                          expected: int) -> bytes:
        """Open a 1-RTT packet whose key-phase bit is not the current one (VEL-PROT-011): a
        packet from before an update (previous keys), or the peer updated (the next keys:
        follow it, and update our sending keys if we did not start it)."""
        keys = self.spaces[Epoch.APPLICATION].recv_keys
        assert keys is not None  # checked by the caller
        if self._previous_recv_keys is not None and packet_number < expected:
            return self._previous_recv_keys.open_payload(packet, header, packet_number)
        following = keys.next_generation()
        payload = following.open_payload(packet, header, packet_number)
        if not self.handshake_confirmed:
            raise KeyUpdateError("key update before the handshake is confirmed",
                                 field="short.key_phase")
        self._previous_recv_keys = keys
        self.spaces[Epoch.APPLICATION].recv_keys = following
        self._recv_phase ^= 1
        if self._send_phase != self._recv_phase:
            self._rotate_send_keys()
        return payload

    def _rotate_send_keys(self) -> None:
        space = self.spaces[Epoch.APPLICATION]
        assert space.send_keys is not None
        space.send_keys = space.send_keys.next_generation()
        self._send_phase ^= 1

    def check_confidentiality_limit(self) -> None:
        """Update keys before the 1-RTT send key reaches its AEAD limit (VEL-PROT-012)."""
        keys = self.spaces[Epoch.APPLICATION].send_keys
        if keys is None or keys.encrypted < CONFIDENTIALITY_LIMIT[keys.aead] - 1024:
            return
        if self.handshake_confirmed and self._send_phase == self._recv_phase:
            self._rotate_send_keys()
        elif keys.encrypted >= CONFIDENTIALITY_LIMIT[keys.aead]:
            self.close(ErrorCode.AEAD_LIMIT_REACHED, "key update impossible at the AEAD limit",
                       application=False)

    def request_key_update(self) -> None:
        """Start a key update; the peer follows when it sees the new key phase."""
        if not self.handshake_confirmed or self._send_phase != self._recv_phase:
            raise UsageError("a key update needs a confirmed handshake and no update in "
                             "progress")
        self._rotate_send_keys()

    def _note_ack_eliciting(self, space: SpaceState, epoch: Epoch, now: float, *,
                            in_order: bool) -> None:
        """Acknowledge at once outside 1-RTT, after ``ack_every`` packets, or when a packet
        arrives out of order or after a gap: the sender's loss detection needs to hear of it
        now (RFC 9000 section 13.2.1)."""
        space.ack_eliciting_since_ack += 1
        if (epoch != Epoch.APPLICATION or not in_order
                or space.ack_eliciting_since_ack >= self.config.ack_every):
            space.ack_needed = True
        elif space.ack_deadline is None:
            space.ack_deadline = now + self.config.max_ack_delay

    def _on_version_negotiation(self, data: bytes) -> None:
        if not self.is_client or self._peer_cid_set or self._received_retry:
            return
        try:
            packet = decode_version_negotiation(data)
        except ProtocolError:
            return
        if VELOCITY_VERSION in packet.versions:
            return  # VEL-VN-004: a VN listing our version is discarded
        self.state = State.TERMINATED
        versions = ", ".join(f"0x{v:08x}" for v in packet.versions)
        self._events.append(ConnectionTerminated(
            ErrorCode.NO_VIABLE_PATH, 0, f"server supports only {versions}", True))

    def _on_retry(self, data: bytes, now: float) -> None:
        if not self.is_client or self._received_retry or self._peer_cid_set:
            return
        try:
            retry = decode_retry(data)
        except ProtocolError:
            return
        if not retry_tag_valid(data, self.original_dcid):
            return
        self._received_retry = True
        self.retry_scid = retry.scid
        self.peer_cid = retry.scid
        self._retry_token = retry.token
        self._install_initial_keys(retry.scid)
        self.recovery.discard(Epoch.INITIAL)
        crypto = self.spaces[Epoch.INITIAL].crypto_send
        crypto.on_lost(0, crypto.write_offset, False)

    # --- frames --------------------------------------------------------------------------

    def _handle_frame(self, frame: Frame, epoch: Epoch, packet_type: PacketType,
                      now: float) -> None:
        handler = _HANDLERS.get(type(frame))
        if packet_type is PacketType.ZERO_RTT and isinstance(frame, Stream):
            self.early_streams.add(frame.stream_id)
        if handler is not None:
            handler(self, frame, epoch, now)

    def _on_ack(self, frame: Ack, epoch: Epoch, now: float) -> None:
        ranges = frame.packet_ranges()
        if ranges[0][1] >= self.spaces[epoch].next_packet_number:
            raise ProtocolViolation("acknowledges a packet never sent", field="ACK.largest")
        exponent = self.peer_params.ack_delay_exponent if self.peer_params else 3
        delay = (frame.delay << exponent) / 1_000_000 if epoch == Epoch.APPLICATION else 0.0
        self.recovery.on_ack(epoch, ranges, delay, now,
                             handshake_confirmed=self.handshake_confirmed,
                             peer_completed_address_validation=self.handshake_complete)
        if epoch == Epoch.HANDSHAKE:
            self._server_done_with_handshake_keys()

    def _server_done_with_handshake_keys(self, *, client_completed: bool = False) -> None:
        """VEL-PROT-013: a server drops its Handshake keys once its handshake is complete and
        the client has its FINISHED: the FINISHED is acknowledged, or a 1-RTT packet came
        (``client_completed``: a client sends 1-RTT only once complete). The client's ACK
        of the FINISHED can be lost for good, as it drops its Handshake keys on
        HANDSHAKE_DONE; without the second rule the server would probe forever."""
        if not self.is_client and self.handshake_complete and (
                client_completed or not self.spaces[Epoch.HANDSHAKE].crypto_send.buffered):
            self._discard_space(Epoch.HANDSHAKE)

    def _on_crypto(self, frame: Crypto, epoch: Epoch, now: float) -> None:
        data = self.spaces[epoch].crypto_recv.receive(frame.offset, frame.data)
        if data and epoch == Epoch.APPLICATION and not self.handshake_complete:
            # 1-RTT CRYPTO (a ticket) can overtake the server's FINISHED when that is lost
            # or reordered: it waits for the handshake to complete (RFC 9001 section 4.1.3)
            self._early_crypto += data
            return
        if data:
            self.handshake.receive(epoch, data, now_ms=int(now * 1000))
            self._pump_handshake(now)  # keys for packets coalesced behind this one

    def _on_stream(self, frame: Stream, epoch: Epoch, now: float) -> None:
        self._stream_data(frame.stream_id, frame.offset, frame.data, frame.fin)

    def _stream_data(self, stream_id: int, offset: int, data: bytes, fin: bool) -> None:
        """A STREAM frame's contents: reassembly, flow control, StreamDataReceived."""
        stream = self.streams.get(stream_id)
        if stream is None:
            try:
                stream = self._peer_stream(stream_id, "STREAM")
            except _Closed:
                return
        receiver = stream.receiver or stream.require_receiver("STREAM")
        before = receiver.highest
        data = receiver.receive(offset, data, fin)
        flow = self.flow
        if receiver.highest > before:
            flow.received += receiver.highest - before
            if flow.received > flow.max_recv:
                raise FlowControlError("connection data limit exceeded",
                                       field="STREAM.offset")
        complete = receiver.final_size is not None and receiver.complete
        if data or (complete and fin):
            flow.consumed += len(data)
            events = self._events
            tail = events[-1] if events else None
            if type(tail) is _DataRun and tail.stream_id == stream_id:
                tail.chunks.append(data)
                tail.end_stream = complete
            else:
                events.append(_DataRun(stream_id, [data], complete))

    def _on_reset_stream(self, frame: ResetStream, epoch: Epoch, now: float) -> None:
        try:
            stream = self._peer_stream(frame.stream_id, "RESET_STREAM")
        except _Closed:
            return
        receiver = stream.require_receiver("RESET_STREAM")
        if receiver.reset_code is None:
            self.flow.received += max(frame.final_size - receiver.highest, 0)
            receiver.reset(frame.final_size, frame.error_code)
            self._events.append(StreamReset(frame.stream_id, frame.error_code))

    def _on_stop_sending(self, frame: StopSending, epoch: Epoch, now: float) -> None:
        try:
            stream = self._peer_stream(frame.stream_id, "STOP_SENDING")
        except _Closed:
            return
        stream.require_sender("STOP_SENDING")
        self._events.append(StopSendingReceived(frame.stream_id, frame.error_code))
        self.reset_stream(frame.stream_id, frame.error_code)

    def _on_max_data(self, frame: MaxData, epoch: Epoch, now: float) -> None:
        self.flow.max_send = max(self.flow.max_send, frame.maximum)

    def _on_max_stream_data(self, frame: MaxStreamData, epoch: Epoch, now: float) -> None:
        try:
            stream = self._peer_stream(frame.stream_id, "MAX_STREAM_DATA")
        except _Closed:
            return
        stream.require_sender("MAX_STREAM_DATA")
        stream.max_send = max(stream.max_send, frame.maximum)

    def _on_max_streams(self, frame: MaxStreamsBidi | MaxStreamsUni, epoch: Epoch,
                        now: float) -> None:
        if isinstance(frame, MaxStreamsUni):
            self._peer_streams_uni = max(self._peer_streams_uni, frame.maximum)
        else:
            self._peer_streams_bidi = max(self._peer_streams_bidi, frame.maximum)

    def _on_new_token(self, frame: NewToken, epoch: Epoch, now: float) -> None:
        if not self.is_client:
            raise ProtocolViolation("a client sent NEW_TOKEN", field="frame_type",
                                    frame_type=NewToken.TYPE)
        self._events.append(NewTokenReceived(frame.token))

    def _on_handshake_done(self, frame: HandshakeDone, epoch: Epoch, now: float) -> None:
        if not self.is_client:
            raise ProtocolViolation("a client sent HANDSHAKE_DONE", field="frame_type",
                                    frame_type=HandshakeDone.TYPE)
        self._handshake_done_received = True
        self._confirm()

    def _confirm(self) -> None:
        """Client: confirmed once HANDSHAKE_DONE arrived and the handshake is complete (a
        HANDSHAKE_DONE can overtake the server's FINISHED under loss)."""
        if self._handshake_done_received and self.handshake_complete and (
                not self.handshake_confirmed):
            self.handshake_confirmed = True
            self._discard_space(Epoch.HANDSHAKE)
            self._events.append(HandshakeConfirmed())

    def _on_new_connection_id(self, frame: NewConnectionId, epoch: Epoch, now: float) -> None:
        self._peer_cids[frame.sequence] = frame.connection_id
        if len(self._peer_cids) > 2:
            raise ConnectionIdLimitError("more connection ids than active_connection_id_limit",
                                         field="NEW_CONNECTION_ID.sequence")

    def _on_path_challenge(self, frame: PathChallenge, epoch: Epoch, now: float) -> None:
        self._control.append(PathResponse(frame.data))

    def _on_connection_close(self, frame: ConnectionClose | ApplicationClose, epoch: Epoch,
                             now: float) -> None:
        if self.state in (State.DRAINING, State.TERMINATED):
            return  # the same close, coalesced in several packet types
        frame_type = frame.frame_type if isinstance(frame, ConnectionClose) else 0
        self._trace("quic:connection_closed", {
            "owner": "remote", "error_code": frame.error_code, "frame_type": frame_type,
            "reason": frame.reason.decode(errors="replace"),
            "application": isinstance(frame, ApplicationClose)})
        self._events.append(ConnectionTerminated(
            frame.error_code, frame_type, frame.reason.decode(errors="replace"), True))
        self.state = State.DRAINING
        self._close_deadline = now + 3 * self.recovery.pto_duration(Epoch.APPLICATION)

    def _ignore(self, frame: Frame, epoch: Epoch, now: float) -> None:
        """Frames that need no action here (PING, PADDING, *_BLOCKED, PATH_RESPONSE)."""

    # --- handshake -----------------------------------------------------------------------

    def _pump_handshake(self, now: float) -> None:
        """Move handshake output into CRYPTO streams and act on handshake events."""
        handshake = self.handshake
        for epoch in EPOCHS:
            data = handshake.data_to_send(epoch)
            if data:
                self.spaces[epoch].crypto_send.write(data)
        while (event := handshake.next_event()) is not None:
            self._on_handshake_event(event, now)
        if (not self.is_client and not self._peer_params_final
                and handshake.peer_transport_parameters):
            self._apply_peer_params(handshake.peer_transport_parameters)

    def _trace_handshake_event(self, event: HandshakeEvent) -> None:
        if isinstance(event, KeysReady):
            owner = "client" if event.send == self.is_client else "server"
            space = "0rtt" if event.early else {Epoch.INITIAL: "initial",
                                                Epoch.HANDSHAKE: "handshake",
                                                Epoch.APPLICATION: "1rtt"}[event.epoch]
            self._trace("quic:key_updated", {"key_type": f"{owner}_{space}_secret",
                                             "trigger": "tls", "aead": event.aead.name,
                                             "secret": digest(event.secret)})
        else:
            self._trace(f"velocity:{type_name(event)}", describe(event, kind=None))

    def _on_handshake_event(self, event: HandshakeEvent, now: float) -> None:
        if self.tracer is not None:
            self._trace_handshake_event(event)
        if isinstance(event, KeysReady):
            keys = PacketKeys(event.secret, event.aead, event.hash_name)
            if event.early:
                if event.send:
                    self._zero_rtt_send = keys
                else:
                    self._zero_rtt_recv = keys
                return
            space = self.spaces[event.epoch]
            if event.send:
                space.send_keys = keys
            else:
                space.recv_keys = keys
            if self.is_client and event.epoch == Epoch.HANDSHAKE and event.send:
                self._discard_space(Epoch.INITIAL)
        elif isinstance(event, HandshakeCompleted):
            self._on_handshake_completed(event, now)
        elif isinstance(event, TicketIssued):
            params = self.handshake.peer_transport_parameters
            self._events.append(TicketReceived(event.ticket, params))
        elif isinstance(event, FallbackDirected):
            self._events.append(event)
            if not self.is_client:
                self.close(ErrorCode.NO_APPLICATION_PROTOCOL, "fallback directed",
                           application=False)
        elif isinstance(event, ServerKeyLearned):
            self._events.append(event)

    def _on_handshake_completed(self, event: HandshakeCompleted, now: float) -> None:
        self.handshake_summary = event
        self.handshake_complete = True
        if self._early_crypto:  # 1-RTT CRYPTO that arrived before completion
            held, self._early_crypto = bytes(self._early_crypto), bytearray()
            self.handshake.receive(Epoch.APPLICATION, held, now_ms=int(now * 1000))
        self.state = State.CONNECTED
        self.early_data_accepted = event.early_data_accepted
        if not self._peer_params_final:
            self._apply_peer_params(event.peer_transport_parameters)
        self._events.append(event)
        if self.is_client:
            self.recovery.pto_count = 0  # the server has validated us: backoff may reset
            if self._zero_rtt_frames and not event.early_data_accepted:
                self._resend_rejected_early_data()
            self._zero_rtt_send = None
            self._confirm()
        else:
            self.handshake_confirmed = True
            self._handshake_done_pending = True
            self._zero_rtt_recv = None
            self._server_done_with_handshake_keys()

    def _resend_rejected_early_data(self) -> None:
        """0-RTT data the server rejected goes again in 1-RTT (VEL-RES-008)."""
        for stream_id, start, stop, fin in self._zero_rtt_frames:
            stream = self.streams.get(stream_id)
            if stream is not None and stream.sender is not None:
                stream.sender.on_lost(start, stop, fin)
        self._zero_rtt_frames.clear()

    def _apply_peer_params(self, raw: bytes) -> None:
        params = decode_transport_parameters(raw, from_server=self.is_client)
        if self.is_client:
            expected = (self.original_dcid, self._first_server_scid, self.retry_scid)
            actual = (params.original_destination_connection_id,
                      params.initial_source_connection_id, params.retry_source_connection_id)
            if actual != expected:
                raise TransportParameterError("connection ids do not match the packets",
                                              field="transport_parameters.connection_ids")
        elif params.initial_source_connection_id != self.peer_cid:
            raise TransportParameterError("does not match the client's SCID",
                                          field="initial_source_connection_id")
        self._peer_params_final = True
        if self.tracer is not None:
            self._trace("quic:parameters_set", {"owner": "remote", **describe(params, kind=None)})
        self._use_peer_params(params)

    def _use_peer_params(self, params: TransportParameters) -> None:
        self.peer_params = params
        self.flow.max_send = max(self.flow.max_send, params.initial_max_data)
        self._peer_streams_bidi = max(self._peer_streams_bidi, params.initial_max_streams_bidi)
        self._peer_streams_uni = max(self._peer_streams_uni, params.initial_max_streams_uni)
        self.recovery.max_ack_delay = params.max_ack_delay / 1000
        for stream in self.streams.values():
            local = (stream.stream_id & 0x01) == (0 if self.is_client else 1)
            if stream.sender is not None:
                limit = (params.initial_max_stream_data_uni
                         if is_unidirectional(stream.stream_id) else
                         params.initial_max_stream_data_bidi_remote if local else
                         params.initial_max_stream_data_bidi_local)
                stream.max_send = max(stream.max_send, limit)

    def _discard_space(self, epoch: Epoch) -> None:
        space = self.spaces[epoch]
        if space.discarded:
            return
        space.discarded = True
        space.send_keys = space.recv_keys = None
        self.recovery.discard(epoch)

    # --- failure, closing, timers ----------------------------------------------------------

    def _fail(self, exc: ProtocolError) -> None:
        """The one place a peer's misbehaviour becomes CONNECTION_CLOSE."""
        self.close(exc.code, f"{exc.field}: {exc.reason}" if exc.field else exc.reason,
                   application=False, frame_type=exc.frame_type)

    def _idle_timeout(self) -> float:
        local = self.config.idle_timeout
        peer = (self.peer_params.max_idle_timeout / 1000) if self.peer_params else 0
        timeout = min(local, peer) if peer else local
        return max(timeout, 3 * self.recovery.pto_duration(Epoch.APPLICATION))

    def idle_deadline(self) -> float:
        return self._last_activity + self._idle_timeout()

    def get_timer(self) -> float | None:
        """When ``handle_timer`` must next be called (absolute seconds), if ever."""
        if self.state == State.TERMINATED:
            return None
        if self.state in (State.CLOSING, State.DRAINING):
            return self._close_deadline
        candidates = [self.idle_deadline()]
        deadline, _, _ = self._loss_timer()
        if deadline is not None:
            candidates.append(deadline)
        candidates.extend(s.ack_deadline for s in self.spaces.values()
                          if s.ack_deadline is not None)
        if self.paced_until is not None:  # the pacer held data back: wake up when it allows
            candidates.append(self.paced_until)
        return min(candidates)

    def _loss_timer(self) -> tuple[float | None, Epoch | None, bool]:
        return self.recovery.loss_timer(
            handshake_confirmed=self.handshake_confirmed,
            peer_completed_address_validation=self.handshake_complete,
            has_keys=lambda e: self.spaces[e].send_keys is not None,
            last_activity=self._last_activity)

    def handle_timer(self, *, now: float) -> None:
        self._now = now
        if self.paced_until is not None and now >= self.paced_until:
            self.paced_until = None  # datagrams_to_send will find the pacer open
        if self.state in (State.CLOSING, State.DRAINING):
            if self._close_deadline is not None and now >= self._close_deadline:
                self.state = State.TERMINATED
            return
        if now >= self.idle_deadline():
            self._trace("quic:connection_closed", {"owner": "local", "trigger": "idle_timeout"})
            self.state = State.TERMINATED
            self._events.append(ConnectionTerminated(ErrorCode.NO_ERROR, 0, "idle timeout",
                                                     False))
            return
        for space in self.spaces.values():
            if space.ack_deadline is not None and now >= space.ack_deadline:
                space.ack_needed, space.ack_deadline = True, None
        deadline, epoch, is_pto = self._loss_timer()
        if deadline is None or now < deadline or epoch is None:
            return
        if is_pto:
            self.recovery.on_pto()
            self._probe(epoch)
        else:
            self.recovery.detect_loss(epoch, now)

    def _probe(self, epoch: Epoch) -> None:
        """A PTO fired: send up to two ack-eliciting probes, resending CRYPTO data. Before the
        handshake is confirmed the unacknowledged CRYPTO data of every earlier space goes
        too: a peer that lost our Initial cannot read our Handshake probes (RFC 9002 section
        6.2.4), and cwnd may hold that data back otherwise."""
        self.spaces[epoch].probes = 2
        for other in (Epoch.INITIAL, Epoch.HANDSHAKE):
            space = self.spaces[other]
            if other > epoch or space.discarded or space.send_keys is None:
                continue
            crypto = space.crypto_send
            if other != epoch and not crypto.buffered:
                continue
            space.probes = max(space.probes, 1)
            crypto.on_lost(0, crypto.write_offset, False)

    def datagrams_to_send(self, *, now: float) -> list[tuple[bytes, Address]]:
        if self.state in (State.DRAINING, State.TERMINATED) or self.peer_address is None:
            return []
        self._now = now
        self.check_confidentiality_limit()
        datagrams = build_datagrams(self, now)
        if self.state == State.CLOSING and self._close_deadline is None:
            self._close_deadline = now + 3 * self.recovery.pto_duration(Epoch.APPLICATION)
        self._discard_closed_streams()
        return [(d, self.peer_address) for d in datagrams]


class _DataRun:
    """Data of one stream delivered by consecutive packets, kept as chunks until
    ``next_event`` hands it out as one StreamDataReceived: a bulk transfer would otherwise
    cost an event, and its routing, per packet."""

    __slots__ = ("chunks", "end_stream", "stream_id")

    def __init__(self, stream_id: int, chunks: list[bytes], end_stream: bool) -> None:
        self.stream_id, self.chunks, self.end_stream = stream_id, chunks, end_stream


class StreamsExhausted(UsageError):
    """The peer's stream limit is reached; wait for MAX_STREAMS."""


class _Closed(Exception):
    """A frame for a stream that is already closed and forgotten: ignore it."""


_HANDLERS: dict[type[Frame], Callable[[Connection, Any, Epoch, float], None]] = {
    Ack: Connection._on_ack,
    Crypto: Connection._on_crypto,
    Stream: Connection._on_stream,
    ResetStream: Connection._on_reset_stream,
    StopSending: Connection._on_stop_sending,
    MaxData: Connection._on_max_data,
    MaxStreamData: Connection._on_max_stream_data,
    MaxStreamsBidi: Connection._on_max_streams,
    MaxStreamsUni: Connection._on_max_streams,
    NewToken: Connection._on_new_token,
    HandshakeDone: Connection._on_handshake_done,
    NewConnectionId: Connection._on_new_connection_id,
    PathChallenge: Connection._on_path_challenge,
    ConnectionClose: Connection._on_connection_close,
    ApplicationClose: Connection._on_connection_close,
    Ping: Connection._ignore,
    Padding: Connection._ignore,
    DataBlocked: Connection._ignore,
    StreamDataBlocked: Connection._ignore,
    StreamsBlockedBidi: Connection._ignore,
    StreamsBlockedUni: Connection._ignore,
    PathResponse: Connection._ignore,
    RetireConnectionId: Connection._ignore,
}
