"""Memory per half-open connection, traced: a sans-I/O ``ServerEndpoint`` (discovery mode,
so each server flight carries the CERTIFICATE) takes ``--count`` valid first flights that
never go on, and tracemalloc reports the bytes allocated per connection still held once
the server has sent its flights, with the lines that hold most of them.

    python -m bench.halfopen_memory [--count 200] [--top 10]
"""

from __future__ import annotations

import gc
import tracemalloc

import click

from harness.pair import PairSpec, make_configs
from velocity.aio.entropy import OsEntropy
from velocity.core.connection import Connection, ConnectionConfig
from velocity.core.endpoint import EndpointConfig, ServerEndpoint

WARM = 5  # connections made before tracing: caches and lazily built tables


def first_flights(count: int) -> list[list[bytes]]:
    client_hs, _ = make_configs(PairSpec(mode="discovery"))
    flights = []
    for _ in range(count):
        client = Connection(ConnectionConfig(client_hs), entropy=OsEntropy())
        client.connect(("127.0.0.1", 4433), now=0.0)
        flights.append([datagram for datagram, _ in client.datagrams_to_send(now=0.0)])
    return flights


@click.command()
@click.option("--count", type=click.IntRange(1), default=200, show_default=True)
@click.option("--top", type=click.IntRange(0), default=10, show_default=True,
              help="Source lines shown, by bytes held per connection.")
def main(count: int, top: int) -> None:
    """Bytes a server holds per half-open discovery connection (tracemalloc)."""
    _, server_hs = make_configs(PairSpec(mode="discovery"))
    config = EndpointConfig(ConnectionConfig(server_hs), max_sessions=count + WARM,
                            max_half_open_per_address=count + WARM)
    endpoint = ServerEndpoint(config, entropy=OsEntropy())
    flights = first_flights(count + WARM)

    def take(index: int) -> None:
        for datagram in flights[index]:
            endpoint.receive_datagram(datagram, ("192.0.2.1", 1024 + index), now=0.0)
        endpoint.datagrams_to_send(now=0.0)

    for index in range(WARM):
        take(index)
    gc.collect()
    tracemalloc.start()
    before, start = tracemalloc.take_snapshot(), tracemalloc.get_traced_memory()[0]
    for index in range(WARM, WARM + count):
        take(index)
    gc.collect()
    after, end = tracemalloc.take_snapshot(), tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    held = sum(not c.handshake_complete for c in endpoint.connections)
    click.echo(f"{held} half-open connections: {(end - start) / count / 1024:.1f} KiB "
               "traced per connection")
    for stat in after.compare_to(before, "lineno")[:top]:
        click.echo(f"{stat.size_diff / count:8.0f} B  {stat.traceback[0]}")


if __name__ == "__main__":
    main()
