"""Reliability runs against a real ``velocity serve`` process (a subprocess of this one, on
127.0.0.1), each printing a result table and a verdict against the aims (exit 1 on a miss):

- ``flood``: Initials (valid first flights with fresh CIDs, garbage, replays) under each
  ``--retry`` policy while legitimate clients fetch;
- ``halfopen``: half-open exhaustion: clients that never finish, or answer Retry and stop;
- ``transfer``: one large download through a relay with loss and reordering, byte-identical;
- ``soak``: mixed handshakes (discovery, PDK), resumption with 0-RTT, several requests a
  connection, API calls and garbage datagrams, for a while.

Aims: legitimate clients keep at least 99 % success during an attack, the connection table
drains, and the server's RSS (VmRSS from /proc/PID/status) is back within 10 % of its
baseline (taken after a warm-up of legitimate traffic) a settle time after the attack; in
the soak, RSS stops growing (the end within 10 % of a quarter of the way through).
Attackers send from 127.0.1.x source addresses (all of 127/8 is loopback on Linux), the
legitimate clients from 127.0.0.1, so the per-address half-open limit applies to each.
Every ``--short`` form is bounded to a few seconds for CI (tests/test_reliability.py).

    python -m bench.reliability flood [--initials 10000] [--policies never,always,under-load]
    python -m bench.reliability halfopen [--attackers 4000]
    python -m bench.reliability transfer [--mb 50] [--loss 0.05] [--jitter 0.01]
    python -m bench.reliability soak [--minutes 30]
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import multiprocessing
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from pathlib import Path

import click

from bench.report import print_table
from harness.netsim import Impairment, RelayStats, UdpRelay
from harness.pair import PairSpec, make_configs
from harness.targets import stop_process
from velocity.aio.entropy import OsEntropy
from velocity.cli.fetch import key_from_option
from velocity.core.connection import Connection, ConnectionConfig
from velocity.core.packet import PacketType
from velocity.easy import AsyncEasyClient, EasyClientConfig

RSS_AIM = 1.10  # RSS a settle time after an attack, at most this times the baseline
SUCCESS_AIM = 0.99
BANNER_WITHIN = 90.0  # seconds for the server to start on a busy machine
CLIENT_TIMEOUT = 10.0  # a legitimate client's whole fetch


# --- the server under test ---------------------------------------------------------------


class Server:
    """``velocity serve`` in a subprocess with its metrics endpoint; ``root`` holds
    ``index.html``, ``1k.bin`` and, when asked, ``big.bin``."""

    def __init__(self, work: Path, *args: str, big_mb: float = 0,
                 allocator: str = "pymalloc") -> None:
        self.root = work / "public"
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "index.html").write_text("velocity reliability\n")
        (self.root / "1k.bin").write_bytes(os.urandom(1024))
        if big_mb:
            with (self.root / "big.bin").open("wb") as out:
                for _ in range(int(big_mb * 16)):
                    out.write(random.randbytes(65536))
        command = [sys.executable, "-m", "velocity.cli", "serve", "--root", str(self.root),
                   "--self-signed", "--publish-kem", "--api", "--listen", "127.0.0.1:0",
                   "--metrics-listen", "127.0.0.1:0", *args]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True,
                                        stdin=subprocess.DEVNULL,
                                        env={**os.environ, "PYTHONMALLOC": allocator})
        self.stderr: list[str] = []
        self._banner = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._banner.wait(BANNER_WITHIN) or self.process.poll() is not None:
            self.stop()
            raise click.ClickException("velocity serve did not start:\n" + "".join(self.stderr))
        line = next(x for x in self.stderr if x.startswith("serving"))
        self.port = int(line.split("udp://127.0.0.1:")[1].split()[0])
        metrics = next(x for x in self.stderr if x.startswith("metrics on"))
        self.metrics_url = metrics.split()[-1]
        certs = self.root / ".velocity" / "certs"
        self.ca = certs / "balanced-ca.pem"
        self.leaf = certs / "balanced-leaf.pem"

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)
            if line.startswith("serving"):
                self._banner.set()
        self._banner.set()  # it exited

    @property
    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise click.ClickException("no VmRSS for the server")

    def metric(self, name: str) -> int:
        """A gauge's or counter's value from the server's metrics endpoint (0 if absent)."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as answer:
            text = answer.read().decode()
        for line in text.splitlines():
            if line.startswith(f"{name} "):
                return int(float(line.split()[1]))
        return 0

    def table(self) -> int:
        """The connection table's size, from the velocity_active_connections gauge."""
        return self.metric("velocity_active_connections")

    def errors(self) -> list[str]:
        """Lines of the server's log that mean a bug (internal errors, tracebacks)."""
        return [line for line in self.stderr if "internal error" in line
                or "Traceback" in line or "handler failed" in line]

    def stop(self) -> None:
        stop_process(self.process, 10)


