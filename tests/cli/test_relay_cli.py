"""``velocity relay`` as a user runs it: between ``velocity serve`` and ``velocity fetch``,
all three subprocesses on 127.0.0.1 with a timeout on every wait; its one line of stats
when it is stopped, and its user errors in one line."""

from __future__ import annotations

import hashlib
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.processes import fetch_json, one_line, run_cli, server, started, target_of


@pytest.fixture
def udp_port() -> Iterator[int]:
    """A UDP port held for the test (bound, never read)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", 0))
        yield int(held.getsockname()[1])


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_fetch_through_a_lossy_relay(site: Path, env: dict[str, str], tmp_path: Path,
                                       stop: signal.Signals) -> None:
    """200 KB arrive byte for byte through 5 % loss, delay, jitter, reordering and
    duplication; stopped, the relay says in one line what it did, without a traceback."""
    with server(site, env, "--publish-kem") as target, started(
            ["relay", "127.0.0.1:0", target, "--loss", "0.05", "--delay", "5", "--jitter", "2",
             "--reorder", "0.05", "--duplicate", "0.05", "--seed", "7"], env) as relay:
        through = target_of(relay.wait_for("relaying udp://"))
        out = tmp_path / "medium.bin"
        got = fetch_json(through, env, "/medium.bin", "-o", str(out))
        assert out.read_bytes() == (site / "medium.bin").read_bytes()
        assert got["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
        relay.process.send_signal(stop)
        assert relay.process.wait(20) == 0
        rest = relay.rest()
    assert len(rest) == 1 and rest[0].startswith("relay: received "), rest
    assert "forwarded" in rest[0] and "Traceback" not in "".join(relay.seen)


def test_the_relay_stops_after_its_duration(env: dict[str, str]) -> None:
    result = run_cli(env, "relay", "127.0.0.1:0", "127.0.0.1:9", "--duration", "0.2")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("relaying udp://127.0.0.1:") and len(lines) == 2
    assert lines[1].startswith("relay: received 0 datagrams")


@pytest.mark.parametrize(("args", "expected"), [
    (["--loss", "1.5"], "--loss 1.5: a probability is between 0 and 1"),
    (["--corrupt", "-0.1"], "--corrupt -0.1: give a number of at least 0"),
    (["--delay", "nan"], "--delay nan: give a number of at least 0"),
    (["--mtu", "0"], "--mtu"),
])
def test_a_bad_value_is_one_line(env: dict[str, str], args: list[str], expected: str) -> None:
    one_line(run_cli(env, "relay", "127.0.0.1:0", "127.0.0.1:9", *args), expected)


def test_bad_addresses_are_one_line(env: dict[str, str], udp_port: int) -> None:
    one_line(run_cli(env, "relay", "127.0.0.1:99999", "127.0.0.1:9"), "LISTEN",
             "is not HOST:PORT")
    one_line(run_cli(env, "relay", "127.0.0.1:0", "no-port"), "UPSTREAM")
    one_line(run_cli(env, "relay", f"127.0.0.1:{udp_port}", "127.0.0.1:9"),
             f"LISTEN 127.0.0.1:{udp_port}: Address already in use")
