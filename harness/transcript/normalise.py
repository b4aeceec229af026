"""What changes from one run of the same deployment to the next, replaced by stable
placeholders: timestamps and the reference time, connection IDs, the peer's port, secret
digests, ticket randoms (``age_add``) and issue times, packet numbers (renumbered in order of
appearance per direction and space, as a peer may skip some), ACK frames' contents (they
follow timing), and GREASE extensions (random types and 0-16 random bytes) with the message
lengths they add to. Packet sizes are left as they are: they are what crossed the wire (the
diff allows for GREASE there). A normalised transcript is still a valid transcript."""

from __future__ import annotations

import copy
from typing import Any

from velocity.core.buffer import VARINT_MAX, varint_size
from velocity.core.handshake.messages import is_grease

DIGEST = "0" * 16
ZEROED = frozenset({"age_add", "issued_ms"})
DIGESTS = frozenset({"secret", "ecdh_secret", "kem_secret", "shared_secret"})
PACKETS = {"quic:packet_sent": "sent", "quic:packet_received": "received"}
MESSAGES = frozenset({"velocity:message_sent", "velocity:message_received"})


def normalise(document: dict[str, Any]) -> dict[str, Any]:
    """A copy of the transcript ``document`` with its volatile fields replaced."""
    out = copy.deepcopy(document)
    if "reference_time" in out:
        out["reference_time"] = 0
    if isinstance(out.get("peer"), str):
        out["peer"] = out["peer"].rpartition(":")[0] + ":<port>"
    if isinstance(out.get("connection"), dict):
        out["connection"] = {k: "<cid>" if "cid" in k else v
                             for k, v in out["connection"].items()}
    numbers: dict[tuple[str, str], int] = {}
    for event in out["events"]:
        event["time"] = 0
        data = event["data"] = _scrub(event["data"])
        if event["name"] in PACKETS:
            _renumber(data, PACKETS[event["name"]], numbers)
        elif event["name"] in MESSAGES:
            _drop_grease(data)
    return out


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: DIGEST if k in DIGESTS and isinstance(v, str)
                else 0 if k in ZEROED and isinstance(v, int) else _scrub(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _renumber(data: dict[str, Any], direction: str, numbers: dict[tuple[str, str], int]
              ) -> None:
    header = data["header"]
    key = (direction, header["packet_type"])
    if "packet_number" in header:
        header["packet_number"] = numbers[key] = numbers.get(key, -1) + 1
    data["frames"] = [{"frame_type": "ack"} if frame.get("frame_type") == "ack" else frame
                      for frame in data["frames"]]


def _extension_size(ext_type: int, length: int) -> int:
    return varint_size(ext_type) + varint_size(length) + length


def _block_size(extensions: list[list[int]]) -> int:
    """Bytes of an extensions vector (its varint length included)."""
    inner = sum(_extension_size(t, n) for t, n in extensions)
    return varint_size(inner) + inner


def _drop_grease(data: dict[str, Any]) -> None:
    """A message as it would be without its GREASE extensions: their entries gone, and its
    length what it would then be."""
    extensions = data.get("extensions")
    if not isinstance(extensions, list) or not all(
            isinstance(e, list) and len(e) == 2 and all(
                isinstance(x, int) and 0 <= x <= VARINT_MAX for x in e) for e in extensions):
        return  # not the [type, length] pairs the reference writes
    kept = [e for e in extensions if not is_grease(e[0])]
    if len(kept) < len(extensions):
        data["length"] -= _block_size(extensions) - _block_size(kept)
        data["extensions"] = kept
