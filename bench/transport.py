"""Whole endpoints over UDP on 127.0.0.1, Velocity beside aioquic and qh3 in the same run:
handshakes per second with a sequential client (1 / mean time to a completed handshake,
teardown excluded), handshake latency p50/p99, server CPU per handshake (the server runs in
its own process and reports its CPU time, teardown included), bytes per handshake
in each direction and by flight (runs of datagrams in one direction, counted by a
pass-through relay, the close included), and the goodput of a single-stream download.
Medians of several runs.

    python -m bench.transport [--runs 3] [--handshakes 100] [--download-mb 50] [--markdown]
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import resource
import ssl
import statistics
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import aioquic.asyncio
import click
import qh3.asyncio
from aioquic.quic.configuration import QuicConfiguration as AioquicConfiguration
from qh3.quic.configuration import QuicConfiguration as Qh3Configuration

import velocity.aio
from bench.peers import _certificate
from bench.report import print_table
from harness.netsim import Impairment, UdpRelay
from harness.pair import PairSpec, make_configs
from velocity.aio.client import connect as velocity_connect
from velocity.aio.server import serve as velocity_serve
from velocity.aio.streams import VelocityStream
from velocity.core.connection import Connection, ConnectionConfig
from velocity.core.endpoint import EndpointConfig

IMPLEMENTATIONS = ("velocity", "aioquic", "qh3")


async def _download_handler(reader: Any, writer: Any) -> None:
    """Peers' stream handler: read a decimal size and a newline, send that many bytes. (qh3's
    stream writers cannot drain, so both peers buffer the whole answer in their stream.)"""
    size = int((await reader.readline()).strip())
    writer.write(bytes(size))
    writer.write_eof()


async def _velocity_handler(stream: VelocityStream, connection: Connection) -> None:
    request = b""
    while not request.endswith(b"\n"):
        request += await stream.read(64)
    size = int(request.strip())
    chunk = bytes(65536)
    while size > 0:
        stream.write(chunk[: min(size, len(chunk))], end_stream=size <= len(chunk))
        size -= min(size, len(chunk))
        await stream.drain()


def _server_process(name: str, pipe: Pipe) -> None:
    async def run() -> None:
        if name == "velocity":
            _, server_hs = make_configs(PairSpec(mode="pdk"))
            server = await velocity_serve("127.0.0.1", 0, EndpointConfig(
                ConnectionConfig(server_hs)), _velocity_handler)
            port = server.address[1]
        else:
            with tempfile.TemporaryDirectory() as tmp:
                cert, key = _certificate()
                Path(f"{tmp}/c.pem").write_bytes(cert)
                Path(f"{tmp}/k.pem").write_bytes(key)
                module, cls = ((aioquic.asyncio, AioquicConfiguration) if name == "aioquic"
                               else (qh3.asyncio, Qh3Configuration))
                config = cls(is_client=False, alpn_protocols=["bench"])
                config.load_cert_chain(f"{tmp}/c.pem", f"{tmp}/k.pem")
            peer = await module.serve("127.0.0.1", 0, configuration=config,
                                      stream_handler=lambda r, w: asyncio.ensure_future(
                                          _download_handler(r, w)))
            port = peer._transport.get_extra_info("sockname")[1]
        pipe.send(port)
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, pipe.recv)
            if command == "cpu":
                usage = resource.getrusage(resource.RUSAGE_SELF)
                pipe.send(usage.ru_utime + usage.ru_stime)
            else:
                return

    velocity.aio.run(run())


@dataclass
class Result:
    name: str
    handshakes_per_second: float
    p50_ms: float
    p99_ms: float
    server_cpu_us: float
    client_to_server: int
    server_to_client: int
    goodput_mbps: float
    flights: tuple[int, ...] = ()  # bytes per flight, client first, alternating


@functools.cache
def _client_configuration(name: str) -> Any:
    """Each implementation's client configuration, made once (by the warm-up, outside the
    timed handshakes) and used for every connection, as a client would."""
    if name == "velocity":
        client_hs, _ = make_configs(PairSpec(mode="pdk"))
        return ConnectionConfig(client_hs)
    cls = AioquicConfiguration if name == "aioquic" else Qh3Configuration
    return cls(is_client=True, alpn_protocols=["bench"], verify_mode=ssl.CERT_NONE,
               server_name="localhost")


async def _velocity_connect(port: int) -> Any:
    return velocity_connect("127.0.0.1", port, _client_configuration("velocity"))


async def _handshake(name: str, port: int) -> float:
    """Seconds from starting to connect until the handshake completed (teardown, which the
    peers' clients spend waiting out their draining period, is not counted)."""
    began = time.perf_counter()
    if name == "velocity":
        async with await _velocity_connect(port):
            return time.perf_counter() - began
    module = aioquic.asyncio if name == "aioquic" else qh3.asyncio
    async with module.connect("127.0.0.1", port, configuration=_client_configuration(name)):
        return time.perf_counter() - began


async def _download(name: str, port: int, size: int) -> float:
    started = time.perf_counter()
    received = 0
    if name == "velocity":
        async with await _velocity_connect(port) as client:
            stream = await client.open_stream()
            stream.write(f"{size}\n".encode())
            while chunk := await stream.read(1 << 20):
                received += len(chunk)
    else:
        module = aioquic.asyncio if name == "aioquic" else qh3.asyncio
        async with module.connect("127.0.0.1", port,
                                  configuration=_client_configuration(name)) as protocol:
            reader, writer = await protocol.create_stream()
            writer.write(f"{size}\n".encode())
            while chunk := await reader.read(1 << 20):
                received += len(chunk)
    if received != size:
        raise RuntimeError(f"{name} delivered {received} of {size} bytes")
    return size * 8 / (time.perf_counter() - started) / 1e6


async def _measure(name: str, port: int, pipe: Pipe, handshakes: int,
                   download: int) -> Result:
    await _handshake(name, port)  # warm up
    pipe.send("cpu")
    cpu_before = pipe.recv()
    latencies = [await _handshake(name, port) * 1000 for _ in range(handshakes)]
    pipe.send("cpu")
    server_cpu = (pipe.recv() - cpu_before) / handshakes * 1e6
    relay = UdpRelay(("127.0.0.1", port), Impairment())
    relay_port = (await relay.start())[1]
    await _handshake(name, relay_port)
    await asyncio.sleep(0.05)  # let the closing datagrams pass
    c2s, s2c = relay.stats.bytes_c2s, relay.stats.bytes_s2c
    flights = tuple(size for _, size, _ in relay.stats.flights)
    relay.close()
    latencies.sort()
    goodput = await _download(name, port, download)
    return Result(name, 1000 / statistics.fmean(latencies), statistics.median(latencies),
                  latencies[int(len(latencies) * 0.99) - 1], server_cpu, c2s, s2c, goodput,
                  flights)


def run_one(name: str, handshakes: int, download: int) -> Result:
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(target=_server_process,
                                                           args=(name, child), daemon=True)
    process.start()
    try:
        port = parent.recv()
        return velocity.aio.run(_measure(name, port, parent, handshakes, download))
    finally:
        parent.send("stop")
        process.join(5)
        if process.is_alive():
            process.terminate()


@click.command()
@click.option("--runs", default=3, show_default=True)
@click.option("--handshakes", default=100, show_default=True)
@click.option("--download-mb", default=50, show_default=True)
@click.option("--markdown", is_flag=True)
def main(runs: int, handshakes: int, download_mb: int, markdown: bool) -> None:
    results: dict[str, list[Result]] = {name: [] for name in IMPLEMENTATIONS}
    for _ in range(runs):
        for name in IMPLEMENTATIONS:  # interleaved, so noise hits all three alike
            results[name].append(run_one(name, handshakes, download_mb * 1_000_000))
    rows = []
    for name, values in results.items():
        rows.append(Result(name, *(statistics.median(getattr(v, f) for v in values) for f in (
            "handshakes_per_second", "p50_ms", "p99_ms", "server_cpu_us", "client_to_server",
            "server_to_client", "goodput_mbps")), statistics.mode(v.flights for v in values)))
    qh3_row = next(r for r in rows if r.name == "qh3")
    header = ("implementation", "handshakes/s", "latency p50 ms", "p99 ms",
              "server CPU µs/handshake", "bytes c→s", "bytes s→c",
              "bytes by flight (c / s / c …)", "goodput Mbit/s", "rate ÷ qh3", "goodput ÷ qh3")
    lines = [header] + [(r.name, f"{r.handshakes_per_second:.0f}", f"{r.p50_ms:.1f}",
                         f"{r.p99_ms:.1f}", f"{r.server_cpu_us:.0f}",
                         f"{r.client_to_server:.0f}", f"{r.server_to_client:.0f}",
                         " / ".join(map(str, r.flights)), f"{r.goodput_mbps:.0f}",
                         f"{r.handshakes_per_second / qh3_row.handshakes_per_second:.2f}",
                         f"{r.goodput_mbps / qh3_row.goodput_mbps:.2f}") for r in rows]
    print_table(header, lines[1:], markdown=markdown)

if __name__ == "__main__":
    main()
