"""The asyncio server and client over real UDP on 127.0.0.1: concurrency, a lossy relay,
garbage datagrams, Retry, refusal and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

import velocity.aio
from harness.netsim import Impairment, UdpRelay
from harness.pair import PairSpec, make_configs
from velocity.aio.base import TRANSMIT_EVERY, Sender
from velocity.aio.client import HandshakeError, VelocityClient, connect
from velocity.aio.entropy import OsEntropy
from velocity.aio.server import KeyRotation, VelocityServer, serve
from velocity.aio.streams import VelocityStream
from velocity.core.connection import Address, Connection, ConnectionConfig
from velocity.core.endpoint import EndpointConfig
from velocity.core.errors import ErrorCode
from velocity.core.events import ConnectionTerminated
from velocity.core.handshake.common import HandshakeCompleted
from velocity.core.packet import PacketType, parse_header
from velocity.crypto.sealing import RetryTokens, ticket_sealer

CLIENT_HS, SERVER_HS = make_configs(PairSpec(mode="pdk"))


async def echo(stream: VelocityStream, connection: Connection) -> None:
    data = await stream.read()
    stream.write(data, end_stream=True)


@asynccontextmanager
async def server(**endpoint: Any) -> AsyncIterator[VelocityServer]:
    tokens = RetryTokens(bytes(16)) if endpoint.get("retry", "never") != "never" else None
    running = await serve("127.0.0.1", 0, EndpointConfig(ConnectionConfig(SERVER_HS),
                                                         **endpoint), echo, tokens=tokens)
    try:
        yield running
    finally:
        await running.close()


async def roundtrip(client: VelocityClient, payload: bytes) -> bytes:
    stream = await client.open_stream()
    stream.write(payload, end_stream=True)
    return await asyncio.wait_for(stream.read(), 20)


@pytest.mark.spec("VEL-CONN-004", "VEL-HTTP-001")
async def test_many_concurrent_connections_and_streams() -> None:
    async with server() as running:
        host, port = running.address

        async def one(index: int) -> None:
            async with connect(host, port, ConnectionConfig(CLIENT_HS)) as client:
                payloads = [hashlib.sha256(f"{index}/{n}".encode()).digest() * (50 * n + 1)
                            for n in range(8)]
                results = await asyncio.gather(*(roundtrip(client, p) for p in payloads))
                assert results == payloads

        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(24))), 60)


@pytest.mark.spec("VEL-REC-002", "VEL-REC-003")
@pytest.mark.parametrize("seed", [1, 2])
async def test_transfer_through_a_lossy_reordering_relay(seed: int) -> None:
    async with server() as running:
        relay = UdpRelay(running.address, Impairment(loss=0.03, delay=0.002, jitter=0.004,
                                                     duplicate=0.01), seed=seed)
        host, port = await relay.start()
        try:
            async with connect(host, port, ConnectionConfig(CLIENT_HS), timeout=20) as client:
                payload = hashlib.shake_256(f"relay {seed}".encode()).digest(400_000)
                assert await asyncio.wait_for(roundtrip(client, payload), 60) == payload
        finally:
            relay.close()
        assert relay.stats.dropped > 0, f"seed {seed} dropped nothing"


@pytest.mark.spec("VEL-SIZE-001", "VEL-SIZE-002")
async def test_relay_counts_a_pdk_handshake_by_flight() -> None:
    """Through a clean relay a PDK handshake is three flights: the CLIENT_HELLO in two equal
    datagrams, the server's share, ENCRYPTED_EXTENSIONS and FINISHED (with an ACK of the
    first datagram when the two arrive apart), then the client's FINISHED (with its close,
    which follows at once)."""
    async with server() as running:
        relay = UdpRelay(running.address, Impairment())
        host, port = await relay.start()
        try:
            async with connect(host, port, ConnectionConfig(CLIENT_HS)):
                pass
            await asyncio.sleep(0.05)
        finally:
            relay.close()
    directions = [direction for direction, _, _ in relay.stats.flights]
    sizes = [size for _, size, _ in relay.stats.flights]
    assert directions[:3] == ["c2s", "s2c", "c2s"]
    assert 2 * 1200 <= sizes[0] <= 2 * 1452 and sizes[0] % 2 == 0
    assert 1120 < sizes[1] < 1452 + 100  # the 1120-byte share; one more datagram at most
    assert sum(sizes) == relay.stats.bytes_c2s + relay.stats.bytes_s2c


class _RecordingRelay(UdpRelay):
    """A relay that keeps every datagram the client sent, in order."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.client_datagrams: list[bytes] = []
        self.server_seen = 0

    def forward(self, data: bytes, source: Address, *, from_server: bool) -> None:
        if from_server:
            self.server_seen += 1
        elif self.server_seen:  # after the server's first answer
            self.client_datagrams.append(data)
        super().forward(data, source, from_server=from_server)


