"""Trust-on-first-use pins (VEL-CERT-003): one per host:port, a changed key refused with
where the pin is and how to clear it, and ``forget`` clearing what a client keeps."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from velocity.core.entropy import SeededEntropy
from velocity.core.errors import CertificateInvalid
from velocity.core.hybrid import BALANCED
from velocity.crypto.identity import ServerIdentity
from velocity.crypto.pki import X509Verifier
from velocity.keystore import CachedKey, KeyCache, TofuPins, forget

NOW = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)


def leaf(seed: int) -> bytes:
    return ServerIdentity.create(BALANCED, entropy=SeededEntropy(seed), names=("127.0.0.1",
                                 "::1"), now=NOW).leaf_der


def tofu(cache: Path, port: int) -> X509Verifier:
    return X509Verifier(tofu=TofuPins(cache, port=port), clock=lambda: NOW)


@pytest.mark.spec("VEL-CERT-003")
def test_two_servers_on_one_host_have_a_pin_each(tmp_path: Path) -> None:
    first, second = leaf(1), leaf(2)
    tofu(tmp_path, 4433).verify([first], BALANCED, "127.0.0.1")
    tofu(tmp_path, 4434).verify([second], BALANCED, "127.0.0.1")
    tofu(tmp_path, 4433).verify([first], BALANCED, "127.0.0.1")  # each still its own
    tofu(tmp_path, 4434).verify([second], BALANCED, "127.0.0.1")
    with pytest.raises(CertificateInvalid, match="first use"):
        tofu(tmp_path, 4434).verify([first], BALANCED, "127.0.0.1")


@pytest.mark.spec("VEL-CERT-003", "VEL-CERT-010")
@pytest.mark.parametrize(("host", "shown"), [("127.0.0.1", "127.0.0.1:4433"),
                                             ("::1", "[::1]:4433")])
def test_a_changed_key_says_where_the_pin_is_and_forget_clears_it(
        tmp_path: Path, host: str, shown: str) -> None:
    tofu(tmp_path, 4433).verify([leaf(1)], BALANCED, host)
    KeyCache(tmp_path).put(host, 4433, CachedKey("balanced", "00", "AA==", "ff"))
    with pytest.raises(CertificateInvalid) as refused:
        tofu(tmp_path, 4433).verify([leaf(2)], BALANCED, host)
    pin_file = TofuPins(tmp_path, port=4433).pins.path(host, 4433)
    assert re.search(f"the pin for {re.escape(shown)} is {re.escape(str(pin_file))}; .*"
                     f"'velocity keys forget {re.escape(shown)}'", refused.value.reason)
    assert pin_file.exists()
    gone = forget(host, 4433, tmp_path)
    assert pin_file in gone and len(gone) == 2  # the pin and the cached key
    assert tofu(tmp_path, 4433).verify([leaf(2)], BALANCED, host)  # trusted anew
    assert forget(host, 4434, tmp_path) == []


def test_a_pin_in_the_home_directory_is_shown_from_tilde(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The reason also travels to the peer in CONNECTION_CLOSE: no user name in it."""
    monkeypatch.setenv("HOME", str(tmp_path / "alice"))
    for variable in ("VELOCITY_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(variable, raising=False)
    pins = TofuPins(port=4433)
    assert pins.clearing("example.com").startswith(
        "the pin for example.com:4433 is ~/.cache/velocity/pins/example.com_4433.json; ")


def test_host_names_differing_in_case_share_a_pin(tmp_path: Path) -> None:
    pins = TofuPins(tmp_path, port=4433)
    pins.pin("Example.COM", "ab" * 32)
    assert pins.pinned("example.com") == "ab" * 32
