"""Running fuzz cases against a target through a ``Driver`` (in memory: harness.fuzz.memory;
over UDP through the scripted peer: harness.fuzz.step), with the oracles every case and
batch is judged by, and shrinking: a failing batch is cut down to the fewest cases, and the
last case to the fewest bytes (or pieces, or edits), that still fail the same oracle on a
fresh driver.

The oracles: nothing but the protocol's own error type leaves the endpoint (an exception,
an INTERNAL_ERROR close or the in-process target's "internal error" log line is a failure);
the server keeps serving (a sanity handshake after every batch); it sends at most
``amplification`` times what an address that never validated sent it; its connection
table stays bounded (``max_connections``) and returns to its baseline once the attack
stops, and its memory grows by at most ``memory_mb`` (where the driver can see them); each
case's response comes within ``within`` seconds."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from harness.fuzz.case import Case, crypto_pieces, edit_hello
from velocity.core.connection import Connection
from velocity.core.errors import ProtocolError
from velocity.core.frames import (
    ApplicationClose,
    ConnectionClose,
    PathChallenge,
    decode_frames,
    encode_frames,
)
from velocity.core.handshake.messages import ClientHello, Message
from velocity.core.packet import Epoch, PacketType
from velocity.core.seams import PlannedPacket

EPOCHS = {"initial": Epoch.INITIAL, "handshake": Epoch.HANDSHAKE, "1rtt": Epoch.APPLICATION}
T = TypeVar("T", bytes, tuple[Any, ...])
CRYPTO_PIECE = 1000  # bytes of replacement CRYPTO data one packet carries


@dataclass(frozen=True)
class Oracles:
    within: float = 1.0  # seconds a case's response may take
    amplification: float = 3.0
    max_connections: int = 1000
    memory_mb: float = 64.0
    batch: int = 100  # cases between sanity handshakes


@dataclass(frozen=True)
class FuzzSettings:
    """A session's fuzz options: ``--fuzz-cases`` and the folder failing cases go to."""

    cases: int | None = None  # overrides every fuzz step's ``cases``
    reports: Path = Path("reports") / "fuzz"


@dataclass(frozen=True)
class Finding:
    """An oracle that did not hold: its name, what was seen, and the case it followed."""

    oracle: str  # internal_error, exception, stopped_serving, amplification, table, memory, slow
    message: str


class Driver(Protocol):
    """Sends cases to one target and judges them."""

    async def run(self, case: Case) -> Finding | None:
        """Send ``case``; a per-case oracle that failed (internal error, slow response)."""
        ...

    async def check(self) -> Finding | None:
        """The batch oracles: a sanity handshake, amplification, the connection table."""
        ...

    async def settle(self) -> Finding | None:
        """The attack is over: the table and memory are back to their baseline."""
        ...

    async def close(self) -> None: ...


@dataclass
class Result:
    cases: int  # cases run
    seconds: float
    finding: Finding | None = None
    failing: list[Case] = dataclasses.field(default_factory=list)  # shrunk
    index: int | None = None  # the index of the last failing case in the run

    @property
    def rate(self) -> float:
        return self.cases / self.seconds if self.seconds else 0.0


# --- arming a client connection with a case ----------------------------------------------

def arm(connection: Connection, case: Case) -> None:
    """Set ``connection``'s seams so it sends ``case``: a frames case as the payload of its
    next packet in the case's space (a PATH_CHALLENGE marker rewritten by the packet
    mutator), a hello case through the message hook, a crypto case through the CRYPTO
    policy. Hello and crypto cases arm a connection before it connects."""
    if case.kind == "frames":
        marker = PathChallenge(len(case.data).to_bytes(4, "big") + b"fuzz")
        wanted = encode_frames([marker])

        def rewrite(packets: list[PlannedPacket]) -> list[PlannedPacket]:
            return [PlannedPacket(p.epoch, p.packet_type, p.packet_number, case.data, p.header)
                    if p.payload == wanted else p for p in packets]

        connection.seams.packet_mutator = rewrite
        epoch = EPOCHS[case.space]
        connection.send_frames(epoch, [marker], packet_type=PacketType.ONE_RTT
                               if epoch == Epoch.APPLICATION else None)
    elif case.kind == "hello":
        def hook(message: Message) -> Message | None:
            return edit_hello(case, message) if isinstance(message, ClientHello) else message

        connection.handshake.message_hook = hook
    elif case.kind == "crypto":
        def policy(epoch: Epoch, offset: int, data: bytes) -> list[list[tuple[int, bytes]]]:
            if epoch != Epoch.INITIAL:
                return [[(offset, data)]]
            pieces = crypto_pieces(case, data)
            return [[(at + cut, piece[cut:cut + CRYPTO_PIECE])]
                    for at, piece in pieces for cut in range(0, max(len(piece), 1),
                                                             CRYPTO_PIECE)]

        connection.seams.crypto_policy = policy


def needs_connection_of_its_own(case: Case) -> bool:
    """Whether ``case`` is sent on a new connection (it changes the handshake, or its space
    is gone once the handshake is done) rather than on the established one."""
    return case.kind in ("hello", "crypto") or (case.kind == "frames"
                                                 and case.space != "1rtt")


