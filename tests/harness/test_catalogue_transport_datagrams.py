"""The hand-written datagrams of the transport catalogue (scenarios/packets, protection,
connection, amplification): client Initial packets under the Initial keys of a DCID the
scenario chose (anyone can build them, VEL-PROT-003), so they work against any server. Each
stored hex is rebuilt here from its recipe (AES-GCM with a fixed key, nonce and plaintext is
deterministic) and must be exactly the bytes the YAML carries; the CLIENT_HELLO flight, made
once by the reference client, is decoded instead and checked for what its scenario needs.
Run this module as a script to print every recipe's hex when a scenario needs a new one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from velocity.core.buffer import Writer
from velocity.core.frames import (
    ConnectionClose,
    Crypto,
    Frame,
    Padding,
    Ping,
    decode_frames,
    encode_frames,
)
from velocity.core.handshake.messages import ClientHello, ExtensionType, decode_message
from velocity.core.hybrid import SECURE
from velocity.core.packet import (
    FIXED_BIT,
    VELOCITY_VERSION,
    LongHeader,
    PacketType,
    parse_header,
    push_long_header,
)
from velocity.core.protection import initial_keys

ROOT = Path(__file__).resolve().parents[2] / "scenarios"
SCID = bytes.fromhex("5ca1ab1e")  # the made-up client's source connection id
PN_LENGTH = 2
TAG = 16


def initial(dcid: bytes, pn: int, frames: list[Frame], *, length_delta: int = 0,
            fixed_bit: bool = True) -> bytes:
    """One client Initial packet carrying ``frames`` under the Initial keys of ``dcid``; its
    Length field ``length_delta`` off the truth, its fixed bit as asked (the associated data
    is the header as sent, so only a receiver that ignores the fault can open it)."""
    send, _ = initial_keys(dcid, is_client=True)
    payload = encode_frames(frames)
    writer = Writer()
    push_long_header(writer, LongHeader(PacketType.INITIAL, VELOCITY_VERSION, dcid, SCID, pn,
                                        PN_LENGTH, PN_LENGTH + len(payload) + TAG + length_delta))
    header = writer.data()
    if not fixed_bit:
        header = bytes([header[0] & ~FIXED_BIT]) + header[1:]
    return send.encrypt_packet(header, payload, pn)


def ping(dcid: str, pn: int, **options: Any) -> bytes:
    """An ack-eliciting Initial: PING, and PADDING for the header-protection sample."""
    return initial(bytes.fromhex(dcid), pn, [Ping(), Padding(3)], **options)


def close(dcid: str, pn: int = 9) -> bytes:
    """A CONNECTION_CLOSE (NO_ERROR) Initial: the scenario's ``finally`` ends the server's
    connection for that DCID, so it drains in three PTOs rather than holding a half-open
    slot until its handshake timeout."""
    return initial(bytes.fromhex(dcid), pn, [ConnectionClose(0, 0, b"")])


def filled_ping(dcid: str, pn: int, size: int = 1200, **options: Any) -> bytes:
    """A PING Initial padded inside the packet to ``size`` bytes."""
    bare = len(ping(dcid, pn))
    return initial(bytes.fromhex(dcid), pn, [Ping(), Padding(3 + size - bare)], **options)


Where = tuple[str, int | str]
"""(scenario id, index of a step, or ``finally.N`` for the N-th step of its ``finally``)"""
KNOWN = "ca7a1000000000"  # the first 7 bytes of the DCIDs the scenarios chose; each adds one
RECIPES: dict[Where, Callable[[], bytes]] = {
    ("packets/initial-in-a-short-datagram-is-discarded", 1): lambda: ping(KNOWN + "01", 0),
    ("packets/initial-in-a-short-datagram-is-discarded", 3): lambda: ping(KNOWN + "01", 0),
    ("packets/short-datagram-on-a-known-connection", 1): lambda: ping(KNOWN + "02", 0),
    ("packets/short-datagram-on-a-known-connection", 3): lambda: ping(KNOWN + "02", 1),
    ("packets/client-dcid-below-8-bytes-is-ignored", 1): lambda: ping(KNOWN, 0),
    ("packets/client-dcid-below-8-bytes-is-ignored", 3): lambda: ping(KNOWN + "03", 0),
    ("packets/dcid-over-20-bytes-is-undecodable", 1): lambda: ping(KNOWN + "00" * 13 + "04", 0),
    ("packets/dcid-over-20-bytes-is-undecodable", 3): lambda: ping(KNOWN + "00" * 12 + "04", 0),
    ("packets/fixed-bit-zero-is-discarded", 1): lambda: ping(KNOWN + "05", 0, fixed_bit=False),
    ("packets/fixed-bit-zero-is-discarded", 3): lambda: ping(KNOWN + "05", 0),
    ("packets/length-past-the-datagram-is-undecodable", 1):
        lambda: filled_ping(KNOWN + "06", 0, length_delta=100),
    ("packets/length-past-the-datagram-is-undecodable", 3): lambda: filled_ping(KNOWN + "06", 0),
    ("packets/coalesced-packet-before-a-bad-one-is-processed", 1):
        lambda: ping(KNOWN + "07", 0) + ping(KNOWN + "07", 1),
    ("packets/coalesced-packet-after-a-bad-one-is-processed", 1):
        lambda: ping(KNOWN + "08", 0) + ping(KNOWN + "08", 1),
    ("packets/coalesced-packet-after-a-bad-one-on-a-known-connection", 1):
        lambda: ping(KNOWN + "09", 0),
    ("packets/coalesced-packet-after-a-bad-one-on-a-known-connection", 3):
        lambda: ping(KNOWN + "09", 1) + ping(KNOWN + "09", 2),
    ("protection/undecryptable-initial-is-dropped-not-fatal", 1): lambda: ping(KNOWN + "0a", 0),
    ("protection/undecryptable-initial-is-dropped-not-fatal", 3): lambda: ping(KNOWN + "0a", 1),
    ("protection/undecryptable-initial-is-dropped-not-fatal", 5): lambda: ping(KNOWN + "0a", 2),
    ("protection/initial-protected-as-specified-is-opened", 1): lambda: ping(KNOWN + "0d", 0),
    ("connection/datagrams-from-another-address-are-not-processed", 2):
        lambda: ping(KNOWN + "0b", 0),
    ("connection/datagrams-from-another-address-are-not-processed", 4):
        lambda: ping(KNOWN + "0b", 1),
    ("connection/datagrams-from-another-address-are-not-processed", 7):
        lambda: ping(KNOWN + "0b", 2),
}
CLOSED = {  # the connection each scenario's ``finally`` closes: the DCID it left on the server
    "packets/initial-in-a-short-datagram-is-discarded": "01",
    "packets/short-datagram-on-a-known-connection": "02",
    "packets/client-dcid-below-8-bytes-is-ignored": "03",
    "packets/dcid-over-20-bytes-is-undecodable": "00" * 12 + "04",
    "packets/fixed-bit-zero-is-discarded": "05",
    "packets/length-past-the-datagram-is-undecodable": "06",
    "packets/coalesced-packet-before-a-bad-one-is-processed": "07",
    "packets/coalesced-packet-after-a-bad-one-is-processed": "08",
    "packets/coalesced-packet-after-a-bad-one-on-a-known-connection": "09",
    "protection/undecryptable-initial-is-dropped-not-fatal": "0a",
    "connection/datagrams-from-another-address-are-not-processed": "0b",
    "protection/initial-protected-as-specified-is-opened": "0d",
}
for _scenario, _last in CLOSED.items():
    RECIPES[(_scenario, "finally.0")] = lambda dcid=KNOWN + _last: close(dcid)


def _steps(document: dict[str, Any]) -> list[tuple[int | str, dict[str, Any]]]:
    """A scenario's steps by where they are: their index, ``finally.N`` for a final one."""
    out: list[tuple[int | str, dict[str, Any]]] = []
    for index, step in enumerate(document["steps"]):
        if "finally" in step:
            out += [(f"finally.{n}", inner) for n, inner in enumerate(step["finally"])]
        else:
            out.append((index, step))
    return out


