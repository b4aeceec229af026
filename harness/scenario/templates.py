"""Packet templates of ``send``: packets the real core plans (their frames, numbers and
keys), changed by ``mutate`` between planning and sealing through the core's packet-mutator
seam, so the changes reach the parsers behind packet protection. ``client_initial`` is the
first flight of a connection whose connect held it (the Initial packets carrying its
CLIENT_HELLO, padded as the core pads them), ``handshake_finished`` the Handshake packet
carrying its FINISHED, and ``initial``, ``handshake``, ``zero_rtt`` and ``one_rtt`` one
packet of that space carrying the step's ``frames``. Packet operations (``set`` of a
header or frame field, ``truncate``, ``pad``, ``xor`` and ``split_crypto`` of the payload)
apply to every packet of the template; ``reorder``, ``duplicate`` and ``drop`` to the
datagrams that carry them."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Callable
from typing import Any

from harness.peer import ClientPeer
from harness.scenario import build
from harness.scenario.context import StepFailed
from velocity.core.connection import Connection
from velocity.core.errors import ProtocolError
from velocity.core.frames import Crypto, Frame, decode_frames, encode_frames
from velocity.core.packet import Epoch
from velocity.core.seams import HeaderEdits, PacketMutator, PlannedPacket

FRAME_TEMPLATES = {"initial": "initial", "handshake": "handshake", "zero_rtt": "0rtt",
                   "one_rtt": "1rtt"}
"""A template carrying the step's frames -> the space it is sent in."""
FLIGHT_TEMPLATES = ("client_initial", "handshake_finished")
TEMPLATES = (*FLIGHT_TEMPLATES, *FRAME_TEMPLATES)
HEADER_FIELDS = {f.name: str(f.type) for f in dataclasses.fields(HeaderEdits)}
DATAGRAM_OPERATIONS = ("reorder", "duplicate", "drop")
_FRAME_FIELD = re.compile(r"frames\[(\d+)\]\.([a-z_]+)")
FINISHED_WAIT = 2.0  # seconds handshake_finished waits for the FINISHED, within the budget

Edit = Callable[[PlannedPacket], PlannedPacket]


def _header_value(name: str, value: Any) -> Any:
    if HEADER_FIELDS[name].startswith("bytes"):
        return build.to_bytes(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"header.{name} takes a number, not {value!r}")
    bounds = {"reserved_bits": 3, "pn_length": 4, "version": (1 << 32) - 1,
              "length": (1 << 30) - 1}
    if value > bounds[name] or (name == "pn_length" and value < 1):
        raise ValueError(f"header.{name} is at most {bounds[name]}"
                         + (" and at least 1" if name == "pn_length" else ""))
    return value


def _set_frame(frames: list[Frame], index: int, name: str, value: Any) -> list[Frame]:
    if index >= len(frames):
        raise ValueError(f"frames[{index}] names no frame: the packet has {len(frames)}")
    frame = frames[index]
    what = f"frames[{index}] ({frame.NAME.lower()})"
    changed = dataclasses.replace(frame, **build.fields_of(type(frame), {name: value}, what))
    return [*frames[:index], changed, *frames[index + 1:]]


def split_crypto(frames: list[Frame], sizes: list[int]) -> list[Frame]:
    """Each CRYPTO frame cut into frames of ``sizes`` bytes (the last size repeats)."""
    out: list[Frame] = []
    for frame in frames:
        if not isinstance(frame, Crypto):
            out.append(frame)
            continue
        start, index = 0, 0
        while True:
            size = sizes[min(index, len(sizes) - 1)]
            out.append(Crypto(frame.offset + start, frame.data[start : start + size]))
            start, index = start + size, index + 1
            if start >= len(frame.data):
                break
    return out


