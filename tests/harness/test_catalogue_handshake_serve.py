"""Handshake scenarios against `velocity serve` started by the harness (--target-cmd), in
pytester sessions: the Retry scenarios pass against `--retry always` (the in-process target
sends no Retry, so they are UNSUPPORTED there), and a discovering client that offers a
profile the server holds no key for is refused, a known defect of the reference. The
server's identity is written beforehand so the harness holds its key (--kem-file) and CA."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest

from tests.harness.sessions import quiet_inner_sessions
from velocity.aio.entropy import OsEntropy
from velocity.core.hybrid import BALANCED
from velocity.crypto.identity import ServerIdentity

pytest_plugins = ["pytester"]
__all__ = ["quiet_inner_sessions"]  # an autouse fixture
ROOT = Path(__file__).resolve().parents[2]
VELOCITY = Path(sys.executable).parent / "velocity"
CAPS = "[server, profile-balanced, publish-kem, retry, resumption]\n"


def serve_options(pytester: pytest.Pytester, *flags: str) -> list[str]:
    """The harness options for a `velocity serve --self-signed` target whose balanced
    identity is created here, with ``flags`` added to its command."""
    certs = pytester.path / "www" / ".velocity" / "certs"
    ServerIdentity.create(BALANCED, entropy=OsEntropy(), names=("localhost", "127.0.0.1"),
                          now=dt.datetime.now(dt.UTC)).save(certs)
    (pytester.path / "www" / "index.html").write_text("served\n")
    (pytester.path / "caps.yaml").write_text(CAPS)
    command = " ".join([str(VELOCITY), "serve", "--root", "www", "--self-signed",
                        "--listen", "127.0.0.1:{port}", *flags])
    return ["--target-cmd", command, "--target-caps", "caps.yaml", "--sni", "localhost",
            "--kem-file", str(certs / "balanced-leaf.pem"), "--ca",
            str(certs / "balanced-ca.pem")]


def copy(pytester: pytest.Pytester, file: str) -> None:
    target = pytester.path / file
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text((ROOT / file).read_text())


@pytest.mark.spec("VEL-RTY-001", "VEL-RTY-004", "VEL-RTY-005", "VEL-RTY-008")
def test_the_retry_scenarios_pass_against_a_server_that_always_sends_retry(
        pytester: pytest.Pytester) -> None:
    copy(pytester, "scenarios/retry/retry.yaml")
    options = serve_options(pytester, "--publish-kem", "--retry", "always")
    result = pytester.runpytest("-W", "error::harness.collect.ScenarioWarning", "scenarios",
                                *options)
    result.assert_outcomes(passed=4)


@pytest.mark.spec("VEL-RTY-004")
def test_the_retry_scenarios_fail_against_a_server_that_sends_none(
        pytester: pytest.Pytester) -> None:
    copy(pytester, "scenarios/retry/retry.yaml")
    result = pytester.runpytest("scenarios", "-k", "through", *serve_options(
        pytester, "--publish-kem", "--retry", "never"))
    result.assert_outcomes(failed=2)
    assert "no quic:parameters_set where data.original_destination_connection_id_length = 8, " \
           "data.retry_source_connection_id_length gte 1" in result.stdout.str()


@pytest.mark.spec("VEL-AUTH-001", "VEL-AUTH-020", "VEL-HS-020")
def test_a_discovering_client_offering_an_unkeyed_profile_first_is_retried(
        pytester: pytest.Pytester) -> None:
    copy(pytester, "scenarios/handshake/hello-retry.yaml")
    result = pytester.runpytest("scenarios", "-k", "direct-discovery",
                                *serve_options(pytester, "--publish-kem"))
    result.assert_outcomes(passed=1)