def closes(case: Case) -> bool:
    """Whether a 1-RTT frames case carries a CONNECTION_CLOSE or APPLICATION_CLOSE the
    target reads (its payload decodes): the target then drains its end without a word, so
    the cases after it need a connection of their own to reach anything."""
    try:
        frames = decode_frames(case.data, PacketType.ONE_RTT)
    except ProtocolError:
        return False  # the target closes with an error, which the client hears
    return any(isinstance(f, (ConnectionClose, ApplicationClose)) for f in frames)


# --- running, then shrinking -----------------------------------------------------------------

async def attempt(driver: Driver, cases: Sequence[Case]) -> Finding | None:
    """``cases`` in order, then the batch oracles; the first finding."""
    try:
        for case in cases:
            finding = await driver.run(case)
            if finding is not None:
                return finding
        return await driver.check()
    finally:
        await driver.close()


async def fuzz(make: Callable[[], Awaitable[Driver]], cases: Sequence[Case], oracles: Oracles,
               *, shrink_attempts: int = 200, stop: Callable[[], bool] | None = None,
               give_up: Callable[[], bool] | None = None) -> Result:
    """Run ``cases`` in batches on one driver (until ``stop()`` holds, checked between
    batches); on a finding, shrink what failed (until ``give_up()`` holds)."""
    driver = await make()
    started = time.perf_counter()
    done = 0
    try:
        for first in range(0, len(cases), oracles.batch):
            if stop is not None and first and stop():
                break
            batch = cases[first:first + oracles.batch]
            finding = None
            for case in batch:
                done += 1
                finding = await driver.run(case)
                if finding is not None:
                    break
            else:
                finding = await driver.check()
            if finding is not None:
                seconds = time.perf_counter() - started
                await driver.close()
                failing = await shrink(make, list(cases[first:done]), finding, shrink_attempts,
                                       give_up)
                return Result(done, seconds, finding, failing, done - 1)
        finding = await driver.settle()
        seconds = time.perf_counter() - started
    finally:
        await driver.close()
    if finding is not None:
        return Result(done, seconds, finding, [], None)
    return Result(done, seconds)


async def shrink(make: Callable[[], Awaitable[Driver]], cases: list[Case], finding: Finding,
                 budget: int, give_up: Callable[[], bool] | None = None) -> list[Case]:
    """The fewest of ``cases``, each with the fewest parts, that fail ``finding``'s oracle
    again on a fresh driver (``budget`` attempts at most, none once ``give_up()`` holds).
    A finding over UDP may show
    after a later case was sent, so any case may be the one. Cases that no longer fail at
    all are returned as they were: the failure needed the run before them."""
    tries = [budget]

    async def fails(candidate: list[Case]) -> bool:
        if tries[0] <= 0 or not candidate or (give_up is not None and give_up()):
            return False
        tries[0] -= 1
        again = await attempt(await make(), candidate)
        return again is not None and again.oracle == finding.oracle

    if await fails(cases[-1:]):
        cases = cases[-1:]
    elif await fails(cases):
        cases = list(await _cut(tuple(cases), lambda c: fails(list(c))))
    else:
        return cases
    for index in range(len(cases)):
        def fails_with(variant: Case, at: int = index) -> Awaitable[bool]:
            return fails([*cases[:at], variant, *cases[at + 1:]])

        cases[index] = await shrink_case(cases[index], fails_with)
    return cases


async def shrink_case(case: Case, fails: Callable[[Case], Awaitable[bool]]) -> Case:
    """Cut the bytes of a frames or datagram case, the pieces (then the data) of a crypto
    case, the fields and extension edits of a hello case."""
    if case.kind in ("frames", "datagram"):
        return dataclasses.replace(case, data=await _cut(
            case.data, lambda d: fails(dataclasses.replace(case, data=d))))
    if case.kind == "crypto":
        pieces = await _cut(case.pieces, lambda p: fails(dataclasses.replace(case, pieces=p)))
        case = dataclasses.replace(case, pieces=pieces)
        if case.data:
            case = dataclasses.replace(case, data=await _cut(
                case.data, lambda d: fails(dataclasses.replace(case, data=d))))
        return case
    fields = await _cut(case.fields, lambda f: fails(dataclasses.replace(case, fields=f)))
    case = dataclasses.replace(case, fields=fields)
    return dataclasses.replace(case, extensions=await _cut(
        case.extensions, lambda e: fails(dataclasses.replace(case, extensions=e))))


async def _cut(value: T, fails: Callable[[T], Awaitable[bool]]) -> T:
    """Remove chunks of a byte string or tuple, halving the chunk size, while it fails."""
    shrunk = True
    while shrunk and value:  # passes from big chunks to single items, until one cuts nothing
        chunk, shrunk = max(1, len(value) // 2), False
        while chunk >= 1:
            start = 0
            while start < len(value):
                candidate = value[:start] + value[start + chunk:]
                if await fails(candidate):
                    value, shrunk = candidate, True
                else:
                    start += chunk
            chunk = (chunk + 1) // 2 if chunk > 1 else 0  # 6, 3, 2, 1
    return value
