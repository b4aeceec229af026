"""What the user sees when something is wrong: the URL form of ``fetch``, and every OS error
in one line naming the option or argument concerned and what to do, with no traceback and no
asyncio complaint."""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.processes import fetch, fetch_json, one_line, run_cli, server


@pytest.fixture
def udp_port() -> Iterator[int]:
    """A UDP port held (bound, never read) for the test: taken, and silent."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", 0))
        yield int(held.getsockname()[1])


def test_fetch_takes_an_https_url(site: Path, env: dict[str, str], tmp_path: Path) -> None:
    """``velocity fetch HOST:PORT https://NAME/path?query``: NAME is the server name the
    certificate must carry (and the pin's), path and query the request."""
    with server(site, env, "--publish-kem") as target:
        got = fetch_json(target, env, "https://localhost/medium.bin?version=2")
        assert got["status"] == 200 and got["velocity"]["auth_mode"] == "discovery"  # type: ignore[index]
        assert got["sha256"] == hashlib.sha256((site / "medium.bin").read_bytes()).hexdigest()
        port = target.rsplit(":", 1)[1]
        assert (tmp_path / "cache" / "pins" / f"localhost_{port}.json").exists()
        elsewhere = {**env, "VELOCITY_CACHE_DIR": str(tmp_path / "fresh")}
        one_line(fetch(target, elsewhere, "https://www.example.com/small.txt"),
                 "not valid for www.example.com")


@pytest.mark.parametrize(("path", "message"), [
    ("http://localhost/x", "the scheme must be https"),
    ("index.html", "neither a path starting with / nor a URL"),
    ("localhost:4433/x", "neither a path starting with / nor a URL"),
    ("/a b", "percent-encode"),
    ("https://user:secret@localhost/", "credentials"),
    ("https://bad..name/", "'bad..name' is not a host name"),
    ("https://[::1/x", "is not a URL: Invalid IPv6 URL"),
])
def test_a_bad_path_or_url_is_one_line(env: dict[str, str], path: str, message: str) -> None:
    one_line(fetch("127.0.0.1:9", env, path), f"PATH {path!r}", message)


def test_output_into_a_missing_directory(site: Path, env: dict[str, str],
                                         tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "small.txt"
    with server(site, env, "--publish-kem") as target:
        one_line(fetch(target, env, "/small.txt", "-o", str(missing)),
                 f"-o {missing}: No such file or directory", "existing directory")


def test_a_host_name_that_does_not_resolve(env: dict[str, str], site: Path) -> None:
    one_line(fetch("no-such-host.invalid:4433", env, "/"),
             "TARGET no-such-host.invalid:4433", "check the host name")
    one_line(run_cli(env, "serve", "--root", str(site), "--self-signed", "--listen",
                     "no-such-host.invalid:4433"),
             "--listen no-such-host.invalid:4433", "give an IP address")


@pytest.mark.parametrize("option", ["--listen", "--h3-listen"])
def test_a_udp_address_in_use_names_its_option(site: Path, env: dict[str, str], option: str,
                                               udp_port: int) -> None:
    taken = f"127.0.0.1:{udp_port}"
    others = ["--listen", "127.0.0.1:0"] if option != "--listen" else []
    one_line(run_cli(env, "serve", "--root", str(site), "--self-signed", *others, option, taken),
             f"{option} {taken}: Address already in use", "choose another port")


def test_a_metrics_address_in_use_names_its_option(site: Path, env: dict[str, str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = f"127.0.0.1:{held.getsockname()[1]}"
        one_line(run_cli(env, "serve", "--root", str(site), "--self-signed", "--listen",
                         "127.0.0.1:0", "--metrics-listen", taken),
                 f"--metrics-listen {taken}: Address already in use")


def unwritable_directory(tmp_path: Path) -> Path:
    """A directory this user cannot create files in: a read-only one, or (for root, whom
    modes do not stop) sysfs."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        return locked
    try:
        tempfile.TemporaryFile(dir="/sys").close()
    except OSError:
        return Path("/sys")
    pytest.skip("no directory here refuses root's writes")


def test_transcripts_into_a_place_that_cannot_hold_them(site: Path, env: dict[str, str],
                                                        tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    for directory, reason in ((tmp_path / "a-file" / "sub", "Not a directory"),
                              (unwritable_directory(tmp_path), "ermission denied")):
        one_line(run_cli(env, "serve", "--root", str(site), "--self-signed", "--listen",
                         "127.0.0.1:0", "--transcripts", str(directory), timeout=30),
                 f"--transcripts {directory}: ", reason, "write in")


def test_a_followed_fallback_that_gets_no_reply(site: Path, env: dict[str, str],
                                                udp_port: int) -> None:
    """The HTTP/3 origin named by the directive never answers: one line, and no "Future
    exception was never retrieved" from an abandoned aioquic future."""
    with server(site, env, "--fallback-only", "--fallback-port", str(udp_port)) as target:
        one_line(fetch(target, env, "/small.txt", "--follow-fallback", "--insecure",
                       "--timeout", "1"), f"no HTTP/3 reply from 127.0.0.1:{udp_port}")


@pytest.mark.spec("VEL-CERT-009")
def test_key_directories_others_can_write_are_refused(site: Path, env: dict[str, str],
                                                      tmp_path: Path) -> None:
    certs = site / ".velocity" / "certs"
    with server(site, env, "--publish-kem") as target:
        fetch_json(target, env, "/small.txt")
        cache = tmp_path / "cache"
        os.chmod(cache, 0o777)
        one_line(fetch(target, env, "/small.txt"), f"{cache} is writable by other users",
                 f"'chmod 700 {cache}'")
    os.chmod(certs, 0o775)
    one_line(run_cli(env, "serve", "--root", str(site), "--self-signed", "--listen",
                     "127.0.0.1:0"), f"'chmod 700 {certs}'")
    one_line(run_cli(env, "keys", "rotate", "--root", str(site)), f"'chmod 700 {certs}'")