@dataclass
class Samples:
    """RSS (kB) and table size over time, taken by ``sample`` on a thread."""

    server: Server
    every: float
    points: list[tuple[float, int, int]] = field(default_factory=list)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(self.every):
                self.take()
        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(30)

    def take(self) -> tuple[int, int]:
        rss, table = self.server.rss_kb(), self.server.table()
        self.points.append((time.monotonic(), rss, table))
        return rss, table

    def peak(self) -> tuple[int, int]:
        return (max((p[1] for p in self.points), default=0),
                max((p[2] for p in self.points), default=0))


def drain(server: Server, within: float) -> tuple[int, float]:
    """Wait (at most ``within`` s) for the connection table to empty; (size, seconds)."""
    began = time.monotonic()
    table = server.table()
    while table and time.monotonic() - began < within:
        time.sleep(0.5)
        table = server.table()
    return table, time.monotonic() - began


# --- legitimate clients ------------------------------------------------------------------


@dataclass
class Outcomes:
    """What legitimate clients saw: per operation, successes, failures and latencies."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    failures: dict[str, list[str]] = field(default_factory=dict)
    early_data: int = 0

    def ok(self, op: str, seconds: float) -> None:
        self.latencies.setdefault(op, []).append(seconds)

    def failed(self, op: str, why: str) -> None:
        self.failures.setdefault(op, []).append(why)

    @property
    def total(self) -> int:
        return sum(map(len, self.latencies.values())) + sum(map(len, self.failures.values()))

    @property
    def success(self) -> float:
        return sum(map(len, self.latencies.values())) / self.total if self.total else 0.0

    def quantile(self, q: float) -> float:
        values = sorted(v for vs in self.latencies.values() for v in vs)
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

    def why(self) -> str:
        reasons = [w for ws in self.failures.values() for w in ws]
        common = max(set(reasons), key=reasons.count) if reasons else ""
        return f"{len(reasons)} failed, most often: {common[:120]}" if reasons else "none"


class Legit:
    """Legitimate clients from 127.0.0.1 with the server's CA: each operation is a whole
    fetch (connection, handshake, request, close) timed end to end."""

    def __init__(self, server: Server, work: Path) -> None:
        self.server = server
        self.work = work
        self.outcomes = Outcomes()
        self.pinned = key_from_option(None, server.leaf)
        self._resumers: dict[int, AsyncEasyClient] = {}
        self._dirs = 0

    def _config(self, *, pinned: bool = False, early: bool = False) -> EasyClientConfig:
        self._dirs += 1
        cache = self.work / "clients" / str(self._dirs)  # no cached key: discovery
        return EasyClientConfig(f"127.0.0.1:{self.server.port}", key_cache_dir=cache,
                                ca_file=self.server.ca,
                                pinned_key=self.pinned if pinned else None,
                                early_data=early, follow_fallback=False,
                                timeout=CLIENT_TIMEOUT)

    async def discovery(self, _: int) -> None:
        async with AsyncEasyClient(self._config()) as client:
            self._check((await client.fetch("/")).status)

    async def pdk(self, _: int) -> None:
        async with AsyncEasyClient(self._config(pinned=True)) as client:
            self._check((await client.fetch("/1k.bin")).status)

    async def resume(self, worker: int) -> None:
        """A client kept per worker: each fetch closes its connection, so the next one
        resumes with the ticket and sends its GET as 0-RTT."""
        client = self._resumers.get(worker)
        if client is None:
            client = self._resumers[worker] = AsyncEasyClient(self._config(pinned=True,
                                                                           early=True))
        try:
            got = await client.fetch("/")
            self._check(got.status)
            self.outcomes.early_data += got.early_data
        finally:
            await client.close()

    async def several(self, _: int) -> None:
        """Several requests on one connection: static files and the JSON API."""
        async with AsyncEasyClient(self._config(pinned=True)) as client:
            for path in ("/", "/api/status", "/1k.bin", "/api/time"):
                self._check((await client.fetch(path)).status)

    @staticmethod
    def _check(status: int) -> None:
        if status != 200:
            raise ConnectionError(f"HTTP status {status}")

    async def run(self, ops: list[str], *, workers: int, until: Callable[[], bool],
                  pause: float = 0.05, seed: int = 0) -> None:
        """``workers`` clients, each doing operations drawn from ``ops`` until ``until()``."""
        chooser = random.Random(seed)

        async def worker(index: int) -> None:
            while not until():
                op = chooser.choice(ops)
                began = time.monotonic()
                try:
                    async with asyncio.timeout(CLIENT_TIMEOUT * 2):
                        await getattr(self, op)(index)
                except Exception as exc:
                    self.outcomes.failed(op, f"{type(exc).__name__}: {exc}")
                else:
                    self.outcomes.ok(op, time.monotonic() - began)
                await asyncio.sleep(pause)
        await asyncio.gather(*(worker(i) for i in range(workers)))
        for client in self._resumers.values():
            await client.close()
        shutil.rmtree(self.work / "clients", ignore_errors=True)


def timed_until(seconds: float) -> Callable[[], bool]:
    end = time.monotonic() + seconds
    return lambda: time.monotonic() >= end


# --- attackers (in a child process, so their CPU is not the clients') ----------------------


def first_flight() -> list[bytes]:
    """A valid client first flight (discovery mode) with fresh connection IDs."""
    client_hs, _ = make_configs(PairSpec(mode="discovery"))
    connection = Connection(ConnectionConfig(client_hs), entropy=OsEntropy())
    connection.connect(("127.0.0.1", 1), now=0.0)
    return [datagram for datagram, _ in connection.datagrams_to_send(now=0.0)]


def garbage() -> bytes:
    """1200 bytes with a long Initial header and a random 8-byte DCID: parses, never opens."""
    return (bytes([0xC3]) + (1).to_bytes(4, "big") + b"\x08" + os.urandom(8) + b"\x08"
            + os.urandom(8) + b"\x00" + os.urandom(1200 - 23))


def attacker_sockets(count: int) -> list[socket.socket]:
    sockets = []
    for index in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((f"127.0.{1 + index // 250}.{1 + index % 250}", 0))
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


def _flood(pipe: Pipe, target: tuple[str, int], count: int, mix: tuple[float, float],
           sources: int, rate: float) -> None:
    """Child: build ``count`` items (valid, garbage or replay by ``mix`` = (garbage share,
    replay share)), report ready, wait for go, send them at ``rate`` per second."""
    chooser = random.Random(1)
    items: list[list[bytes]] = []
    for _ in range(count):
        draw = chooser.random()
        if draw < mix[0]:
            items.append([garbage()])
        elif draw < mix[0] + mix[1] and items:
            items.append(chooser.choice(items))  # a replay of an earlier flight
        else:
            items.append(first_flight())
    sockets = attacker_sockets(sources)
    pipe.send("ready")
    pipe.recv()
    began = time.monotonic()
    sent = 0
    for index, flight in enumerate(items):
        sock = sockets[index % len(sockets)]
        for datagram in flight:
            with contextlib.suppress(BlockingIOError):
                sock.sendto(datagram, target)
                sent += 1
        delay = began + (index + 1) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    pipe.send((sent, time.monotonic() - began))


def _halfopen(pipe: Pipe, target: tuple[str, int], count: int, sources: int, rate: float,
              answer_retry: bool) -> None:
    """Child: ``count`` clients that send a first flight and never finish; with
    ``answer_retry`` each answers a Retry (the token Initial) and then stops."""
    client_hs, _ = make_configs(PairSpec(mode="discovery"))
    connections = [Connection(ConnectionConfig(client_hs), entropy=OsEntropy())
                   for _ in range(count)]
    sockets = attacker_sockets(sources)
    pipe.send("ready")
    pipe.recv()
    began = time.monotonic()
    answered: set[int] = set()
    sent = retries = 0

    def receive() -> None:
        nonlocal sent, retries
        for sock_index, sock in enumerate(sockets):
            while True:
                try:
                    data, source = sock.recvfrom(65536)
                except BlockingIOError:
                    break
                if not answer_retry or data[0] >> 4 != 0xC | PacketType.RETRY:
                    continue
                index = _owner(connections, data, sock_index, len(sockets))
                if index is None or index in answered:
                    continue
                answered.add(index)
                retries += 1
                connection = connections[index]
                connection.receive_datagram(data, (str(source[0]), int(source[1])), now=0.0)
                for datagram, _ in connection.datagrams_to_send(now=0.0):
                    with contextlib.suppress(BlockingIOError):
                        sock.sendto(datagram, target)
                        sent += 1

    for index, connection in enumerate(connections):
        connection.connect(target, now=0.0)
        sock = sockets[index % len(sockets)]
        for datagram, _ in connection.datagrams_to_send(now=0.0):
            with contextlib.suppress(BlockingIOError):
                sock.sendto(datagram, target)
                sent += 1
        if index % 20 == 0:
            receive()
        delay = began + (index + 1) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    end = time.monotonic() + 1.0  # the last Retries
    while time.monotonic() < end:
        receive()
        time.sleep(0.05)
    pipe.send((sent, retries, time.monotonic() - began))


def _owner(connections: list[Connection], retry: bytes, sock_index: int,
           sockets: int) -> int | None:
    """The attacker connection a Retry answers: its DCID is the connection's SCID."""
    length = retry[5]
    dcid = retry[6 : 6 + length]
    for index in range(sock_index, len(connections), sockets):
        if connections[index].host_cid == dcid:
            return index
    return None


