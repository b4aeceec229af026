"""Packet assembly: the bulk path for full STREAM packets builds exactly the bytes the
general planner builds, and is what carries a large transfer."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import velocity.core.sender as sender_module
from harness.loopback import Network, lossy
from harness.pair import PairSpec
from tests.core.transport.helpers import make, requested


def recording(into: list[tuple[str, bytes]], network: Network) -> Network:
    def network_and_record(direction: str, datagram: bytes,
                           now: float) -> list[tuple[float, bytes]]:
        into.append((direction, datagram))
        return network(direction, datagram, now)
    return network_and_record


def transfer_datagrams(network: Network) -> list[tuple[str, bytes]]:
    """A seeded, byte-reproducible download of 300 kB: every datagram on the wire."""
    wire: list[tuple[str, bytes]] = []
    pair = make(spec=PairSpec(client_backend="kyber-py", server_backend="kyber-py"),
                network=recording(wire, network), seed="bulk")
    server, stream = requested(pair)
    server.send_stream_data(stream, bytes(range(256)) * 1200, end_stream=True)
    assert pair.run(lambda: pair.finished_stream("client", stream))
    assert pair.received("client", stream) == (bytes(range(256)) * 1200, True)
    return wire


@pytest.mark.parametrize("network", [lambda: lossy("clean"),
                                     lambda: lossy("lossy", loss=0.05, reorder=0.1)],
                         ids=["clean", "lossy"])
def test_bulk_packets_equal_the_general_planners(network: Callable[[], Network],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    used = []
    bulk_packets = sender_module._bulk_packets

    def counted(*args: object, **kwargs: object) -> list[bytes]:
        packets = bulk_packets(*args, **kwargs)  # type: ignore[arg-type]
        used.extend(packets)
        return packets

    monkeypatch.setattr(sender_module, "_bulk_packets", counted)
    with_bulk = transfer_datagrams(network())
    assert len(used) > 100  # most of the 300 kB went out on the bulk path
    monkeypatch.setattr(sender_module, "_bulk_stream", lambda *_: None)
    general = transfer_datagrams(network())
    assert with_bulk == general
