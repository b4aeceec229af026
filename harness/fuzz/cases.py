"""The generators of fuzz cases (harness.fuzz.case), by the names a ``fuzz`` step uses:
``layer`` names a scapy layer of harness.layers (a frame layer by its lower-case name,
``frames`` for all of them; the packet headers ``long_header``, ``short_header``,
``retry``, ``version_negotiation`` as datagrams; a handshake message layer as the Initial
CRYPTO data; ``server_key`` and ``pre_shared_key`` as CLIENT_HELLO extensions; a frame is
followed, half of the time, by one or two more of the chosen frame layers), fuzzed by
scapy's ``fuzz()`` under a seed (lengths computed unless ``lengths: true``); ``strategy``
names a hypothesis strategy (``frames``, ``hello``, ``transport_parameters``, ``crypto``,
``datagrams``), drawn under the seed. The same seed and count give the same cases."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from scapy.fields import FieldLenField, PacketListField
from scapy.packet import Packet, fuzz
from scapy.volatile import RandBin, VolatileValue

from harness.fuzz import strategies as valid
from harness.fuzz.case import (
    EXTENSION_NAMES,
    FRAME_NAMES,
    HELLO_FIELDS,
    MAX_DATAGRAM,
    MAX_PAYLOAD,
    MESSAGE_NAMES,
    PACKET_NAMES,
    Case,
)
from harness.layers import frames as fl
from harness.layers import messages as ml
from harness.layers import packets as pl
from harness.layers.fields import RandVarInt
from velocity.core.buffer import encode_varint
from velocity.core.frames import encode_frames
from velocity.core.handshake.messages import ExtensionType

# --- scapy layers ----------------------------------------------------------------------------

@contextlib.contextmanager
def seeded(seed: str) -> Iterator[None]:
    """scapy's random values come from the ``random`` module: seed it, then restore it."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def freeze(packet: Packet) -> Packet:
    """Fix every random value of a fuzzed packet once, so a length field counts the value
    that is then written (scapy draws a volatile value again each time it reads it), and
    mark each layer explicit: it has no generator left for a build to expand."""
    layer: Packet | None = packet
    while layer is not None and layer.fields_desc:
        for fld in layer.fields_desc:
            value = layer.getfieldval(fld.name)
            if isinstance(value, VolatileValue):
                layer.setfieldval(fld.name, _fix(value))
            elif isinstance(fld, PacketListField):
                for item in value:
                    freeze(item)
        layer.explicit = 1
        layer = layer.payload if layer.payload else None
    return packet


EVERY_BYTE = bytes(range(256))


def _fix(value: VolatileValue[Any]) -> Any:
    """A volatile value's draw. A RandBin over every byte value is drawn in one call (its
    own draw takes a ``random.choice`` a byte): the same size distribution, any bytes."""
    if type(value) is RandBin and value.chars == EVERY_BYTE:
        return random.randbytes(int(value.size))
    return value._fix()


def _mutate_lengths(packet: Packet) -> None:
    """Set each length field of ``packet`` (and its list items) to a random value, half of
    the time: the lengths a case mutates instead of computing."""
    for fld in packet.fields_desc:
        if isinstance(fld, FieldLenField) and random.random() < 0.5:
            size = {"B": 1, "H": 2, "I": 4}.get(fld.fmt[-1])
            packet.setfieldval(fld.name, random.randrange(1 << (8 * size)) if size
                               else RandVarInt()._fix())
        elif isinstance(fld, PacketListField):
            for item in packet.getfieldval(fld.name):
                _mutate_lengths(item)


def _fuzzed(layer: type[Packet], lengths: bool, **fixed: Any) -> bytes:
    packet = freeze(fuzz(layer(**fixed)))
    if lengths:
        _mutate_lengths(packet)
    return bytes(packet)


