"""The engine's packet templates and replays, piece by piece: what each mutate operation
does to a planned packet or to the datagrams of a template, the packet types the view reads
from received datagrams, which datagrams a replay takes, and ``expect`` with ``count: 0``;
then templates and replays end to end against the in-process reference server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.peer import View
from harness.peer.view import packet_types
from harness.scenario.context import Conn
from harness.scenario.engine import RunResult, run_scenario
from harness.scenario.loader import load_file
from harness.scenario.replay import recorded
from harness.scenario.spec import requirements
from harness.scenario.templates import datagram_edit, packet_edit, split_crypto
from harness.scenario.verdict import ScenarioError, Verdict
from harness.targets import InProcessServer, Target
from tests.core.transport.helpers import make
from velocity.core.frames import Crypto, MaxData, Ping, decode_frames, encode_frames
from velocity.core.packet import Epoch, PacketType
from velocity.core.seams import HeaderEdits, PlannedPacket

HEAD = "id: e/t\ntitle: t\nspec: [VEL-PKT-004]\nrole: client\n"


def _packet(*frames: object) -> PlannedPacket:
    return PlannedPacket(Epoch.APPLICATION, PacketType.ONE_RTT, 7,
                         encode_frames(list(frames)))  # type: ignore[arg-type]


def test_split_crypto_cuts_each_crypto_frame_by_the_sizes_the_last_repeating() -> None:
    frames = split_crypto([Ping(), Crypto(10, b"abcdefghij"), Crypto(20, b"")], [3, 2])
    assert frames == [Ping(), Crypto(10, b"abc"), Crypto(13, b"de"), Crypto(15, b"fg"),
                      Crypto(17, b"hi"), Crypto(19, b"j"), Crypto(20, b"")]


def test_packet_edits_set_header_and_frame_fields_and_change_the_payload() -> None:
    packet = _packet(Ping(), MaxData(100))
    edited = packet_edit([{"set": "header.reserved_bits", "value": 3},
                          {"set": "header.dcid", "value": {"hex": "0102"}},
                          {"set": "frames[1].maximum", "value": 5000}])(packet)
    assert edited.header == HeaderEdits(reserved_bits=3, dcid=b"\x01\x02")
    assert decode_frames(edited.payload, PacketType.ONE_RTT) == [Ping(), MaxData(5000)]
    assert (edited.epoch, edited.packet_number) == (packet.epoch, packet.packet_number)
    cut = packet_edit([{"truncate": 2}, {"pad": 3}, {"xor": {"offset": 0, "mask": "03"}}])(
        packet)
    assert cut.payload == bytes([0x01 ^ 0x03]) + packet.payload[1:2] + bytes(3)
    split = packet_edit([{"split_crypto": [2]}])(_packet(Crypto(0, b"abc")))
    assert decode_frames(split.payload, PacketType.ONE_RTT) == [Crypto(0, b"ab"),
                                                                Crypto(2, b"c")]
    with pytest.raises(ValueError, match="frames\\[2\\] names no frame"):
        packet_edit([{"set": "frames[2].maximum", "value": 1}])(packet)
    with pytest.raises(ValueError, match="no longer decodes"):
        packet_edit([{"truncate": 2}, {"set": "frames[0].maximum", "value": 1}])(packet)


def test_datagram_edits_reorder_repeat_and_drop_in_order() -> None:
    edit = datagram_edit([{"reorder": [2, 0]}, {"duplicate": 0}, {"drop": 3},
                          {"truncate": 1}])  # a packet operation: not the datagrams'
    assert edit([b"a", b"b", b"c"]) == [b"c", b"c", b"a"]
    with pytest.raises(ValueError, match="names datagram 5, but the template went out in 2"):
        datagram_edit([{"drop": 5}])([b"a", b"b"])


def test_the_view_reads_the_packet_types_of_a_datagram() -> None:
    """The server's first flight coalesces Initial and Handshake packets (the types read
    from the bits and Length fields, one list per datagram, in order); a short header runs
    to the end; a cleared fixed bit cannot be read."""
    pair = make()
    captured: list[bytes] = []
    receive = pair.client.receive_datagram

    def spy(data: bytes, *args: object, **kwargs: object) -> None:
        captured.append(data)
        receive(data, *args, **kwargs)  # type: ignore[arg-type]

    pair.client.receive_datagram = spy  # type: ignore[method-assign]
    pair.connect()
    assert pair.run(lambda: pair.client.handshake_complete and len(captured) >= 2)
    read = [packet_types(d) for d in captured]
    assert read[0][0] == "initial" and ["initial", "handshake"] in read, read
    assert all(set(r) <= {"initial", "handshake", "1RTT"} for r in read), read
    assert packet_types(b"\x40" + bytes(30)) == ["1RTT"]
    assert packet_types(b"\x00" + bytes(30)) == ["unparsed"]
    assert packet_types(b"\x80" + bytes(30)) == ["version_negotiation"]


async def test_a_replay_takes_the_first_flight_the_last_send_or_indexes() -> None:
    view = View(asyncio.get_running_loop())
    view.sent([b"ch1", b"ch2"])
    view.sent([b"0rtt"])
    view.received(b"\x40" + bytes(20), "127.0.0.1:1")
    view.sent([b"finished"])
    conn = Conn("main", view, ("127.0.0.1", 1), last_send=[b"template"])
    assert recorded(conn, "client_initial") == [b"ch1", b"ch2", b"0rtt"]
    assert recorded(conn, "last") == [b"template"]
    assert recorded(conn, [3, 0]) == [b"finished", b"ch1"]
    with pytest.raises(ScenarioError, match="names datagram 4, but the connection sent 4"):
        recorded(conn, [4])


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    server = InProcessServer(tmp_path_factory.mktemp("target"))
    try:
        yield server.start()
    finally:
        server.stop()


async def run(tmp_path: Path, target: Target, steps: str) -> RunResult:
    path = tmp_path / "s.yaml"
    path.write_text(HEAD + "steps:\n" + steps)
    (scenario,) = load_file(path, "s.yaml", requirements())
    return await run_scenario(scenario, target, seed=1, strict=False)


async def test_expect_count_zero_fails_on_the_event_and_passes_without_it(
        tmp_path: Path, target: Target) -> None:
    result = await run(tmp_path, target, """\
  - connect: {wait: none}
  - expect: {event: quic:connection_closed, count: 0, within: 0.5}
  - expect: {event: velocity:handshake_completed, count: 0, within: 2}
""")
    assert result.outcome.verdict is Verdict.FAIL, result.outcome
    assert "where none may" in result.outcome.reason
    assert result.outcome.step is not None and result.outcome.step.endswith(":8")


async def test_a_held_flight_leaves_with_its_template_and_is_replayed_from_a_new_port(
        tmp_path: Path, target: Target) -> None:
    """Nothing leaves before the template; the template's datagrams are the connection's
    first; a replay of them from a new port is recorded as a connection of its own, with
    what it sent and what answered it."""
    result = await run(tmp_path, target, """\
  - connect: {wait: held}
  - expect: {event: quic:datagrams_sent, count: 0, within: 0.3}
  - send: {template: client_initial, mutate: [{duplicate: 0}]}
  - expect: {event: velocity:handshake_completed, within: 3}
  - assert: "datagrams_sent >= 3"
  - replay: {flight: [0], from: new_port, name: again}
  - expect: {conn: again, event: quic:datagrams_sent, where: {data.origin: replay}}
""")
    assert result.outcome.verdict is Verdict.PASS, result.outcome
    names = [name for name, _ in result.documents]
    assert names == ["main", "again"]
