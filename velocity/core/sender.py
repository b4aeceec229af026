"""Packet assembly for a ``Connection``: which frames go out, in which packet-number space,
within the congestion window, the pacer and the anti-amplification limit, coalesced into
datagrams and protected. Each frame registers what to do when its packet is acknowledged
or declared lost, so retransmission is per frame, not per packet."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING

from velocity.core.buffer import SINGLE_BYTES, Writer, encode_varint, varint_size
from velocity.core.errors import ErrorCode, ProtocolError, UsageError
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
    Ping,
    Stream,
    StreamDataBlocked,
    decode_frames,
    encode_frames,
    push_frame,
)
from velocity.core.packet import (
    EPOCHS,
    FIXED_BIT,
    FORM_LONG,
    MIN_INITIAL_DATAGRAM,
    VELOCITY_VERSION,
    Epoch,
    PacketType,
    packet_number_length,
)
from velocity.core.protection import TAG_LENGTH, PacketKeys
from velocity.core.recovery import SentPacket
from velocity.core.seams import NO_EDITS, HeaderEdits, PlannedPacket
from velocity.core.trace import packet_data

if TYPE_CHECKING:
    from velocity.core.connection import Connection
    from velocity.core.state import SpaceState
    from velocity.core.streams import StreamState

MAX_DATAGRAMS_PER_CALL = 64
STREAM_FRAME_OVERHEAD = 1 + 8 + 8 + 4  # type, stream id, offset, length (upper bounds)
MAX_ACK_RANGES = 32


@dataclass
class _Plan:
    """One packet before protection (``repeat``: a copy the packet mutator asked for, sealed
    again but not recorded with loss recovery a second time)."""

    epoch: Epoch
    packet_type: PacketType
    keys: PacketKeys
    packet_number: int
    pn_length: int
    payload: bytearray
    sent: SentPacket
    header_size: int = 0
    repeat: bool = False
    header: HeaderEdits = NO_EDITS  # what the packet mutator changed in the header


@dataclass(frozen=True)
class Unparsed:
    """How a transcript shows the frames of a sent packet a seam made undecodable."""

    length: int
    reason: str


@dataclass
class _Frames:
    writer: Writer = field(default_factory=Writer)
    on_ack: list[Callable[[], None]] = field(default_factory=list)
    on_loss: list[Callable[[], None]] = field(default_factory=list)
    ack_eliciting: bool = False

    def add(self, frame: Frame, on_ack: Callable[[], None] | None = None,
            on_loss: Callable[[], None] | None = None) -> None:
        push_frame(self.writer, frame)
        self.ack_eliciting |= frame.ACK_ELICITING
        if on_ack is not None:
            self.on_ack.append(on_ack)
        if on_loss is not None:
            self.on_loss.append(on_loss)


def _header_size(conn: Connection, packet_type: PacketType, pn_length: int) -> int:
    if packet_type == PacketType.ONE_RTT:
        return 1 + len(conn.peer_cid) + pn_length
    size = 1 + 4 + 1 + len(conn.peer_cid) + 1 + len(conn.host_cid) + 2 + pn_length
    if packet_type == PacketType.INITIAL:
        token = conn._retry_token if conn.is_client else b""
        size += varint_size(len(token)) + len(token)
    return size


def _push_header(conn: Connection, plan: _Plan, payload_length: int) -> bytes:
    writer = Writer()
    edits = plan.header
    pn_bits = plan.pn_length - 1
    truncated = plan.packet_number & ((1 << (8 * plan.pn_length)) - 1)
    dcid = conn.peer_cid if edits.dcid is None else edits.dcid
    if plan.packet_type == PacketType.ONE_RTT:
        writer.push_uint8(FIXED_BIT | (edits.reserved_bits << 3) | (conn._send_phase << 2)
                          | pn_bits)
        writer.push_bytes(dcid)
    else:
        writer.push_uint8(FORM_LONG | FIXED_BIT | (plan.packet_type << 4)
                          | (edits.reserved_bits << 2) | pn_bits)
        writer.push_uint32(VELOCITY_VERSION if edits.version is None else edits.version)
        writer.push_vec8(dcid)
        writer.push_vec8(conn.host_cid if edits.scid is None else edits.scid)
        if plan.packet_type == PacketType.INITIAL:
            token = conn._retry_token if conn.is_client else b""
            writer.push_vec_varint(token if edits.token is None else edits.token)
        length = plan.pn_length + payload_length + TAG_LENGTH
        length = length if edits.length is None else edits.length
        writer.push_varint(length, 2 if length < 1 << 14 else 4)
    writer.push_uint(truncated, plan.pn_length)
    return writer.data()


def _keys_for(conn: Connection, epoch: Epoch) -> tuple[PacketKeys | None, PacketType]:
    space = conn.spaces[epoch]
    if epoch == Epoch.INITIAL:
        return space.send_keys, PacketType.INITIAL
    if epoch == Epoch.HANDSHAKE:
        return space.send_keys, PacketType.HANDSHAKE
    if space.send_keys is not None:  # a discovery client's come with its FINISHED
        return space.send_keys, PacketType.ONE_RTT
    if conn.is_client and conn._zero_rtt_send is not None:
        return conn._zero_rtt_send, PacketType.ZERO_RTT
    return None, PacketType.ONE_RTT


def _add_ack(conn: Connection, space: SpaceState, epoch: Epoch, frames: _Frames,
             now: float) -> None:
    ranges = space.received.descending(MAX_ACK_RANGES)
    delay = 0
    if epoch == Epoch.APPLICATION:
        delay = int(max(now - space.largest_received_time, 0) * 1_000_000) >> (
            conn.config.ack_delay_exponent)
    largest = ranges[0][1]
    updates = conn.key_updates
    if epoch == Epoch.APPLICATION and updates.peer_update is not None and (
            largest >= updates.peer_update):
        updates.peer_update = None  # the peer may update its keys again
    frames.add(Ack.from_packet_ranges(ranges, delay),
               on_ack=partial(_ack_acknowledged, space, largest))
    space.ack_needed, space.ack_eliciting_since_ack, space.ack_deadline = False, 0, None


def _ack_acknowledged(space: SpaceState, largest: int) -> None:
    """The peer saw our ACK up to ``largest``: stop reporting those packet numbers
    (RFC 9000 section 13.2.4); older ones arriving now count as duplicates."""
    if largest + 1 > space.ack_floor:
        space.ack_floor = largest + 1
        space.received.subtract(0, largest + 1)


def _close_frame(conn: Connection, epoch: Epoch) -> Frame:
    assert conn._close is not None
    code, frame_type, reason, application = conn._close
    if application and epoch == Epoch.APPLICATION:
        return ApplicationClose(code, reason.encode()[:256])
    if application:  # VEL-FRM-004: application closes before 1-RTT are APPLICATION_ERROR
        return ConnectionClose(ErrorCode.APPLICATION_ERROR, 0, b"")
    return ConnectionClose(code, frame_type, reason.encode()[:256])


def _add_crypto(space: SpaceState, frames: _Frames, room: int) -> None:
    crypto = space.crypto_send
    while crypto.has_data() and room - len(frames.writer) > STREAM_FRAME_OVERHEAD:
        chunk = crypto.next_frame(room - len(frames.writer) - STREAM_FRAME_OVERHEAD, 1 << 62)
        if chunk is None:
            break
        offset, data, _ = chunk
        end = offset + len(data)
        frames.add(Crypto(offset, data), on_ack=partial(crypto.on_acked, offset, end, False),
                   on_loss=partial(crypto.on_lost, offset, end, False))


def _resend_max_data(conn: Connection) -> None:
    conn._control.append(MaxData(conn.flow.max_recv))


def _resend_max_stream_data(conn: Connection, stream: StreamState) -> None:
    conn._control.append(MaxStreamData(stream.stream_id, stream.max_recv))


def _add_flow_control(conn: Connection, frames: _Frames) -> None:
    flow = conn.flow
    if flow.max_recv - flow.consumed <= flow.window // 2:
        flow.max_recv = flow.consumed + flow.window
        frames.add(MaxData(flow.max_recv), on_loss=partial(_resend_max_data, conn))
    for stream in conn.streams.values():
        limit = stream.credit()
        if limit is not None:
            frames.add(MaxStreamData(stream.stream_id, limit),
                       on_loss=partial(_resend_max_stream_data, conn, stream))
    for unidirectional, pending in conn._max_streams_pending.items():
        if pending:
            conn._max_streams_pending[unidirectional] = False
            limit = conn._local_streams_limit[unidirectional]
            frame: Frame = MaxStreamsUni(limit) if unidirectional else MaxStreamsBidi(limit)
            frames.add(frame, on_loss=partial(conn._max_streams_pending.__setitem__,
                                              unidirectional, True))


def _add_streams(conn: Connection, frames: _Frames, room: int, zero_rtt: bool) -> None:
    flow = conn.flow
    for stream in list(conn.streams.values()):
        sender = stream.sender
        if sender is None or not sender.has_data():
            continue
        while sender.has_data():
            space_left = room - len(frames.writer) - STREAM_FRAME_OVERHEAD
            if space_left <= 0:
                return
            credit = flow.max_send - flow.sent
            if zero_rtt:  # never beyond the ticket's max_early_data (VEL-HS-081)
                credit = min(credit, flow.early_limit - flow.early_used)
            max_offset = min(stream.max_send, sender.sent_max + credit)
            before = sender.sent_max
            chunk = sender.next_frame(space_left, max_offset)
            if chunk is None:
                if credit <= 0 and flow.blocked_sent_at != flow.max_send:
                    flow.blocked_sent_at = flow.max_send
                    frames.add(DataBlocked(flow.max_send))
                elif (sender.sent_max >= stream.max_send
                      and stream.blocked_sent_at != stream.max_send):  # VEL-STR-002
                    stream.blocked_sent_at = stream.max_send
                    frames.add(StreamDataBlocked(stream.stream_id, stream.max_send))
                break
            offset, data, fin = chunk
            flow.sent += sender.sent_max - before
            if zero_rtt:
                flow.early_used += sender.sent_max - before
            end, sid = offset + len(data), stream.stream_id
            frames.add(Stream(sid, data, offset, fin),
                       on_ack=partial(sender.on_acked, offset, end, fin),
                       on_loss=partial(sender.on_lost, offset, end, fin))
            if zero_rtt:
                conn._zero_rtt_frames.append((sid, offset, end, fin))
                conn.early_streams.add(sid)


def _collect(conn: Connection, epoch: Epoch, packet_type: PacketType, room: int, now: float,
             *, congestion_ok: bool) -> _Frames:
    space = conn.spaces[epoch]
    frames = _Frames()
    if conn._close is not None:
        # in every space whose keys are still held: the peer may not read 1-RTT yet (a
        # discovery client before the server's FINISHED), and Handshake keys are dropped
        # once it can (RFC 9000 10.2.3, VEL-PROT-013)
        if packet_type != PacketType.ZERO_RTT:
            _add_crypto(space, frames, room - 64)  # a FALLBACK rides with its close (VEL-HS-090)
            frames.add(_close_frame(conn, epoch))
        return frames
    can_ack = bool(space.received) and packet_type != PacketType.ZERO_RTT
    if can_ack and space.ack_needed:
        _add_ack(conn, space, epoch, frames, now)
    if epoch != Epoch.APPLICATION:
        # handshake data is bounded and never waits for the window: 0-RTT data in flight
        # (unacknowledgeable until the handshake completes) could otherwise hold back the
        # FINISHED that completes it
        _add_crypto(space, frames, room)
    probing = space.probes > 0
    if not (congestion_ok or probing):
        return frames
    if packet_type == PacketType.ONE_RTT:
        _add_crypto(space, frames, room)
    if epoch == Epoch.APPLICATION:
        if packet_type == PacketType.ONE_RTT:
            if conn._handshake_done_pending:
                conn._handshake_done_pending = False
                frames.add(HandshakeDone(),
                           on_ack=partial(setattr, conn.key_updates, "done_acknowledged", True),
                           on_loss=partial(setattr, conn, "_handshake_done_pending", True))
            while conn._control and room - len(frames.writer) > 64:
                frame = conn._control.popleft()
                frames.add(frame, on_loss=partial(conn._control.append, frame))
            _add_flow_control(conn, frames)
        _add_streams(conn, frames, room, packet_type == PacketType.ZERO_RTT)
    if probing and not frames.ack_eliciting:
        frames.add(Ping())
    if probing and frames.ack_eliciting:
        space.probes -= 1
    if can_ack and frames.ack_eliciting and space.ack_eliciting_since_ack:
        _add_ack(conn, space, epoch, frames, now)  # piggyback on a packet that goes anyway
    return frames


def _has_data(conn: Connection, epoch: Epoch) -> bool:
    """Whether ack-eliciting data waits in ``epoch`` (what the pacer may hold back)."""
    if conn.spaces[epoch].crypto_send.has_data():
        return True
    return epoch == Epoch.APPLICATION and (bool(conn._control) or any(
        st.sender is not None and st.sender.has_data() for st in conn.streams.values()))


def _plan_packets(conn: Connection, limit: int, now: float) -> list[_Plan]:
    plans: list[_Plan] = []
    used = 0
    cc = conn.recovery.cc
    paced = cc.pacing_delay(now, conn.recovery.rtt)
    congestion_ok = cc.can_send(conn.config.max_datagram_size) and paced is None
    for epoch in EPOCHS:
        keys, packet_type = _keys_for(conn, epoch)
        space = conn.spaces[epoch]
        if space.injected and not space.discarded:
            injected = _injected_plan(conn, epoch, limit - used, now, first=not plans)
            if injected is not None:
                plans.append(injected)
                used += injected.header_size + len(injected.payload) + TAG_LENGTH
        if keys is None or space.discarded:
            continue
        largest_acked = conn.recovery.spaces[epoch].largest_acked
        pn = space.next_packet_number
        pn_length = max(packet_number_length(pn, largest_acked), 2)
        header_size = _header_size(conn, packet_type, pn_length)
        room = limit - used - header_size - TAG_LENGTH
        if room < 32:
            break
        frames = _collect(conn, epoch, packet_type, room, now, congestion_ok=congestion_ok)
        if paced is not None and _has_data(conn, epoch):
            conn.paced_until = paced
        if not len(frames.writer):
            continue
        space.next_packet_number += 1
        sent = SentPacket(pn, epoch, now, 0, frames.ack_eliciting, frames.ack_eliciting,
                          frames.on_ack, frames.on_loss)
        plans.append(_Plan(epoch, packet_type, keys, pn, pn_length,
                           bytearray(frames.writer.data()), sent, header_size))
        used += header_size + len(frames.writer) + TAG_LENGTH
    return plans


def _injected_plan(conn: Connection, epoch: Epoch, room: int, now: float, *,
                   first: bool) -> _Plan | None:
    """The next packet ``Connection.send_frames`` asked for in ``epoch`` (a seam), if its keys
    exist and it fits (a datagram's first packet always does): its frames unchecked, never
    retransmitted."""
    space = conn.spaces[epoch]
    frames, packet_type, trailer = space.injected[0]
    keys, default_type = _keys_for(conn, epoch)
    if packet_type == PacketType.ZERO_RTT:
        keys = conn._zero_rtt_send
    packet_type = packet_type if packet_type is not None else default_type
    if keys is None:
        return None
    largest_acked = conn.recovery.spaces[epoch].largest_acked
    pn = space.next_packet_number
    pn_length = max(packet_number_length(pn, largest_acked), 2)
    header_size = _header_size(conn, packet_type, pn_length)
    payload = encode_frames(frames) + trailer
    if not first and header_size + len(payload) + TAG_LENGTH > room:
        return None
    space.injected.popleft()
    space.next_packet_number += 1
    eliciting = any(f.ACK_ELICITING for f in frames)
    on_ack: list[Callable[[], None]] = [
        partial(space.crypto_send.on_acked, f.offset, f.offset + len(f.data), False)
        for f in frames if isinstance(f, Crypto)
        and f.offset + len(f.data) <= space.crypto_send.write_offset]
    sent = SentPacket(pn, epoch, now, 0, eliciting, eliciting, on_ack, [])
    return _Plan(epoch, packet_type, keys, pn, pn_length, bytearray(payload), sent, header_size)


def _mutate(conn: Connection, plans: list[_Plan], now: float) -> list[_Plan]:
    """The packet mutator (a seam) decides what is sealed: rewritten, dropped (still
    recorded as sent, so loss recovery resends their frames), repeated or reordered."""
    mutator = conn.seams.packet_mutator
    assert mutator is not None
    by_number = {(p.epoch, p.packet_number): p for p in plans}
    chosen = mutator([PlannedPacket(p.epoch, p.packet_type, p.packet_number, bytes(p.payload))
                      for p in plans])
    out: list[_Plan] = []
    for view in chosen:
        plan = by_number.get((view.epoch, view.packet_number))
        if plan is None:
            raise UsageError("the packet mutator returned a packet it was not given")
        repeat = any(p.epoch == plan.epoch and p.packet_number == plan.packet_number
                     for p in out)
        mutated = replace(plan, payload=bytearray(view.payload), repeat=repeat)
        if view.header is not NO_EDITS:
            mutated = _edited(conn, mutated, view.header)
        out.append(mutated)
    for plan in plans:
        if not any(p.sent is plan.sent for p in out):  # dropped: lost to the network
            plan.sent.size = plan.header_size + len(plan.payload) + TAG_LENGTH
            conn.recovery.on_sent(plan.sent, now)
    return out


def _edited(conn: Connection, plan: _Plan, edits: HeaderEdits) -> _Plan:
    """``plan`` with the header the packet mutator asked for (its size recomputed)."""
    pn_length = plan.pn_length if edits.pn_length is None else edits.pn_length
    if not (0 <= edits.reserved_bits <= 3 and 1 <= pn_length <= 4):
        raise UsageError("reserved bits are 0..3 and packet numbers 1..4 bytes long")
    edited = replace(plan, pn_length=pn_length, header=edits)
    edited.header_size = len(_push_header(conn, edited, len(plan.payload)))
    return edited


def _traced_frames(payload: bytes, packet_type: PacketType) -> list[object]:
    """A sent packet's frames as a transcript shows them; what a seam made undecodable
    shows as one unparsed entry instead of failing the send."""
    try:
        return list(decode_frames(payload, packet_type, check_space=False))
    except ProtocolError as exc:
        return [Unparsed(len(payload), exc.reason)]


def _seal(conn: Connection, plans: list[_Plan], now: float, pad_to: int) -> bytes:
    """Pad (a client's datagrams with any Initial packet, a server's with an ack-eliciting
    one, to ``pad_to`` bytes, VEL-PKT-011; every packet to a header-protection sample),
    protect, and record each packet as sent."""
    sizes = [p.header_size + len(p.payload) + TAG_LENGTH for p in plans]
    padded_initial = any(p.epoch == Epoch.INITIAL and (conn.is_client or p.sent.ack_eliciting)
                         for p in plans)
    if padded_initial and sum(sizes) < pad_to:
        plans[-1].payload += bytes(pad_to - sum(sizes))
        plans[-1].sent.in_flight = True
    datagram = bytearray()
    for plan in plans:
        if plan.pn_length + len(plan.payload) < 4:
            plan.payload += bytes(4 - plan.pn_length - len(plan.payload))
        header = _push_header(conn, plan, len(plan.payload))
        packet = plan.keys.encrypt_packet(header, bytes(plan.payload), plan.packet_number)
        if conn.tracer is not None:
            conn.tracer.event(now, "quic:packet_sent", packet_data(
                plan.packet_type, plan.packet_number, len(packet),
                _traced_frames(bytes(plan.payload), plan.packet_type)))
        if not plan.repeat:
            plan.sent.size = len(packet)
            conn.recovery.on_sent(plan.sent, now)
        datagram += packet
    return bytes(datagram)


def _nothing_to_send(conn: Connection, now: float) -> bool:
    """A cheap test that spares planning when no frame could go out."""
    if conn._close is not None:
        return not conn.close_pending
    if conn._control or conn._handshake_done_pending:
        return False
    if conn.seams.injecting and any(s.injected and not s.discarded
                                    for s in conn.spaces.values()):
        return False
    for space in conn.spaces.values():
        if space.discarded:
            continue
        if space.ack_needed or space.probes or (
                space.send_keys is not None and space.crypto_send.has_data()):
            return False
    cc = conn.recovery.cc
    if not cc.can_send(conn.config.max_datagram_size) or cc.pacing_delay(
            now, conn.recovery.rtt) is not None:
        return not any(s.ack_eliciting_since_ack for s in conn.spaces.values())
    return not _has_data(conn, Epoch.APPLICATION) and not any(
        s.ack_eliciting_since_ack for s in conn.spaces.values())


def _bulk_stream(conn: Connection, limit: int, now: float) -> StreamState | None:
    """The stream whose next packet is one full STREAM frame and nothing else, when that is
    all the general planner would put in it: one space left, no close, control frame,
    flow-control update, ACK, probe or CRYPTO data due, no tracer or packet mutator, the
    congestion window and pacer open, and data and credit for more than the whole packet
    (``limit`` bytes). ``_bulk_packets`` then builds the same bytes with less bookkeeping;
    anything else goes through ``_plan_packets``."""
    space = conn.spaces[Epoch.APPLICATION]
    if (conn._close is not None or conn._control or conn._handshake_done_pending
            or conn.tracer is not None or conn.seams.injecting
            or conn.seams.packet_mutator is not None or not conn.handshake_confirmed
            or space.ack_needed or space.ack_eliciting_since_ack or space.probes
            or space.send_keys is None
            or space.crypto_send.has_data() or True in conn._max_streams_pending.values()
            or not (conn.spaces[Epoch.INITIAL].discarded
                    and conn.spaces[Epoch.HANDSHAKE].discarded)):
        return None
    flow = conn.flow
    if flow.max_recv - flow.consumed <= flow.window // 2 or flow.max_send - flow.sent < limit:
        return None
    cc = conn.recovery.cc
    if not cc.can_send(conn.config.max_datagram_size) or cc.pacing_delay(
            now, conn.recovery.rtt) is not None:
        return None
    chosen = None
    for stream in conn.streams.values():
        if stream.credit_due():
            return None
        sender = stream.sender
        if chosen is None and sender is not None and sender.has_data():
            if sender.next_run() < limit or stream.max_send - sender.sent_max < limit:
                return None
            chosen = stream
    return chosen


def _bulk_packets(conn: Connection, stream: StreamState, limit: int, now: float,
                  count: int) -> list[bytes]:
    """Up to ``count`` 1-RTT packets, each one full STREAM frame of ``stream`` (see
    ``_bulk_stream``), while the window, the pacer, the stream's data and both credits allow
    another whole one; what ``_bulk_stream`` checked besides cannot change in between."""
    space = conn.spaces[Epoch.APPLICATION]
    keys = space.send_keys
    sender = stream.sender
    assert keys is not None and sender is not None
    recovery, flow = conn.recovery, conn.flow
    cc, sent_space = recovery.cc, recovery.spaces[Epoch.APPLICATION]
    largest_acked = sent_space.largest_acked
    frame_head = encode_varint(stream.stream_id)
    peer_cid, phase_bits = conn.peer_cid, FIXED_BIT | (conn._send_phase << 2)
    max_datagram = conn.config.max_datagram_size
    out: list[bytes] = []
    while True:
        pn = space.next_packet_number
        pn_length = max(packet_number_length(pn, largest_acked), 2)
        room = limit - (1 + len(peer_cid) + pn_length) - TAG_LENGTH - STREAM_FRAME_OVERHEAD
        before = sender.sent_max
        chunk = sender.next_frame(room, 1 << 62)  # the caller checked the credit
        assert chunk is not None
        offset, data, fin = chunk
        flow.sent += sender.sent_max - before
        space.next_packet_number = pn + 1
        payload = b"".join((
            SINGLE_BYTES[0x0A | (0x04 if offset else 0) | fin], frame_head,
            encode_varint(offset) if offset else b"", encode_varint(len(data)), data))
        header = SINGLE_BYTES[phase_bits | (pn_length - 1)] + peer_cid + (
            pn & ((1 << (8 * pn_length)) - 1)).to_bytes(pn_length, "big")
        packet = keys.encrypt_packet(header, payload, pn)
        end = offset + len(data)
        recovery.on_sent(SentPacket(
            pn, Epoch.APPLICATION, now, len(packet), True, True,
            [partial(sender.on_acked, offset, end, fin)],
            [partial(sender.on_lost, offset, end, fin)]), now)
        out.append(packet)
        if (len(out) >= count or not cc.can_send(max_datagram)
                or cc.pacing_delay(now, recovery.rtt) is not None
                or sender.next_run() < limit or stream.max_send - sender.sent_max < limit
                or flow.max_send - flow.sent < limit):
            return out


def _client_hello_split(conn: Connection, mtu: int) -> tuple[int, int] | None:
    """(datagram limit, size to pad each datagram to) that put a client's CLIENT_HELLO in at
    least two Initial datagrams of equal size, padded alike (VEL-SIZE-002); None unless the
    whole CLIENT_HELLO waits to be sent. The server's flight (a certificate in discovery)
    then fits its 3x budget at once, and equal datagrams leave in one GSO call and arrive in
    one GRO read."""
    space = conn.spaces[Epoch.INITIAL]
    if not conn.is_client or space.discarded or space.send_keys is None:
        return None
    crypto = space.crypto_send
    pending = crypto.pending_bytes
    if not pending or pending != crypto.write_offset:
        return None
    overhead = _header_size(conn, PacketType.INITIAL, 4) + TAG_LENGTH + STREAM_FRAME_OVERHEAD
    count = max(2, -(-pending // (mtu - overhead)))
    limit = overhead + -(-pending // count)
    return limit, max(MIN_INITIAL_DATAGRAM, limit)


def build_datagrams(conn: Connection, now: float) -> list[bytes]:
    """Every datagram the connection may send now. Until the client's address is validated
    a server sends at most three times what it received from that address (VEL-CONN-001;
    ``bytes_received`` counts no other address's, VEL-CONN-011)."""
    out: list[bytes] = []
    if _nothing_to_send(conn, now):
        paced = conn.recovery.cc.pacing_delay(now, conn.recovery.rtt)
        if paced is not None and _has_data(conn, Epoch.APPLICATION):
            conn.paced_until = paced
        return out
    mtu = conn.config.max_datagram_size if conn.handshake_complete else min(
        conn.config.max_datagram_size, 1452)
    if conn.peer_params is not None:
        mtu = min(mtu, conn.peer_params.max_udp_payload_size)
    split = _client_hello_split(conn, mtu)
    for _ in range(MAX_DATAGRAMS_PER_CALL):
        limit = split[0] if split else mtu
        if not conn.address_validated:
            limit = min(limit, 3 * conn.bytes_received - conn.bytes_sent)
        if limit < 64:
            break
        bulk = _bulk_stream(conn, limit, now)
        if bulk is not None:
            packets = _bulk_packets(conn, bulk, limit, now, MAX_DATAGRAMS_PER_CALL - len(out))
            conn.bytes_sent += sum(map(len, packets))
            out += packets
            if len(out) >= MAX_DATAGRAMS_PER_CALL:
                break
            continue
        if out and _nothing_to_send(conn, now):
            break
        plans = _plan_packets(conn, limit, now)
        if plans and conn.seams.packet_mutator is not None:
            plans = _mutate(conn, plans, now)
            if not plans:
                continue  # all dropped; their numbers are spent
        if not plans:
            break
        datagram = _seal(conn, plans, now, split[1] if split else min(MIN_INITIAL_DATAGRAM,
                                                                        limit))
        conn.bytes_sent += len(datagram)
        out.append(datagram)
        if conn._close is not None:
            conn.close_pending = False
            break
    return out