def packet_edit(operations: list[dict[str, Any]]) -> Edit:
    """What the packet operations of ``mutate`` do to one planned packet, in order."""
    def edit(packet: PlannedPacket) -> PlannedPacket:
        header, payload = packet.header, packet.payload
        for operation in operations:
            if "set" in operation:
                path, value = operation["set"], operation["value"]
                if path.startswith("header."):
                    name = path.removeprefix("header.")
                    header = dataclasses.replace(header, **{name: _header_value(name, value)})
                    continue
                found = _FRAME_FIELD.fullmatch(path)
                assert found is not None  # checked at collection
                payload = encode_frames(_set_frame(_frames(packet, payload), int(found[1]),
                                                   found[2], value))
            elif "split_crypto" in operation:
                payload = encode_frames(split_crypto(_frames(packet, payload),
                                                     operation["split_crypto"]))
            elif not any(k in operation for k in DATAGRAM_OPERATIONS):
                payload = build.mutate(payload, [operation])
        return dataclasses.replace(packet, header=header, payload=payload)

    return edit


def _frames(packet: PlannedPacket, payload: bytes) -> list[Frame]:
    try:
        return decode_frames(payload, packet.packet_type, check_space=False)
    except ProtocolError as exc:
        raise ValueError(f"the payload no longer decodes as frames ({exc}): set frame "
                         "fields before truncating or xoring it") from None


def datagram_edit(operations: list[dict[str, Any]]) -> Callable[[list[bytes]], list[bytes]]:
    """What ``reorder`` (the datagrams in that order, those not named after them),
    ``duplicate`` (that one sent twice) and ``drop`` (that one not sent) do, in order."""
    def edit(datagrams: list[bytes]) -> list[bytes]:
        for operation in operations:
            kind = next((k for k in DATAGRAM_OPERATIONS if k in operation), None)
            if kind is None:
                continue
            named = operation[kind] if kind == "reorder" else [operation[kind]]
            if any(i >= len(datagrams) for i in named):
                raise ValueError(f"{kind} names datagram {max(named)}, but the template "
                                 f"went out in {len(datagrams)}")
            if kind == "reorder":
                datagrams = [datagrams[i] for i in named] + [
                    d for i, d in enumerate(datagrams) if i not in named]
            elif kind == "duplicate":
                i = operation[kind]
                datagrams = [*datagrams[: i + 1], datagrams[i], *datagrams[i + 1:]]
            else:
                datagrams = [d for i, d in enumerate(datagrams) if i != operation[kind]]
        return datagrams

    return edit


def problems(options: dict[str, Any]) -> list[str]:
    """Why the template of a ``send`` step cannot be built (checked at collection)."""
    name, operations = options["template"], options.get("mutate", [])
    if name not in TEMPLATES:
        return [f"no packet template {name!r} (one of {', '.join(TEMPLATES)})"]
    found = ["a template or a datagram: give one"] if "datagram" in options else []
    if (name in FRAME_TEMPLATES) != ("frames" in options):
        found.append(f"the {name} template " + ("carries the step's frames: give them"
                     if name in FRAME_TEMPLATES else "takes no frames (it has its own)"))
    if "space" in options:
        found.append("a template has its own space: leave space out")
    if "raw" in options:
        found.append("raw follows the frames of a send of frames; a template's payload "
                     "changes with mutate (pad, xor)")
    frames = [build.frame(f) for f in options.get("frames", [])] if "frames" in options else []
    for operation in operations:
        try:
            _check_operation(name, operation, frames)
        except ValueError as exc:
            found.append(str(exc))
    return found


def _check_operation(name: str, operation: dict[str, Any], frames: list[Frame]) -> None:
    if "set" in operation:
        path = operation["set"]
        if path.startswith("header."):
            field = path.removeprefix("header.")
            if field not in HEADER_FIELDS:
                raise ValueError(f"no header field {field!r} (fields: "
                                 f"{', '.join(HEADER_FIELDS)})")
            _header_value(field, operation["value"])
            return
        found = _FRAME_FIELD.fullmatch(path)
        if found is None:
            raise ValueError(f"set {path!r}: give header.FIELD or frames[N].FIELD")
        if frames:
            _set_frame(frames, int(found[1]), found[2], operation["value"])
    elif any(k in operation for k in DATAGRAM_OPERATIONS) and name == "handshake_finished":
        raise ValueError("the FINISHED leaves with the target's flight: reorder, duplicate "
                         "and drop apply to the other templates")


