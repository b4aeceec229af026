"""The client's on-disk key cache and trust-on-first-use pins: one JSON record per
``host:port`` under ``$VELOCITY_CACHE_DIR`` (default ``$XDG_CACHE_HOME/velocity``, else
``~/.cache/velocity``), written with mode 0600."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

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


class KeyCache:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = (directory or cache_dir()) / "keys"

    def _path(self, host: str, port: int) -> Path:
        safe = "".join(c if c.isalnum() or c in ".-" else "_" for c in host)
        return self.directory / f"{safe}_{port}.json"

    def get(self, host: str, port: int) -> CachedKey | None:
        try:
            return CachedKey(**json.loads(self._path(host, port).read_text()))
        except (OSError, ValueError, TypeError):
            return None  # missing or unreadable: rediscover

    def put(self, host: str, port: int, key: CachedKey) -> Path:
        path = self._path(host, port)
        write_secret_file(path, json.dumps(asdict(key), indent=1).encode())
        return path

    def drop(self, host: str, port: int) -> None:
        self._path(host, port).unlink(missing_ok=True)


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
