"""Where keys and certificates land on disk: directories 0700 and files 0600 (secrets) or
0644 (certificates) whatever the umask, writes that replace a planted symlink instead of
following it, and directories other users can write to refused before use."""

from __future__ import annotations

import datetime as dt
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from velocity.core.entropy import SeededEntropy
from velocity.core.errors import UsageError
from velocity.core.events import TicketReceived
from velocity.core.handshake.common import SessionTicket
from velocity.core.hybrid import BALANCED
from velocity.crypto.identity import ServerIdentity, rotate_identity
from velocity.crypto.pki import write_secret_file
from velocity.http.h3 import ensure_tls_certificate
from velocity.keystore import CachedKey, KeyCache, StoredTicket, TicketCache, TofuPins

NOW = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Umask 000 for the test (what a careless service manager may give): every mode the
    code asks for must be explicit."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def identity(seed: int = 1) -> ServerIdentity:
    return ServerIdentity.create(BALANCED, entropy=SeededEntropy(seed), names=("localhost",),
                                 now=NOW)


@pytest.mark.spec("VEL-CERT-004", "VEL-CERT-007")
@pytest.mark.usefixtures("open_umask")
def test_server_key_directory_and_files_have_explicit_modes(tmp_path: Path) -> None:
    """What ``serve --self-signed`` (and ``--h3-listen``) and ``keys rotate`` write under
    ROOT/.velocity/certs."""
    certs = tmp_path / "public" / ".velocity" / "certs"
    (tmp_path / "public").mkdir()
    identity().save(certs)
    ensure_tls_certificate(certs, ("localhost",))
    rotate_identity(BALANCED, certs, entropy=SeededEntropy(2), now=NOW, keep_previous=True)
    assert mode(certs.parent) == mode(certs) == 0o700
    files = {path.name: mode(path) for path in certs.iterdir()}
    assert files == {
        "balanced-ca.key": 0o600, "balanced-kem.key": 0o600, "balanced-previous-kem.key": 0o600,
        "h3-key.pem": 0o600, "balanced-ca.pem": 0o644, "balanced-leaf.pem": 0o644,
        "balanced-previous-leaf.pem": 0o644, "h3-cert.pem": 0o644,
        "balanced-rotated-at": 0o644}


@pytest.mark.spec("VEL-CERT-007")
@pytest.mark.usefixtures("open_umask")
def test_client_cache_directories_and_files_are_private(tmp_path: Path) -> None:
    cache = tmp_path / "home" / ".cache" / "velocity"
    KeyCache(cache).put("example.com", 4433, CachedKey("balanced", "00", "AA==", "ff"))
    ticket = SessionTicket(b"t", b"p", 1, 1, b"velocity/1", 0, 60, 0, 0, None)
    TicketCache(cache).put("example.com", 4433, StoredTicket.keep(
        TicketReceived(ticket, b""), b"", issued_unix=0.0))
    TofuPins(cache, port=4433).pin("example.com", "ab" * 32)
    made = [tmp_path / "home", tmp_path / "home" / ".cache", cache,
            *(cache / sub for sub in ("keys", "tickets", "pins"))]
    assert [mode(d) for d in made] == [0o700] * 6
    written = list(cache.glob("*/*.json"))
    assert len(written) == 3 and {mode(f) for f in written} == {0o600}


@pytest.mark.spec("VEL-CERT-008")
def test_a_planted_symlink_is_replaced_not_followed(tmp_path: Path) -> None:
    """Links at a secret's and a certificate's path, one to a file elsewhere, one dangling:
    the writes replace the links, and nothing changes or appears where they pointed."""
    certs = tmp_path / "certs"
    certs.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "victim"
    victim.write_bytes(b"precious")
    (certs / "balanced-kem.key").symlink_to(victim)
    (certs / "balanced-leaf.pem").symlink_to(elsewhere / "not-yet")
    (certs / "loose.key").symlink_to(victim)
    ident = identity()
    ident.save(certs)
    write_secret_file(certs / "loose.key", b"new key")
    assert victim.read_bytes() == b"precious"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["victim"]
    assert not any(p.is_symlink() for p in certs.iterdir())
    assert (certs / "loose.key").read_bytes() == b"new key"
    assert ServerIdentity.load(BALANCED, certs).leaf_der == ident.leaf_der
    assert sorted(p.name for p in certs.iterdir()) == [
        "balanced-ca.key", "balanced-ca.pem", "balanced-kem.key", "balanced-leaf.pem",
        "loose.key"]


