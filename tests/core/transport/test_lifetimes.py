"""Every connection a peer can make a server hold has a lifetime and a bound: the handshake
timeout, an idle timeout that PTO backoff does not stretch, eviction of the oldest half-open
connection from a full table, and a cap on half-open connections per address."""

from __future__ import annotations

import sys

import pytest

from harness.loopback import perfect
from tests.core.transport.helpers import (
    SERVER_HS,
    completed,
    make,
    make_client,
    make_crowd,
    requested,
    terminated,
)
from velocity.core.connection import Address, ConnectionConfig
from velocity.core.errors import ErrorCode
from velocity.core.events import ConnectionTerminated
from velocity.core.packet import Epoch
from velocity.core.state import State

HOSTILE_HOSTS = ("10.0.0.1", "10.0.0.2")
LEGIT = ("192.0.2.1", 5000)
HANDSHAKE_TIMEOUT = ConnectionConfig(SERVER_HS).handshake_timeout


def hostile(index: int) -> Address:
    """Half of them from each hostile host."""
    return HOSTILE_HOSTS[index % 2], 1000 + index


def never_finishing(direction: str, address: Address, datagram: bytes, now: float) -> bool:
    """Hostile clients hear nothing from the server but Retry packets: they send their
    ClientHello (again with the token, under Retry), probe, and never finish."""
    to_hostile = direction == "s2c" and address[0] in HOSTILE_HOSTS
    return not to_hostile or datagram[0] & 0xF0 == 0xF0


@pytest.mark.spec("VEL-CONN-008")
@pytest.mark.parametrize("retry", ["never", "always"])
def test_half_open_connections_are_reaped_silently(retry: str) -> None:
    room = make_crowd(never_finishing, retry=retry, max_sessions=8)
    endpoint = room.endpoint
    for index in range(8):
        room.join(hostile(index), make_client(f"hostile-{index}"))
    assert room.run(lambda: len(endpoint.connections) == 8, max_time=2)
    assert not any(c.handshake_complete for c in endpoint)
    started = {c.peer_address: c.started_at or 0.0 for c in endpoint}
    assert room.run(lambda: not endpoint.connections, max_time=4 * HANDSHAKE_TIMEOUT)
    assert room.now < max(started.values()) + HANDSHAKE_TIMEOUT + 0.1
    ends = [e.reason for _, e in room.server_events if isinstance(e, ConnectionTerminated)]
    assert ends == ["handshake timeout"] * 8
    for address, start in started.items():  # nothing was sent once it timed out: silent
        assert address is not None
        assert all(when < start + HANDSHAKE_TIMEOUT for when, _ in room.sent[address])
    room.join(LEGIT, make_client("legit"))
    assert room.run(lambda: completed(room.client_events[LEGIT]))


@pytest.mark.spec("VEL-CONN-008")
@pytest.mark.parametrize("timeout", [None, 3.0])
def test_a_client_gives_up_when_the_handshake_times_out(timeout: float | None) -> None:
    pair = make(network=lambda direction, datagram, now: (
        [] if direction == "s2c" else perfect(direction, datagram, now)),
        client={} if timeout is None else {"handshake_timeout": timeout})
    expected = HANDSHAKE_TIMEOUT if timeout is None else timeout
    pair.connect()
    assert pair.run(lambda: bool(terminated(pair.client_events)), max_time=6 * expected)
    (end,) = terminated(pair.client_events)
    assert (end.error_code, end.reason, end.by_peer) == (ErrorCode.NO_ERROR,
                                                         "handshake timeout", False)
    assert expected <= pair.now < expected + 0.1


@pytest.mark.spec("VEL-CONN-003")
def test_a_peer_that_vanishes_mid_transfer_is_reaped_after_the_idle_timeout() -> None:
    """The server keeps probing with backoff; the idle timeout must not grow with it."""
    gone = [False]
    pair = make(network=lambda direction, datagram, now: (
        [] if gone[0] else perfect(direction, datagram, now)))
    server, stream = requested(pair)
    server.send_stream_data(stream, bytes(2_000_000), end_stream=True)
    pair.endpoint.mark(server)
    gone[0] = True
    vanished = pair.now
    assert pair.run(lambda: server.state == State.TERMINATED, max_time=vanished + 300)
    limit = server.config.idle_timeout + 3 * server.recovery.pto_duration(
        Epoch.APPLICATION, backoff=False)
    assert pair.now <= vanished + limit and server.recovery.pto_count > 0
    assert [e.reason for e in terminated(pair.server_events)] == ["idle timeout"]


@pytest.mark.spec("VEL-CONN-005", "VEL-CONN-009")
@pytest.mark.parametrize("retry", ["never", "always"])
def test_a_full_table_evicts_its_oldest_half_open_connection(retry: str) -> None:
    room = make_crowd(never_finishing, retry=retry, max_sessions=4)
    endpoint = room.endpoint
    room.join(("192.0.2.9", 9000), make_client("established"))
    assert room.run(lambda: len(endpoint.connections) == 1
                    and endpoint.connections[0].handshake_complete)
    established = endpoint.connections[0]
    for index in range(3):
        room.join(hostile(index), make_client(f"hostile-{index}"))
        assert room.run(lambda n=index: len(endpoint.connections) == n + 2, max_time=2)
    oldest = endpoint.connections[1]
    assert oldest.peer_address == hostile(0) and not oldest.handshake_complete
    room.join(LEGIT, make_client("newcomer"))
    assert room.run(lambda: completed(room.client_events[LEGIT]), max_time=room.now + 2)
    assert oldest not in endpoint.connections and established in endpoint.connections
    assert len(endpoint.connections) == 4 and endpoint.refused == 0
    assert [(c, e.reason) for c, e in room.server_events if isinstance(
        e, ConnectionTerminated)] == [(oldest, "evicted: the server is full")]


