"""Transport parameters (spec section 16, RFC 9000 section 18): one dataclass, encoded and
decoded through one table of (id, name, kind). Unknown and reserved ids are ignored."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from velocity.core.buffer import encode_varint, minimal_varint_at, varint_at
from velocity.core.errors import BufferReadError, TransportParameterError

MAX_STREAMS_LIMIT = 1 << 60


@dataclass(frozen=True, slots=True)
class TransportParameters:
    original_destination_connection_id: bytes | None = None
    max_idle_timeout: int = 0
    max_udp_payload_size: int = 65527
    initial_max_data: int = 0
    initial_max_stream_data_bidi_local: int = 0
    initial_max_stream_data_bidi_remote: int = 0
    initial_max_stream_data_uni: int = 0
    initial_max_streams_bidi: int = 0
    initial_max_streams_uni: int = 0
    ack_delay_exponent: int = 3
    max_ack_delay: int = 25
    disable_active_migration: bool = False
    active_connection_id_limit: int = 2
    initial_source_connection_id: bytes | None = None
    retry_source_connection_id: bytes | None = None
    grease: bytes | None = None  # sent as one reserved id; never read back into the value

    def with_changes(self, **changes: Any) -> TransportParameters:
        return replace(self, **changes)


# id -> (field, kind); kinds: "int", "bytes", "flag"
_TABLE: dict[int, tuple[str, str]] = {
    0x00: ("original_destination_connection_id", "bytes"),
    0x01: ("max_idle_timeout", "int"),
    0x03: ("max_udp_payload_size", "int"),
    0x04: ("initial_max_data", "int"),
    0x05: ("initial_max_stream_data_bidi_local", "int"),
    0x06: ("initial_max_stream_data_bidi_remote", "int"),
    0x07: ("initial_max_stream_data_uni", "int"),
    0x08: ("initial_max_streams_bidi", "int"),
    0x09: ("initial_max_streams_uni", "int"),
    0x0A: ("ack_delay_exponent", "int"),
    0x0B: ("max_ack_delay", "int"),
    0x0C: ("disable_active_migration", "flag"),
    0x0E: ("active_connection_id_limit", "int"),
    0x0F: ("initial_source_connection_id", "bytes"),
    0x10: ("retry_source_connection_id", "bytes"),
}
_IDS = {name: pid for pid, (name, _) in _TABLE.items()}
# 0x02 stateless_reset_token and 0x0d preferred_address: Velocity/1 has no stateless reset
# (VEL-TP-005) and no preferred address (VEL-TP-004), so a server's is ignored like an
# unknown id; a client's is still an error, as in QUIC
SERVER_ONLY = frozenset({0x00, 0x02, 0x0D, 0x10})
GREASE_ID = 31 * 7 + 27
_DEFAULTS = TransportParameters()


_ROWS = tuple((encode_varint(pid), name, kind) for pid, (name, kind) in _TABLE.items())


def encode_transport_parameters(params: TransportParameters) -> bytes:
    parts: list[bytes] = []
    for pid, name, kind in _ROWS:
        value = getattr(params, name)
        if value is None or (value == getattr(_DEFAULTS, name) and name != (
                "initial_source_connection_id")):
            continue
        body = encode_varint(value) if kind == "int" else value if kind == "bytes" else b""
        parts += (pid, encode_varint(len(body)), body)
    if params.grease is not None:
        parts += (encode_varint(GREASE_ID), encode_varint(len(params.grease)), params.grease)
    return b"".join(parts)


def _check(name: str, value: Any) -> None:
    bad = ((name == "max_udp_payload_size" and value < 1200)
           or (name == "ack_delay_exponent" and value > 20)
           or (name == "max_ack_delay" and value >= 1 << 14)
           or (name == "active_connection_id_limit" and value < 2)
           or (name.startswith("initial_max_streams") and value > MAX_STREAMS_LIMIT)
           or (name.endswith("connection_id") and isinstance(value, bytes) and len(value) > 20))
    if bad:
        raise TransportParameterError(f"value {value!r} out of range", field=name)


def decode_transport_parameters(data: bytes, *, from_server: bool) -> TransportParameters:
    """Decode and validate; a client's server-only parameter is an error (VEL-TP-002)."""
    values: dict[str, Any] = {}
    seen: set[int] = set()
    field, pos = "transport_parameters", 0
    try:
        while pos < len(data):
            field = "transport_parameters.id"
            pid, pos = minimal_varint_at(data, pos)
            field = f"transport_parameters.0x{pid:x}"
            length, pos = varint_at(data, pos)
            raw, pos = data[pos : pos + length], pos + length
            if pos > len(data):
                raise BufferReadError(f"needs {length} bytes, {len(raw)} left")
            if pid in seen:
                raise TransportParameterError("duplicate parameter", field=field)
            seen.add(pid)
            if pid in SERVER_ONLY and not from_server:
                raise TransportParameterError("server-only parameter sent by a client",
                                              field=field)
            if pid not in _TABLE:
                continue
            name, kind = _TABLE[pid]
            field = name
            values[name] = _value(name, kind, raw)
    except BufferReadError as exc:
        raise TransportParameterError(f"truncated ({exc.reason})", field=field) from None
    if "initial_source_connection_id" not in values:
        raise TransportParameterError("missing", field="initial_source_connection_id")
    return TransportParameters(**values)


def _value(name: str, kind: str, raw: bytes) -> Any:
    """One parameter's value, checked (``BufferReadError`` for a short integer)."""
    value: Any
    if kind == "int":
        value, end = varint_at(raw, 0)
        if end != len(raw):
            raise TransportParameterError("trailing bytes", field=name)
    elif kind == "bytes":
        value = raw
    else:
        if raw:
            raise TransportParameterError("flag must be empty", field=name)
        value = True
    _check(name, value)
    return value
