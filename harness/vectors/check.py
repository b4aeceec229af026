"""Run the reference implementation (``velocity.core``) against vectors/*.json; the recorded
handshakes also get the independent check of ``harness.vectors.handshake_kat``.

Each topic has one checker that yields an ``Outcome`` per vector; the command line prints
them and the unit tests assert them, so both see the same verdicts."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from harness.schemas import schema_errors
from harness.vectors import VECTORS_DIR, handshake_kat, handshakes
from velocity.core import frames as fr
from velocity.core.buffer import Reader, Writer, encode_varint
from velocity.core.errors import BufferReadError, ProtocolError
from velocity.core.hybrid import PROFILES, ClientKeyShare, HybridSecret, server_key_share
from velocity.core.keyschedule import KeySchedule, finished_mac, resumption_psk
from velocity.core.packet import (
    LongHeader,
    PacketType,
    RetryPacket,
    ShortHeader,
    VersionNegotiation,
    decode_retry,
    decode_version_negotiation,
    encode_retry,
    encode_version_negotiation,
    pull_long_header,
    pull_short_header,
    push_long_header,
    push_short_header,
)
from velocity.core.protection import (
    VELOCITY_PARAMS,
    Aead,
    PacketKeys,
    derive_key_material,
    initial_secrets,
    retry_integrity_tag,
)
from velocity.crypto.kem import kem_backend


@dataclass(frozen=True)
class Outcome:
    topic: str
    name: str
    ok: bool
    detail: str = ""


TOPICS = ("varint", "frames", "headers", "initial", "retry", "hybrid", "keyschedule",
          "handshake")


def topic_files(topic: str, directory: Path = VECTORS_DIR) -> list[Path]:
    """One file per topic, except the recorded handshakes: one file per case."""
    if topic == "handshake":
        return sorted((directory / "handshakes").glob("*.json"))
    return [directory / f"{topic}.json"]


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _expect(topic: str, name: str, actual: object, expected: object) -> Outcome:
    if actual == expected:
        return Outcome(topic, name, True)
    return Outcome(topic, name, False, f"expected {expected!r}, got {actual!r}")


def _raises(topic: str, name: str, fn: Callable[[], object], error: str,
            field: str | None) -> Outcome:
    try:
        fn()
    except ProtocolError as exc:
        got = (exc.code.name, exc.field) if field is not None else (exc.code.name, None)
        return _expect(topic, name, got, (error, field))
    return Outcome(topic, name, False, f"decoded; expected {error}")


def check_varint(doc: dict[str, Any]) -> Iterator[Outcome]:
    for vec in doc["vectors"]:
        raw = bytes.fromhex(vec["hex"])
        reader = Reader(raw)
        yield _expect("varint", f"decode {vec['name']}", (reader.pull_varint(), reader.eof()),
                      (vec["value"], True))
        if vec["minimal"]:
            yield _expect("varint", f"encode {vec['name']}", encode_varint(vec["value"]), raw)
    for vec in doc["invalid"]:
        yield _raises("varint", vec["name"], Reader(bytes.fromhex(vec["hex"])).pull_varint,
                      BufferReadError.code.name, None)


_FRAME_CLASSES = {cls.NAME: cls for cls in fr.FRAME_CLASSES}


def frame_from_fields(name: str, fields: dict[str, Any]) -> fr.Frame:
    """Build the frame a vector describes: hex strings for bytes, lists for tuples."""
    cls = _FRAME_CLASSES[name]
    values: dict[str, Any] = {}
    for fld in dataclasses.fields(cls):
        if fld.name not in fields:
            continue
        value = fields[fld.name]
        if fld.type == "bytes":
            value = bytes.fromhex(value)
        elif isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        values[fld.name] = value
    return cls(**values)


def check_frames(doc: dict[str, Any]) -> Iterator[Outcome]:
    for index, vec in enumerate(doc["vectors"]):
        raw = bytes.fromhex(vec["hex"])
        expected = frame_from_fields(vec["frame"], vec["fields"])
        space = min(expected.SPACES)
        name = f"{vec['frame']} #{index}"
        yield _expect("frames", f"decode {name}", fr.decode_frames(raw, space), [expected])
        yield _expect("frames", f"encode {name}", fr.encode_frames([expected]), raw)
    for vec in doc["invalid"]:
        raw, space = bytes.fromhex(vec["hex"]), PacketType[vec["packet_type"]]
        yield _raises("frames", vec["name"], partial(fr.decode_frames, raw, space),
                      vec["error"], vec["field"])


def _header_bytes(header: LongHeader | ShortHeader) -> bytes:
    writer = Writer()
    if isinstance(header, LongHeader):
        push_long_header(writer, header)
    else:
        push_short_header(writer, header)
    return writer.data()


def check_headers(doc: dict[str, Any]) -> Iterator[Outcome]:
    for vec in doc["vectors"]:
        raw, f, kind = bytes.fromhex(vec["hex"]), vec["fields"], vec["type"]
        h = {k: bytes.fromhex(v) for k, v in f.items() if k in ("dcid", "scid", "token",
                                                                 "integrity_tag")}
        if kind in ("INITIAL", "ZERO_RTT", "HANDSHAKE"):
            long = LongHeader(PacketType[kind], f["version"], h["dcid"], h["scid"],
                              f["packet_number"], f["pn_length"], f["length"], h["token"])
            yield _expect("headers", f"decode {kind}", pull_long_header(raw), long)
            yield _expect("headers", f"encode {kind}", _header_bytes(long),
                          raw[: vec["header_length"]])
        elif kind == "ONE_RTT":
            short = ShortHeader(h["dcid"], f["packet_number"], f["pn_length"], f["key_phase"],
                                f["spin"])
            yield _expect("headers", "decode ONE_RTT", pull_short_header(raw, len(h["dcid"])),
                          short)
            yield _expect("headers", "encode ONE_RTT", _header_bytes(short),
                          raw[: vec["header_length"]])
        elif kind == "RETRY":
            retry = RetryPacket(f["version"], h["dcid"], h["scid"], h["token"],
                                h["integrity_tag"], f["unused_bits"])
            yield _expect("headers", "decode RETRY", decode_retry(raw), retry)
            yield _expect("headers", "encode RETRY", encode_retry(retry), raw)
        else:
            vn = VersionNegotiation(h["dcid"], h["scid"], tuple(f["versions"]),
                                    f["unused_bits"])
            yield _expect("headers", "decode VERSION_NEGOTIATION",
                          decode_version_negotiation(raw), vn)
            yield _expect("headers", "encode VERSION_NEGOTIATION",
                          encode_version_negotiation(vn), raw)


def check_initial(doc: dict[str, Any]) -> Iterator[Outcome]:
    yield _expect("initial", "initial salt", VELOCITY_PARAMS.initial_salt.hex(),
                  doc["initial_salt"])
    client, server = initial_secrets(bytes.fromhex(doc["dcid"]))
    for side, secret in (("client", client), ("server", server)):
        keys = doc[side]
        yield _expect("initial", f"{side} initial secret", secret.hex(), keys["secret"])
        material = derive_key_material(secret, Aead.AES_128_GCM, "sha256")
        yield _expect("initial", f"{side} key/iv/hp",
                      (material.key.hex(), material.iv.hex(), material.hp.hex()),
                      (keys["key"], keys["iv"], keys["hp"]))
    for packet in doc["packets"]:
        keys = packet.get("keys") or doc[packet["sender"]]
        protection = PacketKeys(bytes.fromhex(keys["secret"]), Aead[packet["aead"]],
                                packet.get("hash", "sha256"))
        header, payload = bytes.fromhex(packet["header"]), bytes.fromhex(packet["payload"])
        pn = packet["packet_number"]
        yield _expect("initial", f"protect {packet['name']}",
                      protection.encrypt_packet(header, payload, pn).hex(), packet["protected"])
        pn_offset = len(header) - ((header[0] & 0x03) + 1)
        opened = protection.decrypt_packet(bytes.fromhex(packet["protected"]), pn_offset, pn)
        yield _expect("initial", f"unprotect {packet['name']}", opened, (header, payload, pn))


def check_retry(doc: dict[str, Any]) -> Iterator[Outcome]:
    yield _expect("retry", "retry key and nonce",
                  (VELOCITY_PARAMS.retry_key.hex(), VELOCITY_PARAMS.retry_nonce.hex()),
                  (doc["retry_key"], doc["retry_nonce"]))
    for vec in doc["vectors"]:
        tag = retry_integrity_tag(bytes.fromhex(vec["without_tag"]), bytes.fromhex(vec["odcid"]))
        yield _expect("retry", f"tag {vec['name']}", tag.hex(), vec["tag"])
        yield _expect("retry", f"decode {vec['name']}",
                      decode_retry(bytes.fromhex(vec["packet"])).integrity_tag.hex(), vec["tag"])


class ScriptedEntropy:
    """Hands out recorded entropy chunks in order; a size mismatch means the implementation
    draws randomness differently from the vector's convention."""

    def __init__(self, chunks: list[str]) -> None:
        self._chunks = [bytes.fromhex(c) for c in chunks]

    def random(self, size: int) -> bytes:
        if not self._chunks or len(self._chunks[0]) != size:
            raise ValueError(f"asked for {size} bytes; the vector recorded "
                             f"{[len(c) for c in self._chunks]}")
        return self._chunks.pop(0)