FRAME_LAYERS = {name.lower(): layer for name, layer in fl.LAYERS_BY_NAME.items()}
_FRAME_TYPES = {name: [t for t, layer in fl.FRAME_LAYERS.items() if layer is cls]
                for name, cls in FRAME_LAYERS.items()}
MESSAGE_LAYERS = {re.sub(r"(?<!^)(?=[A-Z])", "_", layer.__name__[1:]).lower(): layer
                  for layer in ml.MESSAGE_LAYERS.values()}  # client_hello, ...
EXTENSION_LAYERS = {"server_key": (ExtensionType.SERVER_KEY, ml.VServerKey),
                    "pre_shared_key": (ExtensionType.PRE_SHARED_KEY, ml.VPreSharedKey)}
assert (set(FRAME_LAYERS), set(MESSAGE_LAYERS), set(EXTENSION_LAYERS)) == (
    set(FRAME_NAMES), set(MESSAGE_NAMES), set(EXTENSION_NAMES))  # the names steps take


def _items(cls: type[Packet]) -> list[Packet]:
    return [cls() for _ in range(random.randrange(4))]


def _frame(name: str, lengths: bool) -> bytes:
    extra: dict[str, Any] = {}
    if name == "ack":
        extra["ranges"] = _items(fl.VAckRange)
    return _fuzzed(FRAME_LAYERS[name], lengths, type=random.choice(_FRAME_TYPES[name]), **extra)


def _frame_case(name: str, others: list[str], space: str, lengths: bool) -> Case:
    """A fuzzed frame of layer ``name``, half of the time followed by one or two more of
    ``others`` in the same packet."""
    data = _frame(name, lengths)
    if random.random() < 0.5:
        data += b"".join(_frame(random.choice(others), lengths)
                         for _ in range(random.randint(1, 2)))
    return Case("frames", data[:MAX_PAYLOAD], space=space)


def _packet_case(name: str, lengths: bool) -> Case:
    version = {} if random.random() < 0.3 else {"version": pl.VELOCITY_VERSION}
    if name == "long_header":
        head = _fuzzed(pl.VLongHeader, lengths, form=1, fixed=1, **version)
    elif name == "short_header":
        head = _fuzzed(pl.short_header_layer(random.choice((0, 8, 20))), lengths, form=0)
    elif name == "retry":
        head = _fuzzed(pl.VRetry, lengths, form=1, packet_type=3, **version)
    else:
        head = _fuzzed(pl.VVersionNegotiation, lengths, form=1, version=0)
    size = random.choice((len(head), 1200, random.randint(len(head), max(len(head), MAX_DATAGRAM))))
    tail = random.randbytes(max(0, size - len(head)))
    return Case("datagram", (head + tail)[:MAX_DATAGRAM])


def _message_case(name: str, lengths: bool) -> Case:
    layer = MESSAGE_LAYERS[name]
    lists = {f.name: _items(f.cls) for f in layer.fields_desc  # type: ignore[arg-type]
             if isinstance(f, PacketListField)}
    data = _fuzzed(layer, lengths, **lists)
    return Case("crypto", data, pieces=tuple((at, at, min(at + 1000, len(data)))
                                             for at in range(0, len(data), 1000)))


def _extension_case(name: str, lengths: bool) -> Case:
    kind, layer = EXTENSION_LAYERS[name]
    return Case("hello", extensions=(("set", int(kind), _fuzzed(layer, lengths)),))


def layer_cases(names: list[str], count: int, seed: str, *, space: str = "1rtt",
                lengths: bool = False) -> list[Case]:
    """``count`` cases from scapy's ``fuzz()`` over the layers ``names``, in turn."""
    chosen = [n for name in names for n in (FRAME_LAYERS if name == "frames" else [name])]
    out = []
    for index in range(count):
        name = chosen[index % len(chosen)]
        with seeded(f"{seed}/{index}"):
            if name in FRAME_LAYERS:
                others = [n for n in chosen if n in FRAME_LAYERS]
                out.append(_frame_case(name, others, space, lengths))
            elif name in PACKET_NAMES:
                out.append(_packet_case(name, lengths))
            elif name in MESSAGE_LAYERS:
                out.append(_message_case(name, lengths))
            else:
                out.append(_extension_case(name, lengths))
    return out


