"""The semantic facts of one transcript, the ones a reviewer compares across runs and
deployments: what was negotiated (version, ALPN, profile, AEAD, auth mode, KEM backend), the
key shares' sizes and layout, the fallback directive, how each side closed, packets per
space, bytes per flight, the amplification ratio and the handshake latency. Everything is
read from the events of a valid transcript, from whichever vantage point it was taken."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from velocity.core.errors import ErrorCode
from velocity.core.hybrid import PROFILES_BY_NAME, Profile
from velocity.core.rangeset import RangeSet

PACKETS = {"quic:packet_sent": "sent", "quic:packet_received": "received"}
NOT_ACK_ELICITING = frozenset({"ack", "padding", "connection_close", "application_close"})
NOT_FRESH = NOT_ACK_ELICITING | {"ping"}  # a PING carries nothing: a probe, sent on a timer
CODES = {int(code): code.name for code in ErrorCode}
ECDH_NAMES = {"x25519": "X25519", "p384": "P-384"}
FALLBACK_FIELDS = ("alpn", "host", "port", "reason", "reason_text", "retry_after",
                   "authenticated")


def _first(events: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((e for e in events if e["name"] == name), None)


def _data(events: list[dict[str, Any]], name: str) -> dict[str, Any]:
    event = _first(events, name)
    return event["data"] if event is not None else {}


def _packets(events: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for event in events:
        direction = PACKETS.get(event["name"])
        if direction is not None:
            yield direction, event["data"]


def ack_eliciting(packet: dict[str, Any]) -> bool:
    return any(f["frame_type"] not in NOT_ACK_ELICITING for f in packet["frames"])


class _Seen:
    """What each direction has already carried: CRYPTO and STREAM byte ranges, and every
    other frame as it was."""

    def __init__(self) -> None:
        self.ranges: dict[tuple[str, ...], RangeSet] = {}
        self.frames: set[str] = set()

    def fresh(self, direction: str, packet: dict[str, Any]) -> bool:
        """Whether ``packet`` is ack-eliciting and carries something new; remembers what it
        carries."""
        space = packet["header"]["packet_type"]
        carried = [f for f in packet["frames"] if f["frame_type"] not in NOT_FRESH]
        return bool([f for f in carried if self._new(direction, space, f)])

    def _new(self, direction: str, space: str, frame: dict[str, Any]) -> bool:
        """Whether ``frame`` carries anything not carried before; remembers it."""
        offset, length = frame.get("offset", 0), frame.get("data_length")
        kind = frame["frame_type"]
        if kind in ("crypto", "stream") and isinstance(offset, int) and isinstance(
                length, int) and offset >= 0 and length > 0:
            key = (direction, space, kind, str(frame.get("stream_id")))
            ranges = self.ranges.setdefault(key, RangeSet())
            covered = any(a <= offset and offset + length <= b for a, b in ranges)
            ranges.add(offset, offset + length)
            return not covered
        text = json.dumps([direction, space, frame], sort_keys=True)
        if text in self.frames:
            return False
        self.frames.add(text)
        return True


def fresh_packets(events: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Ack-eliciting packets that carry something new: not ACK-only packets (they follow
    timing, not the protocol: how many a peer sends depends on how datagrams were read),
    nor pure retransmissions or PING probes (they follow loss and timers)."""
    seen = _Seen()
    for direction, packet in _packets(events):
        if seen.fresh(direction, packet):
            yield direction, packet


