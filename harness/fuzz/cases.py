"""Fuzz cases and their generators. A ``Case`` is what one fuzz input puts on the wire,
written so a scenario can replay it byte for byte (``to_replay`` / ``from_replay``):

- ``frames``: a packet payload (frames, maybe malformed) in one correctly protected packet of
  a space (``initial``, ``handshake``, ``1rtt``) of a connection;
- ``datagram``: a raw datagram, from a socket that has no connection;
- ``hello``: edits to the client's CLIENT_HELLO before it is encoded (fields, and extensions
  set, dropped or added: transport parameters, server_key, pre_shared_key...);
- ``crypto``: how the Initial CRYPTO data goes out: ``pieces`` of (offset, start, end) over
  the client's own CLIENT_HELLO bytes, or over ``data`` in their place, one packet each.

Generators, by the names a ``fuzz`` step uses: ``layer`` names a scapy layer of
harness.layers (a frame layer by its lower-case name, ``frames`` for all of them; the packet
headers ``long_header``, ``short_header``, ``retry``, ``version_negotiation`` as datagrams;
a handshake message layer as the Initial CRYPTO data; ``server_key`` and
``pre_shared_key`` as CLIENT_HELLO extensions; a frame is followed, half of the time, by
one or two more of the chosen frame layers), fuzzed by scapy's ``fuzz()`` under a seed
(lengths computed unless ``lengths: true``); ``strategy`` names a hypothesis strategy
(``frames``, ``hello``, ``transport_parameters``, ``crypto``, ``datagrams``), drawn under
the seed. The same seed and count give the same cases."""

from __future__ import annotations

import contextlib
import dataclasses
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
from scapy.volatile import VolatileValue

from harness.fuzz import strategies as valid
from harness.layers import frames as fl
from harness.layers import messages as ml
from harness.layers import packets as pl
from harness.layers.fields import RandVarInt
from velocity.core.buffer import encode_varint, varint_at
from velocity.core.errors import BufferReadError
from velocity.core.frames import encode_frames
from velocity.core.handshake.messages import ClientHello, ExtensionType

SPACES = ("initial", "handshake", "1rtt")
MAX_PAYLOAD = 1100  # bytes of frames one packet carries (harness.scenario.build.MAX_FRAMES)
MAX_DATAGRAM = 1500
HELLO_FIELDS = ("random", "alpn", "profiles", "aeads", "key_share_profile", "key_share")


@dataclass(frozen=True)
class Case:
    kind: str  # "frames", "datagram", "hello" or "crypto"
    data: bytes = b""  # frames: the payload; datagram: the datagram; crypto: replacement data
    space: str = "1rtt"  # frames
    fields: tuple[tuple[str, Any], ...] = ()  # hello: CLIENT_HELLO field -> value
    extensions: tuple[tuple[str, int, bytes], ...] = ()  # hello: (op, type, value), below
    pieces: tuple[tuple[int, int, int], ...] = ()  # crypto: (offset, start, end)

    def describe(self) -> str:
        if self.kind == "frames":
            return f"{len(self.data)}-byte payload in a {self.space} packet: {self.data[:24].hex()}"
        if self.kind == "datagram":
            return f"{len(self.data)}-byte datagram: {self.data[:24].hex()}"
        if self.kind == "hello":
            return (f"CLIENT_HELLO with {', '.join(n for n, _ in self.fields) or 'no fields'} "
                    f"set, extensions {[(op, t) for op, t, _ in self.extensions]}")
        return (f"Initial CRYPTO in {len(self.pieces)} pieces"
                + (f" of {len(self.data)} bytes of its own" if self.data else ""))


# --- replay form (what a scenario writes) ------------------------------------------------

def _hex(data: bytes) -> dict[str, str]:
    return {"hex": data.hex()}


def _value(value: Any) -> Any:
    """A CLIENT_HELLO field value in YAML: bytes as {hex}, tuples as lists."""
    if isinstance(value, bytes):
        return _hex(value)
    if isinstance(value, tuple):
        return [_value(v) for v in value]
    return value


def _unvalue(value: Any) -> Any:
    if isinstance(value, dict):
        return bytes.fromhex(value["hex"])
    if isinstance(value, list):
        return tuple(_unvalue(v) for v in value)
    return value


def to_replay(case: Case) -> dict[str, Any]:
    """The ``replay`` value of a fuzz step that sends exactly ``case``."""
    out: dict[str, Any] = {"kind": case.kind}
    if case.kind == "frames":
        out.update(space=case.space, payload=_hex(case.data))
    elif case.kind == "datagram":
        out["datagram"] = _hex(case.data)
    elif case.kind == "hello":
        out["fields"] = {name: _value(value) for name, value in case.fields}
        out["extensions"] = [[op, kind, _hex(value)] for op, kind, value in case.extensions]
    else:
        out["pieces"] = [list(p) for p in case.pieces]
        if case.data:
            out["data"] = _hex(case.data)
    return out