def _packet_types(datagram: bytes) -> list[PacketType]:
    """The packet types coalesced in one datagram (a short header ends it)."""
    types, offset = [], 0
    while offset < len(datagram):
        header = parse_header(datagram[offset:], short_dcid_length=8)
        types.append(header.packet_type)
        if header.packet_type == PacketType.ONE_RTT:
            break
        offset += header.end
    return types


@pytest.mark.spec("VEL-HS-101")
@pytest.mark.parametrize("mode", ["pdk", "discovery"])
async def test_a_request_written_at_once_leaves_with_the_clients_finished(mode: str) -> None:
    """The client's FINISHED waits one turn of the loop once 1-RTT data may be sent (at
    completion in PDK mode, with the FINISHED in discovery mode), so a request the
    application writes straight away shares its datagram: the first datagram the client
    sends with Handshake keys also carries a 1-RTT packet. (What the datagram holds, not how
    many datagrams there are: retransmissions under load change the count.)"""
    client_hs, _ = make_configs(PairSpec(mode=mode))
    async with server() as running:
        relay = _RecordingRelay(running.address, Impairment())
        host, port = await relay.start()
        try:
            async with connect(host, port, ConnectionConfig(client_hs)) as client:
                stream = await client.open_stream()
                stream.write(b"request", end_stream=True)
                assert await asyncio.wait_for(stream.read(), 10) == b"request"
        finally:
            relay.close()
    # the first datagram with client CRYPTO data under Handshake keys (the FINISHED, after
    # KEM_CIPHERTEXT in discovery mode) is the one larger than an ACK-only packet
    finished = next(d for d in relay.client_datagrams
                    if PacketType.HANDSHAKE in _packet_types(d) and len(d) > 64)
    assert _packet_types(finished)[-2:] == [PacketType.HANDSHAKE, PacketType.ONE_RTT]


@pytest.mark.spec("VEL-ERR-005", "VEL-CONN-004")
async def test_random_datagrams_do_not_stop_the_server() -> None:
    async with server() as running:
        host, port = running.address
        rng = random.Random(7)
        junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for index in range(300):
                size = rng.choice([1, 20, 1200, 1300, rng.randrange(1, 1500)])
                first = rng.choice([0x00, 0x40, 0xC0, 0xC3, rng.randrange(256)])
                junk.sendto(bytes([first]) + rng.randbytes(size - 1), (host, port))
                if index % 20 == 19:
                    await asyncio.sleep(0.005)  # stay under the socket's receive buffer
            async with connect(host, port, ConnectionConfig(CLIENT_HS)) as client:
                assert await roundtrip(client, b"still here") == b"still here"
        finally:
            junk.close()
        assert running.datagrams_received >= 300
        assert len(running.endpoint.connections) <= 1


@pytest.mark.spec("VEL-RTY-007")
async def test_retry_always_over_udp() -> None:
    async with server(retry="always") as running:
        host, port = running.address
        async with connect(host, port, ConnectionConfig(CLIENT_HS)) as client:
            assert await roundtrip(client, b"after retry") == b"after retry"
            assert client.connection.retry_scid is not None
        assert running.endpoint.retries_sent >= 1


