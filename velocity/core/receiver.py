"""Packets and frames in, for a ``Connection``: headers, packet protection, duplicate
detection and ACK bookkeeping, then each frame to its handler through one table. 1-RTT
packets, the bulk of any transfer, take a path that builds no header or STREAM frame
objects; a traced connection, which records every frame, takes the general one. Packet
assembly is ``velocity.core.sender``'s."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from velocity.core import handshaking
from velocity.core.errors import (
    AeadLimitReached,
    AuthenticationFailed,
    ConnectionIdLimitError,
    CryptoBufferExceeded,
    ErrorCode,
    FlowControlError,
    KeyUpdateError,
    PacketDropped,
    ProtocolError,
    ProtocolViolation,
    StreamLimitError,
    StreamStateError,
)
from velocity.core.events import (
    ConnectionTerminated,
    NewTokenReceived,
    StopSendingReceived,
    StreamReset,
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
from velocity.core.packet import (
    EPOCH_OF,
    FIXED_BIT,
    VELOCITY_VERSION,
    Epoch,
    PacketType,
    decode_retry,
    decode_version_negotiation,
    parse_header,
)
from velocity.core.protection import (
    INTEGRITY_LIMIT,
    PacketKeys,
    retry_tag_valid,
)
from velocity.core.state import CRYPTO_BUFFER_LIMIT, State
from velocity.core.streams import MAX_STREAM_RANGES, StreamState, is_unidirectional
from velocity.core.trace import (
    QLOG_PACKET_TYPES,
    packet_data,
)

# received packet-number ranges a space keeps, at most (an ACK reports the newest 32)
MAX_RECEIVED_RANGES = 256

if TYPE_CHECKING:
    from velocity.core.connection import Connection
    from velocity.core.state import SpaceState


def read_datagram(conn: Connection, data: bytes, now: float) -> None:
    """Every packet of one datagram (coalesced packets in order; a short header is last)."""
    offset = 0
    while offset < len(data):
        if not data[offset] & 0x80 and conn.tracer is None and (
                conn.seams.payload_observer is None):
            _receive_short(conn, data, offset, now)
            return
        offset = _receive_packet(conn, data, offset, now)


def _receive_packet(conn: Connection, data: bytes, offset: int, now: float) -> int:
    """Handle the packet at ``offset``; return where the next one starts."""
    try:
        header = parse_header(data, offset, short_dcid_length=conn.config.cid_length)
    except (PacketDropped, ProtocolError):
        _trace_dropped(conn, None, len(data) - offset, "header_parse_error")
        return len(data)  # an undecodable header ends the datagram (VEL-PKT-005)
    if header.packet_type == PacketType.VERSION_NEGOTIATION:
        _on_version_negotiation(conn, data[offset:])
        return len(data)
    if header.version != VELOCITY_VERSION:
        _trace_dropped(conn, None, len(data) - offset, "unsupported_version")
        return len(data)
    if header.packet_type == PacketType.RETRY:
        _on_retry(conn, data[offset:], now)
        return len(data)
    end = header.end
    packet = data if offset == 0 and end == len(data) else data[offset:end]
    epoch = EPOCH_OF[header.packet_type]
    space = conn.spaces[epoch]
    expected = _expected(space)
    opened = _open(conn, packet, header.packet_type, header.pn_offset - offset, space,
                   expected)
    if opened is None:
        return end
    plain, payload, packet_number = opened
    if not _is_new(conn, space, header.packet_type, plain, packet_number, end - offset):
        return end
    if conn.is_client and not conn._peer_cid_set and header.packet_type in (
            PacketType.INITIAL, PacketType.HANDSHAKE):
        conn.peer_cid, conn._peer_cid_set = header.scid, True
        conn._first_server_scid = header.scid
    if not conn.is_client and epoch == Epoch.HANDSHAKE:
        conn.address_validated = True
        handshaking.discard_space(conn, Epoch.INITIAL)
    if (observer := conn.seams.payload_observer) is not None:
        observer(header.packet_type, packet_number, payload)
    frames = decode_frames(payload, header.packet_type)
    if conn.tracer is not None:
        conn._trace("quic:packet_received",
                    packet_data(header.packet_type, packet_number, end - offset, frames))
    _record_received(conn, space, packet_number, expected, now)
    if _handle_frames(conn, frames, epoch, header.packet_type, now):
        _note_ack_eliciting(conn, space, epoch, now, in_order=packet_number == expected)
    return end


def _receive_short(conn: Connection, data: bytes, offset: int, now: float) -> None:
    """A 1-RTT packet: it runs to the end of the datagram. Everything ``_receive_packet``
    does for one, without building a header or, for the STREAM frames that lead a bulk
    payload, frame objects (a tracer, which records frames, and a payload observer take the
    general path)."""
    packet = data[offset:] if offset else data
    if not packet[0] & FIXED_BIT:
        _trace_dropped(conn, None, len(packet), "header_parse_error")
        return
    space = conn.spaces[Epoch.APPLICATION]
    expected = _expected(space)
    opened = _open(conn, packet, PacketType.ONE_RTT, 1 + conn.config.cid_length, space,
                   expected)
    if opened is None:
        return
    plain, payload, packet_number = opened
    if not _is_new(conn, space, PacketType.ONE_RTT, plain, packet_number, len(packet)):
        return
    streams, start, size = [], 0, len(payload)
    while start < size and (stream := stream_frame_at(payload, start)) is not None:
        streams.append(stream)
        start = stream[4]
    frames = decode_frames(payload, PacketType.ONE_RTT, start) if (
        start < size or not start) else []
    _record_received(conn, space, packet_number, expected, now)
    for index, (stream_id, stream_offset, chunk, fin, _) in enumerate(streams):
        try:
            _stream_data(conn, stream_id, stream_offset, chunk, fin)
        except ProtocolError as exc:
            raise _blamed(exc, payload[streams[index - 1][4] if index else 0]) from None
    if _handle_frames(conn, frames, Epoch.APPLICATION, PacketType.ONE_RTT, now) or streams:
        _note_ack_eliciting(conn, space, Epoch.APPLICATION, now,
                            in_order=packet_number == expected)


def _is_new(conn: Connection, space: SpaceState, packet_type: PacketType, plain: bytes,
            packet_number: int, length: int) -> bool:
    """What every opened packet passes before its frames: a server's first 1-RTT packet
    from the client may end its use of the Handshake keys, reserved bits must be 0, and a
    duplicate is dropped (False)."""
    if packet_type == PacketType.ONE_RTT and not conn.is_client:
        handshaking.server_done_with_handshake_keys(conn, one_rtt_packet=True)
    if plain[0] & (0x0C if plain[0] & 0x80 else 0x18):
        raise ProtocolViolation("reserved bits are not 0", field="first_byte")
    if packet_number < space.ack_floor or packet_number in space.received:
        _trace_dropped(conn, packet_type, length, "duplicate")
        return False
    return True


def _expected(space: SpaceState) -> int:
    """The packet number a space expects next: its largest received, plus one."""
    return space.received.bounds()[1] if space.received else space.ack_floor


def _record_received(conn: Connection, space: SpaceState, packet_number: int, expected: int,
                     now: float) -> None:
    """Note a new packet number for ACKs; a space keeps at most ``MAX_RECEIVED_RANGES`` ranges
    (a peer that leaves gaps and never acknowledges our ACKs would grow them for ever): the
    oldest is forgotten, and packets below those kept count as duplicates (VEL-CONN-013)."""
    if packet_number >= expected:
        space.largest_received_time = now  # for the ACK delay field
    received = space.received
    received.add(packet_number)
    if len(received) > MAX_RECEIVED_RANGES:
        received.shift()
        space.ack_floor = received.first()[0]
    conn._last_activity = now


def _handle_frames(conn: Connection, frames: list[Frame], epoch: Epoch,
                   packet_type: PacketType, now: float) -> bool:
    """Handle a packet's frames in order; whether any was ack-eliciting."""
    ack_eliciting = False
    for frame in frames:
        ack_eliciting |= frame.ACK_ELICITING
        try:
            _handle_frame(conn, frame, epoch, packet_type, now)
        except ProtocolError as exc:
            raise _blamed(exc, _type_of(frame)) from None
    return ack_eliciting


