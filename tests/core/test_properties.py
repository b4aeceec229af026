"""Properties of every codec: decode(encode(x)) == x for every frame and header type, and any
byte string fed to a decoder either decodes or raises the protocol's own error type."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.fuzz import strategies as st_v
from velocity.core import frames as f
from velocity.core.buffer import Reader, Writer
from velocity.core.errors import ProtocolError
from velocity.core.packet import (
    LongHeader,
    PacketType,
    RetryPacket,
    ShortHeader,
    VersionNegotiation,
    decode_retry,
    decode_version_negotiation,
    encode_retry,
    encode_version_negotiation,
    parse_header,
    pull_long_header,
    pull_short_header,
    push_long_header,
    push_short_header,
)
from velocity.core.protection import initial_keys
from velocity.core.rangeset import RangeSet


def test_every_frame_class_has_a_strategy() -> None:
    assert set(st_v.FRAME_STRATEGIES) == set(f.FRAME_CLASSES)


@pytest.mark.spec("VEL-FRM-001")
@pytest.mark.parametrize("cls", f.FRAME_CLASSES, ids=lambda c: c.NAME)
def test_frame_round_trip(cls: type[f.Frame]) -> None:
    @given(st_v.FRAME_STRATEGIES[cls])
    def check(frame: f.Frame) -> None:
        space = next(iter(sorted(frame.SPACES)))
        assert f.decode_frames(f.encode_frames([frame]), space) == [frame]

    check()


@pytest.mark.spec("VEL-FRM-001", "VEL-FRM-012")
@given(st.lists(st.sampled_from([c for c in f.FRAME_CLASSES if c is not f.Padding])
                .flatmap(lambda c: st_v.FRAME_STRATEGIES[c]), min_size=1, max_size=8))
def test_frame_sequence_round_trip(frames: list[f.Frame]) -> None:
    # a STREAM without a length runs to the end of the packet, so only the last may omit it
    frames = [fr if not isinstance(fr, f.Stream) or i == len(frames) - 1
              else f.Stream(fr.stream_id, fr.data, fr.offset, fr.fin, True)
              for i, fr in enumerate(frames)]
    assert f.decode_frames(f.encode_frames(frames), PacketType.ONE_RTT) == frames


def _with_payload(header: LongHeader) -> bytes:
    writer = Writer()
    push_long_header(writer, header)
    return writer.data() + bytes(header.length - header.pn_length)


@pytest.mark.spec("VEL-PKT-001")
@given(st_v.long_headers())
def test_long_header_round_trip(header: LongHeader) -> None:
    assert pull_long_header(_with_payload(header)) == header


@pytest.mark.spec("VEL-PKT-009", "VEL-PKT-010")
@given(st_v.short_headers())
def test_short_header_round_trip(header: ShortHeader) -> None:
    writer = Writer()
    push_short_header(writer, header)
    assert pull_short_header(writer.data() + bytes(20), len(header.dcid)) == header


@pytest.mark.spec("VEL-RTY-001")
@given(st_v.retry_packets)
def test_retry_round_trip(packet: RetryPacket) -> None:
    assert decode_retry(encode_retry(packet)) == packet


@pytest.mark.spec("VEL-VN-003")
@given(st_v.version_negotiations)
def test_version_negotiation_round_trip(packet: VersionNegotiation) -> None:
    assert decode_version_negotiation(encode_version_negotiation(packet)) == packet


_KEYS = initial_keys(bytes(8), is_client=False)[1]

DECODERS = {
    "frames/initial": lambda b: f.decode_frames(b, PacketType.INITIAL),
    "frames/1rtt": lambda b: f.decode_frames(b, PacketType.ONE_RTT),
    "frame/0rtt": lambda b: f.pull_frame(Reader(b), PacketType.ZERO_RTT),
    "header": lambda b: parse_header(b, short_dcid_length=8),
    "long_header": pull_long_header,
    "short_header": lambda b: pull_short_header(b, 8),
    "retry": decode_retry,
    "version_negotiation": decode_version_negotiation,
    "decrypt": lambda b: _KEYS.decrypt_packet(b, min(len(b), 18), 0),
}


@pytest.mark.spec("VEL-FRM-002", "VEL-FRM-005", "VEL-PKT-005")
@pytest.mark.parametrize("name", DECODERS)
def test_any_bytes_decode_or_raise_protocol_error(name: str) -> None:
    decode = DECODERS[name]

    @given(st.binary(max_size=200))
    def check(data: bytes) -> None:
        try:
            decode(data)
        except ProtocolError as exc:
            assert exc.field, f"{exc!r} does not name the field at fault"

    check()


@pytest.mark.spec("VEL-FRM-002", "VEL-FRM-003", "VEL-FRM-005")
@given(st.sampled_from(f.FRAME_CLASSES).flatmap(lambda c: st_v.FRAME_STRATEGIES[c]),
       st.data())
def test_mutated_frames_decode_or_raise_protocol_error(frame: f.Frame, data: st.DataObject
                                                       ) -> None:
    wire = bytearray(f.encode_frames([frame]))
    for _ in range(data.draw(st.integers(1, 4))):
        wire[data.draw(st.integers(0, len(wire) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(wire)))
    try:
        f.decode_frames(bytes(wire[:cut]), PacketType.ONE_RTT)
    except ProtocolError as exc:
        assert exc.field


@given(st.lists(st.tuples(st.sampled_from(["add", "subtract"]), st.integers(0, 60),
                          st.integers(0, 12)), max_size=40),
       st.lists(st.integers(0, 80), max_size=10))
def test_rangeset_matches_a_set_of_integers(operations: list[tuple[str, int, int]],
                                            probes: list[int]) -> None:
    """Every operation (including the fast paths for appending, testing the newest range and
    removing a prefix) keeps sorted, disjoint, non-touching ranges equal to a plain set."""
    ranges, model = RangeSet(), set()
    for operation, start, length in operations:
        if operation == "add":
            ranges.add(start, start + length)
            model |= set(range(start, start + length))
        else:
            ranges.subtract(start, start + length)
            model -= set(range(start, start + length))
        spans = list(ranges)
        assert all(low < high for low, high in spans)
        assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))
        assert {n for low, high in spans for n in range(low, high)} == model
    for value in probes:
        assert (value in ranges) == (value in model)


@given(st.lists(st.tuples(st.integers(0, 60), st.integers(1, 12)), max_size=20),
       st.integers(0, 80), st.integers(0, 30), st.integers(1, 12))
def test_rangeset_missing_parts_and_newest_ranges(adds: list[tuple[int, int]], start: int,
                                                  length: int, count: int) -> None:
    """``missing`` gives exactly the values of a window not in the set, as maximal runs;
    ``descending(n)`` the newest n ranges, highest first, as ACK frames want them."""
    ranges, model = RangeSet(), set()
    for low, size in adds:
        ranges.add(low, low + size)
        model |= set(range(low, low + size))
    gaps = ranges.missing(start, start + length)
    assert [n for low, high in gaps for n in range(low, high)] == [
        n for n in range(start, start + length) if n not in model]
    assert all(low < high for low, high in gaps)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(gaps))
    newest = [(low, high - 1) for low, high in reversed(list(ranges))][:count]
    assert ranges.descending(count) == newest
