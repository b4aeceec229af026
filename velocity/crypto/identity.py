"""A server's identity for one profile: its ML-DSA CA, its static ML-KEM key and the leaf
certificate binding them, created from injected entropy and stored as PEM files (keys 0600,
certificates 0644, in a directory of mode 0700)."""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from velocity.core.entropy import Entropy
from velocity.core.errors import UsageError
from velocity.core.handshake.common import StaticKey, key_id_for
from velocity.core.hybrid import PROFILES, Profile
from velocity.core.kem import KemBackend
from velocity.crypto.kem import kem_backend
from velocity.crypto.pki import (
    CaKey,
    ca_key_from_seed,
    ca_key_pem,
    certificate_kem_key,
    create_ca,
    fingerprint,
    issue_leaf,
    kem_private_key_pem,
    load_ca_key_pem,
    load_kem_private_key_pem,
    load_problem,
    read_secret_file,
    refuse_shared_directory,
    write_public_file,
    write_secret_file,
)


@dataclass(frozen=True)
class ServerIdentity:
    profile: Profile
    ca_key: CaKey
    ca_certificate: x509.Certificate
    kem_seed: bytes
    leaf: x509.Certificate

    @property
    def leaf_der(self) -> bytes:
        return self.leaf.public_bytes(serialization.Encoding.DER)

    @functools.cached_property
    def encapsulation_key(self) -> bytes:
        return kem_backend().load(self.profile.kem, self.kem_seed).encapsulation_key

    @property
    def key_id(self) -> bytes:
        return key_id_for(self.profile.code, self.encapsulation_key)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.leaf_der)

    def static_key(self, kem: KemBackend) -> StaticKey:
        key = kem.load(self.profile.kem, self.kem_seed)
        return StaticKey(self.profile, key, key_id_for(self.profile.code, key.encapsulation_key),
                         (self.leaf_der,))

    @classmethod
    def create(cls, profile: Profile, *, entropy: Entropy, names: tuple[str, ...],
               now: dt.datetime, ca: tuple[CaKey, x509.Certificate] | None = None,
               leaf_days: int = 90) -> ServerIdentity:
        """A new static key and leaf; a new self-signed CA unless ``ca`` is given."""
        if ca is None:
            ca_key = ca_key_from_seed(profile, entropy.random(32))
            ca = ca_key, create_ca(ca_key, common_name=f"Velocity {profile.name} CA",
                                   not_before=now - dt.timedelta(minutes=5))
        seed = entropy.random(64)
        encapsulation_key = kem_backend().load(profile.kem, seed).encapsulation_key
        leaf = issue_leaf(ca[0], ca[1], profile.kem, encapsulation_key, names=names,
                          not_before=now - dt.timedelta(minutes=5), days=leaf_days,
                          serial=int.from_bytes(entropy.random(8), "big") >> 1)
        return cls(profile, ca[0], ca[1], seed, leaf)

    def save(self, directory: Path) -> None:
        name = self.profile.name
        pem = serialization.Encoding.PEM
        write_secret_file(directory / f"{name}-ca.key", ca_key_pem(self.ca_key))
        write_secret_file(directory / f"{name}-kem.key",
                          kem_private_key_pem(self.profile.kem, self.kem_seed))
        write_public_file(directory / f"{name}-ca.pem", self.ca_certificate.public_bytes(pem))
        write_public_file(directory / f"{name}-leaf.pem", self.leaf.public_bytes(pem))

    @classmethod
    def load(cls, profile: Profile, directory: Path) -> ServerIdentity:
        """The identity saved in ``directory``, refused if other users can write there."""
        name = profile.name
        refuse_shared_directory(directory)
        try:
            ca_key = load_ca_key_pem(read_secret_file(directory / f"{name}-ca.key"))
            params, seed = load_kem_private_key_pem(read_secret_file(
                directory / f"{name}-kem.key"))
            ca_cert = x509.load_pem_x509_certificate((directory / f"{name}-ca.pem").read_bytes())
            leaf = x509.load_pem_x509_certificate((directory / f"{name}-leaf.pem").read_bytes())
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot load the {name} identity from {directory}: "
                             f"{load_problem(exc)}") from None
        if params != profile.kem:
            raise UsageError(f"{directory / f'{name}-kem.key'} holds {params.value}, "
                             f"not {profile.kem.value}")
        return cls(profile, ca_key, ca_cert, seed, leaf)


def static_key_from_files(certificate: Path, key: Path, kem: KemBackend) -> StaticKey:
    """A static key from a leaf certificate (PEM) and its ML-KEM key file (PEM)."""
    try:
        leaf = x509.load_pem_x509_certificate(certificate.read_bytes())
        params, seed = load_kem_private_key_pem(read_secret_file(key))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load {certificate} / {key}: {load_problem(exc)}; --cert "
                         "takes the leaf certificate, --key its ML-KEM key file") from None
    if certificate_kem_key(leaf)[0] != params:
        raise UsageError(f"{certificate} does not certify the key in {key}")
    profile = next(p for p in PROFILES.values() if p.kem == params)
    loaded = kem.load(params, seed)
    if certificate_kem_key(leaf)[1] != loaded.encapsulation_key:
        raise UsageError(f"{certificate} does not certify the key in {key}")
    return StaticKey(profile, loaded, key_id_for(profile.code, loaded.encapsulation_key),
                     (leaf.public_bytes(serialization.Encoding.DER),))


ROTATED_AT = "{profile}-rotated-at"


def rotate_identity(profile: Profile, directory: Path, *, entropy: Entropy, now: dt.datetime,
                    keep_previous: bool) -> tuple[ServerIdentity, ServerIdentity]:
    """A new static key and leaf from the same CA; the current pair becomes the previous one
    (accepted through the overlap window) unless ``keep_previous`` is false.
    Returns (previous, new)."""
    current = ServerIdentity.load(profile, directory)  # refuses a shared directory first
    name = profile.name
    for suffix in ("kem.key", "leaf.pem"):
        previous_path = directory / f"{name}-previous-{suffix}"
        if keep_previous:
            (directory / f"{name}-{suffix}").replace(previous_path)
        else:
            previous_path.unlink(missing_ok=True)
    write_public_file(directory / ROTATED_AT.format(profile=name),
                      str(int(now.timestamp())).encode())
    names = tuple(_names_of(current.leaf))
    new = ServerIdentity.create(profile, entropy=entropy, names=names or ("localhost",),
                                now=now, ca=(current.ca_key, current.ca_certificate))
    new.save(directory)
    return current, new


def previous_static_key(profile: Profile, directory: Path, kem: KemBackend, *,
                        now: dt.datetime, overlap: dt.timedelta) -> StaticKey | None:
    """The key retired by the last rotation, while its overlap window lasts (VEL-CERT-005)."""
    refuse_shared_directory(directory)
    name = profile.name
    stamp = directory / ROTATED_AT.format(profile=name)
    key_file = directory / f"{name}-previous-kem.key"
    if not key_file.exists() or not stamp.exists():
        return None
    try:
        rotated = dt.datetime.fromtimestamp(int(stamp.read_text()), dt.UTC)
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not a Unix time"
        raise UsageError(f"cannot read the rotation time in {stamp}: {why}; delete the file "
                         "to stop accepting the previous key") from None
    if now - rotated > overlap:
        return None
    return static_key_from_files(directory / f"{name}-previous-leaf.pem", key_file, kem)


def _names_of(certificate: x509.Certificate) -> list[str]:
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*sans.get_values_for_type(x509.DNSName),
            *(str(ip) for ip in sans.get_values_for_type(x509.IPAddress))]