AREAS = ("frames", "packets", "protection", "transport_parameters", "streams", "crypto",
         "amplification", "connection", "errors", "recovery", "http")
"""The transport catalogue's directories, whose hand-written datagrams have recipes here."""


def _sends() -> dict[Where, bytes]:
    """Every hand-written datagram of the catalogue, by where it is sent."""
    found = {}
    for path in sorted(p for area in AREAS for p in (ROOT / area).glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            for where, step in _steps(document):
                datagram = (step.get("send") or {}).get("datagram") or {}
                if "hex" in datagram and "{" not in datagram["hex"]:  # not parametrised
                    found[(document["id"], where)] = bytes.fromhex(datagram["hex"])
    return found


SENDS = _sends()
PER_ADDRESS = "amplification/other-addresses-do-not-raise-the-budget"
HELLO_STEPS = (2, 3)
"""The steps of PER_ADDRESS that send a secure-profile CLIENT_HELLO without a server_key block
(discovery) in two Initial datagrams, made once by the reference client (SeededEntropy
"catalogue/amplification/other-addresses", no grease); the datagrams that follow, from
another address, carry PINGs to the same DCID."""


def _hello_dcid() -> str:
    return parse_header(SENDS[(PER_ADDRESS, HELLO_STEPS[0])], short_dcid_length=0).dcid.hex()


for _index, _pn in enumerate(range(2, 8)):
    RECIPES[(PER_ADDRESS, 5 + _index)] = lambda pn=_pn: ping(_hello_dcid(), pn)
RECIPES[(PER_ADDRESS, "finally.0")] = lambda: close(_hello_dcid())


@pytest.mark.parametrize("where", sorted(RECIPES, key=str), ids=lambda w: f"{w[0]}:{w[1]}")
def test_each_stored_datagram_is_what_its_recipe_builds(where: Where) -> None:
    assert SENDS.get(where) == RECIPES[where](), (
        f"{where}: the stored hex is not the recipe's; paste the output of "
        f"`python {Path(__file__).name}`")


def test_every_hand_written_datagram_has_a_recipe() -> None:
    assert set(SENDS) - set(RECIPES) == {(PER_ADDRESS, i) for i in HELLO_STEPS}


def _client_hello(datagrams: list[bytes]) -> ClientHello:
    """The CLIENT_HELLO the Initial datagrams carry, opened as the server would."""
    crypto = bytearray()
    for datagram in datagrams:
        header = parse_header(datagram, short_dcid_length=0)
        assert header.dcid == bytes.fromhex(_hello_dcid())
        _, receive = initial_keys(header.dcid, is_client=False)
        _, payload, _ = receive.decrypt_packet(datagram[: header.end], header.pn_offset, 0)
        for frame in decode_frames(payload, PacketType.INITIAL):
            if isinstance(frame, Crypto):
                crypto[frame.offset : frame.offset + len(frame.data)] = frame.data
    length = int.from_bytes(crypto[1:4], "big")
    message = decode_message(crypto[0], bytes(crypto[4 : 4 + length]))
    assert isinstance(message, ClientHello)
    return message


@pytest.mark.spec("VEL-CONN-011")
def test_the_per_address_client_hello_is_a_secure_discovery_flight_of_two_datagrams() -> None:
    datagrams = [SENDS[(PER_ADDRESS, index)] for index in HELLO_STEPS]
    hello = _client_hello(datagrams)
    assert hello.profiles == (SECURE.code,) and hello.key_share_profile == SECURE.code
    assert hello.extension(ExtensionType.SERVER_KEY) is None  # discovery: a full flight
    assert all(len(d) >= 1200 for d in datagrams)


def _print_recipes() -> None:  # pragma: no cover - an authoring aid
    for (scenario, index), recipe in sorted(RECIPES.items(), key=str):
        print(f"{scenario} step {index}: {recipe().hex()}")


if __name__ == "__main__":  # pragma: no cover
    _print_recipes()