def check_hybrid(doc: dict[str, Any]) -> Iterator[Outcome]:
    for vec in doc["vectors"]:
        profile, name = PROFILES[vec["code"]], vec["profile"]
        expected = HybridSecret(bytes.fromhex(vec["shared_secret"]),
                                bytes.fromhex(vec["kem_secret"]),
                                bytes.fromhex(vec["ecdh_secret"]))
        server_share = bytes.fromhex(vec["server_share"])
        for backend in ("kyber-py", "cryptography"):
            kem = kem_backend(backend)
            if kem.name_for(profile.kem) != backend:
                continue  # no seeded key generation for this parameter set here
            client = ClientKeyShare(profile, kem, ScriptedEntropy(vec["client_entropy"]))
            yield _expect("hybrid", f"{name} client share ({backend})", client.share.hex(),
                          vec["client_share"])
            yield _expect("hybrid", f"{name} client secret ({backend})",
                          client.finish(server_share), expected)
        share, secret = server_key_share(profile, kem_backend("kyber-py"),
                                         bytes.fromhex(vec["client_share"]),
                                         ScriptedEntropy(vec["server_entropy"]))
        yield _expect("hybrid", f"{name} server share and secret", (share.hex(), secret),
                      (vec["server_share"], expected))


def check_keyschedule(doc: dict[str, Any]) -> Iterator[Outcome]:
    for vec in doc["vectors"]:
        inputs = {k: bytes.fromhex(v) for k, v in vec["inputs"].items()}
        hash_name, mode = vec["hash"], vec["mode"]
        schedule = KeySchedule(hash_name, inputs.get("psk"))
        if mode == "resumption":
            schedule.binder_key()
            schedule.client_early_secret(inputs["th_client_hello"])
        schedule.enter_handshake(inputs["ss_eph"] + (inputs["ss_static"] if mode == "pdk"
                                                     else b""))
        _, server_hs = schedule.handshake_secrets(inputs["th_server_hello"])
        if mode == "discovery":
            schedule.enter_authenticated(inputs["ss_static"])
            schedule.authenticated_secrets(inputs["th_kem_ciphertext"])
        schedule.enter_master()
        schedule.application_secrets(inputs["th_application"])
        resumption = schedule.resumption_secret(inputs["th_client_finished"])
        name = f"{vec['profile']}/{mode}"
        yield _expect("keyschedule", f"{name} steps",
                      [[n, v.hex()] for n, v in schedule.steps], vec["steps"])
        yield _expect("keyschedule", f"{name} FINISHED",
                      finished_mac(hash_name, server_hs, inputs["th_server_hello"]).hex(),
                      vec["server_finished_over_th_server_hello"])
        yield _expect("keyschedule", f"{name} resumption PSK",
                      resumption_psk(hash_name, resumption, bytes(8)).hex(),
                      vec["resumption_psk_nonce_zero"])