class ChildAttack:
    """``target(pipe, *args)`` in a child process: ``start`` waits (bounded) for it to be
    ready and lets it go; ``done`` is whether it finished (its result in ``result``)."""

    def __init__(self, target: Callable[..., None], *args: object) -> None:
        self.target, self.args = target, args
        self.result: object = None
        self._child: multiprocessing.process.BaseProcess | None = None
        self._pipe: Pipe | None = None

    def start(self) -> None:
        ours, theirs = multiprocessing.Pipe()
        child = multiprocessing.get_context("fork").Process(
            target=self.target, args=(theirs, *self.args), daemon=True)
        child.start()
        self._child, self._pipe = child, ours
        if not ours.poll(600) or ours.recv() != "ready":
            child.kill()
            raise click.ClickException("the attacker process did not get ready")
        ours.send("go")

    def done(self) -> bool:
        assert self._child is not None and self._pipe is not None
        if self.result is None and self._pipe.poll():
            self.result = self._pipe.recv()
            self._child.join(10)
        elif self.result is None and not self._child.is_alive():
            raise click.ClickException("the attacker process died")
        return self.result is not None


# --- runs --------------------------------------------------------------------------------


@dataclass
class Verdict:
    misses: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.misses.append(what)

    def done(self) -> None:
        if self.misses:
            for miss in self.misses:
                click.echo(f"MISS: {miss}")
            click.echo("FAIL")
            sys.exit(1)
        click.echo("PASS: every aim met")


