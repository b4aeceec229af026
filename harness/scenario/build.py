"""What scenario values become on the wire: byte strings (``"text"``, ``{hex: ...}``,
``{repeat: ..., count: N}``), frames from dicts named like velocity.core.frames
dataclasses, handshake-message edits, the hooks a connect step installs on the core's seams
(through harness.peer.hostile), and hand-written datagrams (templates and byte mutations).
Each builder raises ValueError with a message a scenario author acts on; the loader calls
them at collection, the steps again at run time."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import Any

from harness.peer.hostile import (
    KEY_SHARES,
    SERVER_KEY_EDITS,
    crypto_chunks,
    key_share,
    packet_mutator,
    server_key_block,
)
from velocity.core.buffer import Writer
from velocity.core.connection import Connection
from velocity.core.errors import UsageError
from velocity.core.frames import FRAME_CLASSES, Frame, encode_frames
from velocity.core.handshake.messages import MESSAGE_CLASSES, Message, MessageType
from velocity.core.hybrid import PROFILES_BY_NAME
from velocity.core.packet import (
    MIN_INITIAL_DATAGRAM,
    VELOCITY_VERSION,
    Epoch,
    LongHeader,
    PacketType,
    push_long_header,
)
from velocity.core.protection import TAG_LENGTH, Aead, initial_keys

FRAMES: dict[str, type[Frame]] = {cls.NAME.lower(): cls for cls in FRAME_CLASSES}
MESSAGES: dict[str, type[Message]] = {MessageType(t).name: cls
                                      for t, cls in MESSAGE_CLASSES.items()}
SPACES: dict[str, tuple[Epoch, PacketType | None]] = {
    "initial": (Epoch.INITIAL, None), "handshake": (Epoch.HANDSHAKE, None),
    "0rtt": (Epoch.APPLICATION, PacketType.ZERO_RTT), "1rtt": (Epoch.APPLICATION, None)}
DATAGRAM_TEMPLATES = ("garbage", "version_negotiation_probe")
MAX_REPEAT = 1 << 20
MAX_FRAMES = 1100  # bytes of frames one sent packet carries, whatever the path's MTU
UNKNOWN_VERSION = 0x1A2A3A4A  # a reserved version (VEL-VN-005's pattern)


def to_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, dict) and isinstance(value.get("hex"), str):
        return bytes.fromhex(value["hex"])  # ValueError when it is not hex
    if (isinstance(value, dict) and isinstance(value.get("repeat"), str)
            and isinstance(value.get("count"), int) and 0 <= value["count"] <= MAX_REPEAT):
        return str(value["repeat"]).encode() * int(value["count"])
    raise ValueError(f"{value!r} is not bytes: give \"text\", {{hex: ...}} or "
                     f"{{repeat: ..., count: N}} (N up to {MAX_REPEAT})")


def _number(value: Any) -> int:
    """An integer field: a number, or a profile or AEAD name (their code points)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value in PROFILES_BY_NAME:
        return PROFILES_BY_NAME[value].code
    if isinstance(value, str) and value in Aead.__members__:
        return int(Aead[value])
    raise ValueError(f"{value!r} is not a number (or a profile or AEAD name)")


def _field_value(annotation: str, value: Any) -> Any:
    """``value`` as a dataclass field annotated ``annotation`` takes it."""
    if annotation.startswith("bytes"):
        return to_bytes(value)
    if annotation.startswith("bool"):
        if not isinstance(value, bool):
            raise ValueError(f"{value!r} is not true or false")
        return value
    if annotation.startswith("int"):
        return _number(value)
    if annotation == "Extensions":  # a message's extensions: [[type, bytes], ...]
        if not isinstance(value, list) or not all(isinstance(v, list) and len(v) == 2
                                                  for v in value):
            raise ValueError(f"{value!r} is not a list of [type, bytes] pairs")
        return tuple((_number(kind), to_bytes(data)) for kind, data in value)
    if annotation.startswith("tuple"):
        if value is None and annotation.endswith("None"):
            return None
        if not isinstance(value, list):
            raise ValueError(f"{value!r} is not a list")
        if annotation.startswith("tuple[bytes"):
            return tuple(to_bytes(v) for v in value)
        return tuple(tuple(_number(x) for x in v) if isinstance(v, list) else _number(v)
                     for v in value)
    raise ValueError(f"a field of type {annotation} cannot be set from a scenario")


