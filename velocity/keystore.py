"""The client's on-disk state: learned server keys, session tickets and trust-on-first-use
pins, one JSON record per ``host:port`` under ``$VELOCITY_CACHE_DIR`` (default
``$XDG_CACHE_HOME/velocity``, else ``~/.cache/velocity``), written with mode 0600."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Generic, TypeVar

from velocity.core.events import TicketReceived
from velocity.core.handshake.common import SessionTicket
from velocity.crypto.pki import write_secret_file


def cache_dir() -> Path:
    explicit = os.environ.get("VELOCITY_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "velocity"


@dataclass(frozen=True)
class CachedKey:
    """A server's static ML-KEM key as learned in discovery (or given by the user)."""

    profile: str
    key_id: str
    encapsulation_key: str  # base64
    fingerprint: str

    @property
    def raw_key(self) -> bytes:
        return base64.b64decode(self.encapsulation_key)


@dataclass(frozen=True)
class StoredTicket:
    """A session ticket kept between processes. ``issued_unix`` is wall-clock time, so the
    ticket's age survives a restart; the ticket itself is a secret (it carries the PSK)."""

    ticket: str  # base64 of the SessionTicket fields below
    psk: str
    profile: int
    aead: int
    alpn: str
    age_add: int
    lifetime: int
    issued_unix: float
    max_early_data: int
    server_name: str | None
    transport_parameters: str  # base64, the server's, remembered for 0-RTT
    token: str  # base64 NEW_TOKEN, possibly empty

    @staticmethod
    def keep(received: TicketReceived, token: bytes, *, issued_unix: float) -> StoredTicket:
        t = received.ticket
        return StoredTicket(_b64(t.ticket), _b64(t.psk), t.profile, t.aead, t.alpn.decode(),
                            t.age_add, t.lifetime, issued_unix, t.max_early_data,
                            t.server_name, _b64(received.transport_parameters), _b64(token))

    def restore(self, *, issued_ms: int) -> tuple[TicketReceived, bytes]:
        """The ticket with its issue time on the caller's clock, and the token."""
        ticket = SessionTicket(
            base64.b64decode(self.ticket), base64.b64decode(self.psk), self.profile, self.aead,
            self.alpn.encode(), self.age_add, self.lifetime, issued_ms, self.max_early_data,
            self.server_name)
        return (TicketReceived(ticket, base64.b64decode(self.transport_parameters)),
                base64.b64decode(self.token))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


R = TypeVar("R", CachedKey, StoredTicket)


class _HostRecords(Generic[R]):
    """One JSON file per ``host:port`` in a subdirectory of the cache, each a ``record``
    dataclass; a missing, unreadable or outdated file reads as None."""

    subdirectory = ""
    record: type[R]

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = (directory or cache_dir()) / self.subdirectory

    def _path(self, host: str, port: int) -> Path:
        safe = "".join(c if c.isalnum() or c in ".-" else "_" for c in host)
        return self.directory / f"{safe}_{port}.json"

    def get(self, host: str, port: int) -> R | None:
        try:
            return self.record(**json.loads(self._path(host, port).read_text()))
        except (OSError, ValueError, TypeError):
            return None  # missing or unreadable: start over

    def put(self, host: str, port: int, record: R) -> Path:
        path = self._path(host, port)
        write_secret_file(path, json.dumps(asdict(record), indent=1).encode())
        return path

    def drop(self, host: str, port: int) -> None:
        self._path(host, port).unlink(missing_ok=True)


class KeyCache(_HostRecords[CachedKey]):
    subdirectory = "keys"
    record = CachedKey


class TicketCache(_HostRecords[StoredTicket]):
    """The last ticket per server, used once: ``take`` removes it."""

    subdirectory = "tickets"
    record = StoredTicket

    def take(self, host: str, port: int) -> StoredTicket | None:
        ticket = self.get(host, port)
        self.drop(host, port)
        return ticket


class TofuPins:
    """``TofuStore`` backed by ``pins.json`` in the cache directory."""

    def __init__(self, directory: Path | None = None) -> None:
        self.path = (directory or cache_dir()) / "pins.json"

    def _load(self) -> dict[str, str]:
        try:
            pins: dict[str, str] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return pins

    def pinned(self, name: str) -> str | None:
        return self._load().get(name)

    def pin(self, name: str, fingerprint: str) -> None:
        pins = self._load()
        pins[name] = fingerprint
        write_secret_file(self.path, json.dumps(pins, indent=1).encode())
