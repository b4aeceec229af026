"""A Velocity/1 connection, sans-I/O (architecture habit 1): driven by ``receive_datagram``,
``handle_timer`` and commands, read with ``datagrams_to_send``, ``next_event`` and
``get_timer``. ``now`` is always an argument (seconds); randomness comes from ``Entropy``.

This module owns the connection's state machine: commands, streams, flow-control limits,
key updates, closing, draining and timers. Reading packets and handling their frames lives
in ``velocity.core.receiver``, packet assembly in ``velocity.core.sender``, the connection's
side of its handshake (CRYPTO, keys, confirmation, the peer's transport parameters) in
``velocity.core.handshaking``, loss recovery in ``velocity.core.recovery`` and the state
records in ``velocity.core.state``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from velocity.core import handshaking
from velocity.core.entropy import Entropy
from velocity.core.errors import (
    ErrorCode,
    ProtocolError,
    UsageError,
)
from velocity.core.events import (
    ConnectionTerminated,
    Event,
    InternalErrorRaised,
    StreamDataReceived,
)
from velocity.core.frames import (
    Frame,
    ResetStream,
    StopSending,
    StreamsBlockedBidi,
    StreamsBlockedUni,
)
from velocity.core.handshake.client import ClientConfig, ClientHandshake
from velocity.core.handshake.common import (
    HandshakeCompleted,
)
from velocity.core.handshake.server import ServerConfig, ServerHandshake, ServerState
from velocity.core.packet import (
    EPOCHS,
    VELOCITY_VERSION,
    Epoch,
    PacketType,
)
from velocity.core.protection import (
    CONFIDENTIALITY_LIMIT,
    PacketKeys,
    initial_keys,
)
from velocity.core.receiver import DataRun, read_datagram
from velocity.core.recovery import Recovery
from velocity.core.seams import ConnectionSeams
from velocity.core.sender import build_datagrams
from velocity.core.state import FlowState, KeyUpdates, SpaceState, State
from velocity.core.streams import StreamState, is_unidirectional
from velocity.core.trace import (
    Tracer,
    digest,
)
from velocity.core.transport_params import (
    TransportParameters,
    decode_transport_parameters,
    encode_transport_parameters,
)

Address = tuple[str, int]


@dataclass(frozen=True)
class ConnectionConfig:
    """Transport settings; ``handshake`` is a ClientConfig or a ServerConfig."""

    handshake: ClientConfig | ServerConfig
    cid_length: int = 8
    max_datagram_size: int = 1452
    idle_timeout: float = 30.0
    handshake_timeout: float = 10.0  # from the start, whatever the PTO backoff (VEL-CONN-008)
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
        self._events: deque[Event | DataRun] = deque()
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
        self._received_retry = self._handshake_done_pending = self._handshake_done_received = (
            False)
        self.address_validated = self.is_client or address_validated
        self.bytes_received = self.bytes_sent = 0
        self.started_at: float | None = None  # when it was started or first heard from
        self.early_streams: set[int] = set()  # streams whose data travelled in 0-RTT packets
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
        self.key_updates = KeyUpdates()
        self.seams = ConnectionSeams()  # off: see velocity.core.seams
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
            handshaking.use_peer_params(
                self, decode_transport_parameters(remembered, from_server=True))

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
        if not self.is_client:  # a server follows no migration (VEL-CONN-014)
            params = params.with_changes(original_destination_connection_id=self.original_dcid,
                                         retry_source_connection_id=self.retry_scid,
                                         disable_active_migration=True)
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
        handshaking.pump(self, now)

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

    def send_frames(self, epoch: Epoch, frames: Sequence[Frame], *,
                    packet_type: PacketType | None = None, trailer: bytes = b"") -> None:
        """Seam (velocity.core.seams): send ``frames`` exactly as given, unchecked, in one
        packet of ``epoch``'s packet-number space (its next number; frames a space does not
        allow go too), then ``trailer``, bytes no frame encodes (an unknown or non-minimal
        frame type), protected with that space's keys, or the 0-RTT keys for
        ``packet_type=ZERO_RTT``. The packet is recorded as sent, so the peer's ACKs stay
        consistent; its frames are never retransmitted. It waits until those keys exist."""
        self.spaces[epoch].injected.append((tuple(frames), packet_type, trailer))
        self.seams.injecting = True

    def queue_after_handshake(self, frame: Frame) -> None:
        """A 1-RTT control frame (NEW_TOKEN) to send once 1-RTT keys exist."""
        self._control.append(frame)

    @property
    def token(self) -> bytes:
        """Client: the token its Initial packets carry (a Retry's, or a NEW_TOKEN given in
        the configuration)."""
        return self._retry_token

    def sent_early(self, stream_id: int) -> bool:
        """Client: whether data of ``stream_id`` left in 0-RTT packets that the server
        accepted (rejected early data is resent in 1-RTT, VEL-RES-008)."""
        return self.early_data_accepted and stream_id in self.early_streams

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
        self._events.append(ConnectionTerminated(error_code, frame_type, reason, False,
                                                 application))

    def next_event(self) -> Event | None:
        if not self._events:
            return None
        event = self._events.popleft()
        if not isinstance(event, DataRun):
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
        if self.peer_address is None:
            self.peer_address = address
        from_peer = address == self.peer_address
        if from_peer:  # another address's bytes never raise the peer's budget (VEL-CONN-011)
            self.bytes_received += len(data)
        if self.state == State.CLOSING:
            # answer the peer's datagrams (no one else's) with the close, at a falling rate:
            # after the 1st, 2nd, 4th, 8th... (RFC 9000 section 10.2.1); a close not sent
            # yet (the datagrams came in one read) still leaves
            if from_peer:
                self._closing_heard += 1
                self.close_pending = self.close_pending or not (
                    self._closing_heard & (self._closing_heard - 1))
                if self.close_pending and self.handshake.state is ServerState.FALLBACK:
                    # a FALLBACK rides with each close it sends (VEL-HS-090): a client
                    # whose first copy was lost asks again with its CLIENT_HELLO
                    crypto = self.spaces[Epoch.INITIAL].crypto_send
                    crypto.on_lost(0, crypto.write_offset, False)
            return
        if not from_peer:  # no migration: another address's packets are not read (VEL-CONN-014)
            self._trace("quic:packet_dropped", {"header": {}, "raw": {"length": len(data)},
                                                "trigger": "invalid"})
            return
        try:
            try:
                read_datagram(self, data, now)
            except ProtocolError as exc:
                self._fail(exc)
                # what the handshake produced before it failed; an error it raises again
                # (the peer's transport parameters, applied once more) finds us closing
                handshaking.pump(self, now)
        except Exception as exc:
            self._boundary(exc)

    def _rotate_send_keys(self, trigger: str) -> None:
        space = self.spaces[Epoch.APPLICATION]
        assert space.send_keys is not None
        space.send_keys = space.send_keys.next_generation()
        self._send_phase ^= 1
        self.key_updates.unacked_from = space.next_packet_number
        self.trace_key_update(space.send_keys, send=True, trigger=trigger)

    def trace_key_update(self, keys: PacketKeys, *, send: bool, trigger: str) -> None:
        """The 1-RTT keys of one direction changed: ``local_update`` when this endpoint
        started the update, ``remote_update`` when the peer did."""
        if self.tracer is None:
            return
        owner = "client" if send == self.is_client else "server"
        self._trace("quic:key_updated", {"key_type": f"{owner}_1rtt_secret",
                                         "trigger": trigger, "aead": keys.aead.name,
                                         "secret": digest(keys.secret)})

    def _may_update_keys(self) -> bool:
        """RFC 9001 section 6.1: with a confirmed handshake (a server: once the client has
        acknowledged HANDSHAKE_DONE, so is confirmed too, VEL-PROT-011), no update in
        progress, and an acknowledgement of a packet sent with the current keys."""
        updates = self.key_updates
        return (self.handshake_confirmed and (self.is_client or updates.done_acknowledged)
                and self._send_phase == self._recv_phase and updates.unacked_from is None)

    def on_application_ack(self, largest: int) -> None:
        """An ACK in the Application space up to ``largest`` arrived."""
        first = self.key_updates.unacked_from
        if first is not None and largest >= first:
            self.key_updates.unacked_from = None
        handshaking.server_done_with_handshake_keys(self, one_rtt_ack=True)

    def check_confidentiality_limit(self) -> None:
        """Update keys before the 1-RTT send key reaches its AEAD limit (VEL-PROT-012)."""
        keys = self.spaces[Epoch.APPLICATION].send_keys
        if keys is None or keys.encrypted < CONFIDENTIALITY_LIMIT[keys.aead] - 1024:
            return
        if self._may_update_keys():
            self._rotate_send_keys("local_update")
        elif keys.encrypted >= CONFIDENTIALITY_LIMIT[keys.aead]:
            self.close(ErrorCode.AEAD_LIMIT_REACHED, "key update impossible at the AEAD limit",
                       application=False)

    def request_key_update(self, *, force: bool = False) -> None:
        """Start a key update; the peer follows when it sees the new key phase. ``force``
        is a seam (velocity.core.seams): update even when RFC 9001 section 6.1 forbids it
        (before confirmation, during an update), as the scripted peer tests a receiver."""
        if not force and not self._may_update_keys():
            raise UsageError("a key update needs a confirmed handshake, no update in "
                             "progress, and an acknowledged packet under the current keys")
        self._rotate_send_keys("local_update")

    # --- failure, closing, timers ----------------------------------------------------------

    def _boundary(self, exc: Exception) -> None:
        """The one boundary of this connection (architecture habit 6), where each entry
        point that runs on the peer's bytes or the clock sends what it raised (a plain
        try/except at each: a context manager would cost each call more): a protocol error
        closes the connection with its code; any other exception is a fault of ours,
        reported once (InternalErrorRaised) and closed with INTERNAL_ERROR, or ended at once
        if building the close is what failed. Nothing escapes: an endpoint serves its other
        connections on (VEL-ERR-006)."""
        if isinstance(exc, ProtocolError):
            self._fail(exc)
            return
        self._events.append(InternalErrorRaised(exc))
        if self.state == State.CLOSING:
            self.state = State.TERMINATED
        else:
            self.close(ErrorCode.INTERNAL_ERROR, "internal error", application=False)

    def _fail(self, exc: ProtocolError) -> None:
        """The one place a peer's misbehaviour becomes CONNECTION_CLOSE."""
        self.close(exc.code, f"{exc.field}: {exc.reason}" if exc.field else exc.reason,
                   application=False, frame_type=exc.frame_type)

    def _idle_timeout(self) -> float:
        """VEL-CONN-003; the PTO without its backoff, which a silent peer would stretch."""
        local = self.config.idle_timeout
        peer = (self.peer_params.max_idle_timeout / 1000) if self.peer_params else 0
        timeout = min(local, peer) if peer else local
        return max(timeout, 3 * self.recovery.pto_duration(Epoch.APPLICATION, backoff=False))

    def idle_deadline(self) -> float:
        return self._last_activity + self._idle_timeout()

    def _handshake_deadline(self) -> float | None:
        """When a handshake not complete by then is given up (VEL-CONN-008)."""
        if self.handshake_complete or self.started_at is None:
            return None
        return self.started_at + self.config.handshake_timeout

    def abandon(self, reason: str, *, trigger: str = "aborted") -> None:
        """End the connection now and silently: nothing more is sent. A timeout, or a server
        evicting a half-open connection to make room (VEL-CONN-009)."""
        if self.state == State.TERMINATED:
            return
        self._trace("quic:connection_closed", {"owner": "local", "trigger": trigger})
        self.state = State.TERMINATED
        self._events.append(ConnectionTerminated(ErrorCode.NO_ERROR, 0, reason, False))

    def get_timer(self) -> float | None:
        """When ``handle_timer`` must next be called (absolute seconds), if ever."""
        if self.state == State.TERMINATED:
            return None
        if self.state in (State.CLOSING, State.DRAINING):
            return self._close_deadline
        candidates = [self.idle_deadline()]
        if (handshake_deadline := self._handshake_deadline()) is not None:
            candidates.append(handshake_deadline)
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
        try:
            self._run_timers(now)
        except Exception as exc:
            self._boundary(exc)

    def _run_timers(self, now: float) -> None:
        if self.paced_until is not None and now >= self.paced_until:
            self.paced_until = None  # datagrams_to_send will find the pacer open
        if self.state in (State.CLOSING, State.DRAINING):
            if self._close_deadline is not None and now >= self._close_deadline:
                self.state = State.TERMINATED
            return
        handshake_deadline = self._handshake_deadline()
        if handshake_deadline is not None and now >= handshake_deadline:
            self.abandon("handshake timeout", trigger="handshake_timeout")
            return
        if now >= self.idle_deadline():
            self.abandon("idle timeout", trigger="idle_timeout")
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
        self._now = now
        for _ in range(2):  # a failure closes the connection: the second pass sends the close
            if self.state in (State.DRAINING, State.TERMINATED) or self.peer_address is None:
                return []
            try:
                return self._datagrams(now, self.peer_address)
            except Exception as exc:
                self._boundary(exc)
        return []

    def _datagrams(self, now: float, address: Address) -> list[tuple[bytes, Address]]:
        self.check_confidentiality_limit()
        datagrams = build_datagrams(self, now)
        if self.state == State.CLOSING and self._close_deadline is None:
            self._close_deadline = now + 3 * self.recovery.pto_duration(Epoch.APPLICATION)
        self._discard_closed_streams()
        return [(d, address) for d in datagrams]


class StreamsExhausted(UsageError):
    """The peer's stream limit is reached; wait for MAX_STREAMS."""