# --- hypothesis strategies -------------------------------------------------------------------

def _payloads(frames: list[Any]) -> bytes:
    return encode_frames(frames)[:MAX_PAYLOAD]


def frame_cases(space: str) -> st.SearchStrategy[Case]:
    """Valid frames of every type (harness.fuzz.strategies), one to four a packet, in a
    space that may not allow them."""
    frames = st.lists(st.one_of(*valid.FRAME_STRATEGIES.values()), min_size=1, max_size=4)
    return frames.map(lambda f: Case("frames", _payloads(f), space=space))


_bytes_of = st.binary(max_size=300)
_sizes = st.sampled_from([0, 1, 31, 32, 33, 63, 64, 255, 256, 800, 1184, 1568, 1700])
_odd_bytes = _bytes_of | _sizes.flatmap(lambda n: st.binary(min_size=n, max_size=n))
_codes = st.integers(0, 0xFFFF) | st.sampled_from([0x0001, 0x0002, 0x0003, 0x1301, 0x1302])
_extension_types = st.integers(0, 4) | st.integers(0, 10).map(lambda k: 27 + 31 * k) | (
    st.integers(0, (1 << 62) - 1))


@st.composite
def _server_keys(draw: st.DrawFn) -> bytes:
    key_id, ciphertext = draw(st.binary(max_size=64)), draw(_odd_bytes)
    return bytes([len(key_id)]) + key_id + encode_varint(len(ciphertext)) + ciphertext


@st.composite
def _pre_shared_keys(draw: st.DrawFn) -> bytes:
    identity, binder = draw(_odd_bytes), draw(st.binary(max_size=80))
    return (encode_varint(len(identity)) + identity + draw(st.binary(min_size=4, max_size=4))
            + bytes([len(binder)]) + binder)


_EDGES = [0, 1, 2, 3, 20, 21, 63, 64, 1199, 1200, 1452, 16383, 16384, 65527, 65528,
          (1 << 60), (1 << 60) + 1, (1 << 62) - 1]


@st.composite
def transport_parameter_blocks(draw: st.DrawFn) -> bytes:
    """Transport parameters: known ids (some repeated) and unknown ones, with values of
    good and bad lengths, edge values and varints of every size, non-minimal encodings,
    byte strings."""
    ids = st.integers(0, 0x10) | st.integers(0, 12).map(lambda k: 27 + 31 * k) | (
        st.integers(0, (1 << 62) - 1))
    numbers = st.sampled_from(_EDGES) | st.integers(0, (1 << 62) - 1)
    values = (numbers.map(encode_varint) | numbers.map(lambda n: encode_varint(n, 8))
              | st.binary(max_size=24) | st.just(b""))
    out = b""
    for pid, value in draw(st.lists(st.tuples(ids, values), max_size=8)):
        out += encode_varint(pid) + encode_varint(len(value)) + value
    return out


_extension_edits = st.tuples(st.sampled_from(["set", "drop", "add"]), _extension_types,
                             _odd_bytes) | st.tuples(
    st.just("set"), st.just(int(ExtensionType.SERVER_KEY)), _server_keys()) | st.tuples(
    st.just("add"), st.just(int(ExtensionType.PRE_SHARED_KEY)), _pre_shared_keys())
_hello_fields = {
    "random": _odd_bytes,
    "alpn": st.lists(st.binary(max_size=255), max_size=4).map(tuple),  # a vec8 each
    "profiles": st.lists(_codes, max_size=4).map(tuple),
    "aeads": st.lists(_codes, max_size=4).map(tuple),
    "key_share_profile": _codes,
    "key_share": _odd_bytes,
}


