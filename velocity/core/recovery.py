"""Loss detection and congestion control (spec VEL-REC-001..003, RFC 9002): RTT estimation,
per-space sent-packet records, packet- and time-threshold loss detection that adapts to the
reordering it sees, the probe timeout, NewReno with the undo of a spurious congestion event,
and a pacer. Every method takes ``now`` (seconds) as an argument."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from velocity.core.packet import EPOCHS, Epoch

K_PACKET_THRESHOLD = 3
K_TIME_THRESHOLD = 9 / 8
MAX_PACKET_THRESHOLD = 256  # how far reordering may adapt the thresholds (RFC 9002 §6.1)
MAX_TIME_THRESHOLD = 4.0  # RTTs
REMEMBERED_LOSSES = 256  # the latest packets declared lost, kept to recognise spurious ones
K_GRANULARITY = 0.001  # also the floor of the RTT that loss delays are reckoned from
K_INITIAL_RTT = 0.333
K_PERSISTENT_CONGESTION = 3
K_LOSS_REDUCTION = 0.5


@dataclass(slots=True)
class SentPacket:
    """What was sent in one packet; ``on_ack`` / ``on_loss`` callbacks act on its frames."""

    packet_number: int
    epoch: Epoch
    sent_time: float
    size: int
    ack_eliciting: bool
    in_flight: bool
    on_ack: list[Callable[[], None]] = field(default_factory=list)
    on_loss: list[Callable[[], None]] = field(default_factory=list)


@dataclass
class PacketSpace:
    sent: OrderedDict[int, SentPacket] = field(default_factory=OrderedDict)  # send order
    largest_acked: int | None = None
    loss_time: float | None = None
    time_of_last_ack_eliciting: float | None = None
    ack_eliciting_in_flight: int = 0
    declared_lost: OrderedDict[int, float] = field(default_factory=OrderedDict)  # -> sent


@dataclass
class CongestionEvent:
    """The window and slow-start threshold before a congestion event, and the in-flight
    packets ((epoch, packet number)) declared lost in it that are not acknowledged yet."""

    window: int
    ssthresh: float
    lost: set[tuple[Epoch, int]] = field(default_factory=set)


def _take_acked(sent: OrderedDict[int, SentPacket],
                ranges: list[tuple[int, int]]) -> list[SentPacket]:
    """Remove and return the packets the ACK ranges (inclusive) cover. ``sent`` is in
    packet-number order, so a range is found by walking from the oldest record and stopping
    past its top: the cost is what is acknowledged plus older records still unacknowledged,
    however large the peer's range."""
    acked: list[SentPacket] = []
    for low, high in ranges:
        covered = []
        for number in sent:
            if number > high:
                break
            if number >= low:
                covered.append(number)
        acked.extend(sent.pop(n) for n in covered)
    return acked


class RttEstimator:
    def __init__(self) -> None:
        self.latest = 0.0
        self.smoothed = K_INITIAL_RTT
        self.variance = K_INITIAL_RTT / 2
        self.minimum = float("inf")
        self.has_sample = False

    def update(self, latest: float, ack_delay: float, *, handshake_confirmed: bool,
               max_ack_delay: float) -> None:
        self.latest = latest
        self.minimum = min(self.minimum, latest)
        if not self.has_sample:
            self.has_sample = True
            self.smoothed, self.variance = latest, latest / 2
            return
        if handshake_confirmed:
            ack_delay = min(ack_delay, max_ack_delay)
        adjusted = latest - ack_delay if latest >= self.minimum + ack_delay else latest
        self.variance = 0.75 * self.variance + 0.25 * abs(self.smoothed - adjusted)
        self.smoothed = 0.875 * self.smoothed + 0.125 * adjusted