def _type_of(frame: Frame) -> int:
    """The frame type a frame was sent with (a STREAM frame's carries its flag bits)."""
    if isinstance(frame, Stream):
        return (0x08 | (0x04 if frame.offset else 0) | (0x02 if frame.explicit_length else 0)
                | (0x01 if frame.fin else 0))
    return frame.TYPE


def _blamed(exc: ProtocolError, frame_type: int) -> ProtocolError:
    """VEL-ERR-002: the close names the type of the frame that caused it."""
    if not exc.frame_type:
        exc.frame_type = frame_type
    return exc


def _open(conn: Connection, packet: bytes, packet_type: PacketType, pn_offset: int,
          space: SpaceState, expected: int) -> tuple[bytes, bytes, int] | None:
    """(header, payload, packet number), or None for a packet to drop. ``expected`` is
    the packet number the space expects next (its largest received, plus one)."""
    keys = conn._zero_rtt_recv if packet_type == PacketType.ZERO_RTT else space.recv_keys
    if keys is None or space.discarded:
        _trace_dropped(conn, packet_type, len(packet), "key_unavailable")
        return None
    try:
        if packet_type != PacketType.ONE_RTT:
            return keys.decrypt_packet(packet, pn_offset, expected)
        header, packet_number = keys.remove_header_protection(packet, pn_offset, expected)
        if (header[0] >> 2) & 1 == conn._recv_phase:
            return header, keys.open_payload(packet, header, packet_number), packet_number
        payload = _open_other_phase(conn, packet, header, packet_number, expected)
        return header, payload, packet_number
    except PacketDropped as exc:  # AuthenticationFailed included
        _not_opened(conn, packet_type, len(packet), keys, exc)
    return None