@st.composite
def hello_cases(draw: st.DrawFn) -> Case:
    """CLIENT_HELLO field values (lengths, shares, key ids, ALPN lists) and extension edits
    (server_key, pre_shared_key with tickets and binders, unknown and repeated types)."""
    names = draw(st.lists(st.sampled_from(HELLO_FIELDS), max_size=3, unique=True))
    fields = tuple((name, draw(_hello_fields[name])) for name in names)
    return Case("hello", fields=fields, extensions=tuple(draw(st.lists(_extension_edits,
                                                                       max_size=3))))


transport_parameter_cases = st.tuples(st.sampled_from(["merge", "merge", "set"]),
                                      transport_parameter_blocks()).map(lambda t: Case(
    "hello", extensions=((t[0], int(ExtensionType.TRANSPORT_PARAMETERS), t[1]),)))
"""The client's transport parameters changed (mostly merged into its own, so the block
keeps its valid initial_source_connection_id and the server goes on with the values), or
replaced whole."""


@st.composite
def crypto_cases(draw: st.DrawFn) -> Case:
    """The CLIENT_HELLO's CRYPTO data cut into pieces of any sizes, in any order, with
    overlaps, repeats and gaps, and now and then at a far or shifted offset."""
    cuts = sorted(draw(st.lists(st.integers(1, 2000), max_size=8, unique=True)))
    bounds = [0, *cuts, 1 << 20]
    pieces = [(start, start, end) for start, end in itertools.pairwise(bounds)]
    pieces = draw(st.permutations(pieces))
    extra = draw(st.lists(st.tuples(st.integers(0, (1 << 62) - 1) | st.integers(0, 4000),
                                    st.integers(0, 2000), st.integers(0, 2000)), max_size=2))
    order = [*pieces, *((o, min(s, e), max(s, e)) for o, s, e in extra)]
    if draw(st.booleans()) and order:
        order.append(order[0])
    return Case("crypto", pieces=tuple(order))


datagram_cases = st.one_of(
    st.binary(min_size=1, max_size=MAX_DATAGRAM),
    st.tuples(st.sampled_from([0xC0, 0xC1, 0xD0, 0xE0, 0xF0, 0x40, 0x41, 0x80]),
              st.sampled_from([0x56553100, 0, 1, 0x1A2A3A4A]),
              st.binary(max_size=300), st.integers(0, MAX_DATAGRAM)).map(
        lambda t: (bytes([t[0]]) + t[1].to_bytes(4, "big") + t[2]).ljust(t[3], b"\x00"))
).map(lambda data: Case("datagram", data[:MAX_DATAGRAM]))

GENERATORS: dict[str, Callable[[str], st.SearchStrategy[Case]]] = {
    "frames": frame_cases,
    "hello": lambda space: hello_cases(),
    "transport_parameters": lambda space: transport_parameter_cases,
    "crypto": lambda space: crypto_cases(),
    "datagrams": lambda space: datagram_cases,
}


def strategy_cases(name: str, count: int, seed: str, *, space: str = "1rtt") -> list[Case]:
    """``count`` draws (fewer if the strategy has fewer distinct values) of a strategy,
    the same ones for the same seed."""
    drawn: list[Case] = []

    @hypothesis_seed(int(hashlib.sha256(seed.encode()).hexdigest()[:16], 16))
    @settings(max_examples=count, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck), derandomize=False)
    @given(GENERATORS[name](space))
    def collect(case: Case) -> None:
        if len(drawn) < count:
            drawn.append(case)

    collect()
    return drawn


@dataclass(frozen=True)
class Source:
    """What a fuzz step draws its cases from."""

    layers: tuple[str, ...] = ()
    strategy: str | None = None
    space: str = "1rtt"
    lengths: bool = False

    def cases(self, count: int, seed: str) -> list[Case]:
        if self.strategy is not None:
            return strategy_cases(self.strategy, count, seed, space=self.space)
        return layer_cases(list(self.layers), count, seed, space=self.space,
                           lengths=self.lengths)