class NewReno:
    """RFC 9002 section 7 with a pacer of rate 1.25 * cwnd / smoothed RTT (section 7.7)."""

    def __init__(self, max_datagram_size: int) -> None:
        self.max_datagram_size = max_datagram_size
        self.window = min(10 * max_datagram_size, max(14720, 2 * max_datagram_size))
        self.ssthresh = float("inf")
        self.bytes_in_flight = 0
        self.recovery_start: float | None = None
        self.event: CongestionEvent | None = None  # the latest, while it may be undone
        self._next_send = 0.0

    @property
    def minimum_window(self) -> int:
        return 2 * self.max_datagram_size

    def can_send(self, size: int) -> bool:
        return self.bytes_in_flight + size <= self.window

    def on_sent(self, size: int) -> None:
        self.bytes_in_flight += size

    @property
    def next_send_time(self) -> float:
        """When the pacer lets the next packet go (0 when it never held one back)."""
        return self._next_send

    def pacing_delay(self, now: float, rtt: RttEstimator) -> float | None:
        """None when a packet may leave now, otherwise the time it may."""
        return self._next_send if self._next_send > now else None

    def on_paced(self, now: float, size: int, rtt: RttEstimator) -> None:
        if not rtt.has_sample:
            return
        interval = size * rtt.smoothed / (1.25 * self.window)
        self._next_send = max(self._next_send, now - 2 * K_GRANULARITY) + interval

    def on_acked(self, packet: SentPacket) -> None:
        self.bytes_in_flight -= packet.size
        if self.recovery_start is not None and packet.sent_time <= self.recovery_start:
            return
        if self.window < self.ssthresh:
            self.window += packet.size
        else:
            self.window += self.max_datagram_size * packet.size // self.window

    def on_lost(self, lost: list[SentPacket], now: float, rtt: RttEstimator) -> None:
        if not lost:
            return
        for packet in lost:
            self.bytes_in_flight -= packet.size
        newest = max(p.sent_time for p in lost)
        if self.recovery_start is None or newest > self.recovery_start:
            self.event = CongestionEvent(self.window, self.ssthresh)
            self.recovery_start = now
            self.window = max(int(self.window * K_LOSS_REDUCTION), self.minimum_window)
            self.ssthresh = self.window
        if self.event is not None:
            self.event.lost.update((p.epoch, p.packet_number) for p in lost)
        if rtt.has_sample and self._persistent(lost, rtt):
            self.window = self.minimum_window
            self.recovery_start = None

    @staticmethod
    def _persistent(lost: list[SentPacket], rtt: RttEstimator) -> bool:
        """RFC 9002 section 7.6: consecutive ack-eliciting packets, all lost, spanning more
        than three PTOs (without max_ack_delay)."""
        eliciting = sorted((p for p in lost if p.ack_eliciting), key=lambda p: p.packet_number)
        if len(eliciting) < 2:
            return False
        numbers = [p.packet_number for p in eliciting]
        if numbers[-1] - numbers[0] != len(numbers) - 1:
            return False
        period = (rtt.smoothed + max(4 * rtt.variance, K_GRANULARITY)) * K_PERSISTENT_CONGESTION
        return eliciting[-1].sent_time - eliciting[0].sent_time > period

    def on_spurious(self, epoch: Epoch, packet_number: int) -> None:
        """A packet declared lost was acknowledged after all. Once every packet declared
        lost in the latest congestion event is, the event was reordering, not loss: the
        window and threshold go back to what they were before it (the undo of Linux's
        TCP; RFC 9002 leaves this open), and recovery ends."""
        event = self.event
        if event is None:
            return
        event.lost.discard((epoch, packet_number))
        if event.lost:
            return
        self.window = max(self.window, event.window)
        self.ssthresh = max(self.ssthresh, event.ssthresh)
        self.recovery_start = self.event = None

    def on_discarded(self, packet: SentPacket) -> None:
        self.bytes_in_flight -= packet.size


