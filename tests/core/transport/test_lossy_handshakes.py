"""Handshakes (PDK or discovery) and transfers both ways under heavy seeded loss,
reordering and duplication; the network, sizes and mode all derive from the seed. Seeds 7,
76 and 105 once failed:

- 7: the client's ACK of the server's FINISHED was lost for good (the client drops its
  Handshake keys on HANDSHAKE_DONE), so the server probed its Handshake space forever and
  those bytes filled its congestion window: the download stalled (VEL-PROT-013).
- 76: the client had nothing in flight and the server was stopped by the amplification
  limit: without a PTO armed from the last activity they waited for each other.
- 105: the server's Initial (SERVER_HELLO) was lost while its Handshake packets kept the
  window full; PTO probes went to the Handshake space, which the client cannot read without
  the Initial, so the Initial data must go with them.
"""

from __future__ import annotations

import random

import pytest

from harness.loopback import lossy
from tests.core.transport.helpers import both_completed, make, resumable


def scenario(seed: int) -> None:
    rng = random.Random(seed)
    mode = rng.choice(["pdk", "discovery"])
    network = lossy(seed, loss=rng.choice([0.05, 0.1, 0.2]), reorder=rng.choice([0, 0.1, 0.3]),
                    duplicate=rng.choice([0, 0.1]))
    pair = make(mode, network)
    pair.connect()
    assert pair.run(lambda: both_completed(pair), max_time=60), f"seed {seed}: handshake"
    server = pair.server
    assert server is not None
    stream = pair.client.get_next_available_stream_id()
    upload = rng.randbytes(rng.randrange(1, 300_000))
    pair.client.send_stream_data(stream, upload, end_stream=True)
    assert pair.run(lambda: pair.finished_stream("server", stream), max_time=300), seed
    assert pair.received("server", stream) == (upload, True)
    download = rng.randbytes(rng.randrange(1, 300_000))
    server.send_stream_data(stream, download, end_stream=True)
    assert pair.run(lambda: pair.finished_stream("client", stream), max_time=600), seed
    assert pair.received("client", stream) == (download, True)


@pytest.mark.spec("VEL-PROT-013", "VEL-CONN-001", "VEL-CONN-002", "VEL-REC-002")
@pytest.mark.parametrize("seed", [7, 76, 105, *range(200, 240)])
def test_lossy_discovery_handshake_and_transfer(seed: int) -> None:
    scenario(seed)


def resumed_with_early_data(seed: int) -> None:
    rng = random.Random(seed)
    second = resumable(network=lossy(seed, loss=rng.choice([0.1, 0.2, 0.3]),
                                     reorder=rng.choice([0.1, 0.3]),
                                     duplicate=rng.choice([0, 0.2])))
    second.connect()
    stream = second.client.get_next_available_stream_id()
    request = rng.randbytes(rng.randrange(1, 60_000))
    second.client.send_stream_data(stream, request, end_stream=True)  # as 0-RTT
    assert second.run(lambda: second.finished_stream("server", stream)
                      and second.client.handshake_complete, max_time=second.now + 300), seed
    assert second.received("server", stream) == (request, True)


@pytest.mark.spec("VEL-REC-003", "VEL-RES-006", "VEL-RES-008")
@pytest.mark.parametrize("seed", [1, 2, 3, *range(300, 320)])
def test_lossy_resumption_with_early_data_completes(seed: int) -> None:
    """0-RTT data fills the window before the handshake can acknowledge it; seeds 1-3 once
    stalled with the client's FINISHED held back by the congestion window."""
    resumed_with_early_data(seed)
