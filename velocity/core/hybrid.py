"""Profiles and the hybrid key exchange (spec section 9): X25519 or P-384 combined with
ML-KEM as fixed-length concatenations exactly as draft-ietf-tls-ecdhe-mlkem lays them out.
The ML-KEM half runs on an injected ``KemBackend``; all randomness comes from ``Entropy``."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from velocity.core.entropy import Entropy
from velocity.core.errors import IllegalParameter, lookup
from velocity.core.kem import KemBackend, KemKey, KemParams

P384_ORDER = int("ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf"
                 "581a0db248b0a77aecec196accc52973", 16)
P384_POINT = 97


@dataclass(frozen=True, slots=True)
class Profile:
    """One row of the profile table: hybrid group, CA signature and transcript hash."""

    code: int
    name: str
    group_name: str
    kem: KemParams
    ecdh: str  # "x25519" or "p384"
    signature: str
    hash_name: str

    @property
    def kem_first(self) -> bool:
        """X25519 layouts put ML-KEM first; SecP384r1MLKEM1024 puts ECDH first."""
        return self.ecdh == "x25519"

    @property
    def ecdh_size(self) -> int:
        return 32 if self.ecdh == "x25519" else P384_POINT

    @property
    def client_share_size(self) -> int:
        return self.kem.sizes.encapsulation_key + self.ecdh_size

    @property
    def server_share_size(self) -> int:
        return self.kem.sizes.ciphertext + self.ecdh_size

    @property
    def hash_length(self) -> int:
        return {"sha256": 32, "sha384": 48, "sha512": 64}[self.hash_name]


LIGHT = Profile(0xFE70, "light", "X25519MLKEM512", KemParams.ML_KEM_512, "x25519", "ML-DSA-44",
                "sha256")
BALANCED = Profile(0x11EC, "balanced", "X25519MLKEM768", KemParams.ML_KEM_768, "x25519",
                   "ML-DSA-65", "sha384")
SECURE = Profile(0x11ED, "secure", "SecP384r1MLKEM1024", KemParams.ML_KEM_1024, "p384",
                 "ML-DSA-87", "sha512")
PROFILES: dict[int, Profile] = {p.code: p for p in (LIGHT, BALANCED, SECURE)}
PROFILES_BY_NAME: dict[str, Profile] = {p.name: p for p in PROFILES.values()}


def profile_named(name: str) -> Profile:
    return lookup(PROFILES_BY_NAME, name, "profile")


def _split(profile: Profile, share: bytes, kem_size: int) -> tuple[bytes, bytes]:
    """(kem part, ecdh part) of a share laid out for ``profile``."""
    if profile.kem_first:
        return share[:kem_size], share[kem_size:]
    return share[profile.ecdh_size :], share[: profile.ecdh_size]


def _join(profile: Profile, kem_part: bytes, ecdh_part: bytes) -> bytes:
    return kem_part + ecdh_part if profile.kem_first else ecdh_part + kem_part


class _Ecdh:
    """An ephemeral X25519 or P-384 key drawn from entropy."""

    def __init__(self, kind: str, entropy: Entropy) -> None:
        self._private: x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey
        if kind == "x25519":
            self._private = x25519.X25519PrivateKey.from_private_bytes(entropy.random(32))
            self.public = self._private.public_key().public_bytes_raw()
        else:
            scalar = int.from_bytes(entropy.random(56), "big") % (P384_ORDER - 1) + 1
            self._private = ec.derive_private_key(scalar, ec.SECP384R1())
            self.public = self._private.public_key().public_bytes(
                Encoding.X962, PublicFormat.UncompressedPoint)

    def exchange(self, peer: bytes) -> bytes:
        try:
            if isinstance(self._private, x25519.X25519PrivateKey):
                return self._private.exchange(x25519.X25519PublicKey.from_public_bytes(peer))
            point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP384R1(), peer)
            return self._private.exchange(ec.ECDH(), point)
        except ValueError as exc:  # all-zero X25519 result or a point off the curve
            raise IllegalParameter(f"ECDH share rejected: {exc}", field="key_share") from None


@dataclass(frozen=True, slots=True)
class HybridSecret:
    """The combined secret and, for vectors and traces, its two halves."""

    shared_secret: bytes
    kem_secret: bytes
    ecdh_secret: bytes


class ClientKeyShare:
    """The client's ephemeral hybrid key: ``share`` goes into CLIENT_HELLO."""

    def __init__(self, profile: Profile, kem: KemBackend, entropy: Entropy) -> None:
        self.profile = profile
        self._kem_key: KemKey = kem.generate(profile.kem, entropy.random(64))
        self._ecdh = _Ecdh(profile.ecdh, entropy)
        self.share = _join(profile, self._kem_key.encapsulation_key, self._ecdh.public)

    def finish(self, server_share: bytes) -> HybridSecret:
        """Combine with the server's share; a wrong length or bad half is ILLEGAL_PARAMETER."""
        profile = self.profile
        if len(server_share) != profile.server_share_size:
            raise IllegalParameter(f"{len(server_share)} bytes, expected "
                                   f"{profile.server_share_size}", field="SERVER_HELLO.key_share")
        ciphertext, peer = _split(profile, server_share, profile.kem.sizes.ciphertext)
        try:
            kem_secret = self._kem_key.decapsulate(ciphertext)
        except ValueError as exc:
            raise IllegalParameter(str(exc), field="SERVER_HELLO.key_share") from None
        ecdh_secret = self._ecdh.exchange(peer)
        return HybridSecret(_join(profile, kem_secret, ecdh_secret), kem_secret, ecdh_secret)


def server_key_share(profile: Profile, kem: KemBackend, client_share: bytes,
                     entropy: Entropy) -> tuple[bytes, HybridSecret]:
    """Answer a client share: (server share, combined secret). The ML-KEM encapsulation key
    gets the FIPS 203 checks; any failure is ILLEGAL_PARAMETER."""
    if len(client_share) != profile.client_share_size:
        raise IllegalParameter(f"{len(client_share)} bytes, expected "
                               f"{profile.client_share_size}", field="CLIENT_HELLO.key_share")
    encapsulation_key, peer = _split(profile, client_share, profile.kem.sizes.encapsulation_key)
    m = entropy.random(32)
    try:
        ciphertext, kem_secret = kem.encapsulate(profile.kem, encapsulation_key, m)
    except ValueError as exc:
        raise IllegalParameter(f"ML-KEM key rejected: {exc}",
                               field="CLIENT_HELLO.key_share") from None
    ecdh = _Ecdh(profile.ecdh, entropy)
    ecdh_secret = ecdh.exchange(peer)
    return (_join(profile, ciphertext, ecdh.public),
            HybridSecret(_join(profile, kem_secret, ecdh_secret), kem_secret, ecdh_secret))
