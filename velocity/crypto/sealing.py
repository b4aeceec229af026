"""Server-side sealing with rotating keys: session tickets (VEL-RES-002) and stateless Retry
tokens (VEL-RTY-005, VEL-RTY-006). Keys, nonces and the time are inputs, so sealing is
deterministic under a seeded entropy source."""

from __future__ import annotations

from collections import OrderedDict

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from velocity.core.buffer import Reader, Writer
from velocity.core.errors import BufferReadError, InvalidToken, UsageError

NONCE = 12


class RotatingSealer:
    """AES-GCM sealing under a current key and up to ``keep - 1`` previous ones:
    ``key_id (1) || nonce (12) || ciphertext``."""

    def __init__(self, key: bytes, *, aad: bytes, keep: int = 2) -> None:
        if len(key) not in (16, 32):
            raise UsageError("sealing keys are 16 or 32 bytes")
        self._aad = aad
        self._keep = keep
        self._keys: OrderedDict[int, AESGCM] = OrderedDict()
        self._current = -1
        self.rotate(key)

    def rotate(self, key: bytes) -> None:
        """Make ``key`` current; the oldest key beyond ``keep`` stops opening."""
        self._current = (self._current + 1) % 256
        self._keys[self._current] = AESGCM(key)
        while len(self._keys) > self._keep:
            self._keys.popitem(last=False)

    def seal(self, plaintext: bytes, nonce: bytes) -> bytes:
        if len(nonce) != NONCE:
            raise UsageError("sealing nonces are 12 bytes")
        sealed = self._keys[self._current].encrypt(nonce, plaintext, self._aad)
        return bytes([self._current]) + nonce + sealed

    def open(self, blob: bytes) -> bytes | None:
        if len(blob) < 1 + NONCE + 16 or blob[0] not in self._keys:
            return None
        try:
            return self._keys[blob[0]].decrypt(blob[1 : 1 + NONCE], blob[1 + NONCE :],
                                               self._aad)
        except InvalidTag:
            return None


def ticket_sealer(key: bytes) -> RotatingSealer:
    """The ticket sealer: AES-256-GCM, two keys accepted (VEL-RES-002)."""
    return RotatingSealer(key, aad=b"velocity1 ticket")


class RetryTokens:
    """Stateless Retry tokens bound to the client's address and the original DCID."""

    def __init__(self, key: bytes, *, lifetime_ms: int = 10_000) -> None:
        self._sealer = RotatingSealer(key, aad=b"velocity1 retry")
        self.lifetime_ms = lifetime_ms

    def rotate(self, key: bytes) -> None:
        self._sealer.rotate(key)

    def issue(self, address: str, port: int, original_dcid: bytes, *, now_ms: int,
              nonce: bytes) -> bytes:
        """A Retry token (``original_dcid`` set) binds address and port; a NEW_TOKEN token
        (empty ``original_dcid``) binds the address only, as a later connection comes from
        another port (VEL-RTY-008)."""
        writer = Writer()
        writer.push_uint(now_ms, 8)
        writer.push_vec8(original_dcid)
        writer.push_vec8(address.encode())
        writer.push_uint16(port if original_dcid else 0)
        return self._sealer.seal(writer.data(), nonce)

    def validate(self, token: bytes, address: str, port: int, *, now_ms: int,
                 lifetime_ms: int | None = None) -> bytes | None:
        """The original DCID of a valid Retry token, ``b""`` for a valid NEW_TOKEN token, or
        None for a token to ignore (one that does not open, or a NEW_TOKEN token from another
        address or past its life: the address is simply not validated, RFC 9000 §8.1.4).
        A Retry token that fails raises ``InvalidToken`` (VEL-RTY-005).

        Retry tokens live ``self.lifetime_ms``; NEW_TOKEN tokens ``lifetime_ms`` when given."""
        plaintext = self._sealer.open(token)
        if plaintext is None:
            return None
        reader = Reader(plaintext)
        try:
            issued, odcid = reader.pull_uint(8), reader.pull_vec8()
            bound_address, bound_port = reader.pull_vec8().decode(), reader.pull_uint16()
        except (BufferReadError, UnicodeDecodeError):
            raise InvalidToken("malformed token", field="token") from None
        lifetime = self.lifetime_ms if odcid or lifetime_ms is None else lifetime_ms
        valid_for = (address, port if odcid else 0) == (bound_address, bound_port)
        fresh = 0 <= now_ms - issued <= lifetime
        if odcid and not valid_for:
            raise InvalidToken("token was issued to another address", field="token")
        if odcid and not fresh:
            raise InvalidToken("token expired", field="token")
        return odcid if valid_for and fresh else None
