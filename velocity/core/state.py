"""The records a connection keeps: its lifecycle state, and per packet-number space and
connection-wide flow-control state. ``Connection`` owns them; the receiver and the sender
read and update them."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum, auto

from velocity.core.frames import Frame
from velocity.core.packet import PacketType
from velocity.core.protection import PacketKeys
from velocity.core.rangeset import RangeSet
from velocity.core.streams import ReceiveBuffer, SendBuffer

CRYPTO_BUFFER_LIMIT = 65536


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
    # frames sent as they are (the seam Connection.send_frames): (frames, packet type,
    # raw bytes after them)
    injected: deque[tuple[tuple[Frame, ...], PacketType | None, bytes]] = field(
        default_factory=deque)


@dataclass
class KeyUpdates:
    """1-RTT key updates in progress (RFC 9001 section 6): the receive keys of the previous
    phase, our first packet under the current send keys until one of ours is acknowledged
    (None once one is; 0 at first: the first update waits for an acknowledged 1-RTT
    packet), the peer's packet that started its last update until we have acknowledged it,
    and (server) whether the client acknowledged HANDSHAKE_DONE, so is confirmed."""

    previous_recv_keys: PacketKeys | None = None
    unacked_from: int | None = 0
    peer_update: int | None = None
    done_acknowledged: bool = False


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
    early_limit: int = 0  # stream bytes the ticket allows in 0-RTT (VEL-HS-081)
    early_used: int = 0
    waiting_ranges: int = 0  # out-of-order ranges held across the streams (VEL-STR-005)