def _not_opened(conn: Connection, packet_type: PacketType, length: int, keys: PacketKeys,
                exc: PacketDropped) -> None:
    """A packet that could not be opened is dropped; forgeries count towards the AEAD's
    integrity limit (VEL-PROT-012)."""
    if not isinstance(exc, AuthenticationFailed):
        _trace_dropped(conn, packet_type, length, "invalid")
        return
    conn._forgeries += 1
    if conn._forgeries > INTEGRITY_LIMIT[keys.aead]:
        raise AeadLimitReached("too many packets failed authentication",
                               field="payload") from None
    _trace_dropped(conn, packet_type, length, "decryption_failure")


def _trace_dropped(conn: Connection, packet_type: PacketType | None, length: int,
                   trigger: str) -> None:
    if conn.tracer is not None:
        header = {} if packet_type is None else {
            "packet_type": QLOG_PACKET_TYPES[packet_type]}
        conn._trace("quic:packet_dropped", {"header": header, "raw": {"length": length},
                                            "trigger": trigger})


def _open_other_phase(conn: Connection, packet: bytes, header: bytes, packet_number: int,
                      expected: int) -> bytes:
    """Open a 1-RTT packet whose key-phase bit is not the current one (VEL-PROT-011): a
    packet from before an update (previous keys), or the peer updated (the next keys:
    follow it, and update our sending keys if we did not start it). A peer may update
    again only once we acknowledged a packet of its last update."""
    keys = conn.spaces[Epoch.APPLICATION].recv_keys
    assert keys is not None  # checked by the caller
    updates = conn.key_updates
    if updates.previous_recv_keys is not None and packet_number < expected:
        return updates.previous_recv_keys.open_payload(packet, header, packet_number)
    following = keys.next_generation()
    payload = following.open_payload(packet, header, packet_number)
    if not conn.handshake_confirmed:
        raise KeyUpdateError("key update before the handshake is confirmed",
                             field="short.key_phase")
    if updates.peer_update is not None:
        raise KeyUpdateError("a second key update before the first was acknowledged",
                             field="short.key_phase")
    updates.peer_update = packet_number  # until we acknowledge it (sender._add_ack)
    updates.previous_recv_keys = keys
    conn.spaces[Epoch.APPLICATION].recv_keys = following
    answer = conn._send_phase != conn._recv_phase  # the peer follows our update
    conn.trace_key_update(following, send=False,
                          trigger="local_update" if answer else "remote_update")
    conn._recv_phase ^= 1
    if not answer:
        conn._rotate_send_keys("remote_update")
    return payload