def kb(value: float) -> str:
    return f"{value / 1024:.1f} MB"


async def warm_up(legit: Legit, fetches: int) -> None:
    """Legitimate traffic until ``fetches`` operations are done (at most a minute): the
    baseline is the RSS of a server in service, its caches and pools warm."""
    deadline = timed_until(60)
    await legit.run(["discovery", "pdk", "resume", "several"], workers=2,
                    until=lambda: legit.outcomes.total >= fetches or deadline())


def attack_under_load(server: Server, work: Path, attack: ChildAttack, *, ops: list[str],
                      workers: int, warm: int, settle: float, drain_within: float,
                      tail: float = 1.0) -> dict[str, object]:
    """Warm up; baseline; legitimate clients while the attack runs (and ``tail`` s more);
    then the table drain and the RSS ``settle`` s after it."""
    asyncio.run(warm_up(Legit(server, work), warm))
    samples = Samples(server, every=0.5)
    baseline, _ = samples.take()
    legit = Legit(server, work)
    with samples.running():
        began = time.monotonic()
        attack.start()
        ended: list[float] = []

        def until() -> bool:
            if attack.done():
                if not ended:
                    ended.append(time.monotonic())
                return time.monotonic() - ended[0] >= tail
            return False
        asyncio.run(legit.run(ops, workers=workers, until=until))
        during = time.monotonic() - began
    peak_rss, peak_table = samples.peak()
    left, drained_in = drain(server, drain_within)
    time.sleep(settle)
    after = server.rss_kb()
    return {"baseline": baseline, "peak_rss": peak_rss, "peak_table": peak_table,
            "after": after, "left": left, "drained_in": drained_in, "during": during,
            "outcomes": legit.outcomes, "shed": server.metric("velocity_initials_shed_total")}


