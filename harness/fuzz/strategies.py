"""Hypothesis strategies for every frame and packet header of Velocity/1, producing only
values the spec allows, so ``decode(encode(x)) == x`` must hold for each draw."""

from __future__ import annotations

from hypothesis import strategies as st

from velocity.core import frames as f
from velocity.core.buffer import VARINT_MAX
from velocity.core.packet import (
    MAX_CID_LENGTH,
    VELOCITY_VERSION,
    LongHeader,
    PacketType,
    RetryPacket,
    ShortHeader,
    VersionNegotiation,
)

varints = st.integers(0, VARINT_MAX)
small = st.integers(0, 1 << 20)
blobs = st.binary(max_size=64)
cids = st.binary(min_size=0, max_size=MAX_CID_LENGTH)


@st.composite
def acks(draw: st.DrawFn) -> f.Ack:
    largest = draw(varints)
    first_range = draw(st.integers(0, min(largest, 1 << 16)))
    smallest = largest - first_range
    ranges = []
    for _ in range(draw(st.integers(0, 6))):
        if smallest < 2:
            break
        gap = draw(st.integers(0, min(smallest - 2, 1 << 14)))
        length = draw(st.integers(0, smallest - 2 - gap))
        smallest -= gap + 2 + length
        ranges.append((gap, length))
    ecn = draw(st.none() | st.tuples(varints, varints, varints))
    return f.Ack(largest, draw(varints), first_range, tuple(ranges), ecn)


@st.composite
def offsets_and_data(draw: st.DrawFn) -> tuple[int, bytes]:
    data = draw(blobs)
    return draw(st.integers(0, VARINT_MAX - len(data))), data


@st.composite
def streams(draw: st.DrawFn) -> f.Stream:
    offset, data = draw(offsets_and_data())
    return f.Stream(draw(varints), data, offset, draw(st.booleans()), draw(st.booleans()))


@st.composite
def cryptos(draw: st.DrawFn) -> f.Crypto:
    offset, data = draw(offsets_and_data())
    return f.Crypto(offset, data)


@st.composite
def new_connection_ids(draw: st.DrawFn) -> f.NewConnectionId:
    sequence = draw(varints)
    return f.NewConnectionId(sequence, draw(st.integers(0, sequence)),
                             draw(st.binary(min_size=1, max_size=MAX_CID_LENGTH)),
                             draw(st.binary(min_size=16, max_size=16)))


stream_counts = st.integers(0, f.MAX_STREAMS_LIMIT)

FRAME_STRATEGIES: dict[type[f.Frame], st.SearchStrategy[f.Frame]] = {
    f.Padding: st.builds(f.Padding, st.integers(1, 1500)),
    f.Ping: st.just(f.Ping()),
    f.Ack: acks(),
    f.ResetStream: st.builds(f.ResetStream, varints, varints, varints),
    f.StopSending: st.builds(f.StopSending, varints, varints),
    f.Crypto: cryptos(),
    f.NewToken: st.builds(f.NewToken, st.binary(min_size=1, max_size=64)),
    f.Stream: streams(),
    f.MaxData: st.builds(f.MaxData, varints),
    f.MaxStreamData: st.builds(f.MaxStreamData, varints, varints),
    f.MaxStreamsBidi: st.builds(f.MaxStreamsBidi, stream_counts),
    f.MaxStreamsUni: st.builds(f.MaxStreamsUni, stream_counts),
    f.DataBlocked: st.builds(f.DataBlocked, varints),
    f.StreamDataBlocked: st.builds(f.StreamDataBlocked, varints, varints),
    f.StreamsBlockedBidi: st.builds(f.StreamsBlockedBidi, stream_counts),
    f.StreamsBlockedUni: st.builds(f.StreamsBlockedUni, stream_counts),
    f.NewConnectionId: new_connection_ids(),
    f.RetireConnectionId: st.builds(f.RetireConnectionId, varints),
    f.PathChallenge: st.builds(f.PathChallenge, st.binary(min_size=8, max_size=8)),
    f.PathResponse: st.builds(f.PathResponse, st.binary(min_size=8, max_size=8)),
    f.ConnectionClose: st.builds(f.ConnectionClose, varints, varints, blobs),
    f.ApplicationClose: st.builds(f.ApplicationClose, varints, blobs),
    f.HandshakeDone: st.just(f.HandshakeDone()),
}

pn_lengths = st.integers(1, 4)


@st.composite
def long_headers(draw: st.DrawFn) -> LongHeader:
    packet_type = draw(st.sampled_from([PacketType.INITIAL, PacketType.ZERO_RTT,
                                        PacketType.HANDSHAKE]))
    pn_length = draw(pn_lengths)
    token = draw(blobs) if packet_type == PacketType.INITIAL else b""
    return LongHeader(packet_type, VELOCITY_VERSION, draw(cids), draw(cids),
                      draw(st.integers(0, (1 << (8 * pn_length)) - 1)), pn_length,
                      draw(st.integers(20, 1500)), token)


@st.composite
def short_headers(draw: st.DrawFn) -> ShortHeader:
    pn_length = draw(pn_lengths)
    return ShortHeader(draw(cids), draw(st.integers(0, (1 << (8 * pn_length)) - 1)), pn_length,
                       draw(st.booleans()), draw(st.booleans()))


retry_packets = st.builds(RetryPacket, st.just(VELOCITY_VERSION), cids, cids,
                          st.binary(min_size=1, max_size=64), st.binary(min_size=16, max_size=16),
                          st.integers(0, 15))
version_negotiations = st.builds(
    VersionNegotiation, cids, cids,
    st.lists(st.integers(1, (1 << 32) - 1), min_size=1, max_size=8).map(tuple),
    st.integers(0, 127))