def fields_of(cls: type[Any], values: dict[str, Any], what: str) -> dict[str, Any]:
    """``values`` as the fields of dataclass ``cls`` take them; unknown names refused."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{what} has no field {', '.join(unknown)} (fields: "
                         f"{', '.join(fields) or 'none'})")
    converted = {}
    for name, value in values.items():
        try:
            converted[name] = _field_value(str(fields[name].type), value)
        except ValueError as exc:
            raise ValueError(f"{what}, field {name}: {exc}") from None
    return converted


def frame(spec: dict[str, Any]) -> Frame:
    """A frame from ``{type: stream, stream_id: 0, data: "..."}``."""
    name = spec["type"]
    cls = FRAMES.get(name)
    if cls is None:
        raise ValueError(f"no frame type {name!r} (one of {', '.join(FRAMES)})")
    values = {k: v for k, v in spec.items() if k != "type"}
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in values
               and f.default is dataclasses.MISSING]
    if missing:
        raise ValueError(f"a {name} frame needs {', '.join(missing)}")
    built = cls(**fields_of(cls, values, f"a {name} frame"))
    try:
        encode_frames([built])  # any value may be wrong, but it must be encodable
    except (UsageError, ValueError, OverflowError) as exc:
        raise ValueError(f"a {name} frame cannot be encoded: {exc}") from None
    return built


def oversized(built: list[Frame]) -> str | None:
    """Why the frames of one ``send`` do not fit the one packet they go in, if they do not."""
    size = len(encode_frames(built))
    if size <= MAX_FRAMES:
        return None
    return (f"the frames of one send take {size} bytes; one packet carries at most "
            f"{MAX_FRAMES}: split them over several sends")


def frames(specs: list[dict[str, Any]]) -> list[Frame]:
    """The frames of one ``send``; raises ValueError (see ``frame`` and ``oversized``)."""
    built = [frame(spec) for spec in specs]
    problem = oversized(built)
    if problem is not None:
        raise ValueError(problem)
    return built


def message_hook(edits: dict[str, dict[str, Any]]) -> Callable[[Message], Message | None]:
    """The handshake-message seam: ``{CLIENT_HELLO: {set: {alpn: [h3]}}}`` changes fields
    of that message before it is encoded and hashed; ``{drop: true}`` sends nothing."""
    changes: dict[type[Message], dict[str, Any] | None] = {
        MESSAGES[name]: None if edit.get("drop") else fields_of(
            MESSAGES[name], edit.get("set", {}), name)
        for name, edit in edits.items()}

    def hook(message: Message) -> Message | None:
        if type(message) not in changes:
            return message
        fields = changes[type(message)]
        return None if fields is None else dataclasses.replace(message, **fields)

    return hook


def install_hooks(connection: Connection, hooks: dict[str, Any]) -> None:
    """Set the core's seams on ``connection`` as a connect (or hook) step's ``hooks`` say."""
    if "message" in hooks:
        connection.handshake.message_hook = message_hook(hooks["message"])
    if "server_key" in hooks:
        connection.handshake.message_hook = server_key_block(hooks["server_key"])
    if "crypto" in hooks:
        crypto = hooks["crypto"]
        connection.seams.crypto_policy = crypto_chunks(
            list(crypto.get("chunks", [100])), order=crypto.get("order", "forward"),
            overlap=crypto.get("overlap", 0), duplicate=crypto.get("duplicate", False))
    if "packets" in hooks:
        packets = hooks["packets"]
        connection.seams.packet_mutator = packet_mutator(
            drop=tuple(packets.get("drop", ())), duplicate=tuple(packets.get("duplicate", ())),
            reorder=packets.get("reorder", False),
            epochs=tuple(SPACES[n][0] for n in packets["spaces"]) if "spaces" in packets else None)
    if "key_share" in hooks:
        if not hasattr(connection.handshake, "key_share_factory"):
            raise ValueError("key_share hooks make a client's share: role client only")
        connection.handshake.key_share_factory = key_share(hooks["key_share"])


def check_hooks(hooks: dict[str, Any]) -> None:
    """Raise ValueError if ``hooks`` cannot be installed (checked at collection)."""
    message_hook(hooks.get("message", {}))
    if "message" in hooks and "server_key" in hooks:
        raise ValueError("server_key edits the CLIENT_HELLO as the message hook does: give "
                         "one of them")
    if "server_key" in hooks and hooks["server_key"] not in SERVER_KEY_EDITS:
        raise ValueError(f"server_key {hooks['server_key']!r} is not one of "
                         f"{', '.join(SERVER_KEY_EDITS)}")
    if "key_share" in hooks and hooks["key_share"] not in KEY_SHARES:
        raise ValueError(f"key_share {hooks['key_share']!r} is not one of "
                         f"{', '.join(KEY_SHARES)}")


def datagram(spec: dict[str, Any], rng: random.Random) -> bytes:
    """A hand-written datagram: ``{hex: ...}``, or ``{template: garbage|
    version_negotiation_probe, size: N}`` (default 1200 bytes)."""
    if "hex" in spec:
        return bytes.fromhex(spec["hex"])
    size = int(spec.get("size", 1200))
    name = spec["template"]
    if name == "garbage":
        return rng.randbytes(size)
    if name == "version_negotiation_probe":
        dcid, scid = rng.randbytes(8), rng.randbytes(8)
        head = (bytes([0xC0 | rng.randrange(16)]) + UNKNOWN_VERSION.to_bytes(4, "big")
                + bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid)
        return head + bytes(max(0, size - len(head)))
    raise ValueError(f"no datagram template {name!r} (one of {', '.join(DATAGRAM_TEMPLATES)})")


def late_initial(connection: Connection, frames: list[Frame], trailer: bytes = b"") -> bytes:
    """One Initial packet of ``connection`` after it discarded its Initial keys (VEL-PROT-013),
    as an endpoint that kept them would send it: sealed under the keys anyone derives from
    the DCID they came from (the first Initial's, or the Retry's SCID), numbered on from the
    connection's last Initial packet, padded to a whole 1200-byte datagram so that no size
    rule drops it."""
    space = connection.spaces[Epoch.INITIAL]
    number, space.next_packet_number = space.next_packet_number, space.next_packet_number + 1
    send, _ = initial_keys(connection.retry_scid or connection.original_dcid,
                           is_client=connection.is_client)
    payload = encode_frames(frames) + trailer
    token = connection.token if connection.is_client else b""
    header = LongHeader(PacketType.INITIAL, VELOCITY_VERSION, connection.peer_cid,
                        connection.host_cid, number, 4, 0, token)
    size = len(_long_header(header)) + len(payload) + TAG_LENGTH
    payload += bytes(max(0, MIN_INITIAL_DATAGRAM - size))  # PADDING frames
    header = dataclasses.replace(header, length=4 + len(payload) + TAG_LENGTH)
    return send.encrypt_packet(_long_header(header), payload, number)


def _long_header(header: LongHeader) -> bytes:
    writer = Writer()
    push_long_header(writer, header)
    return writer.data()


def mutate(data: bytes, operations: list[dict[str, Any]]) -> bytes:
    """Bytes (a datagram, a template's payload) after ``truncate``, ``pad`` and ``xor``
    operations, in order."""
    for operation in operations:
        if "truncate" in operation:
            data = data[: operation["truncate"]]
        elif "pad" in operation:
            data += bytes(operation["pad"])
        elif "xor" in operation:
            data = _xor(data, operation["xor"]["offset"], bytes.fromhex(operation["xor"]["mask"]))
        else:
            raise ValueError(f"{next(iter(operation))} applies to packet templates (send: "
                             "{template: ...}); a datagram takes truncate, pad and xor")
    return data


def _xor(data: bytes, offset: int, mask: bytes) -> bytes:
    if not 0 <= offset <= len(data) - len(mask):
        raise ValueError(f"xor at {offset} runs past the {len(data)} bytes it changes")
    end = offset + len(mask)
    return data[:offset] + bytes(a ^ b for a, b in zip(data[offset:end], mask, strict=True)
                                 ) + data[end:]
