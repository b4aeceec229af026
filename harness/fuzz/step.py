"""The ``fuzz`` step: cases from scapy layers or hypothesis strategies (harness.fuzz.cases)
sent to the target over UDP through the scripted peer (harness.peer.ClientPeer, whose
seams put each case inside correctly protected packets), judged by the oracles of
harness.fuzz.runner as far as the wire shows them: INTERNAL_ERROR closes (and, from the
in-process target, its "internal error" log line), the sanity handshake after every batch,
and the bytes the target sends a socket that never validated its address. A failure is
shrunk, written to ``reports/fuzz/<scenario>-<seed>.yaml`` as a scenario that replays it
(``fuzz: {replay: [...]}``), and FAILs the step with that path and the seed.

Options: ``layer``/``layers`` or ``strategy`` (or ``replay``), ``space``, ``cases``
(``--fuzz-cases`` overrides it), ``seed`` (default: the run's), ``lengths``, ``batch``,
``within``, ``amplification``."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import socket
from pathlib import Path

import yaml

from harness.fuzz.case import Case, from_replay, to_replay
from harness.fuzz.cases import Source
from harness.fuzz.runner import (
    Driver,
    Finding,
    Oracles,
    arm,
    closes,
    fuzz,
    needs_connection_of_its_own,
)
from harness.peer import ClientPeer, View
from harness.peer.client import local_address_for
from harness.scenario.connections import client_config, settle
from harness.scenario.context import Run, StepFailed, StepUnsupported
from harness.scenario.model import Step
from harness.targets import sanity_check
from velocity.core.connection import Address, Connection
from velocity.core.errors import ErrorCode

DEFAULT_CASES = 50
SERVER_LOG = "velocity.aio.server"  # where the reference logs its own faults
FAULTS = ("internal error", "stream handler failed")  # a connection's, an application's
SANITY_TIMEOUT = 10.0  # seconds a sanity handshake may take: a loaded target is not a dead one


class _RawSocket:
    """A socket of its own for raw datagram cases: what it sent and what came back."""

    def __init__(self, target: Address) -> None:
        self.target = target
        family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind((local_address_for(target[0]), 0))
        self.sent = self.received = 0
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._read)

    @property
    def name(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"{host}:{port}"

    def send(self, data: bytes) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            self.sock.sendto(data, self.target)
            self.sent += len(data)

    def _read(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError, ConnectionRefusedError):
            while True:
                self.received += len(self.sock.recv(65536))

    def close(self) -> None:
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()


class _InternalErrors(logging.Handler):
    """The in-process target's log lines of its own faults: "internal error" (a
    connection closed with INTERNAL_ERROR) and "stream handler failed" (the application
    raised on a stream's bytes)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() in FAULTS:
            fault = record.exc_info[1] if record.exc_info else None
            found = getattr(record, "fields", {})
            shown = (f"{type(fault).__name__}: {fault}" if fault else
                     f"{found.get('exception', '?')} at {found.get('at', '?')}")
            self.lines.append(f"{record.getMessage()}: {shown}")


class PeerDriver:
    """Cases over UDP to ``run.target`` through the scripted peer."""

    def __init__(self, run: Run, oracles: Oracles, label: str) -> None:
        if run.target.address is None:
            raise StepUnsupported(f"{run.target.label} is not a server")
        self.context, self.oracles, self.address = run, oracles, run.target.address
        self.peers: list[ClientPeer] = []
        self.main: ClientPeer | None = None
        self.drained = False  # the last case closed main: the target drains it silently
        self.raw: _RawSocket | None = None
        self.log: _InternalErrors | None = None
        if run.target.owned:  # the in-process reference: its log is ours to read
            self.log = _InternalErrors()
            logging.getLogger(SERVER_LOG).addHandler(self.log)
        self.label = label  # the step's place and this driver's number among its own
        self._count = 0
        self.config = client_config(run, {})[1]  # every connection's (the CA file read once)

    async def _peer(self, case: Case | None = None) -> ClientPeer:
        self._count += 1
        view = View(self.context.loop)
        # no two connections of a run alike (other steps', shrinking drivers'): a live one
        # would take the other's Initials, which the target routes by the DCID both chose
        entropy = self.context.entropy(f"fuzz/{self.label}/{self._count}")
        # no tracer: a fuzz connection's transcript is written nowhere, and tracing decodes
        # every packet it sends and receives
        connection = Connection(self.config, entropy=entropy)
        if case is not None:
            arm(connection, case)
        peer = await ClientPeer.start(connection, self.address, view=view)
        self.peers.append(peer)
        return peer

    async def _wait(self, peer: ClientPeer, seconds: float) -> str | None:
        return await settle(self.context, peer, seconds)

    async def _retire(self, peer: ClientPeer) -> Finding | None:
        """Close a connection the driver is done with; what its end showed."""
        finding = self._internal_error([peer])
        self.peers.remove(peer)
        with contextlib.suppress(ConnectionError, OSError):
            await peer.close()
        return finding

    async def run(self, case: Case) -> Finding | None:
        if case.kind == "datagram":
            if self.raw is None:
                self.raw = _RawSocket(self.address)
            self.raw.send(case.data)
            await asyncio.sleep(0)
        elif needs_connection_of_its_own(case):
            peer = await self._peer(case)
            await self._wait(peer, self.oracles.within)
            return await self._retire(peer)
        else:
            if self.main is not None and (self.main.router.terminated is not None
                                          or self.drained):
                finding = await self._retire(self.main)
                self.main = None
                if finding is not None:
                    return finding
            if self.main is None:
                self.main = await self._peer()
                problem = await self._wait(self.main, max(self.oracles.within, SANITY_TIMEOUT))
                if problem is not None:
                    return self._internal_error([self.main]) or Finding(
                        "stopped_serving", f"a new connection for the 1-RTT cases: {problem}")
            arm(self.main.connection, case)
            self.main.flush()
            await asyncio.sleep(0)
            self.drained = closes(case)
        return self._internal_error([self.main] if self.main else [])

    def _internal_error(self, peers: list[ClientPeer]) -> Finding | None:
        for peer in peers:
            closed = peer.router.terminated
            if closed is not None and closed.by_peer and (
                    closed.error_code == ErrorCode.INTERNAL_ERROR and not closed.application):
                return Finding("internal_error", "the target closed a connection with "
                               f"INTERNAL_ERROR: {closed.reason!r}")
        if self.log is not None and self.log.lines:
            return Finding("internal_error", f"the in-process target logged "
                           f"{self.log.lines[0]}")
        return None

    async def check(self) -> Finding | None:
        await self.context.sleep(min(0.05, self.oracles.within))  # the batch's answers arrive
        finding = self._internal_error(self.peers)
        if finding is not None:
            return finding
        reason = await sanity_check(self.context.target, max(self.oracles.within, SANITY_TIMEOUT))
        if reason is not None:
            return self._internal_error(self.peers) or Finding(
                "stopped_serving", f"the sanity handshake after the batch failed: {reason}")
        if self.raw is not None:
            raw, self.raw = self.raw, None
            raw.close()
            if raw.received > self.oracles.amplification * raw.sent:
                return Finding("amplification", f"the target sent {raw.received} bytes to "
                               f"{raw.name}, which sent {raw.sent} and never validated (the "
                               f"limit is {self.oracles.amplification:g}x)")
        return self._internal_error(self.peers)

    async def settle(self) -> Finding | None:
        """The table and memory of a target over UDP are not visible: nothing to check."""
        return None

    async def close(self) -> None:
        for peer in self.peers:
            with contextlib.suppress(ConnectionError, OSError):
                await peer.close()
        self.peers.clear()
        self.main = None
        if self.raw is not None:
            self.raw.close()
            self.raw = None
        if self.log is not None:
            logging.getLogger(SERVER_LOG).removeHandler(self.log)
            self.log = None


def oracles_of(step: Step) -> Oracles:
    return Oracles(within=float(step.get("within", 1.0)),
                   amplification=float(step.get("amplification", 3.0)),
                   batch=int(step.get("batch", 100)))


def source_of(step: Step) -> Source:
    layers = [step.get("layer")] if step.get("layer") else list(step.get("layers", []))
    return Source(layers=tuple(layers), strategy=step.get("strategy"),
                  space=step.get("space", "1rtt"), lengths=bool(step.get("lengths", False)))


async def fuzz_step(run: Run, step: Step) -> None:
    if run.scenario.role != "client":
        raise StepUnsupported("fuzz acts as a client: role: server scenarios cannot take it")
    oracles = oracles_of(step)
    seed = str(step.get("seed", run.seed))
    if "replay" in step.options:
        cases = [from_replay(r) for r in step.options["replay"]]
    else:
        count = run.fuzz.cases or int(step.get("cases", DEFAULT_CASES))
        cases = source_of(step).cases(count, f"{seed}/{run.scenario.name}/{step.where}")

    drivers = itertools.count(1)

    async def make() -> Driver:
        return PeerDriver(run, oracles, f"{step.where}/{next(drivers)}")

    # fuzz until three quarters of the time left, shrink until 90%: the rest is the checks'
    left, began = run.budget.wait(run.scenario.budget.timeout, run.now())[0], run.now()
    result = await fuzz(make, cases, oracles, stop=lambda: run.now() > began + 0.75 * left,
                        give_up=lambda: run.now() > began + 0.9 * left,
                        shrink_attempts=0 if "replay" in step.options else 60)
    run.note("fuzz", {"cases": result.cases, "of": len(cases), "seconds": round(result.seconds, 3),
                      "finding": result.finding.oracle if result.finding else None})
    if result.finding is None:
        run.note("check", {"check": "fuzz", "passed": True,
                           "message": f"{result.cases} cases, {result.rate:.0f}/s"})
        return
    finding = result.finding
    if "replay" in step.options:
        raise StepFailed(f"the replayed case fails the {finding.oracle} oracle: "
                         f"{finding.message}", expected="the target handles the case",
                         actual=finding.message)
    path = write_scenario(run, step, seed, result.failing, finding)
    shown = "; ".join(c.describe() for c in result.failing[-1:])
    raise StepFailed(
        f"fuzz case {result.index} of {result.cases} (seed {seed}) fails the "
        f"{finding.oracle} oracle: {finding.message}; shrunk to {len(result.failing)} "
        f"case(s) ({shown}), written to {path} (seed {seed})",
        expected="the target handles every case", actual=finding.message)


def report_name(run: Run, seed: str) -> str:
    stem = run.scenario.name.replace("/", "-")
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in f"{stem}-{seed}")


def write_scenario(run: Run, step: Step, seed: str, cases: list[Case],
                   finding: Finding) -> Path:
    """A scenario that replays ``cases`` with the oracles of ``step``: it FAILs while the
    defect is there and PASSes once it is fixed."""
    oracles = {k: step.options[k] for k in ("within", "amplification") if k in step.options}
    name = report_name(run, seed)
    document = {
        "id": "regressions/" + re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-"),
        "title": f"fuzz finding ({finding.oracle}): {finding.message[:120]}",
        "spec": list(run.scenario.spec),
        "tags": ["regression"],
        "role": "client",
        "budget": {"timeout": 30},
        "steps": [{"fuzz": {"replay": [to_replay(c) for c in cases], **oracles}}],
    }
    folder = run.fuzz.reports
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    header = (f"# found by {run.scenario.name} ({run.scenario.file}:{run.scenario.line}), "
              f"seed {seed}, at {step.where}\n# move it to scenarios/regressions/ with the "
              "fix: it fails before the fix and passes after\n")
    path.write_text(header + yaml.safe_dump(document, sort_keys=False, width=100))
    return path
