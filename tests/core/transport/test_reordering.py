"""Loss detection under reordering (VEL-REC-002, VEL-REC-003) on the in-memory pair and its
virtual clock: a congestion event whose every lost packet is acknowledged after all is
undone, the thresholds widen to the reordering seen (the time threshold at most 4 RTT,
reckoned from an RTT of at least 1 ms), and a real loss still cuts the window."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from harness.loopback import ONE_WAY, Pair, lossy
from tests.core.transport.helpers import make, requested
from velocity.core.connection import Connection
from velocity.core.packet import Epoch
from velocity.core.recovery import K_PACKET_THRESHOLD

BODY = bytes(range(256)) * 2000  # 512 KB


@dataclass
class Scripted:
    """A network whose server-to-client datagrams, counted from ``arm()``, are held back
    (index -> extra seconds) or dropped; everything else takes ``one_way``."""

    one_way: float = ONE_WAY
    held: dict[int, float] = field(default_factory=dict)
    dropped: set[int] = field(default_factory=set)
    count: int | None = None  # None until armed

    def arm(self) -> None:
        self.count = 0

    def __call__(self, direction: str, datagram: bytes, now: float
                 ) -> list[tuple[float, bytes]]:
        if direction == "c2s" or self.count is None:
            return [(self.one_way, datagram)]
        index, self.count = self.count, self.count + 1
        if index in self.dropped:
            return []
        return [(self.one_way + self.held.get(index, 0.0), datagram)]


def downloading(network: Scripted) -> tuple[Pair, Connection, int]:
    """A pair whose server has started to send BODY, the network armed as it does."""
    pair = make(network=network)
    server, stream = requested(pair)
    network.arm()
    server.send_stream_data(stream, BODY, end_stream=True)
    return pair, server, stream


def finish(pair: Pair, stream: int) -> None:
    assert pair.run(lambda: pair.finished_stream("client", stream), max_time=60)
    assert pair.received("client", stream) == (BODY, True)


def declared_lost(server: Connection) -> int:
    return len(server.recovery.spaces[Epoch.APPLICATION].declared_lost)


def until_declared_lost(pair: Pair, server: Connection) -> int:
    """Run until the server declares a packet lost; the window it had the step before."""
    windows: list[int] = []

    def lost() -> bool:
        windows.append(server.recovery.cc.window)
        return declared_lost(server) > 0

    assert pair.run(lost)
    return windows[-2]


@pytest.mark.spec("VEL-REC-002", "VEL-REC-003")
def test_reordering_without_loss_ends_with_the_window_restored() -> None:
    """One datagram 15 ms late: three later ones are acknowledged first, so it is declared
    lost and the window halved; its own acknowledgement then shows the event was
    reordering, and the window and slow-start threshold return to what they were."""
    pair, server, stream = downloading(Scripted(held={20: 0.015}))
    cc = server.recovery.cc
    before = until_declared_lost(pair, server)
    assert cc.ssthresh == cc.window < before  # halved
    assert pair.run(lambda: declared_lost(server) == 0)  # its acknowledgement came
    assert cc.ssthresh == float("inf") and cc.window >= before
    assert cc.recovery_start is None
    finish(pair, stream)


@pytest.mark.spec("VEL-REC-002", "VEL-REC-003")
def test_a_reordering_transfer_leaves_no_lasting_cut() -> None:
    """30 % of datagrams each way delayed by up to one more RTT, nothing lost: packets are
    declared lost and acknowledged after all, and the transfer ends in slow start."""
    pair = make(network=lossy("a", reorder=0.3))
    server, stream = requested(pair)
    server.send_stream_data(stream, BODY, end_stream=True)
    finish(pair, stream)
    recovery = server.recovery
    assert recovery.packet_threshold > K_PACKET_THRESHOLD  # reordering was seen
    assert recovery.cc.ssthresh == float("inf")


@pytest.mark.spec("VEL-REC-002", "VEL-REC-003")
def test_a_real_loss_still_cuts_the_window_after_an_undone_one() -> None:
    """A reordered datagram's event is undone; a datagram dropped later is lost for good:
    its event halves the window from where the undo left it, and stays."""
    pair, server, stream = downloading(Scripted(held={20: 0.015}, dropped={120}))
    cc = server.recovery.cc
    before_reordering = until_declared_lost(pair, server)
    assert pair.run(lambda: declared_lost(server) == 0 and cc.ssthresh == float("inf"))
    assert pair.run(lambda: cc.ssthresh < float("inf"))  # the drop
    assert cc.ssthresh == cc.window >= before_reordering // 2
    finish(pair, stream)
    assert cc.ssthresh < float("inf") and declared_lost(server) == 1


@pytest.mark.spec("VEL-REC-002")
def test_an_rtt_of_zero_reckons_the_time_threshold_from_one_millisecond() -> None:
    """A network without delay (RTT samples of 0) and one datagram 3 ms late: nothing
    divides by zero, and the time threshold widens to the 3 ms seen over the 1 ms floor."""
    pair, server, stream = downloading(Scripted(one_way=0.0, held={20: 0.003}))
    finish(pair, stream)  # at once: the datagram's data was resent and went ahead of it
    assert pair.run(lambda: declared_lost(server) == 0)
    recovery = server.recovery
    assert recovery.rtt.smoothed < 0.001
    assert 2.5 < recovery.time_threshold <= 4.0


@pytest.mark.spec("VEL-REC-002")
def test_the_time_threshold_is_capped_at_four_rtt() -> None:
    """A datagram 200 ms late on a 20 ms round trip, ten RTTs: the time threshold widens
    to 4 RTT and no further."""
    pair, server, stream = downloading(Scripted(held={20: 0.2}))
    finish(pair, stream)
    assert pair.run(lambda: declared_lost(server) == 0)
    assert server.recovery.time_threshold == 4.0