@pytest.mark.spec("VEL-CERT-009")
@pytest.mark.parametrize("shared_mode", [0o777, 0o775, 0o1777])
def test_a_key_directory_others_can_write_is_refused(tmp_path: Path, shared_mode: int) -> None:
    certs = tmp_path / "certs"
    identity().save(certs)
    before = (certs / "balanced-kem.key").read_bytes()
    os.chmod(certs, shared_mode)
    with pytest.raises(UsageError, match=f"writable by other users.*'chmod 700 {certs}'"):
        write_secret_file(certs / "new.key", b"secret")
    assert not (certs / "new.key").exists()
    with pytest.raises(UsageError, match="chmod 700"):
        ServerIdentity.load(BALANCED, certs)
    with pytest.raises(UsageError, match="chmod 700"):
        rotate_identity(BALANCED, certs, entropy=SeededEntropy(2), now=NOW, keep_previous=True)
    assert (certs / "balanced-kem.key").read_bytes() == before
    assert not (certs / "balanced-previous-kem.key").exists()  # refused before any change


@pytest.mark.spec("VEL-CERT-009")
def test_a_shared_cache_directory_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """A planted key or pin in a directory others can write to would be trusted if read."""
    cache = tmp_path / "cache"
    KeyCache(cache).put("example.com", 4433, CachedKey("balanced", "00", "AA==", "ff"))
    os.chmod(cache, 0o777)
    for opening in (KeyCache, TicketCache, lambda d: TofuPins(d, port=4433)):
        with pytest.raises(UsageError, match="chmod 700"):
            opening(cache)
    os.chmod(cache, 0o700)
    os.chmod(cache / "keys", 0o777)
    with pytest.raises(UsageError, match="chmod 700"):
        KeyCache(cache)
    real = tmp_path / "shared"
    real.mkdir()
    os.chmod(real, 0o777)
    (tmp_path / "linked").symlink_to(real)  # a link to a shared directory is no way round
    with pytest.raises(UsageError, match="chmod 700"):
        KeyCache(tmp_path / "linked")


@pytest.mark.spec("VEL-CERT-009")
@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
def test_a_key_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    identity().save(certs)
    os.chown(certs, 65534, 65534)
    with pytest.raises(UsageError, match="belongs to another user"):
        ServerIdentity.load(BALANCED, certs)
    with pytest.raises(UsageError, match="belongs to another user"):
        write_secret_file(certs / "new.key", b"secret")


@pytest.mark.spec("VEL-CERT-004")
def test_a_key_file_others_can_read_or_a_link_is_refused_on_load(tmp_path: Path) -> None:
    """A 0666 key file, or a key file that is a symbolic link (to a file anyone could have
    written), is refused when the identity is loaded, naming the fix (before, served)."""
    ident = ServerIdentity.create(BALANCED, entropy=SeededEntropy("load"), names=("x",),
                                  now=dt.datetime(2026, 11, 25, tzinfo=dt.UTC))
    keys = tmp_path / "keys"
    ident.save(keys)
    assert ServerIdentity.load(BALANCED, keys).kem_seed == ident.kem_seed
    key = keys / "balanced-kem.key"
    os.chmod(key, 0o666)
    with pytest.raises(UsageError, match="chmod 600"):
        ServerIdentity.load(BALANCED, keys)
    os.chmod(key, 0o600)
    elsewhere = tmp_path / "planted.key"
    elsewhere.write_bytes(key.read_bytes())
    os.chmod(elsewhere, 0o600)
    key.unlink()
    key.symlink_to(elsewhere)
    with pytest.raises(UsageError, match="symbolic link"):
        ServerIdentity.load(BALANCED, keys)
