"""In-memory handshakes per second and server CPU per handshake: Velocity/1 for each profile,
KEM backend and authentication mode, beside aioquic (X25519) and qh3 (X25519MLKEM768) in the
same run. Medians of several runs; ratios are qh3's server time over ours.

Velocity's numbers are the handshake layer alone (messages and key schedule, no packet
protection); the peers' include their QUIC packet layer. The transport benchmark
(connections over UDP) compares whole endpoints.

    python -m bench.handshake_inmemory [--runs 5] [--count 200] [--markdown]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass

import click

from bench.peers import QuicPeer
from bench.report import print_table
from harness.pair import PairSpec, make_configs
from velocity.aio.entropy import OsEntropy
from velocity.core.handshake.client import ClientHandshake
from velocity.core.handshake.server import ServerHandshake
from velocity.core.hybrid import PROFILES_BY_NAME
from velocity.core.packet import Epoch


@dataclass
class Row:
    name: str
    detail: str
    handshakes_per_second: float
    server_us: float
    server_bytes: int
    client_bytes: int


def velocity_run(spec: PairSpec, count: int) -> tuple[float, float, int, int]:
    """(handshakes/s, server seconds per handshake, server bytes, client bytes)."""
    client_config, server_config = make_configs(spec)
    server_seconds = 0.0
    sizes = [0, 0]
    start = time.perf_counter()
    for _ in range(count):
        client = ClientHandshake(client_config, entropy=OsEntropy(),
                                 transport_parameters=b"client transport parameters")
        server = ServerHandshake(server_config, entropy=OsEntropy(),
                                 transport_parameters=b"server transport parameters")
        client.start(now_ms=0)
        for _ in range(4):
            for epoch in Epoch:
                data = client.data_to_send(epoch)
                sizes[1] += len(data)
                if data:
                    began = time.thread_time()
                    server.receive(epoch, data, now_ms=0)
                    server_seconds += time.thread_time() - began
            for epoch in Epoch:
                began = time.thread_time()
                data = server.data_to_send(epoch)
                server_seconds += time.thread_time() - began
                sizes[0] += len(data)
                if data:
                    client.receive(epoch, data, now_ms=0)
    elapsed = time.perf_counter() - start
    return count / elapsed, server_seconds / count, sizes[0] // count, sizes[1] // count


def peer_run(peer: QuicPeer, count: int) -> tuple[float, float, int, int]:
    start = time.perf_counter()
    timings = [peer.handshake() for _ in range(count)]
    elapsed = time.perf_counter() - start
    return (count / elapsed, statistics.fmean(t.server_seconds for t in timings),
            timings[0].server_bytes, timings[0].client_bytes)


def _median_row(name: str, detail: str, runs: list[tuple[float, float, int, int]]) -> Row:
    return Row(name, detail, statistics.median(r[0] for r in runs),
               statistics.median(r[1] for r in runs) * 1e6, runs[0][2], runs[0][3])


@click.command()
@click.option("--runs", default=5, show_default=True, help="Runs per configuration (median).")
@click.option("--count", default=200, show_default=True, help="Handshakes per run.")
@click.option("--profiles", default="light,balanced,secure", show_default=True)
@click.option("--backends", default="cryptography,pqcrypto,kyber-py", show_default=True)
@click.option("--markdown", is_flag=True, help="Print a markdown table for docs/performance.md.")
def main(runs: int, count: int, profiles: str, backends: str, markdown: bool) -> None:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("aioquic", "qh3"):
            peer = QuicPeer(name, tmp)
            peer.handshake()
            group = "X25519MLKEM768" if name == "qh3" else "X25519"
            rows.append(_median_row(name, f"TLS 1.3 {group}",
                                    [peer_run(peer, count) for _ in range(runs)]))
    for profile_name in profiles.split(","):
        profile = PROFILES_BY_NAME[profile_name]
        for backend in backends.split(","):
            n = max(count // 20, 5) if backend == "kyber-py" else count
            for mode in ("pdk", "discovery"):
                spec = PairSpec(profile, mode, backend, backend)
                results = [velocity_run(spec, n) for _ in range(runs)]
                rows.append(_median_row("velocity", f"{profile.name} {backend} {mode}", results))
    qh3_us = next(r.server_us for r in rows if r.name == "qh3")
    header = ("implementation", "configuration", "handshakes/s", "server µs/handshake",
              "qh3 server µs ÷ this", "server bytes", "client bytes")
    lines = [header] + [(r.name, r.detail, f"{r.handshakes_per_second:.0f}",
                         f"{r.server_us:.0f}", f"{qh3_us / r.server_us:.2f}",
                         str(r.server_bytes), str(r.client_bytes)) for r in rows]
    print_table(header, lines[1:], markdown=markdown)

if __name__ == "__main__":
    main()