def from_replay(replay: dict[str, Any]) -> Case:
    """The case a ``replay`` value names; ValueError (a message for the author) if bad."""
    try:
        kind = replay["kind"]
        if kind == "frames":
            return Case("frames", bytes.fromhex(replay["payload"]["hex"]),
                        space=replay.get("space", "1rtt"))
        if kind == "datagram":
            return Case("datagram", bytes.fromhex(replay["datagram"]["hex"]))
        if kind == "hello":
            unknown = sorted(set(replay.get("fields", {})) - set(HELLO_FIELDS))
            if unknown:
                raise ValueError(f"CLIENT_HELLO has no field {', '.join(unknown)}")
            return Case("hello", fields=tuple((n, _unvalue(v)) for n, v in
                                              replay.get("fields", {}).items()),
                        extensions=tuple((op, int(t), bytes.fromhex(v["hex"]))
                                         for op, t, v in replay.get("extensions", [])))
        if kind == "crypto":
            return Case("crypto", bytes.fromhex(replay.get("data", {"hex": ""})["hex"]),
                        pieces=tuple((int(o), int(s), int(e)) for o, s, e in replay["pieces"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"a bad replay: {exc}") from None
    raise ValueError(f"a bad replay: no case kind {kind!r}")


# --- applying a hello or crypto case to the client -------------------------------------------

def _parameters(block: bytes) -> list[tuple[int, bytes]]:
    """A well-formed transport parameter block as (id, value) pairs."""
    out, pos = [], 0
    while pos < len(block):
        pid, pos = varint_at(block, pos)
        size, pos = varint_at(block, pos)
        out.append((pid, block[pos:pos + size]))
        pos += size
    return out


def merge_parameters(own: bytes, block: bytes) -> bytes:
    """The client's own transport parameters with each parameter of ``block`` (any bytes:
    what does not parse is appended as it is) in the place of the client's of that id, or
    after them."""
    try:
        changes = _parameters(block)
    except BufferReadError:
        return own + block
    merged = dict(_parameters(own))
    merged.update(changes)
    return b"".join(encode_varint(pid) + encode_varint(len(value)) + value
                    for pid, value in merged.items())


def edit_hello(case: Case, hello: ClientHello) -> ClientHello:
    """``hello`` with the case's fields set and its extension edits made, in order: ``set``
    (replace the value, or add the extension), ``drop``, ``add`` (even a repeat), and
    ``merge`` (the client's own transport parameters, changed as ``merge_parameters``
    says)."""
    extensions = list(hello.extensions)
    for op, kind, value in case.extensions:
        if op == "merge":
            extensions = [(k, merge_parameters(v, value) if k == kind else v)
                          for k, v in extensions]
        elif op == "drop":
            extensions = [e for e in extensions if e[0] != kind]
        elif op == "set" and any(e[0] == kind for e in extensions):
            extensions = [(k, value if k == kind else v) for k, v in extensions]
        else:  # add (or set of an extension the client did not send)
            extensions.append((kind, value))
    return dataclasses.replace(hello, **dict(case.fields), extensions=tuple(extensions))


def crypto_pieces(case: Case, data: bytes) -> list[tuple[int, bytes]]:
    """The CRYPTO (offset, bytes) pieces of a crypto case over the client's ``data``."""
    source = case.data or data
    return [(offset, source[start:end]) for offset, start, end in case.pieces]


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
    that is then written (scapy draws a volatile value again each time it reads it)."""
    layer: Packet | None = packet
    while layer is not None and layer.fields_desc:
        for fld in layer.fields_desc:
            value = layer.getfieldval(fld.name)
            if isinstance(value, VolatileValue):
                layer.setfieldval(fld.name, value._fix())
            elif isinstance(fld, PacketListField):
                for item in value:
                    freeze(item)
        layer = layer.payload if layer.payload else None
    return packet


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
PACKET_LAYERS = ("long_header", "short_header", "retry", "version_negotiation")
MESSAGE_LAYERS = {re.sub(r"(?<!^)(?=[A-Z])", "_", layer.__name__[1:]).lower(): layer
                  for layer in ml.MESSAGE_LAYERS.values()}  # client_hello, ...
EXTENSION_LAYERS = {"server_key": (ExtensionType.SERVER_KEY, ml.VServerKey),
                    "pre_shared_key": (ExtensionType.PRE_SHARED_KEY, ml.VPreSharedKey)}
LAYERS = ("frames", *FRAME_LAYERS, *PACKET_LAYERS, *MESSAGE_LAYERS, *EXTENSION_LAYERS)


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
            elif name in PACKET_LAYERS:
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
    "alpn": st.lists(st.binary(max_size=300), max_size=4).map(tuple),
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

STRATEGIES: dict[str, Callable[[str], st.SearchStrategy[Case]]] = {
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
    @given(STRATEGIES[name](space))
    def collect(case: Case) -> None:
        if len(drawn) < count:
            drawn.append(case)

    collect()
    return drawn


def option_problems(options: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, message) for each option a schema cannot check: unknown layers and the like."""
    out = []
    sources = sum(k in options for k in ("layer", "layers", "strategy", "replay"))
    if sources != 1:
        out.append(("", "fuzz takes one of layer, layers, strategy or replay"))
    for name in ([options["layer"]] if "layer" in options else options.get("layers", [])):
        if name not in LAYERS:
            out.append(("layer", f"no layer {name!r} (one of {', '.join(LAYERS)})"))
    if options.get("strategy", "frames") not in STRATEGIES:
        out.append(("strategy", f"no strategy {options['strategy']!r} (one of "
                                f"{', '.join(STRATEGIES)})"))
    for i, replay in enumerate(options.get("replay", [])):
        try:
            from_replay(replay)
        except ValueError as exc:
            out.append((f"replay[{i}]", str(exc)))
    return out


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
