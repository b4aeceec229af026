"""Discovery mode (KEMTLS) saves its round trip: the client's first 1-RTT data leaves with its
KEM_CIPHERTEXT and FINISHED, before the server is authenticated (VEL-HS-101), and the server
keeps its Handshake keys until the client has the server's FINISHED (VEL-PROT-013). In-memory
pair on a virtual clock, so times and orders are exact."""

from __future__ import annotations

import pytest

from harness.loopback import ONE_WAY, Pair, lossy
from tests.core.transport.helpers import both_completed, make
from velocity.core.events import (
    ApplicationKeysInstalled,
    HandshakeCompleted,
    StreamDataReceived,
)
from velocity.core.packet import Epoch

REQUEST, RESPONSE = b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\nhello"


def _request_when_writable(pair: Pair) -> int:
    """Run until the client may send 1-RTT data, then write a whole request."""
    assert pair.run(lambda: any(isinstance(e, ApplicationKeysInstalled)
                                for e in pair.client_events))
    stream = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(stream, REQUEST, end_stream=True)
    return stream


def _answer(pair: Pair, stream: int) -> None:
    assert pair.run(lambda: pair.finished_stream("server", stream), max_time=60)
    server = pair.server
    assert server is not None
    server.send_stream_data(stream, RESPONSE, end_stream=True)


@pytest.mark.spec("VEL-HS-101", "VEL-KS-004")
def test_a_discovery_request_leaves_with_the_clients_finished() -> None:
    pair = make("discovery")
    pair.connect()
    stream = _request_when_writable(pair)
    assert not any(isinstance(e, HandshakeCompleted) for e in pair.client_events), (
        "the client may write before the server's FINISHED")
    assert pair.run(lambda: pair.finished_stream("server", stream))
    # CLIENT_HELLO out at 0, the server's flight back at 2 one-way delays, the client's
    # FINISHED and the request at the server at 3 (a client that waited for the server's
    # FINISHED would deliver it at 5)
    assert pair.now <= 3 * ONE_WAY + 1e-9, pair.now
    _answer(pair, stream)
    assert pair.run(lambda: pair.received("client", stream) == (RESPONSE, True))
    assert pair.now <= 4 * ONE_WAY + 1e-9, pair.now
    assert both_completed(pair)


@pytest.mark.spec("VEL-PROT-013")
def test_the_server_keeps_handshake_keys_until_the_client_has_its_finished() -> None:
    """The client's datagram carries FINISHED and 1-RTT data: the server completes, and must
    still send (and be able to resend) its own FINISHED in the Handshake space."""
    pair = make("discovery")
    pair.connect()
    stream = _request_when_writable(pair)
    assert pair.run(lambda: pair.finished_stream("server", stream))
    server = pair.server
    assert server is not None and server.handshake_complete
    handshake = server.spaces[Epoch.HANDSHAKE]
    assert not handshake.discarded and handshake.crypto_send.buffered, (
        "its FINISHED waits for an acknowledgement")
    assert pair.run(lambda: pair.client.handshake_confirmed and handshake.discarded)


@pytest.mark.spec("VEL-HS-101", "VEL-PROT-013", "VEL-HS-103")
@pytest.mark.parametrize("seed", range(30))
def test_discovery_with_early_request_under_loss(seed: int) -> None:
    """Under loss and reordering the handshake completes, the client reads nothing before the
    server's FINISHED verifies, and both ends drop their Handshake keys."""
    pair = make("discovery", network=lossy(seed, loss=0.2, reorder=0.2, duplicate=0.05))
    pair.connect()
    stream = _request_when_writable(pair)
    _answer(pair, stream)
    server = pair.server
    assert server is not None
    assert pair.run(lambda: pair.received("client", stream) == (RESPONSE, True)
                    and pair.client.handshake_confirmed
                    and server.spaces[Epoch.HANDSHAKE].discarded, max_time=60), seed
    kinds = [type(e) for e in pair.client_events]
    assert kinds.index(HandshakeCompleted) < kinds.index(StreamDataReceived)