@click.group()
def main() -> None:
    """Reliability runs against a real velocity serve."""


def allocator_option(command: Callable[..., None]) -> Callable[..., None]:
    """``--allocator``: the server's PYTHONMALLOC (deploy/velocity.service sets malloc)."""
    return click.option(
        "--allocator", type=click.Choice(["pymalloc", "malloc"]), default="pymalloc",
        show_default=True,
        help="The server's PYTHONMALLOC: CPython's pymalloc, or malloc (glibc's, which "
             "gives freed memory back; deploy/velocity.service sets it).")(command)


@main.command()
@click.option("--short", is_flag=True, help="The CI form: 300 Initials, --retry under-load.")
@click.option("--initials", type=click.IntRange(1), default=10_000, show_default=True)
@click.option("--policies", default="never,always,under-load", show_default=True)
@click.option("--rate", type=float, default=500.0, show_default=True,
              help="Initials per second.")
@click.option("--sources", type=click.IntRange(1, 2500), default=256, show_default=True,
              help="Attacker source addresses (127.0.1.x ...).")
@click.option("--garbage", type=float, default=0.2, show_default=True)
@click.option("--replays", type=float, default=0.2, show_default=True)
@click.option("--workers", type=click.IntRange(1), default=4, show_default=True)
@click.option("--settle", type=float, default=60.0, show_default=True,
              help="Seconds after the table drained before the RSS is read.")
@click.option("--handshake-timeout", type=float, default=10.0, show_default=True)
@click.option("--warm-up", "warm", type=click.IntRange(1), default=100, show_default=True,
              help="Legitimate fetches before the baseline RSS is read.")
@click.option("--shed-after", type=float, default=None,
              help="The server's --shed-after (default: its own default).")
@allocator_option
@click.option("--markdown", is_flag=True)
def flood(short: bool, initials: int, policies: str, rate: float, sources: int,
          garbage: float, replays: float, workers: int, settle: float,
          handshake_timeout: float, warm: int, shed_after: float | None, allocator: str,
          markdown: bool) -> None:
    """Initials (valid, garbage, replays) under each --retry policy while clients fetch."""
    if short:
        initials, settle, handshake_timeout, workers, rate, warm, policies = (
            300, 0.5, 1.0, 2, 300.0, 10, "under-load")
    rows, verdict = [], Verdict()
    for policy in policies.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            server = Server(Path(tmp), "--retry", policy, "--handshake-timeout",
                            str(handshake_timeout), *_shed_option(shed_after),
                            allocator=allocator)
            try:
                attack = ChildAttack(_flood, server.address, initials, (garbage, replays),
                                     sources, rate)
                got = attack_under_load(server, Path(tmp), attack,
                                        ops=["discovery", "pdk", "resume"], workers=workers,
                                        warm=warm, settle=settle,
                                        drain_within=handshake_timeout + 60)
                errors = server.errors()
            finally:
                server.stop()
        rows.append(_attack_row(policy, f"{initials} Initials", got, verdict, errors))
        click.echo(" ".join(rows[-1]), err=True)
    print_table(ATTACK_HEADER, rows, markdown=markdown)
    verdict.done()


def _shed_option(shed_after: float | None) -> list[str]:
    return [] if shed_after is None else ["--shed-after", str(shed_after)]


ATTACK_HEADER = ("retry", "attack", "clients ok", "fetches", "p50 ms", "p99 ms",
                 "table peak", "drained in", "RSS base", "RSS peak", "RSS after",
                 "after/base", "shed")


def _attack_row(policy: str, attack: str, got: dict[str, object], verdict: Verdict,
                errors: list[str]) -> list[str]:
    outcomes = got["outcomes"]
    assert isinstance(outcomes, Outcomes)
    baseline, after = int(str(got["baseline"])), int(str(got["after"]))
    ratio = after / baseline
    where = f"{attack}, --retry {policy}"
    verdict.check(outcomes.success >= SUCCESS_AIM,
                  f"{where}: clients {outcomes.success:.2%} ({outcomes.why()})")
    verdict.check(got["left"] == 0, f"{where}: {got['left']} connections never left the table")
    verdict.check(ratio <= RSS_AIM, f"{where}: RSS after {ratio:.2f}x the baseline")
    verdict.check(not errors, f"{where}: the server logged {errors[:2]}")
    return [policy, attack, f"{outcomes.success:.2%}", str(outcomes.total),
            f"{outcomes.quantile(0.5) * 1000:.0f}", f"{outcomes.quantile(0.99) * 1000:.0f}",
            str(got["peak_table"]), f"{float(str(got['drained_in'])):.1f} s", kb(baseline),
            kb(int(str(got["peak_rss"]))), kb(after), f"{ratio:.2f}", str(got["shed"])]