def _note_ack_eliciting(conn: Connection, space: SpaceState, epoch: Epoch, now: float, *,
                        in_order: bool) -> None:
    """Acknowledge at once outside 1-RTT, after ``ack_every`` packets, or when a packet
    arrives out of order or after a gap: the sender's loss detection needs to hear of it
    now (RFC 9000 section 13.2.1)."""
    space.ack_eliciting_since_ack += 1
    if (epoch != Epoch.APPLICATION or not in_order
            or space.ack_eliciting_since_ack >= conn.config.ack_every):
        space.ack_needed = True
    elif space.ack_deadline is None:
        space.ack_deadline = now + conn.config.max_ack_delay


def _awaiting_first_answer(conn: Connection) -> bool:
    """A client that has heard nothing from the server yet: the only one a Version
    Negotiation or Retry packet may still concern (RFC 9000 sections 6.2 and 17.2.5.2)."""
    return conn.is_client and not conn._peer_cid_set and not conn._received_retry


def _on_version_negotiation(conn: Connection, data: bytes) -> None:
    if not _awaiting_first_answer(conn):
        return
    try:
        packet = decode_version_negotiation(data)
    except ProtocolError:
        return
    if VELOCITY_VERSION in packet.versions:
        return  # VEL-VN-004: a VN listing our version is discarded
    conn.state = State.TERMINATED
    versions = ", ".join(f"0x{v:08x}" for v in packet.versions)
    conn._events.append(ConnectionTerminated(
        ErrorCode.NO_VIABLE_PATH, 0, f"server supports only {versions}", True))


def _on_retry(conn: Connection, data: bytes, now: float) -> None:
    if not _awaiting_first_answer(conn):
        return
    try:
        retry = decode_retry(data)
    except ProtocolError:
        return
    if not retry_tag_valid(data, conn.original_dcid):
        return
    conn._received_retry = True
    conn.retry_scid = retry.scid
    conn.peer_cid = retry.scid
    conn._retry_token = retry.token
    conn._install_initial_keys(retry.scid)
    conn.recovery.discard(Epoch.INITIAL)
    crypto = conn.spaces[Epoch.INITIAL].crypto_send
    crypto.on_lost(0, crypto.write_offset, False)


def _handle_frame(conn: Connection, frame: Frame, epoch: Epoch, packet_type: PacketType,
                  now: float) -> None:
    handler = _HANDLERS.get(type(frame))
    if packet_type is PacketType.ZERO_RTT and isinstance(frame, Stream):
        conn.early_streams.add(frame.stream_id)
        flow, before = conn.flow, conn.flow.received
        _on_stream(conn, frame, epoch, now)
        flow.early_used += flow.received - before
        if flow.early_used > flow.early_limit:
            raise ProtocolViolation(f"0-RTT stream data beyond max_early_data "
                                    f"({flow.early_limit} bytes)", field="STREAM")
        return
    if handler is not None:
        handler(conn, frame, epoch, now)