class Recovery:
    """Loss detection and PTO over the three packet-number spaces."""

    def __init__(self, max_datagram_size: int, *, is_client: bool) -> None:
        self.rtt = RttEstimator()
        self.cc = NewReno(max_datagram_size)
        self.spaces = {epoch: PacketSpace() for epoch in EPOCHS}
        self.pto_count = 0
        self.max_ack_delay = 0.025
        self.is_client = is_client
        self.packet_threshold = K_PACKET_THRESHOLD
        self.time_threshold = K_TIME_THRESHOLD

    def on_sent(self, packet: SentPacket, now: float) -> None:
        space = self.spaces[packet.epoch]
        space.sent[packet.packet_number] = packet
        if packet.ack_eliciting:
            space.time_of_last_ack_eliciting = now
            space.ack_eliciting_in_flight += 1
        if packet.in_flight:
            self.cc.on_sent(packet.size)
            self.cc.on_paced(now, packet.size, self.rtt)

    def on_ack(self, epoch: Epoch, ranges: list[tuple[int, int]], ack_delay: float, now: float,
               *, handshake_confirmed: bool,
               peer_completed_address_validation: bool) -> list[SentPacket]:
        """Process an ACK frame's inclusive ranges; returns the newly acknowledged packets.
        A client keeps its PTO backoff while the server may not have validated its address
        (RFC 9002 section 6.2.1), so its probes cannot turn into a flood."""
        space = self.spaces[epoch]
        if space.declared_lost:
            self._adapt_to_reordering(epoch, ranges, now)
        acked = _take_acked(space.sent, ranges)
        if not acked:
            return []
        largest = max(p.packet_number for p in acked)
        if space.largest_acked is None or largest > space.largest_acked:
            space.largest_acked = largest
            newest = max(acked, key=lambda p: p.packet_number)
            if newest.packet_number == ranges[0][1] and any(p.ack_eliciting for p in acked):
                self.rtt.update(now - newest.sent_time, ack_delay,
                                handshake_confirmed=handshake_confirmed,
                                max_ack_delay=self.max_ack_delay)
        for packet in acked:
            if packet.ack_eliciting:
                space.ack_eliciting_in_flight -= 1
            if packet.in_flight:
                self.cc.on_acked(packet)
            for callback in packet.on_ack:
                callback()
        self.detect_loss(epoch, now)
        if not self.is_client or peer_completed_address_validation:
            self.pto_count = 0
        return acked

    def detect_loss(self, epoch: Epoch, now: float) -> list[SentPacket]:
        space = self.spaces[epoch]
        space.loss_time = None
        if space.largest_acked is None:
            return []
        delay = self.time_threshold * self._rtt_floor()
        lost = []
        for packet in space.sent.values():  # in packet-number order; acked ones are gone
            if packet.packet_number > space.largest_acked:
                break
            deadline = packet.sent_time + delay  # the same sum the timer is armed with
            if deadline <= now or space.largest_acked >= packet.packet_number + (
                    self.packet_threshold):
                lost.append(packet)
            elif space.loss_time is None or deadline < space.loss_time:
                space.loss_time = deadline
        for packet in lost:
            del space.sent[packet.packet_number]
            space.declared_lost[packet.packet_number] = packet.sent_time
        while len(space.declared_lost) > REMEMBERED_LOSSES:
            space.declared_lost.popitem(last=False)
        if lost:
            self._declare_lost(space, lost, now)
        return lost

    def _rtt_floor(self) -> float:
        """The RTT loss delays are reckoned from (RFC 9002 section 6.1.2), at least the
        granularity: an RTT of 0 (loopback) neither divides by zero nor makes every packet
        late at once."""
        return max(self.rtt.latest, self.rtt.smoothed, K_GRANULARITY)

    def _adapt_to_reordering(self, epoch: Epoch, ranges: list[tuple[int, int]],
                             now: float) -> None:
        """Packets declared lost are acknowledged after all: they were reordered, not lost.
        The packet threshold widens to how far below the largest acknowledged packet they
        were (RFC 9002 section 6.1.1), the time threshold to how long after their sending
        they were acknowledged, in RTTs (at most MAX_TIME_THRESHOLD), so the next such
        packet is not declared lost; the congestion event they caused may be undone."""
        space = self.spaces[epoch]
        low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
        spurious = [n for n in space.declared_lost if low <= n <= high
                    and any(bottom <= n <= top for bottom, top in ranges)]
        if not spurious:
            return
        largest = high if space.largest_acked is None else space.largest_acked
        seen = max(now - space.declared_lost.pop(n) for n in spurious) / self._rtt_floor()
        self.packet_threshold = min(max(self.packet_threshold, largest - min(spurious) + 1),
                                    MAX_PACKET_THRESHOLD)
        self.time_threshold = min(max(self.time_threshold, seen), MAX_TIME_THRESHOLD)
        for number in spurious:
            self.cc.on_spurious(epoch, number)

    def _declare_lost(self, space: PacketSpace, lost: list[SentPacket], now: float) -> None:
        for packet in lost:
            if packet.ack_eliciting:
                space.ack_eliciting_in_flight -= 1
            for callback in packet.on_loss:
                callback()
        self.cc.on_lost([p for p in lost if p.in_flight], now, self.rtt)

    def discard(self, epoch: Epoch) -> None:
        """Drop a space's records without declaring loss (keys discarded, or Retry)."""
        space = self.spaces[epoch]
        for packet in space.sent.values():
            if packet.in_flight:
                self.cc.on_discarded(packet)
        self.spaces[epoch] = PacketSpace()
        self.pto_count = 0

    def pto_duration(self, epoch: Epoch, *, backoff: bool = True) -> float:
        rtt = self.rtt
        duration = rtt.smoothed + max(4 * rtt.variance, K_GRANULARITY)
        if epoch == Epoch.APPLICATION:
            duration += self.max_ack_delay
        return duration * (1 << self.pto_count) if backoff else duration

    def loss_timer(self, *, handshake_confirmed: bool, peer_completed_address_validation: bool,
                   has_keys: Callable[[Epoch], bool],
                   last_activity: float) -> tuple[float | None, Epoch | None, bool]:
        """(deadline, epoch, is_pto) of the earliest loss-time or PTO timer. A client whose
        address the server may not have validated keeps a PTO armed even with nothing in
        flight (RFC 9002 section 6.2.2.1), counted from ``last_activity``: otherwise a
        server stopped by the amplification limit and a client with nothing to send wait
        for each other."""
        times = [(s.loss_time, e) for e, s in self.spaces.items() if s.loss_time is not None]
        if times:
            deadline, epoch = min(times, key=lambda t: t[0] or 0.0)
            return deadline, epoch, False
        best: tuple[float | None, Epoch | None] = (None, None)
        in_flight = any(s.ack_eliciting_in_flight for s in self.spaces.values())
        if not in_flight and (not self.is_client or peer_completed_address_validation):
            return None, None, True
        for epoch, space in self.spaces.items():
            if epoch == Epoch.APPLICATION and not handshake_confirmed:
                continue
            if not has_keys(epoch):
                continue
            if space.ack_eliciting_in_flight == 0 and in_flight:
                continue
            base = space.time_of_last_ack_eliciting
            if base is None:
                continue
            deadline = base + self.pto_duration(epoch)
            if best[0] is None or deadline < best[0]:
                best = (deadline, epoch)
        if best[0] is None and self.is_client and not peer_completed_address_validation:
            epoch = Epoch.HANDSHAKE if has_keys(Epoch.HANDSHAKE) else Epoch.INITIAL
            return last_activity + self.pto_duration(epoch), epoch, True
        return best[0], best[1], True

    def on_pto(self) -> None:
        self.pto_count += 1