@main.command()
@click.option("--short", is_flag=True,
              help="The CI form: 200 attackers that answer Retry, --retry under-load.")
@click.option("--attackers", type=click.IntRange(1), default=4000, show_default=True)
@click.option("--rate", type=float, default=400.0, show_default=True)
@click.option("--sources", type=click.IntRange(1, 2500), default=512, show_default=True)
@click.option("--max-sessions", type=click.IntRange(1), default=2000, show_default=True)
@click.option("--workers", type=click.IntRange(1), default=4, show_default=True)
@click.option("--settle", type=float, default=60.0, show_default=True)
@click.option("--handshake-timeout", type=float, default=10.0, show_default=True)
@click.option("--warm-up", "warm", type=click.IntRange(1), default=100, show_default=True,
              help="Legitimate fetches before the baseline RSS is read.")
@click.option("--policies", default="never,under-load,always", show_default=True,
              help="The runs to make, by the server's --retry policy.")
@click.option("--shed-after", type=float, default=None,
              help="The server's --shed-after (default: its own default).")
@allocator_option
@click.option("--markdown", is_flag=True)
def halfopen(short: bool, attackers: int, rate: float, sources: int, max_sessions: int,
             workers: int, settle: float, handshake_timeout: float, warm: int, policies: str,
             shed_after: float | None, allocator: str, markdown: bool) -> None:
    """Half-open exhaustion: clients that never finish (--retry never, under-load), and
    clients that answer Retry and stop (--retry always, under-load)."""
    runs = [(policy, answer) for policy, answer in (
        ("never", False), ("under-load", False), ("always", True), ("under-load", True))
        if policy in policies.split(",")]
    if short:  # the default policy against the harder attack
        attackers, settle, handshake_timeout, workers, rate, max_sessions, warm, runs = (
            200, 0.5, 1.0, 2, 200.0, 1000, 10, [("under-load", True)])
    rows, verdict = [], Verdict()
    for policy, answer_retry in runs:
        with tempfile.TemporaryDirectory() as tmp:
            server = Server(Path(tmp), "--retry", policy, "--handshake-timeout",
                            str(handshake_timeout), "--max-sessions", str(max_sessions),
                            *_shed_option(shed_after), allocator=allocator)
            try:
                attack = ChildAttack(_halfopen, server.address, attackers, sources, rate,
                                     answer_retry)
                got = attack_under_load(server, Path(tmp), attack,
                                        ops=["discovery", "pdk", "resume"], workers=workers,
                                        warm=warm, settle=settle,
                                        drain_within=handshake_timeout + 60)
                errors = server.errors()
            finally:
                server.stop()
        what = (f"{attackers} answer Retry, stop" if answer_retry
                else f"{attackers} never finish")
        rows.append(_attack_row(policy, what, got, verdict, errors))
        click.echo(" ".join(rows[-1]), err=True)
    print_table(ATTACK_HEADER, rows, markdown=markdown)
    click.echo(f"(--max-sessions {max_sessions}, {sources} attacker addresses, "
               f"{rate:g} attackers/s)")
    verdict.done()


@main.command()
@click.option("--short", is_flag=True, help="The CI form: 256 KB.")
@click.option("--mb", type=float, default=50.0, show_default=True)
@click.option("--loss", type=float, default=0.05, show_default=True)
@click.option("--jitter", type=float, default=0.01, show_default=True,
              help="Seconds of random extra delay per datagram: reorders them.")
