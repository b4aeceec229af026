"""Fuzz cases as data, without the generators (harness.fuzz.cases draws them with scapy and
hypothesis, which are slow to import): ``Case``, its replay form (what a written scenario
holds), how a hello or crypto case changes what the client sends, and the checks of a
``fuzz`` step's options at collection. A ``Case`` is what one fuzz input puts on the wire:

- ``frames``: a packet payload (frames, maybe malformed) in one correctly protected packet of
  a space (``initial``, ``handshake``, ``1rtt``) of a connection;
- ``datagram``: a raw datagram, from a socket that has no connection;
- ``hello``: edits to the client's CLIENT_HELLO before it is encoded (fields, and extensions
  set, dropped, added or, for transport parameters, merged into the client's own);
- ``crypto``: how the Initial CRYPTO data goes out: ``pieces`` of (offset, start, end) over
  the client's own CLIENT_HELLO bytes, or over ``data`` in their place, one packet each."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from velocity.core.buffer import encode_varint, varint_at
from velocity.core.errors import BufferReadError
from velocity.core.frames import FRAME_CLASSES
from velocity.core.handshake.messages import ClientHello, MessageType

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


# --- the names a fuzz step takes ------------------------------------------------------------

FRAME_NAMES = tuple(cls.NAME.lower() for cls in FRAME_CLASSES)  # the frame layers' names
PACKET_NAMES = ("long_header", "short_header", "retry", "version_negotiation")
MESSAGE_NAMES = tuple(t.name.lower() for t in MessageType)  # client_hello, ...
EXTENSION_NAMES = ("server_key", "pre_shared_key")
LAYERS = ("frames", *FRAME_NAMES, *PACKET_NAMES, *MESSAGE_NAMES, *EXTENSION_NAMES)
STRATEGIES = ("frames", "hello", "transport_parameters", "crypto", "datagrams")


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