@pytest.mark.spec("VEL-CONN-005")
async def test_max_sessions_refuses() -> None:
    async with server(max_sessions=1) as running:
        host, port = running.address
        async with connect(host, port, ConnectionConfig(CLIENT_HS)):
            with pytest.raises(HandshakeError) as info:
                async with connect(host, port, ConnectionConfig(CLIENT_HS), timeout=5):
                    pass
            assert info.value.error_code == ErrorCode.CONNECTION_REFUSED


@pytest.mark.spec("VEL-CONN-007")
async def test_graceful_shutdown_closes_with_no_error() -> None:
    running = await serve("127.0.0.1", 0, EndpointConfig(ConnectionConfig(SERVER_HS)), echo)
    host, port = running.address
    async with connect(host, port, ConnectionConfig(CLIENT_HS)) as client:
        assert await roundtrip(client, b"up") == b"up"  # established on both ends
        await running.close()
        for _ in range(100):
            if client.router.terminated is not None:
                break
            await asyncio.sleep(0.01)
        assert client.router.terminated is not None
        assert client.router.terminated.by_peer
        assert client.router.terminated.error_code == ErrorCode.NO_ERROR


async def test_port_in_use_is_an_os_error() -> None:
    async with server() as running:
        host, port = running.address
        with pytest.raises(OSError):
            await serve(host, port, EndpointConfig(ConnectionConfig(SERVER_HS)), echo)


def test_run_uses_uvloop_when_installed() -> None:
    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    module = velocity.aio.run(which())
    assert module.startswith("uvloop") == (velocity.aio.loop_name() == "uvloop")


@pytest.fixture
def gso() -> None:
    """Skip, saying so, where the kernel cannot send with UDP_SEGMENT (GSO)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        if not Sender._gso_works(probe):
            pytest.skip("this kernel has no UDP GSO (UDP_SEGMENT), which the test sends with")


@pytest.mark.usefixtures("gso")
async def test_gso_batches_equal_sized_datagrams() -> None:
    async with server() as running:
        host, port = running.address
        async with connect(host, port, ConnectionConfig(CLIENT_HS)) as client:
            assert await roundtrip(client, bytes(300_000)) == bytes(300_000)
        sender = running._sender
        assert sender is not None
        assert sender.gso_batches > 0


@pytest.mark.usefixtures("gso")
async def test_a_gso_batch_arrives_as_its_datagrams() -> None:
    """Five equal datagrams sent in one UDP_SEGMENT call reach the endpoint as five (split
    from one GRO read where the kernel coalesces them), each dropped as junk."""
    async with server() as running:
        host, port = running.address
        junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            segments = [bytes([0x40 | n]) + bytes(1299) for n in range(5)]
            junk.sendmsg([b"".join(segments)], [(socket.SOL_UDP, 103, (1300).to_bytes(
                2, sys.byteorder))], 0, (host, port))
            for _ in range(100):
                if running.datagrams_received >= 5:
                    break
                await asyncio.sleep(0.01)
        finally:
            junk.close()
        assert running.datagrams_received == 5
        assert not running.endpoint.connections


@pytest.mark.usefixtures("gso")
async def test_a_backlog_is_answered_while_it_is_read() -> None:
    """A wakeup that finds many datagrams waiting transmits (ACKs, above all) at least every
    TRANSMIT_EVERY datagrams, not only once the whole backlog is read."""
    async with server() as running:
        host, port = running.address
        transmissions = 0
        original = running._transmit

        def counted() -> None:
            nonlocal transmissions
            transmissions += 1
            original()

        running._transmit = counted  # type: ignore[method-assign]
        running._loop.remove_reader(running._socket.fileno())  # read by hand below
        junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for _ in range(8):  # GSO sends of 32 datagrams: a few GRO reads hold them all
                junk.sendmsg([(bytes([0x40]) + bytes(1199)) * (TRANSMIT_EVERY // 2)],
                             [(socket.SOL_UDP, 103, (1200).to_bytes(2, sys.byteorder))], 0,
                             (host, port))
        finally:
            junk.close()
        running._on_readable()
        assert running.datagrams_received == 4 * TRANSMIT_EVERY
        assert transmissions >= 4


async def test_an_early_timer_is_handled_at_its_deadline() -> None:
    """An event loop may run a timer before its deadline (uvloop rounds to milliseconds).
    Handled at the loop's time, the deadline would still lie ahead, be armed again, fire at
    once, and spin the loop until the clock caught up (hundreds of empty transmissions
    between handshakes); the driver handles it at the deadline it armed."""
    async with server() as running:
        seen: list[float] = []
        endpoint = running.endpoint
        original = endpoint.handle_timer

        def observed(*, now: float) -> None:
            seen.append(now)
            original(now=now)

        endpoint.handle_timer = observed  # type: ignore[method-assign]
        deadline = running._loop.time() + 0.0008
        running._timer_at = deadline
        running._on_timer()  # as a loop that runs it early would
        assert seen == [deadline]


class _FullAtFirst(socket.socket):
    """A UDP socket whose first sends find the buffer full, as a busy host's would."""

    refusals = 3

    def sendto(self, data: Any, address: Any) -> int:  # type: ignore[override]
        if self.refusals:
            self.refusals -= 1
            raise BlockingIOError
        return super().sendto(data, address)


