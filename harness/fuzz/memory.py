"""The in-memory fuzz target: one reference ``ServerEndpoint`` and the fuzzer's client
``Connection`` objects, moving datagrams by function calls on a virtual clock (no sockets,
no event loop waits), so every oracle reads the server directly: each exception that
leaves the endpoint, each InternalErrorRaised it reports, its connection table, the bytes
it sends each address, the wall time it spends on each case.

1-RTT frames cases go to a second target of one connected client (the "pair"), which is
restored from a snapshot taken once after its handshake whenever a case ended that
connection on either side (most fuzzed frames do: a handshake per case would cost 50 times
the case), and gets a sanity handshake of its own after every batch. Everything else (raw
datagrams, hello, crypto and other spaces' frames, each on a connection of its own) goes
to the first."""

from __future__ import annotations

import copyreg
import hashlib
import io
import itertools
import os
import pickle
import time
import traceback
import types
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from harness.fuzz.case import Case
from harness.fuzz.runner import Finding, Oracles, arm, needs_connection_of_its_own
from harness.pair import PairSpec, make_configs
from velocity.core.connection import Address, Connection, ConnectionConfig
from velocity.core.endpoint import EndpointConfig, ServerEndpoint
from velocity.core.entropy import SeededEntropy
from velocity.core.errors import ErrorCode, ProtocolError
from velocity.core.events import ConnectionTerminated, InternalErrorRaised
from velocity.core.frames import Ping
from velocity.core.packet import Epoch
from velocity.core.state import State

SERVER: Address = ("127.0.0.1", 4433)
ATTACKER = "10.0.0.1"  # the source of datagram cases (one address per batch)
SETTLE = 120.0  # virtual seconds after the attack in which the table must empty
STEP = 0.001  # virtual seconds between cases
USE = 0.1  # virtual seconds a connection a case opened is used for


class Snapshot:
    """A target pickled once and unpickled as often as needed (a tenth of a millisecond, a
    handshake's several): values (configs, frozen dataclasses, enum members, functions) and
    cipher contexts (stateless once keyed) are shared with the original, hash objects
    copied (each restore calls the original's ``copy``), everything else new, except the
    records of each packet-number space a connection discarded (Initial and Handshake, at
    both ends), shared too: nothing opens their packets or sends in them again, and
    ``verify`` tells whether they are still as they were."""

    def __init__(self, target: MemoryTarget) -> None:
        self.shared: dict[int, Any] = {}
        self._dead = {id(record): pickle.dumps(record) for record in _discarded(target)}
        buffer = io.BytesIO()
        _Pickler(buffer, self.shared, self._dead).dump(target)
        self._data = buffer.getvalue()

    def restore(self) -> MemoryTarget:
        unpickler = pickle.Unpickler(io.BytesIO(self._data))
        unpickler.persistent_load = self.shared.__getitem__  # type: ignore[method-assign]
        target = unpickler.load()
        assert isinstance(target, MemoryTarget)
        return target

    def verify(self) -> None:
        """Raise if a restored target changed a discarded space's record it shares."""
        for at, data in self._dead.items():
            if pickle.dumps(self.shared[at]) != data:
                raise RuntimeError(f"a discarded space's record changed: "
                                   f"{self.shared[at]!r}")


def _discarded(target: MemoryTarget) -> list[object]:
    """The records of every space a connection of ``target`` discarded: its SpaceState
    and its loss recovery's."""
    return [record for conn in (*target.clients.values(), *target.endpoint.connections)
            for epoch, space in conn.spaces.items() if space.discarded
            for record in (space, conn.recovery.spaces[epoch])]


HASH = type(hashlib.sha256())
# pickled as NEWOBJ: cls.__new__(cls), no __init__
NEW = copyreg.__newobj__  # type: ignore[attr-defined]