def _on_ack(conn: Connection, frame: Ack, epoch: Epoch, now: float) -> None:
    ranges = frame.packet_ranges()
    if ranges[0][1] >= conn.spaces[epoch].next_packet_number:
        raise ProtocolViolation("acknowledges a packet never sent", field="ACK.largest")
    exponent = conn.peer_params.ack_delay_exponent if conn.peer_params else 3
    delay = (frame.delay << exponent) / 1_000_000 if epoch == Epoch.APPLICATION else 0.0
    conn.recovery.on_ack(epoch, ranges, delay, now,
                         handshake_confirmed=conn.handshake_confirmed,
                         peer_completed_address_validation=conn.handshake_complete)
    if epoch == Epoch.HANDSHAKE:
        handshaking.server_done_with_handshake_keys(conn)
    elif epoch == Epoch.APPLICATION:
        conn.on_application_ack(ranges[0][1])


def _on_crypto(conn: Connection, frame: Crypto, epoch: Epoch, now: float) -> None:
    data = conn.spaces[epoch].crypto_recv.receive(frame.offset, frame.data)
    if data and epoch == Epoch.APPLICATION and not conn.handshake_complete:
        # 1-RTT CRYPTO (a ticket) can overtake the server's FINISHED when that is lost
        # or reordered: it waits for the handshake to complete (RFC 9001 section 4.1.3),
        # within the CRYPTO buffer limit (VEL-HS-004)
        conn._early_crypto += data
        if len(conn._early_crypto) > CRYPTO_BUFFER_LIMIT:
            raise CryptoBufferExceeded(f"more than {CRYPTO_BUFFER_LIMIT} bytes of 1-RTT CRYPTO "
                                       f"before the handshake completed", field="CRYPTO")
        return
    if data:
        conn.handshake.receive(epoch, data, now_ms=int(now * 1000))
        handshaking.pump(conn, now)  # keys for packets coalesced behind this one


def _on_stream(conn: Connection, frame: Stream, epoch: Epoch, now: float) -> None:
    _stream_data(conn, frame.stream_id, frame.offset, frame.data, frame.fin)


def _stream_data(conn: Connection, stream_id: int, offset: int, data: bytes, fin: bool) -> None:
    """A STREAM frame's contents: reassembly, flow control, StreamDataReceived."""
    stream = conn.streams.get(stream_id) or _named_stream(conn, stream_id, "STREAM")
    if stream is None:
        return
    receiver = stream.receiver or stream.require_receiver("STREAM")
    before, waiting = receiver.highest, receiver.waiting
    data = receiver.receive(offset, data, fin)
    flow = conn.flow
    if receiver.highest > before:
        _count_received(conn, receiver.highest - before, "STREAM.offset")
    if receiver.waiting != waiting:
        _count_waiting(conn, receiver.waiting - waiting)
    complete = receiver.final_size is not None and receiver.complete
    if data or (complete and fin):
        flow.consumed += len(data)
        events = conn._events
        tail = events[-1] if events else None
        if type(tail) is DataRun and tail.stream_id == stream_id:
            tail.chunks.append(data)
            tail.end_stream = complete
        else:
            events.append(DataRun(stream_id, [data], complete))


def _on_reset_stream(conn: Connection, frame: ResetStream, epoch: Epoch, now: float) -> None:
    stream = _named_stream(conn, frame.stream_id, "RESET_STREAM")
    if stream is None:
        return
    receiver = stream.require_receiver("RESET_STREAM")
    if receiver.reset_code is None:
        before, waiting = receiver.highest, receiver.waiting
        receiver.reset(frame.final_size, frame.error_code)
        _count_received(conn, receiver.highest - before, "RESET_STREAM.final_size")
        _count_waiting(conn, -waiting)
        # what will never be delivered is consumed now, or each reset would shrink the
        # connection's window for good
        conn.flow.consumed += frame.final_size - receiver.delivered
        conn._events.append(StreamReset(frame.stream_id, frame.error_code))