def packets_per_space(events: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Fresh packets (``fresh_packets``) sent and received per packet type."""
    out: dict[str, dict[str, int]] = {}
    for direction, packet in fresh_packets(events):
        space = out.setdefault(packet["header"]["packet_type"], {"sent": 0, "received": 0})
        space[direction] += 1
    return out


def bytes_per_flight(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flights: runs of fresh packets (``fresh_packets``) in one direction, with their
    packets, bytes and spaces; an ACK-only packet or a retransmission between them neither
    ends a flight nor counts."""
    out: list[dict[str, Any]] = []
    for direction, packet in fresh_packets(events):
        if not out or out[-1]["direction"] != direction:
            out.append({"direction": direction, "packets": 0, "bytes": 0, "spaces": []})
        flight = out[-1]
        flight["packets"] += 1
        flight["bytes"] += packet["raw"]["length"]
        if packet["header"]["packet_type"] not in flight["spaces"]:
            flight["spaces"].append(packet["header"]["packet_type"])
    return out


def _validating(event: dict[str, Any], side: str) -> bool:
    """Whether ``event`` ends the count: the server received a Handshake packet (its
    address validation); from the client's side, the client sent its first ack-eliciting
    Handshake packet (ACK-only ones leave whenever datagrams happen to be read)."""
    name, data = event["name"], event["data"]
    if name != ("quic:packet_received" if side == "server" else "quic:packet_sent"):
        return False
    return data["header"]["packet_type"] == "handshake" and (side == "server"
                                                             or ack_eliciting(data))


def amplification(document: dict[str, Any]) -> dict[str, Any] | None:
    """What the server sent before the client's address was validated, against what it
    received from the client until then. From the server's side that is exact. From the
    client's side it is the server's first flight (its retransmissions left out) against the
    client's Initial packets: when the server had to wait for the client's ACKs to send the
    rest of a flight over 3x, that rest is counted too (so above 3 there means the flight
    did not fit, VEL-SIZE-002). None from a network vantage point."""
    side = document["vantage_point"]
    if side not in ("client", "server"):
        return None
    server = client = 0
    validated = False
    seen = _Seen()  # the client does not count the server's retransmissions
    for event in document["events"]:
        if _validating(event, side):
            validated = True
            break
        name, data = event["name"], event["data"]
        if name not in ("quic:packet_sent", "quic:packet_received", "quic:packet_dropped"):
            continue
        from_server = (name == "quic:packet_sent") == (side == "server")
        if from_server and side == "client" and name == "quic:packet_received" and (
                ack_eliciting(data) and not seen.fresh("received", data)):
            continue
        if from_server:
            server += data["raw"]["length"]
        elif side == "server" or data["header"].get("packet_type") == "initial":
            client += data["raw"]["length"]
    return {"server_bytes": server, "client_bytes": client, "validated": validated,
            "ratio": round(server / client, 3) if client else None}


def _share(profile: Profile | None, length: int, *, client: bool) -> dict[str, Any]:
    """A share's size and, when it has the group's size, its ECDH and ML-KEM parts in the
    order the group lays them out."""
    if profile is None:
        return {"length": length, "parts": None}
    sizes = profile.kem.sizes
    kem = (profile.kem.value, sizes.encapsulation_key if client else sizes.ciphertext)
    ecdh = (ECDH_NAMES[profile.ecdh], profile.ecdh_size)
    parts = [kem, ecdh] if profile.kem_first else [ecdh, kem]
    if sum(n for _, n in parts) != length:
        return {"length": length, "parts": None}
    return {"length": length, "parts": [{"name": name, "length": n} for name, n in parts]}


def key_shares(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    shares = [e["data"] for e in events if e["name"] == "velocity:key_share"]
    if not shares:
        return None
    share = shares[-1]  # after HELLO_RETRY, the one that was used
    profile = PROFILES_BY_NAME.get(share["profile"])
    return {"group": share.get("group"),
            "client": _share(profile, share["client_share_length"], client=True),
            "server": _share(profile, share["server_share_length"], client=False)}


def _code(data: dict[str, Any]) -> str:
    if "error_code" not in data:
        return f"silent ({data.get('trigger', 'no frame')})"
    code = int(data["error_code"])  # JSON Schema's integers include 2.0
    if data.get("application"):
        return f"application 0x{code:x}"
    return CODES.get(code, f"0x{code:x}")


def closes(events: list[dict[str, Any]]) -> dict[str, str | None]:
    """How the connection ended: the code this side sent (``local``) and the one it
    received (``remote``), by name; None for a side that did not close."""
    out: dict[str, str | None] = {"local": None, "remote": None}
    for event in events:
        if event["name"] == "quic:connection_closed" and out[event["data"]["owner"]] is None:
            out[event["data"]["owner"]] = _code(event["data"])
    return out


def _outcome(events: list[dict[str, Any]]) -> tuple[str, float | None]:
    for event in events:
        name = event["name"]
        if name == "velocity:handshake_completed":
            return "velocity", event["time"]
        if name == "velocity:fallback_directed":
            return "fallback", event["time"]
        if name == "quic:connection_closed":
            return "closed", None
    return "incomplete", None


def _messages(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"sent": [], "received": []}
    for event in events:
        if event["name"] in ("velocity:message_sent", "velocity:message_received"):
            out[event["name"].rsplit("_", 1)[1]].append(event["data"]["message_type"])
    return out


def _offered_alpn(events: list[dict[str, Any]]) -> list[str] | None:
    for event in events:
        data = event["data"]
        if event["name"].startswith("velocity:message_") and data[
                "message_type"] == "client_hello":
            alpn = data.get("alpn")
            if isinstance(alpn, list) and all(isinstance(a, str) for a in alpn):
                return alpn
    return None


def summary(document: dict[str, Any]) -> dict[str, Any]:
    """The semantic facts of the valid transcript ``document``."""
    events = document["events"]
    done = _data(events, "velocity:handshake_completed")
    fallback = _data(events, "velocity:fallback_directed")
    outcome, at = _outcome(events)
    return {
        "vantage_point": document["vantage_point"],
        "version": _data(events, "quic:connection_started").get("version"),
        "outcome": outcome,
        "alpn": done.get("alpn"),
        "offered_alpn": _offered_alpn(events),
        "profile": done.get("profile"),
        "aead": done.get("aead"),
        "auth_mode": done.get("mode"),
        "kem_backend": done.get("kem_backend"),
        "kem_operations": [" ".join((e["data"]["operation"], e["data"]["key"], e["data"]["kem"]))
                           for e in events if e["name"] == "velocity:kem_operation"],
        "key_shares": key_shares(events),
        "fallback": {k: fallback.get(k) for k in FALLBACK_FIELDS} if fallback else None,
        "messages": _messages(events),
        "close": closes(events),
        "packets_per_space": packets_per_space(events),
        "bytes_per_flight": bytes_per_flight(events),
        "amplification": amplification(document),
        "handshake_ms": at,
    }
