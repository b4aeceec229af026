"""Connection transcripts: the qlog-shaped events one connection records when it is given a
``Tracer`` (``quic:`` names where qlog has one, ``velocity:`` for handshake messages, key
shares, KEM operations and installed keys). Secrets appear only as short SHA-256 digests.
The document layout is ``harness/schemas/transcript.schema.json``; writing it to disk is the
caller's business."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable
from enum import Enum
from typing import Any, Protocol

TRANSCRIPT_SCHEMA = "velocity-transcript/1"
TEXT_FIELDS = frozenset({"alpn", "reason", "host", "server_name", "reason_text"})
HEX_FIELDS = frozenset({"key_id"})
"""Byte fields shown as text or hex; every other byte field is shown by its length."""


class Tracer(Protocol):
    def event(self, now: float, name: str, data: dict[str, Any]) -> None:
        """Record ``name`` (``ns:event``) at ``now`` (seconds on the caller's clock)."""
        ...


class Transcript:
    """A ``Tracer`` that keeps the events in memory; times become milliseconds after the
    first event."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.events: list[dict[str, Any]] = []

    def event(self, now: float, name: str, data: dict[str, Any]) -> None:
        if self.start is None:
            self.start = now
        self.events.append({"time": round((now - self.start) * 1000, 3), "name": name,
                            "data": data})

    def document(self, **header: Any) -> dict[str, Any]:
        """The whole transcript: ``header`` (vantage point, target, producer...) first."""
        return {"schema": TRANSCRIPT_SCHEMA, "time_format": "relative_ms", **header,
                "events": self.events}


QLOG_PACKET_TYPES = ("initial", "0RTT", "handshake", "retry", "1RTT", "version_negotiation")
"""qlog's names, indexed by ``PacketType``."""


def packet_data(packet_type: int, packet_number: int | None, length: int,
                frames: Iterable[object] = ()) -> dict[str, Any]:
    """The data of ``quic:packet_sent`` / ``quic:packet_received``."""
    header: dict[str, Any] = {"packet_type": QLOG_PACKET_TYPES[packet_type]}
    if packet_number is not None:
        header["packet_number"] = packet_number
    return {"header": header, "raw": {"length": length},
            "frames": [describe(f) for f in frames]}


def flights(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Packets grouped into flights: runs of packets in one direction (``sent`` or
    ``received`` from this vantage point), with their spaces, count, bytes and start time."""
    out: list[dict[str, Any]] = []
    for event in events:
        direction = {"quic:packet_sent": "sent", "quic:packet_received": "received"}.get(
            event["name"])
        if direction is None:
            continue
        data = event["data"]
        if not out or out[-1]["direction"] != direction:
            out.append({"direction": direction, "at_ms": event["time"], "packets": 0,
                        "bytes": 0, "spaces": []})
        flight = out[-1]
        flight["packets"] += 1
        flight["bytes"] += data["raw"]["length"]
        if data["header"]["packet_type"] not in flight["spaces"]:
            flight["spaces"].append(data["header"]["packet_type"])
    return out


def digest(secret: bytes) -> str:
    """How a secret appears in a transcript: enough to compare, nothing to use."""
    return hashlib.sha256(secret).hexdigest()[:16]


_SNAKE = re.compile(r"(?<!^)(?=[A-Z])")
_NAMES: dict[type, str] = {}


def type_name(obj: object) -> str:
    """``MaxStreamData`` -> ``max_stream_data``."""
    cls = type(obj)
    name = _NAMES.get(cls)
    if name is None:
        name = _NAMES[cls] = _SNAKE.sub("_", cls.__name__).lower()
    return name


def describe(obj: Any, *, kind: str | None = "frame_type") -> dict[str, Any]:
    """A frame, handshake message or event as transcript data: its type name under ``kind``
    (unless None) and its fields, byte fields as text, hex or their length. A field named
    ``kind`` (CONNECTION_CLOSE's ``frame_type``) is shown as ``trigger_<kind>``, qlog's name."""
    out: dict[str, Any] = {kind: type_name(obj)} if kind is not None else {}
    for spec in dataclasses.fields(obj):
        name = f"trigger_{spec.name}" if spec.name == kind else spec.name
        out.update(_field(name, getattr(obj, spec.name)))
    return out


def _field(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bytes | bytearray):
        if name in TEXT_FIELDS:
            return {name: bytes(value).decode(errors="replace")}
        if name in HEX_FIELDS:
            return {name: bytes(value).hex()}
        return {f"{name}_length": len(value)}
    if isinstance(value, Enum):
        return {name: value.name.lower()}
    if isinstance(value, tuple):
        return {name: [_item(name, v) for v in value]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: describe(value, kind="type")}
    return {name: value}


def _item(name: str, value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace") if name in TEXT_FIELDS else len(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return describe(value, kind="type")
    if isinstance(value, tuple):
        return [_item(name, v) for v in value]
    return value