@click.option("--seed", default="1", show_default=True)
@click.option("--timeout", type=float, default=900.0, show_default=True)
@click.option("--markdown", is_flag=True)
def transfer(short: bool, mb: float, loss: float, jitter: float, seed: str, timeout: float,
             markdown: bool) -> None:
    """A download through a relay with loss and reordering; the body must be identical."""
    if short:
        mb, timeout = 0.25, 60.0
    verdict = Verdict()
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp), big_mb=mb)
        try:
            expected = hashlib.sha256((server.root / "big.bin").read_bytes()).hexdigest()
            try:
                got = asyncio.run(_transfer(server, Path(tmp), loss, jitter, seed, timeout))
            except TimeoutError:
                raise click.ClickException(f"the transfer did not finish within {timeout:g} s "
                                           "(FAIL)") from None
            errors = server.errors()
            rss = server.rss_kb()
        finally:
            server.stop()
    body_hash, seconds, stats = got
    verdict.check(body_hash == expected, f"the body differs (sha256 {body_hash[:16]}, "
                                         f"expected {expected[:16]})")
    verdict.check(not errors, f"the server logged {errors[:2]}")
    rows = [[f"{mb:g} MB", f"{loss:.0%}", f"{jitter * 1000:g} ms", f"{seconds:.1f} s",
             f"{mb * 8 / seconds:.2f} Mbit/s", str(stats.forwarded), str(stats.dropped),
             "yes" if body_hash == expected else "NO", kb(rss)]]
    print_table(("size", "loss", "jitter", "time", "goodput", "forwarded", "dropped",
                 "identical", "server RSS"), rows, markdown=markdown)
    verdict.done()


async def _transfer(server: Server, work: Path, loss: float, jitter: float, seed: str,
                    timeout: float) -> tuple[str, float, RelayStats]:
    relay = UdpRelay(server.address, Impairment(loss=loss, jitter=jitter), seed=seed,
                     max_datagrams=10_000_000)
    host, port = await relay.start()
    try:
        config = EasyClientConfig(f"{host}:{port}", key_cache_dir=work / "client",
                                  ca_file=server.ca, timeout=30.0, follow_fallback=False)
        began = time.monotonic()
        async with asyncio.timeout(timeout), AsyncEasyClient(config) as client:
            got = await client.fetch("/big.bin")
        seconds = time.monotonic() - began
        await asyncio.sleep(relay.impairment.delay + relay.impairment.jitter + 0.05)
    finally:  # (what the relay still holds has left)
        relay.close()
    return hashlib.sha256(got.body).hexdigest(), seconds, relay.stats


SOAK_OPS = ["discovery", "pdk", "resume", "resume", "several", "noise"]


@main.command()
@click.option("--short", is_flag=True, help="The CI form: 4 s, 0.5 s settle.")
@click.option("--minutes", type=float, default=30.0, show_default=True)
@click.option("--workers", type=click.IntRange(1), default=3, show_default=True)
@click.option("--every", type=float, default=30.0, show_default=True,
              help="Seconds between RSS/table samples.")
@click.option("--settle", type=float, default=60.0, show_default=True)
@click.option("--warm-up", "warm", type=click.IntRange(1), default=100, show_default=True,
              help="Legitimate fetches before the baseline RSS is read.")
