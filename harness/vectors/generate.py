"""Independent builders for vectors/*.json. Encodings come from the scapy layers, secrets
and packet protection from ``cryptography`` primitives following the spec's formulas
directly; nothing here imports ``velocity.core``, so a vector is a second opinion on the
spec, not a recording of the implementation.

Run only through ``python -m harness.vectors regenerate --i-know`` (an explicit flag): the
files are committed and reviewed, and tests compare the implementation with them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from scapy.layers.quic import QuicVarIntField
from scapy.packet import Packet

from harness.layers import frames as fl
from harness.layers.packets import VLongHeader, VRetry, VVersionNegotiation, short_header_layer
from harness.vectors import provenance, stream_bytes
from harness.vectors.generate_crypto import hybrid, keyschedule

VERSION = 0x56553100
SALT = hashlib.sha256(b"Velocity/1 initial salt").digest()[:20]
RETRY_KEY = hashlib.sha256(b"Velocity/1 retry integrity key").digest()[:16]
RETRY_NONCE = hashlib.sha256(b"Velocity/1 retry integrity nonce").digest()[:12]
HASH: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}
AEAD_KEY = {"AES_128_GCM": 16, "AES_256_GCM": 32, "CHACHA20_POLY1305": 32}
# --- varints ---------------------------------------------------------------------------

RFC9000_A1 = [("c2197c5eff14e88c", 151288809941952652), ("9d7f3e7d", 494878333),
              ("7bbd", 15293), ("25", 37), ("4025", 37)]


class _Varint(Packet):
    fields_desc = [QuicVarIntField("value", 0)]


def varints() -> dict[str, Any]:
    entries = [{"name": f"RFC 9000 A.1 {hx}", "hex": hx, "value": value,
                "minimal": len(hx) == 2 * len(bytes(_Varint(value=value)))}
               for hx, value in RFC9000_A1]
    for value in (0, 63, 64, 16383, 16384, (1 << 30) - 1, 1 << 30, (1 << 62) - 1):
        entries.append({"name": f"boundary {value}", "value": value,
                        "hex": bytes(_Varint(value=value)).hex(), "minimal": True})
    invalid = [{"name": name, "hex": hx, "error": "truncated"} for name, hx in
               [("empty", ""), ("2-byte prefix, 1 byte", "40"), ("4-byte prefix, 3 bytes",
                 "800000"), ("8-byte prefix, 7 bytes", "c0000000000000")]]
    return {"topic": "varint", "spec": ["VEL-VAR-002", "VEL-VAR-003"],
            "provenance": provenance(["RFC 9000 Appendix A.1 (transcribed)",
                                      "RFC 9000 section 16 length boundaries"],
                                     "scapy QuicVarIntField encodes the boundaries"),
            "vectors": entries, "invalid": invalid}


# --- frames ----------------------------------------------------------------------------

def _frame_entry(name: str, layer: Packet, fields: dict[str, Any]) -> dict[str, Any]:
    return {"frame": name, "fields": fields, "hex": bytes(layer).hex()}


def frames() -> dict[str, Any]:
    token = stream_bytes("reset token", 16)
    cid = bytes.fromhex("c0ffee0011223344")
    data = b"GET / HTTP/1.1\r\n"
    entries = [
        _frame_entry("PADDING", fl.PADDING(run=bytes(4)), {"length": 5}),
        _frame_entry("PING", fl.PING(), {}),
        _frame_entry("ACK", fl.ACK(largest=1000, delay=25, first_range=3,
                                   ranges=[fl.VAckRange(gap=1, length=10),
                                           fl.VAckRange(gap=100, length=0)]),
                     {"largest": 1000, "delay": 25, "first_range": 3,
                      "ranges": [[1, 10], [100, 0]], "ecn": None}),
        _frame_entry("ACK", fl.ACK(type=0x03, largest=7, delay=0, first_range=7, ect0=5,
                                   ect1=0, ce=2),
                     {"largest": 7, "delay": 0, "first_range": 7, "ranges": [],
                      "ecn": [5, 0, 2]}),
        _frame_entry("RESET_STREAM", fl.RESET_STREAM(stream_id=4, error_code=0x0103,
                                                     final_size=70000),
                     {"stream_id": 4, "error_code": 0x0103, "final_size": 70000}),
        _frame_entry("STOP_SENDING", fl.STOP_SENDING(stream_id=8, error_code=0x0100),
                     {"stream_id": 8, "error_code": 0x0100}),
        _frame_entry("CRYPTO", fl.CRYPTO(offset=1184, data=b"\x01\x00\x00\x20"),
                     {"offset": 1184, "data": "01000020"}),
        _frame_entry("NEW_TOKEN", fl.NEW_TOKEN(token=stream_bytes("new token", 24)),
                     {"token": stream_bytes("new token", 24).hex()}),
        _frame_entry("STREAM", fl.STREAM(type=0x0B, stream_id=0, data=data),
                     {"stream_id": 0, "data": data.hex(), "offset": 0, "fin": True,
                      "explicit_length": True}),
        _frame_entry("STREAM", fl.STREAM(type=0x0E, stream_id=1 << 20, offset=1 << 32,
                                         data=b"tail"),
                     {"stream_id": 1 << 20, "data": b"tail".hex(), "offset": 1 << 32,
                      "fin": False, "explicit_length": True}),
        _frame_entry("STREAM", fl.STREAM(type=0x0D, stream_id=4, offset=9, data=b"to end"),
                     {"stream_id": 4, "data": b"to end".hex(), "offset": 9, "fin": True,
                      "explicit_length": False}),
        _frame_entry("MAX_DATA", fl.MAX_DATA(maximum=1 << 22), {"maximum": 1 << 22}),
        _frame_entry("MAX_STREAM_DATA", fl.MAX_STREAM_DATA(stream_id=4, maximum=262144),
                     {"stream_id": 4, "maximum": 262144}),
        _frame_entry("MAX_STREAMS_BIDI", fl.MAX_STREAMS_BIDI(maximum=100), {"maximum": 100}),
        _frame_entry("MAX_STREAMS_UNI", fl.MAX_STREAMS_UNI(maximum=1 << 60),
                     {"maximum": 1 << 60}),
        _frame_entry("DATA_BLOCKED", fl.DATA_BLOCKED(limit=65536), {"limit": 65536}),
        _frame_entry("STREAM_DATA_BLOCKED", fl.STREAM_DATA_BLOCKED(stream_id=0, limit=1024),
                     {"stream_id": 0, "limit": 1024}),
        _frame_entry("STREAMS_BLOCKED_BIDI", fl.STREAMS_BLOCKED_BIDI(limit=100),
                     {"limit": 100}),
        _frame_entry("STREAMS_BLOCKED_UNI", fl.STREAMS_BLOCKED_UNI(limit=3), {"limit": 3}),
        _frame_entry("NEW_CONNECTION_ID", fl.NEW_CONNECTION_ID(
            sequence=2, retire_prior_to=1, connection_id=cid, stateless_reset_token=token),
            {"sequence": 2, "retire_prior_to": 1, "connection_id": cid.hex(),
             "stateless_reset_token": token.hex()}),
        _frame_entry("RETIRE_CONNECTION_ID", fl.RETIRE_CONNECTION_ID(sequence=1),
                     {"sequence": 1}),
        _frame_entry("PATH_CHALLENGE", fl.PATH_CHALLENGE(data=b"velocity"),
                     {"data": b"velocity".hex()}),
        _frame_entry("PATH_RESPONSE", fl.PATH_RESPONSE(data=b"velocity"),
                     {"data": b"velocity".hex()}),
        _frame_entry("CONNECTION_CLOSE", fl.CONNECTION_CLOSE(
            error_code=0x0104, frame_type=0x06, reason=b"STALE_KEM_KEY: key id unknown"),
            {"error_code": 0x0104, "frame_type": 0x06,
             "reason": b"STALE_KEM_KEY: key id unknown".hex()}),
        _frame_entry("APPLICATION_CLOSE", fl.APPLICATION_CLOSE(error_code=0x0100, reason=b""),
                     {"error_code": 0x0100, "reason": ""}),
        _frame_entry("HANDSHAKE_DONE", fl.HANDSHAKE_DONE(), {}),
    ]
    invalid = [
        ("unknown frame type 0x1f", "1f", "ONE_RTT", "FRAME_ENCODING_ERROR", "frame_type"),
        ("PING type encoded in 2 bytes", "4001", "ONE_RTT", "FRAME_ENCODING_ERROR",
         "frame_type"),
        ("HANDSHAKE_DONE in Initial", "1e", "INITIAL", "PROTOCOL_VIOLATION", "frame_type"),
        ("STREAM in Handshake", bytes(fl.STREAM(type=0x0A, stream_id=0, data=b"x")).hex(),
         "HANDSHAKE", "PROTOCOL_VIOLATION", "frame_type"),
        ("ACK in 0-RTT", bytes(fl.ACK(largest=0, delay=0, first_range=0)).hex(), "ZERO_RTT",
         "PROTOCOL_VIOLATION", "frame_type"),
        ("CRYPTO data cut short", bytes(fl.CRYPTO(offset=0, data=b"abcd")).hex()[:-2],
         "INITIAL", "FRAME_ENCODING_ERROR", "CRYPTO.data"),
        ("ACK first range below 0", bytes(fl.ACK(largest=2, delay=0, first_range=3)).hex(),
         "ONE_RTT", "FRAME_ENCODING_ERROR", "ACK.first_range"),
        ("ACK gap below 0", bytes(fl.ACK(largest=5, delay=0, first_range=1,
                                         ranges=[fl.VAckRange(gap=3, length=0)])).hex(),
         "ONE_RTT", "FRAME_ENCODING_ERROR", "ACK.ranges"),
        ("STREAM end beyond 2^62-1", bytes(fl.STREAM(type=0x0E, stream_id=0,
                                                     offset=(1 << 62) - 2, data=b"ab")).hex(),
         "ONE_RTT", "FRAME_ENCODING_ERROR", "STREAM.offset"),
        ("MAX_STREAMS above 2^60", bytes(fl.MAX_STREAMS_BIDI(maximum=(1 << 60) + 1)).hex(),
         "ONE_RTT", "FRAME_ENCODING_ERROR", "MAX_STREAMS.maximum"),
        ("NEW_CONNECTION_ID with 21-byte id", bytes(fl.NEW_CONNECTION_ID(
            sequence=1, connection_id=bytes(21), stateless_reset_token=token)).hex(),
         "ONE_RTT", "FRAME_ENCODING_ERROR", "NEW_CONNECTION_ID.connection_id"),
        ("NEW_CONNECTION_ID retire_prior_to > sequence", bytes(fl.NEW_CONNECTION_ID(
            sequence=1, retire_prior_to=2, connection_id=cid, stateless_reset_token=token)).hex(),
         "ONE_RTT", "FRAME_ENCODING_ERROR", "NEW_CONNECTION_ID.retire_prior_to"),
        ("NEW_TOKEN empty", "0700", "ONE_RTT", "FRAME_ENCODING_ERROR", "NEW_TOKEN.token"),
        ("PATH_CHALLENGE with 7 bytes", "1a" + "00" * 7, "ONE_RTT", "FRAME_ENCODING_ERROR",
         "PATH_CHALLENGE.data"),
        ("empty payload", "", "ONE_RTT", "PROTOCOL_VIOLATION", "payload"),
    ]
    return {"topic": "frames",
            "spec": ["VEL-FRM-001", "VEL-FRM-002", "VEL-FRM-003", "VEL-FRM-004", "VEL-FRM-005",
                     "VEL-FRM-006", "VEL-FRM-007", "VEL-FRM-008", "VEL-FRM-009", "VEL-FRM-010",
                     "VEL-FRM-011", "VEL-FRM-012"],
            "provenance": provenance(["RFC 9000 section 19", "docs/spec/velocity-1.md section 4"],
                                     "scapy layers in harness/layers/frames.py"),
            "vectors": entries,
            "invalid": [{"name": n, "hex": h, "packet_type": t, "error": e, "field": fd}
                        for n, h, t, e, fd in invalid]}


# --- headers ---------------------------------------------------------------------------

def headers() -> dict[str, Any]:
    dcid, scid = bytes.fromhex("8394c8f03e515708"), bytes.fromhex("f067a5502a4262b5")
    payload = bytes(fl.PING()) + bytes(fl.PADDING(run=bytes(18)))
    entries: list[dict[str, Any]] = []
    for name, ptype, token, pn, pn_len in [("INITIAL", 0, b"retry-token", 0, 1),
                                           ("ZERO_RTT", 1, b"", 0x1234, 2),
                                           ("HANDSHAKE", 2, b"", 0xABCDEF, 3)]:
        layer = VLongHeader(packet_type=ptype, pn_length_bits=pn_len - 1, dcid=dcid, scid=scid,
                            token=token, length=pn_len + len(payload), packet_number=pn)
        entries.append({"type": name, "fields": {
            "version": VERSION, "dcid": dcid.hex(), "scid": scid.hex(), "token": token.hex(),
            "packet_number": pn, "pn_length": pn_len, "length": pn_len + len(payload)},
            "hex": (bytes(layer) + payload).hex(), "header_length": len(bytes(layer))})
    short = short_header_layer(len(dcid))(key_phase=1, spin=0, pn_length_bits=3, dcid=dcid,
                                          packet_number=0x01020304)
    entries.append({"type": "ONE_RTT", "fields": {
        "dcid": dcid.hex(), "packet_number": 0x01020304, "pn_length": 4, "key_phase": True,
        "spin": False}, "hex": (bytes(short) + payload).hex(), "header_length": len(bytes(short))})
    tag = stream_bytes("retry tag", 16)
    retry = VRetry(dcid=scid, scid=bytes.fromhex("5e1ec7ed"), token=b"opaque token",
                   integrity_tag=tag)
    entries.append({"type": "RETRY", "fields": {
        "version": VERSION, "dcid": scid.hex(), "scid": "5e1ec7ed",
        "token": b"opaque token".hex(), "integrity_tag": tag.hex(), "unused_bits": 0},
        "hex": bytes(retry).hex()})
    vn = VVersionNegotiation(unused=0x40, dcid=scid, scid=dcid,
                             versions=[VERSION, 0x1A2A3A4A])
    entries.append({"type": "VERSION_NEGOTIATION", "fields": {
        "dcid": scid.hex(), "scid": dcid.hex(), "versions": [VERSION, 0x1A2A3A4A],
        "unused_bits": 0x40}, "hex": bytes(vn).hex()})
    return {"topic": "headers",
            "spec": ["VEL-PKT-001", "VEL-PKT-009", "VEL-VN-003", "VEL-GEN-001"],
            "provenance": provenance(["RFC 9000 section 17", "docs/spec/velocity-1.md section 2"],
                                     "scapy layers in harness/layers/packets.py"),
            "vectors": entries}


# --- packet protection -----------------------------------------------------------------

def expand_label(hash_name: str, secret: bytes, label: str, length: int) -> bytes:
    full = b"velocity1 " + label.encode()
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + b"\x00"
    return HKDFExpand(HASH[hash_name](), length, info).derive(secret)


def key_material(secret: bytes, aead: str, hash_name: str) -> dict[str, str]:
    size = AEAD_KEY[aead]
    return {"secret": secret.hex(), "key": expand_label(hash_name, secret, "key", size).hex(),
            "iv": expand_label(hash_name, secret, "iv", 12).hex(),
            "hp": expand_label(hash_name, secret, "hp", size).hex()}


def protect(header: bytes, payload: bytes, pn: int, keys: dict[str, str], aead: str,
            ) -> dict[str, str]:
    """RFC 9001 section 5.3-5.4, written out step by step."""
    key, iv, hp = (bytes.fromhex(keys[k]) for k in ("key", "iv", "hp"))
    nonce = bytes(a ^ b for a, b in zip(iv, pn.to_bytes(12, "big"), strict=True))
    cipher = ChaCha20Poly1305(key) if aead == "CHACHA20_POLY1305" else AESGCM(key)
    sealed = cipher.encrypt(nonce, payload, header)
    pn_len = (header[0] & 0x03) + 1
    sample = sealed[4 - pn_len : 20 - pn_len]
    if aead == "CHACHA20_POLY1305":
        mask = Cipher(algorithms.ChaCha20(hp, sample), None).encryptor().update(bytes(5))
    else:
        mask = Cipher(algorithms.AES(hp), modes.ECB()).encryptor().update(sample)[:5]
    first = header[0] ^ (mask[0] & (0x0F if header[0] & 0x80 else 0x1F))
    pn_at = len(header) - pn_len
    pn_bytes = bytes(a ^ b for a, b in zip(header[pn_at:], mask[1:], strict=False))
    return {"nonce": nonce.hex(), "sample": sample.hex(), "mask": mask.hex(),
            "protected": (bytes([first]) + header[1:pn_at] + pn_bytes + sealed).hex()}


def _initial_packet(dcid: bytes, scid: bytes, token: bytes, pn: int, frames: bytes,
                    datagram: int) -> tuple[bytes, bytes]:
    """Header and payload of an Initial padded so that the packet is ``datagram`` bytes."""
    probe = VLongHeader(packet_type=0, pn_length_bits=1, dcid=dcid, scid=scid, token=token,
                        length=0, packet_number=pn)
    room = datagram - len(bytes(probe)) - 16  # the probe already has Length and pn
    payload = frames + bytes(room - len(frames))
    header = VLongHeader(packet_type=0, pn_length_bits=1, dcid=dcid, scid=scid, token=token,
                         length=2 + len(payload) + 16, packet_number=pn)
    return bytes(header), payload


def initial() -> dict[str, Any]:
    dcid = bytes.fromhex("8394c8f03e515708")
    client_scid, server_scid = bytes.fromhex("c1c1c1c1"), bytes.fromhex("5e5e5e5e5e5e5e5e")
    initial_secret = HKDF.extract(hashes.SHA256(), SALT, dcid)
    client = key_material(expand_label("sha256", initial_secret, "client in", 32),
                          "AES_128_GCM", "sha256")
    server = key_material(expand_label("sha256", initial_secret, "server in", 32),
                          "AES_128_GCM", "sha256")
    hello = stream_bytes("opaque CLIENT_HELLO bytes", 1000)
    c_header, c_payload = _initial_packet(dcid, client_scid, b"", 2,
                                          bytes(fl.CRYPTO(offset=0, data=hello)), 1200)
    s_frames = (bytes(fl.ACK(largest=2, delay=0, first_range=0))
                + bytes(fl.CRYPTO(offset=0, data=stream_bytes("opaque SERVER_HELLO", 90))))
    s_header = bytes(VLongHeader(packet_type=0, pn_length_bits=1, dcid=client_scid,
                                 scid=server_scid, length=2 + len(s_frames) + 16,
                                 packet_number=1))
    packets = [
        {"name": "client Initial (padded to 1200 bytes)", "sender": "client",
         "aead": "AES_128_GCM", "packet_number": 2, "header": c_header.hex(),
         "payload": c_payload.hex(), **protect(c_header, c_payload, 2, client, "AES_128_GCM")},
        {"name": "server Initial", "sender": "server", "aead": "AES_128_GCM",
         "packet_number": 1, "header": s_header.hex(), "payload": s_frames.hex(),
         **protect(s_header, s_frames, 1, server, "AES_128_GCM")},
    ]
    for aead, hash_name in [("AES_256_GCM", "sha384"), ("CHACHA20_POLY1305", "sha512")]:
        secret = stream_bytes(f"1-RTT secret {aead}", HASH[hash_name]().digest_size)
        keys = key_material(secret, aead, hash_name)
        short = bytes(short_header_layer(8)(pn_length_bits=2, key_phase=0, dcid=server_scid,
                                            packet_number=0xBFF4 + 0x10000))
        body = bytes(fl.PING())
        packets.append({"name": f"1-RTT PING under {aead} / {hash_name}", "sender": "client",
                        "aead": aead, "hash": hash_name, "keys": keys,
                        "packet_number": 0x1BFF4, "header": short.hex(), "payload": body.hex(),
                        **protect(short, body, 0x1BFF4, keys, aead)})
    return {"topic": "initial",
            "spec": ["VEL-PROT-001", "VEL-PROT-002", "VEL-PROT-003", "VEL-PROT-004",
                     "VEL-PROT-005", "VEL-PROT-006", "VEL-PROT-007", "VEL-PROT-008",
                     "VEL-PKT-011"],
            "provenance": provenance(["RFC 9001 section 5 and Appendix A (structure)",
                                      "docs/spec/velocity-1.md section 5"],
                                     "HKDF, AES-GCM, ChaCha20 from cryptography, step by step"),
            "dcid": dcid.hex(), "initial_salt": SALT.hex(),
            "initial_secret": initial_secret.hex(), "client": client, "server": server,
            "packets": packets}


def retry() -> dict[str, Any]:
    odcid = bytes.fromhex("8394c8f03e515708")
    body = VRetry(dcid=bytes.fromhex("c1c1c1c1"), scid=bytes.fromhex("7e7e7e7e7e7e7e7e"),
                  token=stream_bytes("retry token", 40))
    without_tag = bytes(body)[:-16]  # the layer always writes a 16-byte tag field
    pseudo = bytes([len(odcid)]) + odcid + without_tag
    tag = AESGCM(RETRY_KEY).encrypt(RETRY_NONCE, b"", pseudo)
    return {"topic": "retry", "spec": ["VEL-RTY-001"],
            "provenance": provenance(["RFC 9001 section 5.8 (structure)",
                                      "docs/spec/velocity-1.md section 6"],
                                     "AES-128-GCM from cryptography over the pseudo-packet"),
            "retry_key": RETRY_KEY.hex(), "retry_nonce": RETRY_NONCE.hex(),
            "vectors": [{"name": "Retry to a client Initial", "odcid": odcid.hex(),
                         "without_tag": without_tag.hex(), "tag": tag.hex(),
                         "packet": (without_tag + tag).hex()}]}


BUILDERS = {"varint": varints, "frames": frames, "headers": headers, "initial": initial,
            "retry": retry, "hybrid": hybrid, "keyschedule": keyschedule}


def build(topic: str) -> dict[str, Any]:
    return {"schema": "velocity-vectors/1", **BUILDERS[topic]()}