def _count_received(conn: Connection, more: int, field: str) -> None:
    """Stream bytes newly reached, by data or a final size, against the connection's limit
    (VEL-STR-001)."""
    flow = conn.flow
    flow.received += more
    if flow.received > flow.max_recv:
        raise FlowControlError("connection data limit exceeded", field=field)


def _count_waiting(conn: Connection, more: int) -> None:
    """Ranges of stream data waiting beyond the delivered prefixes, across the connection's
    streams (VEL-STR-005): a stream's are gone once it is complete or reset, the only ways
    it is forgotten."""
    flow = conn.flow
    flow.waiting_ranges += more
    if flow.waiting_ranges > MAX_STREAM_RANGES:
        raise ProtocolViolation(f"more than {MAX_STREAM_RANGES} ranges of stream data wait "
                                f"beyond the delivered prefixes", field="STREAM.offset")


def _on_stop_sending(conn: Connection, frame: StopSending, epoch: Epoch, now: float) -> None:
    stream = _named_stream(conn, frame.stream_id, "STOP_SENDING")
    if stream is None:
        return
    stream.require_sender("STOP_SENDING")
    conn._events.append(StopSendingReceived(frame.stream_id, frame.error_code))
    conn.reset_stream(frame.stream_id, frame.error_code)


def _on_max_data(conn: Connection, frame: MaxData, epoch: Epoch, now: float) -> None:
    conn.flow.max_send = max(conn.flow.max_send, frame.maximum)


def _on_max_stream_data(conn: Connection, frame: MaxStreamData, epoch: Epoch, now: float) -> None:
    stream = _named_stream(conn, frame.stream_id, "MAX_STREAM_DATA")
    if stream is None:
        return
    stream.require_sender("MAX_STREAM_DATA")
    stream.max_send = max(stream.max_send, frame.maximum)


def _on_max_streams(conn: Connection, frame: MaxStreamsBidi | MaxStreamsUni, epoch: Epoch,
                    now: float) -> None:
    if isinstance(frame, MaxStreamsUni):
        conn._peer_streams_uni = max(conn._peer_streams_uni, frame.maximum)
    else:
        conn._peer_streams_bidi = max(conn._peer_streams_bidi, frame.maximum)


def _on_new_token(conn: Connection, frame: NewToken, epoch: Epoch, now: float) -> None:
    if not conn.is_client:
        raise ProtocolViolation("a client sent NEW_TOKEN", field="frame_type",
                                frame_type=NewToken.TYPE)
    conn._events.append(NewTokenReceived(frame.token))


def _on_handshake_done(conn: Connection, frame: HandshakeDone, epoch: Epoch, now: float) -> None:
    if not conn.is_client:
        raise ProtocolViolation("a client sent HANDSHAKE_DONE", field="frame_type",
                                frame_type=HandshakeDone.TYPE)
    conn._handshake_done_received = True
    handshaking.confirm(conn)


def _on_new_connection_id(conn: Connection, frame: NewConnectionId, epoch: Epoch,
                          now: float) -> None:
    conn._peer_cids[frame.sequence] = frame.connection_id
    if len(conn._peer_cids) > 2:
        raise ConnectionIdLimitError("more connection ids than active_connection_id_limit",
                                     field="NEW_CONNECTION_ID.sequence")


def _on_retire_connection_id(conn: Connection, frame: RetireConnectionId, epoch: Epoch,
                             now: float) -> None:
    """An endpoint issues only the connection id of its handshake (sequence 0): retiring
    any other is retiring one never issued (VEL-CONN-012, RFC 9000 section 19.16)."""
    if frame.sequence > 0:
        raise ProtocolViolation(f"retires connection id {frame.sequence}, never issued",
                                field="RETIRE_CONNECTION_ID.sequence")


def _on_path_challenge(conn: Connection, frame: PathChallenge, epoch: Epoch, now: float) -> None:
    conn._control.append(PathResponse(frame.data))


