"""The state one scenario run's steps share (``Run``: the target, the connections by name,
saved values and responses, keys and tickets learned, the budget, the harness's own events),
the transcript aggregates an ``assert`` reads, and the transcript documents a run leaves.
``StepFailed`` is how a step says its check did not hold, ``StepUnsupported`` how it says
the target or the run lacks what it needs."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.fuzz.runner import FuzzSettings
from harness.layers.frames import longer_than_minimal
from harness.netsim import UdpRelay
from harness.peer import ClientPeer, RawPeer, View
from harness.scenario.budget import BudgetMeter
from harness.scenario.expr import compile_expression
from harness.scenario.model import Scenario, Step
from harness.scenario.verdict import ScenarioError
from harness.targets import Target
from velocity import __version__
from velocity.core.connection import Address
from velocity.core.entropy import SeededEntropy
from velocity.core.events import TicketReceived
from velocity.core.handshake.client import PinnedServerKey
from velocity.core.trace import QLOG_PACKET_TYPES, Transcript
from velocity.http.h1 import Response

if TYPE_CHECKING:
    from harness.scenario.server_role import Served

Document = dict[str, Any]
Event = dict[str, Any]


class StepFailed(Exception):
    """A step's check did not hold: the verdict is FAIL."""

    def __init__(self, reason: str, *, expected: str | None = None, actual: str | None = None,
                 event: Event | None = None, requirements: tuple[str, ...] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.expected = expected
        self.actual = actual
        self.event = event
        self.requirements = requirements


class StepUnsupported(Exception):
    """The target or the run lacks what a step needs (a key for PDK...): UNSUPPORTED."""


@dataclass
class Conn:
    """One connection of the run, and how far ``expect`` steps have read its events."""

    name: str
    view: View
    address: Address  # the other end as the harness sees it (its own server, in role server)
    peer: ClientPeer | None = None  # the harness's client (role: client scenarios)
    relay: UdpRelay | None = None  # the impairment between the harness and the target
    raw: RawPeer | None = None  # a bare socket (a replay from a new port)
    last_send: list[bytes] = field(default_factory=list)  # what the last send step sent
    cursor: int = 0  # the event index the next expect starts from

    def client(self, step: Step) -> ClientPeer:
        """The harness's client of this connection, for the steps that act through it."""
        if self.peer is None:
            raise StepUnsupported(f"{step.kind} acts as the client: role: server scenarios "
                                  "cannot take it yet")
        return self.peer


@dataclass
class Run:
    scenario: Scenario
    target: Target
    seed: int | str
    strict: bool
    budget: BudgetMeter
    loop: asyncio.AbstractEventLoop
    connections: dict[str, Conn] = field(default_factory=dict)
    saved: dict[str, Any] = field(default_factory=dict)
    requests: dict[str, asyncio.Task[Response]] = field(default_factory=dict)
    last_request: str | None = None
    learned: dict[str, PinnedServerKey] = field(default_factory=dict)  # by profile name
    tickets: list[tuple[TicketReceived, bytes]] = field(default_factory=list)  # (ticket, token)
    served: dict[str, Served] = field(default_factory=dict)  # role server: by connection
    harness: Transcript = field(default_factory=Transcript)  # the harness: events
    warnings: list[str] = field(default_factory=list)  # checks relaxed without --strict
    fuzz: FuzzSettings = field(default_factory=FuzzSettings)  # --fuzz-cases, reports/fuzz
    steps_taken: int = 0
    linger: float = 0.0  # seconds the run waits after its closes (a fill's draining slots)

    def now(self) -> float:
        return self.loop.time()

    @functools.cached_property
    def keeps_payloads(self) -> bool:
        """Whether an ``assert`` reads ``non_minimal_varints``: only then do the run's
        connections keep every payload they open."""
        steps = [*self.scenario.steps, *(s for f in self.scenario.steps
                                         if f.kind == "finally" for s in f.options)]
        return any("non_minimal_varints" in compile_expression(source).names
                   for step in steps if step.kind == "assert" for source in step.sources)

    def next_step(self) -> int:
        """The index of the step starting now, in the order the run takes them."""
        self.steps_taken += 1
        return self.steps_taken - 1

    def note(self, name: str, data: dict[str, Any]) -> None:
        self.harness.event(self.now(), f"harness:{name}", data)

    def entropy(self, conn: str) -> SeededEntropy:
        """The reproducible randomness of one connection of this run."""
        return SeededEntropy(f"{self.seed}/{self.scenario.name}/{conn}")

    def within(self, step: Step, default: float) -> tuple[float, bool]:
        """The step's ``within`` cut to the time budget, and whether the budget cut it."""
        return self.budget.wait(float(step.get("within", default)), self.now())

    async def sleep(self, seconds: float) -> None:
        """Sleep up to ``seconds`` within the time budget (not at all for 0: a step that
        follows another acts in the same turn of the loop)."""
        allowed = self.budget.wait(seconds, self.now())[0]
        if allowed > 0:
            await asyncio.sleep(allowed)

    def conn(self, step: Step) -> Conn:
        name = step.get("conn", "main")
        found = self.connections.get(name)
        if found is None:
            raise ScenarioError(f"{step.kind} needs connection {name!r}, which no connect step "
                                "opened")
        return found

    def check_budget(self) -> None:
        self.budget.check_sent(sum(c.view.datagrams_sent for c in self.connections.values()))

    def namespace(self, names: Collection[str] = ()) -> dict[str, Any]:
        """What an ``assert`` reads: the aggregates of ``main``, then the saved values;
        ``non_minimal_varints``, which dissects every payload, only when ``names`` has it."""
        main = self.connections.get("main")
        values = aggregates(main.view if main else None)
        if "non_minimal_varints" in names:  # (so keeps_payloads holds)
            values["non_minimal_varints"] = non_minimal_varints(main.view if main else None)
        return {**values, **self.saved}

    def documents(self) -> list[tuple[str, Document]]:
        """One transcript per connection (``main`` first, with the harness's events), or
        the harness's events alone when no connection was opened."""
        header: dict[str, Any] = {
            "producer": {"name": "velocity-harness", "version": __version__},
            "vantage_point": self.scenario.role, "target": self.target.label,
            "scenario": {"id": self.scenario.id, "params": dict(self.scenario.params),
                         "seed": self.seed}}
        out = [] if "main" in self.connections else [
            ("main", self.harness.document(peer=None, **header))]
        for conn in sorted(self.connections.values(), key=lambda c: c.name != "main"):
            events = conn.view.events
            if conn.name == "main":
                events = sorted([*events, *self.harness.events], key=lambda e: e["time"])
            host, port = conn.address
            document = conn.view.transcript.document(peer=f"{host}:{port}", **header)
            out.append((conn.name, {**document, "events": events}))
        return out

    async def close(self) -> None:
        """Cancel pending requests and close every connection."""
        for task in self.requests.values():
            task.cancel()
        for conn in self.connections.values():
            if conn.peer is not None:
                with contextlib.suppress(ConnectionError, OSError):
                    await conn.peer.close()
            if conn.relay is not None:
                conn.relay.close()
            if conn.raw is not None:
                conn.raw.close()
        for served in self.served.values():
            await served.close()
        if self.linger and not self.target.owned:
            await asyncio.sleep(self.linger)  # the target lets go of what the run filled


def non_minimal_varints(view: View | None) -> list[str] | None:
    """The frames the target wrote with a longer varint than their values need, as
    ``<packet type> #<number>: <FRAME>`` (harness.layers, not the reference's codec); None
    when the harness opened no packet of the target (nothing was judged)."""
    if view is None or not view.payloads:
        return None
    return [f"{QLOG_PACKET_TYPES[packet_type]} #{number}: {frame}"
            for packet_type, number, payload in view.payloads
            for frame in longer_than_minimal(payload)]


def aggregates(view: View | None) -> dict[str, Any]:
    """The transcript aggregates of one connection (see docs/harness.md)."""
    events = view.events if view is not None else []
    flights: list[int] = []
    direction = None
    sent = received = dropped = padding_not_last = 0
    validated = False
    per_space: dict[str, int] = {}
    close_code = handshake_ms = None
    for event in events:
        name, data = event["name"], event["data"]
        if name in ("quic:datagrams_sent", "quic:datagrams_received"):
            size = sum(r["length"] for r in data["raw"])
            if direction != name:
                flights.append(0)
                direction = name
            flights[-1] += size
            if not validated:
                sent += size if name == "quic:datagrams_sent" else 0
                received += size if name == "quic:datagrams_received" else 0
        elif name == "quic:packet_sent" and data["header"]["packet_type"] == "handshake":
            validated = True  # the server validates us on our Handshake packet
        elif name == "quic:packet_received":
            space = data["header"]["packet_type"]
            per_space[space] = per_space.get(space, 0) + 1
            types = [f["frame_type"] for f in data["frames"]]
            padding_not_last += "padding" in types[:-1]
        elif name == "quic:packet_dropped":
            dropped += 1
        elif name == "quic:connection_closed" and close_code is None:
            close_code = data.get("error_code", 0)
        elif name == "velocity:handshake_completed" and handshake_ms is None:
            handshake_ms = event["time"] - events[0]["time"]
    return {"amplification_ratio": received / sent if sent else 0.0,
            "bytes_per_flight": flights, "flights": len(flights),
            "packets_per_space": per_space,
            "datagrams_sent": view.datagrams_sent if view else 0,
            "datagrams_received": view.datagrams_received if view else 0,
            "handshake_ms": handshake_ms, "close_code": close_code, "packets_dropped": dropped,
            "padding_not_last": padding_not_last}