@allocator_option
@click.option("--markdown", is_flag=True)
@click.option("--plot", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Write the RSS and table over time as an SVG plot to this file.")
def soak(short: bool, minutes: float, workers: int, every: float, settle: float, warm: int,
         allocator: str, markdown: bool, plot: Path | None) -> None:
    """Mixed handshakes, resumption with 0-RTT, several requests, API and garbage."""
    if plot is not None and not plot.parent.is_dir():
        raise click.BadParameter(f"no folder {plot.parent} to write the plot in",
                                 param_hint="--plot")
    handshake_timeout = 5.0
    if short:
        minutes, settle, every, workers, warm, handshake_timeout = 4 / 60, 0.5, 1.0, 2, 10, 1.0
    verdict = Verdict()
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp), "--handshake-timeout", str(handshake_timeout),
                        allocator=allocator)
        try:
            asyncio.run(warm_up(Legit(server, Path(tmp)), warm))
            samples = Samples(server, every=every)
            baseline, _ = samples.take()
            legit = Soaker(server, Path(tmp))
            with samples.running():
                asyncio.run(legit.run(SOAK_OPS, workers=workers,
                                      until=timed_until(minutes * 60), pause=0.1))
            samples.take()
            left, drained_in = drain(server, handshake_timeout + 60)
            time.sleep(settle)
            after = server.rss_kb()
            errors = server.errors()
        finally:
            server.stop()
    outcomes = legit.outcomes
    rows = [[op, str(len(outcomes.latencies.get(op, []))),
             str(len(outcomes.failures.get(op, []))),
             f"{statistics.median(outcomes.latencies[op]) * 1000:.0f}"
             if outcomes.latencies.get(op) else "-"] for op in dict.fromkeys(SOAK_OPS)]
    print_table(("operation", "ok", "failed", "median ms"), rows, markdown=markdown)
    click.echo(f"0-RTT accepted on {outcomes.early_data} resumptions")
    print_table(("minute", "RSS", "table"), [
        [f"{(t - samples.points[0][0]) / 60:.1f}", kb(rss), str(table)]
        for t, rss, table in samples.points], markdown=markdown)
    peak_rss, peak_table = samples.peak()
    ratio = after / baseline
    # a leak shows as growth that goes on: the last three quarters of the run against the
    # first sample of them (the first quarter fills pools and caches)
    began = samples.points[0][0]
    quarter = next(rss for t, rss, _ in samples.points
                   if t - began >= minutes * 60 / 4)
    growth = samples.points[-1][1] / quarter
    click.echo(f"success {outcomes.success:.2%} of {outcomes.total}; RSS baseline "
               f"{kb(baseline)}, at a quarter {kb(quarter)}, peak {kb(peak_rss)}, end "
               f"{kb(samples.points[-1][1])} ({growth:.2f}x the quarter), {settle:g} s after "
               f"{kb(after)} ({ratio:.2f}x the baseline); table peak {peak_table}, drained "
               f"in {drained_in:.1f} s")
    if plot is not None:
        plot.write_text(soak_plot(samples.points, baseline, after, settle))
        click.echo(f"plot: {plot}")
    verdict.check(outcomes.success >= SUCCESS_AIM,
                  f"soak: clients {outcomes.success:.2%} ({outcomes.why()})")
    verdict.check(left == 0, f"soak: {left} connections never left the table")
    verdict.check(growth <= RSS_AIM, f"soak: RSS grew {growth:.2f}x over the last three "
                                     "quarters of the run")
    verdict.check(not errors, f"soak: the server logged {errors[:2]}")
    verdict.done()


def soak_plot(points: list[tuple[float, int, int]], baseline: int, after: int,
              settle: float) -> str:
    """RSS (MB) and the connection table over the soak's minutes, and RSS ``settle`` s after
    the table drained, as SVG text."""
    from matplotlib.figure import Figure  # noqa: PLC0415  (only when a plot is asked for)

    began = points[0][0]
    minutes = [(t - began) / 60 for t, _, _ in points]
    figure = Figure(figsize=(7.0, 3.2), layout="constrained")
    axes = figure.add_subplot()
    axes.plot(minutes, [rss / 1024 for _, rss, _ in points], color="#1f77b4", label="RSS")
    axes.scatter([minutes[-1] + settle / 60], [after / 1024], color="#1f77b4", marker="x",
                 label=f"RSS {settle:g} s after")
    axes.axhline(baseline / 1024, color="#7f7f7f", linestyle=":", label="baseline")
    axes.set_xlabel("minute")
    axes.set_ylabel("RSS (MB)")
    axes.set_ylim(0, max(after, *(rss for _, rss, _ in points)) / 1024 * 1.2)
    table = axes.twinx()
    table.plot(minutes, [n for _, _, n in points], color="#d62728", alpha=0.5,
               label="connections in the table")
    table.set_ylabel("connections in the table")
    table.set_ylim(0, max(n for _, _, n in points) * 1.2 + 1)
    lines = [*axes.get_legend_handles_labels()[0], *table.get_legend_handles_labels()[0]]
    axes.legend(handles=lines, loc="lower right", fontsize="small")
    out = io.StringIO()
    figure.savefig(out, format="svg", metadata={"Date": None})
    return out.getvalue()


class Soaker(Legit):
    """The soak's clients: the legitimate operations and ``noise``, garbage datagrams and a
    first flight that never finishes, from 127.0.1.1 (it must not disturb anything)."""

    async def noise(self, _: int) -> None:
        with contextlib.closing(attacker_sockets(1)[0]) as sock:
            for datagram in [garbage(), os.urandom(random.randrange(1, 1500)),
                             *first_flight()]:
                sock.sendto(datagram, self.server.address)
        await asyncio.sleep(0)

if __name__ == "__main__":
    main()