@pytest.mark.spec("VEL-CONN-005")
def test_a_table_of_established_connections_still_refuses() -> None:
    room = make_crowd(max_sessions=2)
    for index in range(2):
        room.join(("192.0.2.9", 9000 + index), make_client(f"established-{index}"))
    assert room.run(lambda: len(room.endpoint.connections) == 2
                    and all(c.handshake_complete for c in room.endpoint))
    room.join(LEGIT, make_client("late"))
    assert room.run(lambda: bool(terminated(room.client_events[LEGIT])), max_time=room.now + 2)
    (end,) = terminated(room.client_events[LEGIT])
    assert end.by_peer and end.error_code == ErrorCode.CONNECTION_REFUSED
    assert len(room.endpoint.connections) == 2


@pytest.mark.spec("VEL-CONN-010")
@pytest.mark.parametrize("retry", ["never", "always"])
def test_half_open_connections_per_address_are_capped(retry: str) -> None:
    room = make_crowd(retry=retry, max_half_open_per_address=2)
    crowded = [("10.0.0.1", 1000 + index) for index in range(3)]
    elsewhere = ("10.0.0.2", 1000)
    for index, address in enumerate([*crowded, elsewhere]):  # arriving together
        room.join(address, make_client(f"client-{index}"))
    assert room.run(lambda: all(completed(room.client_events[a]) or terminated(
        room.client_events[a]) for a in room.clients))
    (end,) = terminated(room.client_events[crowded[2]])
    assert end.by_peer and end.error_code == ErrorCode.CONNECTION_REFUSED
    assert all(completed(room.client_events[a]) for a in (*crowded[:2], elsewhere))
    room.join(("10.0.0.1", 2000), make_client("later"))  # completed ones count no more
    assert room.run(lambda: completed(room.client_events[("10.0.0.1", 2000)]))


@pytest.mark.spec("VEL-CONN-009", "VEL-RTY-007")
def test_a_full_table_asks_for_proof_of_address_before_it_evicts() -> None:
    """Under the under-load policy a full table answers an unvalidated Initial with Retry: a
    spoofed source (which never answers) evicts nobody; a real client answers the Retry and
    takes the oldest unvalidated half-open slot."""
    room = make_crowd(never_finishing, retry="under-load", under_load=64, max_sessions=3)
    endpoint = room.endpoint
    for index in range(3):
        room.join(hostile(index), make_client(f"hostile-{index}"))
        assert room.run(lambda n=index: len(endpoint.connections) == n + 1, max_time=2)
    held = list(endpoint.connections)
    spoof = make_client("spoofed")
    spoof.connect(("127.0.0.1", 4433), now=room.now)
    for datagram, _ in spoof.datagrams_to_send(now=room.now):
        room.inject(datagram, ("198.51.100.7", 1234))
    room.run(lambda: False, max_time=room.now + 0.1)
    spoofed_retries = endpoint.retries_sent
    assert endpoint.connections == held and spoofed_retries >= 1  # one per datagram
    room.join(LEGIT, make_client("legit"))
    assert room.run(lambda: completed(room.client_events[LEGIT]), max_time=room.now + 2)
    assert held[0] not in endpoint.connections and endpoint.retries_sent > spoofed_retries


@pytest.mark.spec("VEL-PKT-014")
@pytest.mark.parametrize("retry", ["never", "always"])
def test_a_junk_token_does_not_excuse_a_short_dcid(retry: str) -> None:
    """Only the server's own Retry SCID may be shorter than 8 bytes: a 1-byte DCID with a
    token that does not open creates no state and draws no Retry."""
    room = make_crowd(retry=retry)
    client = make_client("short")
    client.original_dcid = client.peer_cid = b"x"
    client._install_initial_keys(b"x")
    client._retry_token = b"junk token"
    client.connect(("127.0.0.1", 4433), now=room.now)
    for datagram, _ in client.datagrams_to_send(now=room.now):
        room.endpoint.receive_datagram(datagram, LEGIT, now=room.now)
    assert room.endpoint.connections == [] and room.endpoint.retries_sent == 0
    assert room.endpoint.datagrams_to_send(now=room.now) == []


def test_compact_gives_back_the_room_a_drained_table_grew_to() -> None:
    """The per-connection maps grow with the table and, being dicts, keep their size when it
    drains; ``compact`` rebuilds them at what they hold, and the endpoint serves on."""
    room = make_crowd(never_finishing, max_sessions=100, max_half_open_per_address=100)
    endpoint = room.endpoint
    for index in range(100):
        room.join(hostile(index), make_client(f"hostile-{index}"))
    assert room.run(lambda: len(endpoint.connections) == 100, max_time=2)
    assert room.run(lambda: not endpoint.connections, max_time=4 * HANDSHAKE_TIMEOUT)
    maps = ("_by_cid", "_deadline", "_half_open")
    grown = {name: sys.getsizeof(getattr(endpoint, name)) for name in maps}
    endpoint.compact()
    for name in maps:
        assert sys.getsizeof(getattr(endpoint, name)) * 4 < grown[name], name
    room.join(LEGIT, make_client("legit"))
    assert room.run(lambda: completed(room.client_events[LEGIT]))
