"""``velocity relay LISTEN UPSTREAM``: the seeded impairment relay of harness.netsim as a
program between any client and any server, found by the ``velocity`` command through its
``velocity.commands`` entry points. It prints where it listens, runs until Ctrl-C, SIGTERM,
``--duration`` or ``--max-datagrams``, and prints one line of what it did."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import signal
import socket

import click

from harness.netsim import Impairment, UdpRelay
from velocity.cli.common import listening, option_errors, parse_address, run
from velocity.core.errors import UsageError

PROBABILITIES = ("loss", "burst_loss", "duplicate", "reorder", "corrupt")


async def _resolve(value: str) -> tuple[str, int]:
    """UPSTREAM as an IP address and port (a host name resolved once, now)."""
    host, port = parse_address(value, what="UPSTREAM")
    with contextlib.suppress(ValueError):  # not an IP address: a name
        return str(ipaddress.ip_address(host)), port
    with option_errors("UPSTREAM", value, "give HOST:PORT of a reachable server"):
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    return str(found[0][4][0]), port


async def _relay(listen: str, upstream: str, impairment: Impairment, *, seed: str,
                 rebind_every: float | None, max_datagrams: int,
                 duration: float | None) -> None:
    server = await _resolve(upstream)
    host, port = parse_address(listen, what="LISTEN")
    relay = UdpRelay(server, impairment, seed=seed, max_datagrams=max_datagrams,
                     rebind_every=rebind_every, listen=(host, port))
    with listening("LISTEN", listen):
        bound = await relay.start()
    click.echo(f"relaying udp://{bound[0]}:{bound[1]} to {server[0]}:{server[1]} "
               f"(seed {seed})", err=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waits = [loop.create_task(stop.wait()), loop.create_task(relay.full.wait())]
    try:
        await asyncio.wait(waits, timeout=duration, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
        relay.close()
    click.echo(f"relay: {relay.stats.line()}", err=True)


def _check(values: dict[str, float | None]) -> None:
    """One line for a value out of range (click's own would print the usage too)."""
    for name, value in values.items():
        if value is None:
            continue
        option = f"--{name.replace('_', '-')}"
        if not math.isfinite(value) or value < 0:
            raise UsageError(f"{option} {value:g}: give a number of at least 0")
        if name in PROBABILITIES and value > 1:
            raise UsageError(f"{option} {value:g}: a probability is between 0 and 1")


@click.command()
@click.argument("listen")
@click.argument("upstream")
@click.option("--loss", type=float, default=0.0, help="Probability a datagram is lost.")
@click.option("--burst-loss", type=float, default=0.0,
              help="Probability a datagram starts a loss burst (Gilbert-Elliott).")
@click.option("--burst-length", type=float, default=1.0, show_default=True,
              help="Mean datagrams a burst loses.")
@click.option("--delay", type=float, default=0.0, help="Milliseconds each datagram waits.")
@click.option("--jitter", type=float, default=0.0, help="Up to this many more milliseconds.")
@click.option("--reorder", type=float, default=0.0,
              help="Probability a datagram is held back behind the next three.")
@click.option("--duplicate", type=float, default=0.0, help="Probability a datagram is doubled.")
@click.option("--corrupt", type=float, default=0.0,
              help="Probability one random bit of a datagram is flipped.")
@click.option("--rate", type=float, default=0.0,
              help="Bytes per second each way (token bucket, 64 KiB queue); 0: unlimited.")
@click.option("--mtu", type=int, help="Drop datagrams longer than this many bytes.")
@click.option("--rebind-every", type=float,
              help="Seconds between changes of the upstream source port (NAT rebinding).")
@click.option("--seed", default="0", show_default=True, help="Seed of every random choice.")
@click.option("--max-datagrams", type=int, default=1_000_000, show_default=True,
              help="Stop after taking this many datagrams.")
@click.option("--duration", type=float, help="Stop after this many seconds.")
def relay(listen: str, upstream: str, loss: float, burst_loss: float, burst_length: float,
          delay: float, jitter: float, reorder: float, duplicate: float, corrupt: float,
          rate: float, mtu: int | None, rebind_every: float | None, seed: str,
          max_datagrams: int, duration: float | None) -> None:
    """Relay UDP from LISTEN (HOST:PORT) to UPSTREAM (HOST:PORT) and back, impaired by
    seeded random choices: the same seed and the same datagrams replay the same run."""
    try:
        _check({"loss": loss, "burst_loss": burst_loss, "burst_length": burst_length,
                "delay": delay, "jitter": jitter, "reorder": reorder, "duplicate": duplicate,
                "corrupt": corrupt, "rate": rate, "rebind_every": rebind_every,
                "duration": duration})
        if rebind_every == 0 or (mtu is not None and mtu < 1) or max_datagrams < 1:
            raise UsageError("--rebind-every, --mtu and --max-datagrams take a number above 0")
    except UsageError as exc:
        raise click.ClickException(str(exc)) from None
    impairment = Impairment(loss=loss, burst_loss=burst_loss, burst_length=burst_length,
                            delay=delay / 1000, jitter=jitter / 1000, reorder=reorder,
                            duplicate=duplicate, corrupt=corrupt, rate=rate, mtu=mtu)
    run(_relay(listen, upstream, impairment, seed=seed, rebind_every=rebind_every,
               max_datagrams=max_datagrams, duration=duration))
