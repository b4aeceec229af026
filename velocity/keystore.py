"""The client's on-disk state: learned server keys, session tickets and trust-on-first-use
pins, one JSON record per ``host:port`` under ``$VELOCITY_CACHE_DIR`` (default
``$XDG_CACHE_HOME/velocity``, else ``~/.cache/velocity``), in directories of mode 0700
(refused when other users can write to them) and files of mode 0600."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Generic, TypeVar

from velocity.core.events import TicketReceived
from velocity.core.handshake.common import SessionTicket
from velocity.crypto.pki import refuse_shared_directory, write_secret_file


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
    # the server name the certificate was validated for, and under which trust ("tofu",
    # "insecure", "ca:<digest of the anchors>"): a client uses the key only for the same
    # name under the same trust, and discovers (and validates) again otherwise
    server_name: str = ""
    trust: str = ""

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


@dataclass(frozen=True)
class Pin:
    """The leaf certificate a server showed on first use (VEL-CERT-003)."""

    fingerprint: str  # SHA-256 of the leaf DER, hex (VEL-CERT-006)


R = TypeVar("R", CachedKey, StoredTicket, Pin)


def server_address(host: str, port: int) -> str:
    """``host:port`` as the user writes it (IPv6 hosts in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _HostRecords(Generic[R]):
    """One JSON file per ``host:port`` in a subdirectory of the cache, each a ``record``
    dataclass; a missing, unreadable or outdated file reads as None. A directory other users
    can write to is refused (UsageError) when the records are opened, before anything is
    read from it."""

    subdirectory = ""
    record: type[R]

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = (directory or cache_dir()) / self.subdirectory
        refuse_shared_directory(self.directory.parent)
        refuse_shared_directory(self.directory)

    def path(self, host: str, port: int) -> Path:
        safe = "".join(c if c.isalnum() or c in ".-" else "_" for c in host.lower())
        return self.directory / f"{safe}_{port}.json"

    def get(self, host: str, port: int) -> R | None:
        try:
            return self.record(**json.loads(self.path(host, port).read_text()))
        except (OSError, ValueError, TypeError):
            return None  # missing or unreadable: start over

    def put(self, host: str, port: int, record: R) -> Path:
        path = self.path(host, port)
        write_secret_file(path, json.dumps(asdict(record), indent=1).encode())
        return path

    def drop(self, host: str, port: int) -> bool:
        """Remove the record; whether there was one."""
        try:
            self.path(host, port).unlink()
        except FileNotFoundError:
            return False
        return True


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


class PinCache(_HostRecords[Pin]):
    subdirectory = "pins"
    record = Pin


class TofuPins:
    """``TofuStore`` for a client of a server on ``port``: the pin for a server name is kept
    per ``name:port`` (two servers on one host are two pins), in the ``PinCache``."""

    def __init__(self, directory: Path | None = None, *, port: int) -> None:
        self.pins = PinCache(directory)
        self.port = port

    def pinned(self, name: str) -> str | None:
        pin = self.pins.get(name, self.port)
        return pin.fingerprint if pin is not None else None

    def pin(self, name: str, fingerprint: str) -> None:
        self.pins.put(name, self.port, Pin(fingerprint))

    def clearing(self, name: str) -> str:
        """Said in the CONNECTION_CLOSE to the peer too: a path in the home directory is
        shown from ~, which does not tell the peer the user's name."""
        address = server_address(name, self.port)
        path = self.pins.path(name, self.port)
        if path.is_relative_to(Path.home()):
            path = Path("~") / path.relative_to(Path.home())
        return (f"the pin for {address} is {path}; if the change is expected, clear it with "
                f"'velocity keys forget {address}'")


def forget(host: str, port: int, directory: Path | None = None) -> list[Path]:
    """Remove what the client keeps for ``host:port`` (pin, learned key, ticket); the files
    that were there."""
    gone = []
    for records in (PinCache(directory), KeyCache(directory), TicketCache(directory)):
        path = records.path(host, port)
        if records.drop(host, port):
            gone.append(path)
    return gone