def _on_connection_close(conn: Connection, frame: ConnectionClose | ApplicationClose, epoch: Epoch,
                         now: float) -> None:
    if conn.state in (State.DRAINING, State.TERMINATED):
        return  # the same close, coalesced in several packet types
    frame_type = frame.frame_type if isinstance(frame, ConnectionClose) else 0
    conn._trace("quic:connection_closed", {
        "owner": "remote", "error_code": frame.error_code, "frame_type": frame_type,
        "reason": frame.reason.decode(errors="replace"),
        "application": isinstance(frame, ApplicationClose)})
    conn._events.append(ConnectionTerminated(
        frame.error_code, frame_type, frame.reason.decode(errors="replace"), True,
        isinstance(frame, ApplicationClose)))
    conn.state = State.DRAINING
    conn._close_deadline = now + 3 * conn.recovery.pto_duration(Epoch.APPLICATION)


def _ignore(conn: Connection, frame: Frame, epoch: Epoch, now: float) -> None:
    """Frames that need no action here (PING, PADDING, *_BLOCKED, PATH_RESPONSE)."""


def _named_stream(conn: Connection, stream_id: int, frame: str) -> StreamState | None:
    """The stream a frame names, opening peer-initiated streams up to the limit; None for a
    stream that is closed and forgotten (the frame is then ignored)."""
    stream = conn.streams.get(stream_id)
    if stream is not None:
        return stream
    local = (stream_id & 0x01) == (0 if conn.is_client else 1)
    unidirectional = is_unidirectional(stream_id)
    if local:
        if stream_id // 4 < conn._local_streams_next[unidirectional]:
            return None  # a stream of ours that is already gone
        raise StreamStateError(f"stream {stream_id} was never opened",
                               field=f"{frame}.stream_id")
    if stream_id // 4 >= conn._local_streams_limit[unidirectional]:
        raise StreamLimitError(f"stream {stream_id} exceeds the stream limit",
                               field=f"{frame}.stream_id")
    if stream_id // 4 < conn._peer_streams_opened[unidirectional]:
        return None
    # opening a stream opens every lower-numbered one of its type (RFC 9000 3.2)
    base = stream_id & 0x03
    for index in range(conn._peer_streams_opened[unidirectional], stream_id // 4):
        conn._new_stream(index * 4 + base, local=False)
    conn._peer_streams_opened[unidirectional] = stream_id // 4 + 1
    return conn._new_stream(stream_id, local=False)


class DataRun:
    """Data of one stream delivered by consecutive packets, kept as chunks until
    ``next_event`` hands it out as one StreamDataReceived: a bulk transfer would otherwise
    cost an event, and its routing, per packet."""

    __slots__ = ("chunks", "end_stream", "stream_id")

    def __init__(self, stream_id: int, chunks: list[bytes], end_stream: bool) -> None:
        self.stream_id, self.chunks, self.end_stream = stream_id, chunks, end_stream


_HANDLERS: dict[type[Frame], Callable[[Connection, Any, Epoch, float], None]] = {
    Ack: _on_ack,
    Crypto: _on_crypto,
    Stream: _on_stream,
    ResetStream: _on_reset_stream,
    StopSending: _on_stop_sending,
    MaxData: _on_max_data,
    MaxStreamData: _on_max_stream_data,
    MaxStreamsBidi: _on_max_streams,
    MaxStreamsUni: _on_max_streams,
    NewToken: _on_new_token,
    HandshakeDone: _on_handshake_done,
    NewConnectionId: _on_new_connection_id,
    PathChallenge: _on_path_challenge,
    ConnectionClose: _on_connection_close,
    ApplicationClose: _on_connection_close,
    Ping: _ignore,
    Padding: _ignore,
    DataBlocked: _ignore,
    StreamDataBlocked: _ignore,
    StreamsBlockedBidi: _ignore,
    StreamsBlockedUni: _ignore,
    PathResponse: _ignore,
    RetireConnectionId: _on_retire_connection_id,
}