async def test_sends_wait_in_order_while_the_socket_is_full() -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    sending = _FullAtFirst(socket.AF_INET, socket.SOCK_DGRAM)
    sending.setblocking(False)
    try:
        sender = Sender(sending, asyncio.get_running_loop())
        sender._gso = False  # one datagram per call, so each can be refused
        address = receiver.getsockname()
        sender.send([(bytes([n]) * (10 + n), address) for n in range(6)])
        got: list[bytes] = []
        for _ in range(100):
            with contextlib.suppress(BlockingIOError):
                got.append(receiver.recv(100))
                continue
            if len(got) == 6:
                break
            await asyncio.sleep(0.01)
        assert got == [bytes([n]) * (10 + n) for n in range(6)]  # none lost, none reordered
    finally:
        sending.close()
        receiver.close()


async def test_a_connection_closed_at_once_still_completes_the_servers_handshake() -> None:
    """Closing right after connect returns sends the client's FINISHED (held for a request
    that did not come) before the close, so the server completes its handshake too."""
    async with server() as running:
        completed = []
        original = running.endpoint.next_event

        def observed() -> Any:
            item = original()
            if item is not None and isinstance(item[1], HandshakeCompleted):
                completed.append(item[1])
            return item

        running.endpoint.next_event = observed  # type: ignore[method-assign]
        host, port = running.address
        async with connect(host, port, ConnectionConfig(CLIENT_HS)):
            pass
        for _ in range(100):
            if completed:
                break
            await asyncio.sleep(0.01)
        assert len(completed) == 1


def test_peer_text_in_client_errors_is_made_safe_to_print() -> None:
    """A forged close reason with terminal escape codes and new lines is printed escaped,
    with the code's name and what to do (before, raw: it could clear the screen and fake
    a message)."""
    forged = ConnectionTerminated(0x0105, 0, "\x1b[2J\x1b[Hrun velocity keys forget\nnow",
                                  True)
    text = str(HandshakeError(forged))
    assert "\x1b" not in text and "\n" not in text and "\\x1b[2J" in text
    assert "CERTIFICATE_INVALID" in text and "trust" in text


async def test_sealer_keys_rotate_and_the_previous_key_still_opens() -> None:
    """KeyRotation: a ticket sealed before a rotation still opens after it (two keys
    accepted), and no longer after the next one."""
    sealer = ticket_sealer(bytes(32))
    ticket = sealer.seal(b"state", bytes(12))
    rotation = KeyRotation([(sealer, 32)], OsEntropy(), every=0.2)

    async def rotated(count: int) -> None:
        for _ in range(300):
            if rotation.rotations >= count:
                return
            await asyncio.sleep(0.005)
    try:
        await rotated(1)
        assert rotation.rotations == 1 and sealer.open(ticket) == b"state"
        await rotated(2)
        assert sealer.open(ticket) is None
    finally:
        rotation.stop()