CHECKERS: dict[str, Callable[[dict[str, Any]], Iterator[Outcome]]] = {
    "varint": check_varint, "frames": check_frames, "headers": check_headers,
    "initial": check_initial, "retry": check_retry, "hybrid": check_hybrid,
    "keyschedule": check_keyschedule,
}


def check_handshake(doc: dict[str, Any]) -> Iterator[Outcome]:
    """Two separate checks: the independent one (``handshake_kat``: the wire against secrets
    recomputed from the recorded inputs, no ``velocity``), then the reference regenerating
    the file byte for byte."""
    for what, actual, expected in handshake_kat.check(doc) + handshakes.check(doc):
        yield _expect("handshake", f"{doc['name']}: {what}", actual, expected)


CHECKERS["handshake"] = check_handshake


def run(topic: str, directory: Path = VECTORS_DIR) -> list[Outcome]:
    """Schema-check each vector file of ``topic``, then run the implementation against it."""
    paths = topic_files(topic, directory)
    if not paths or not all(p.is_file() for p in paths):
        return [Outcome(topic, "files", False, f"no vector file for {topic} in {directory}; "
                        "run 'python -m harness.vectors regenerate --i-know'")]
    outcomes = []
    for path in paths:
        document = load(path)
        errors = schema_errors("vectors", document)
        outcomes.append(Outcome(topic, f"schema {path.name}", not errors, "; ".join(errors)))
        if errors:
            continue
        try:
            outcomes.extend(CHECKERS[topic](document))
        except (ProtocolError, ValueError) as exc:
            outcomes.append(Outcome(topic, f"run {path.name}", False,
                                    f"{type(exc).__name__}: {exc}"))
    return outcomes