class _Armed:
    """A packet mutator, in front of the connection's own, that edits the template's
    packets: those ``wanted`` says, at most ``limit`` of them (None: any number)."""

    def __init__(self, connection: Connection, wanted: Callable[[PlannedPacket], bool],
                 edit: Edit, limit: int | None) -> None:
        self.connection, self.wanted, self.edit, self.limit = connection, wanted, edit, limit
        self.previous: PacketMutator | None = connection.seams.packet_mutator
        self.edited = 0
        self.done = asyncio.Event()
        self.error: ValueError | None = None
        connection.seams.packet_mutator = self

    def __call__(self, packets: list[PlannedPacket]) -> list[PlannedPacket]:
        out = []
        for planned in packets:
            packet = planned
            if self.wanted(packet) and (self.limit is None or self.edited < self.limit):
                self.edited += 1
                try:
                    packet = self.edit(planned)
                except ValueError as exc:
                    self.error = self.error or exc
                if self.edited == self.limit:
                    self.disarm()
            out.append(packet)
        return out if self.previous is None else self.previous(out)

    def disarm(self) -> None:
        if self.connection.seams.packet_mutator is self:
            self.connection.seams.packet_mutator = self.previous
        self.done.set()


def _carries_crypto(packet: PlannedPacket) -> bool:
    try:
        return any(isinstance(f, Crypto) for f in decode_frames(
            packet.payload, packet.packet_type, check_space=False))
    except ProtocolError:
        return False


async def send(peer: ClientPeer, options: dict[str, Any],
               wait: float) -> tuple[dict[str, Any], list[bytes]]:
    """Send the template ``options`` describe on ``peer``'s connection; what the harness's
    transcript notes of it, and the datagrams sent. Raises ValueError for a template the
    run cannot build (a ``client_initial`` whose flight already left, a space without
    keys) and StepFailed for a FINISHED that did not come within ``wait`` seconds."""
    name, operations = options["template"], options.get("mutate", [])
    connection = peer.connection
    edit = packet_edit(operations)
    if name == "handshake_finished":
        armed = _Armed(connection, lambda p: p.epoch == Epoch.HANDSHAKE and _carries_crypto(p),
                       edit, 1)
        try:
            await asyncio.wait_for(armed.done.wait(), wait)
        except TimeoutError:
            armed.disarm()
            raise StepFailed(f"the connection sent no FINISHED within {wait:g} s (the "
                             "target's flight did not come, or the template was sent after "
                             "it: send it right after a connect with wait: none)",
                             expected="the client's FINISHED", actual="none") from None
        return _checked(armed, name, []), []
    if name == "client_initial":
        if peer.view.datagrams_sent:
            raise ValueError("the first flight already left: client_initial needs a "
                             "connect with wait: held")
        armed = _Armed(connection, lambda p: p.epoch == Epoch.INITIAL, edit, None)
    else:
        epoch, packet_type = build.SPACES[FRAME_TEMPLATES[name]]
        frames = build.frames(options["frames"])
        number = connection.spaces[epoch].next_packet_number
        armed = _Armed(connection, lambda p: (p.epoch, p.packet_number) == (epoch, number),
                       edit, 1)
        connection.send_frames(epoch, frames, packet_type=packet_type)
    try:
        made, sent = peer.transmit(datagram_edit(operations))
    finally:
        armed.disarm()
    if not armed.edited:
        raise ValueError(f"the connection could not send the {name} template now (no "
                         "keys for its space yet?)")
    return _checked(armed, name, made), sent


def _checked(armed: _Armed, name: str, made: list[bytes]) -> dict[str, Any]:
    if armed.error is not None:
        raise armed.error
    return {"template": name, "packets": armed.edited, "datagrams": len(made)}