class _Pickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, shared: dict[int, Any],
                 dead: dict[int, bytes]) -> None:
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self.shared, self.dead = shared, dead

    def persistent_id(self, obj: Any) -> int | None:
        kind = type(obj)
        if id(obj) in self.dead or isinstance(
                obj, (ConnectionConfig, EndpointConfig, types.FunctionType, Enum)) or (
                kind.__module__.startswith("cryptography")) or getattr(
                getattr(kind, "__dataclass_params__", None), "frozen", False) or (
                isinstance(obj, types.BuiltinMethodType) and isinstance(obj.__self__, HASH)):
            self.shared[id(obj)] = obj
            return id(obj)
        return None

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, HASH):
            return obj.copy, ()  # the bound method is shared: a restore calls it
        if type(obj) is Counter:  # its items set on a bare one: no Counter.__init__ to run
            return NEW, (Counter,), None, None, iter(obj.items())
        return NotImplemented


def rss_mb() -> float:
    """This process's resident memory (Linux), 0 where /proc is not there."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


@dataclass
class MemoryTarget:
    """The reference server; ``weaken`` may change its endpoint (tests plant defects)."""

    seed: str = "fuzz"
    oracles: Oracles = field(default_factory=Oracles)
    endpoint_config: Callable[[ConnectionConfig], EndpointConfig] = (
        lambda config: EndpointConfig(config, max_half_open_per_address=1024))

    def __post_init__(self) -> None:
        client, server = make_configs(PairSpec(seed=self.seed))
        self.client_config = ConnectionConfig(client)
        self.endpoint = ServerEndpoint(self.endpoint_config(ConnectionConfig(server)),
                                       entropy=SeededEntropy(f"{self.seed}/server"))
        self.now = 0.0
        self.clients: dict[Address, Connection] = {}
        self.addresses: dict[Connection, Address] = {}  # each client's own address
        self.marked: dict[Address, None] = {}  # clients that may have something to send
        self.called = True  # whether anything called into the endpoint since the last check
        self.main: Connection | None = None  # the pair's connection
        self._ports = itertools.count(20000)
        self._batches = itertools.count(1)
        self.attacker: Address = (ATTACKER, next(self._ports))
        self.received: Counter[Address] = Counter()  # bytes the server got from each address
        self.sent: Counter[Address] = Counter()  # and sent to it
        self.validated: set[Address] = set()  # addresses that completed a handshake
        self.faults: list[Finding] = []
        self.spent = 0.0  # CPU seconds the server spent on the current case
        self.baseline = len(self.endpoint.connections)
        self.memory = rss_mb()
        self.pair: MemoryTarget | None = None  # where 1-RTT cases go
        self._snapshot: Snapshot | None = None  # the pair just after its handshake

    # --- moving datagrams --------------------------------------------------------------------

    def _call(self, what: str, call: Callable[[], list[tuple[bytes, Address]] | None]
              ) -> list[tuple[bytes, Address]]:
        """Call into the endpoint; what leaves it (other than a ProtocolError), and what it
        reports as InternalErrorRaised, is a fault."""
        out: list[tuple[bytes, Address]] = []
        self.called = True
        began = time.thread_time()
        try:
            out = call() or []
        except ProtocolError:
            pass  # the protocol's own error type
        except Exception as exc:
            where = traceback.extract_tb(exc.__traceback__)[-1]
            self.faults.append(Finding("exception", f"{type(exc).__name__}: {exc} left the "
                                       f"endpoint's {what} (at {where.filename}:{where.lineno})"))
        finally:
            self.spent += time.thread_time() - began
        while (item := self.endpoint.next_event()) is not None:
            if isinstance(item[1], InternalErrorRaised):
                fault = item[1].exception
                at = traceback.extract_tb(fault.__traceback__)[-1]
                self.faults.append(Finding("internal_error", f"the server closed with "
                                           f"INTERNAL_ERROR on {type(fault).__name__}: {fault} "
                                           f"(at {at.filename}:{at.lineno})"))
        return out

    def to_server(self, data: bytes, address: Address) -> None:
        self.received[address] += len(data)
        self._call("receive_datagram", lambda: self.endpoint.receive_datagram(
            data, address, now=self.now))

    def mark(self, client: Connection) -> None:
        """``client`` may have something to send (it connected, was written to or closed, a
        datagram arrived, a timer fired): only marked clients are visited when sending, as
        the endpoint visits only its marked connections (a run's closed clients pile up,
        and each visit costs as much as a case)."""
        if (address := self.addresses.get(client)) is not None:  # not done with
            self.marked[address] = None

    def pump(self, rounds: int = 64) -> None:
        """Deliver until nobody has anything to send (or ``rounds`` exchanges)."""
        for _ in range(rounds):
            moved = False
            marked, self.marked = self.marked, {}
            for address in marked:
                if (client := self.clients.get(address)) is None:
                    continue
                for data, _ in client.datagrams_to_send(now=self.now):
                    moved = True
                    self.marked[address] = None  # visited again until it has nothing left
                    self.to_server(data, address)
            for data, address in self._call(
                    "datagrams_to_send", lambda: self.endpoint.datagrams_to_send(now=self.now)):
                moved = True
                self.sent[address] += len(data)
                if (receiver := self.clients.get(address)) is not None:
                    receiver.receive_datagram(data, SERVER, now=self.now)
                    if receiver.state in (State.DRAINING, State.TERMINATED):
                        self._forget(address)  # deaf and silent: its timer only ends it
                    else:
                        self.marked[address] = None
            if not moved:
                return

    def _forget(self, address: Address) -> None:
        """Drop a client that is done: nothing it could still do reaches anyone (what it
        reported has been read, or is read from the object by whoever holds it)."""
        client = self.clients.pop(address)
        del self.addresses[client]
        self.marked.pop(address, None)

    def advance(self, seconds: float) -> None:
        """Move the clock on, running every timer on the way."""
        end = self.now + seconds
        while True:
            timers = [t for t in (self.endpoint.get_timer(),
                                  *(c.get_timer() for c in self.clients.values()))
                      if t is not None and t <= end]
            if not timers:
                break
            self.now = max(self.now, min(timers))
            self._call("handle_timer", lambda: self.endpoint.handle_timer(
                now=self.now))
            for client in list(self.clients.values()):
                if (timer := client.get_timer()) is not None and timer <= self.now:
                    client.handle_timer(now=self.now)
                    self.mark(client)
            self.pump()
        self.now = end
        for address in [a for a, c in self.clients.items() if c.state == State.TERMINATED]:
            self._forget(address)

    # --- clients -----------------------------------------------------------------------------

    def client(self, case: Case | None = None) -> Connection:
        """A new client connection (armed with ``case`` before it starts), handshaking."""
        address = ("127.0.0.1", next(self._ports))
        client = Connection(self.client_config,
                            entropy=SeededEntropy(f"{self.seed}/client/{address[1]}"))
        if case is not None:
            arm(client, case)
        client.connect(SERVER, now=self.now)
        self.clients[address] = client
        self.addresses[client] = address
        self.mark(client)
        self.pump()
        if client.handshake_complete:
            self.validated.add(address)
        return client

    # --- the driver --------------------------------------------------------------------------

    async def run(self, case: Case) -> Finding | None:
        self.now += STEP
        self.spent = 0.0
        if case.kind == "datagram":
            self.to_server(case.data, self.attacker)
            self.pump()
        elif needs_connection_of_its_own(case):
            own = self.client(case)
            if own.handshake_complete:  # what the case let through is used a while
                own.send_stream_data(0, b"GET / HTTP/1.1\r\n\r\n", end_stream=True)
                self.mark(own)
                self.pump()
                self.advance(USE)
            self._closed_with_internal_error(own)
        else:
            pair = self._connected()
            if pair is None or pair.main is None:
                return Finding("stopped_serving", "a new connection for the 1-RTT cases did "
                               "not complete its handshake")
            pair.now += STEP
            pair.spent = 0.0
            arm(pair.main, case)
            pair.mark(pair.main)
            pair.pump()
            pair._closed_with_internal_error(pair.main)
            self.faults += pair.faults
            pair.faults.clear()
            self.spent += pair.spent
        if self.faults:
            return self.faults[0]
        if self.spent > self.oracles.within:
            return Finding("slow", f"the server spent {self.spent:.3f} s of CPU on the case "
                           f"(the budget is {self.oracles.within:g} s)")
        if len(self.endpoint.connections) > self.oracles.max_connections:
            return Finding("table", f"{len(self.endpoint.connections)} connections in the "
                           f"table (the bound is {self.oracles.max_connections})")
        return None

    def _connected(self) -> MemoryTarget | None:
        """The pair with its connection open at both ends: as it is, or restored."""
        pair = self.pair
        if pair is not None and pair.main is not None and pair.main.state == State.CONNECTED \
                and all(c.state == State.CONNECTED for c in pair.endpoint.connections):
            return pair
        if self._snapshot is None:
            fresh = MemoryTarget(f"{self.seed}/1rtt", self.oracles, self.endpoint_config)
            fresh.main = fresh.client()
            if not fresh.main.handshake_complete:
                return None
            fresh.main.send_frames(Epoch.APPLICATION, [Ping()])  # both ends' 1-RTT keys
            fresh.mark(fresh.main)
            fresh.pump()  # are set up once, in the snapshot, not once a restore
            self._snapshot = Snapshot(fresh)
        self.pair = self._snapshot.restore()
        return self.pair

    def _closed_with_internal_error(self, client: Connection) -> None:
        while (event := client.next_event()) is not None:
            if (isinstance(event, ConnectionTerminated) and event.by_peer
                    and event.error_code == ErrorCode.INTERNAL_ERROR):
                self.faults.append(Finding("internal_error", "the server closed the "
                                           f"connection with INTERNAL_ERROR: {event.reason!r}"))

    async def check(self) -> Finding | None:
        """The sanity handshake (when the batch called into the endpoint at all: a batch of
        1-RTT cases goes to the pair's, which gets its own), amplification, then the
        pair's (once the snapshot's shared records are verified unchanged)."""
        if self.called:
            sane = self.client()
            if self.faults:
                return self.faults[0]
            if not sane.handshake_complete:
                return Finding("stopped_serving", "the sanity handshake after the batch did "
                               f"not complete (client state {sane.state.name})")
            sane.close()
            self.mark(sane)
            self.pump()
            self.called = False
        for address, received in self.received.items():
            if address not in self.validated and self.sent[address] > (
                    self.oracles.amplification * received):
                return Finding("amplification", f"the server sent {self.sent[address]} bytes "
                               f"to {address[0]}:{address[1]}, which sent {received} and never "
                               f"validated (the limit is {self.oracles.amplification:g}x)")
        self.attacker = (ATTACKER, next(self._ports))
        if self._snapshot is not None:
            self._snapshot.verify()
        return await self.pair.check() if self.pair is not None else None

    async def settle(self) -> Finding | None:
        if self.pair is not None and (finding := await self.pair.settle()) is not None:
            return finding
        for client in self.clients.values():
            client.close()
            self.mark(client)
        self.pump()
        self.advance(SETTLE)
        if self.faults:
            return self.faults[0]
        left = len(self.endpoint.connections)
        if left > self.baseline:
            return Finding("table", f"{left} connections are still in the table "
                           f"{SETTLE:g} s after the attack stopped (baseline {self.baseline})")
        grown = rss_mb() - self.memory
        if grown > self.oracles.memory_mb:
            return Finding("memory", f"memory grew by {grown:.0f} MiB over the run (the bound "
                           f"is {self.oracles.memory_mb:g} MiB)")
        return None

    async def close(self) -> None:
        """Nothing to release: the target is garbage once dropped."""
