"""Scenarios that need more than a handshake of their target, against `velocity serve`
started by the harness (--target-cmd): a graceful shutdown (SIGTERM closes every connection
with NO_ERROR, and the harness starts the command again for the scenarios after it), and
a key rotation (`velocity keys rotate`, the previous key given with --kem-previous-file),
a key kept private (no --publish-kem), a Retry token reused by another connection."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness.targets import LOOPBACK, InProcessServer, answers_version_negotiation, free_udp_port
from tests.harness.sessions import quiet_inner_sessions
from tests.harness.test_catalogue_handshake_serve import VELOCITY, copy, serve_options

pytest_plugins = ["pytester"]
__all__ = ["quiet_inner_sessions"]  # an autouse fixture


@pytest.mark.spec("VEL-CONN-007", "VEL-FRM-004")
def test_sigterm_closes_every_connection_and_the_next_run_has_a_new_server(
        pytester: pytest.Pytester) -> None:
    copy(pytester, "scenarios/connection/shutdown.yaml")
    copy(pytester, "scenarios/recovery/impaired.yaml")
    result = pytester.runpytest("scenarios/connection", "scenarios/recovery", "-k",
                                "shutdown or ping-is-acknowledged",
                                *serve_options(pytester, "--publish-kem"))
    result.assert_outcomes(passed=3)  # both shutdown scenarios, one mid-handshake


def test_a_remote_target_cannot_be_shut_down(pytester: pytest.Pytester,
                                             tmp_path: Path) -> None:
    copy(pytester, "scenarios/connection/shutdown.yaml")
    server = InProcessServer(tmp_path)
    target = server.start()
    try:
        assert target.address is not None and target.ca_file is not None
        host, port = target.address
        result = pytester.runpytest("-rs", "scenarios", "--target", f"{host}:{port}", "--sni",
                                    "localhost", "--ca", str(target.ca_file))
    finally:
        server.stop()
    result.assert_outcomes(skipped=2)  # both shutdown scenarios
    result.stdout.fnmatch_lines(["*UNSUPPORTED*is not run by the harness, which cannot shut "
                                 "it down*"])


@pytest.mark.spec("VEL-CERT-005")
def test_a_rotated_server_accepts_its_previous_key(pytester: pytest.Pytester) -> None:
    copy(pytester, "scenarios/certificates/rotation.yaml")
    options = serve_options(pytester, "--publish-kem")
    certs = pytester.path / "www" / ".velocity" / "certs"
    previous = pytester.path / "previous-leaf.pem"
    previous.write_bytes((certs / "balanced-leaf.pem").read_bytes())
    subprocess.run([str(VELOCITY), "keys", "rotate", "--root", "www"], cwd=pytester.path,
                   check=True, capture_output=True, timeout=60)
    (pytester.path / "caps.yaml").write_text("[profile-balanced, publish-kem, key-rotation]\n")
    result = pytester.runpytest("scenarios", *options, "--kem-previous-file", str(previous))
    result.assert_outcomes(passed=1)
    claims = pytester.path / "caps.yaml"
    claims.write_text("[profile-balanced, publish-kem]\n")
    result = pytester.runpytest("-rs", "scenarios", *options)
    result.assert_outcomes(skipped=1)


@pytest.mark.spec("VEL-AUTH-020")
def test_a_server_that_keeps_its_key_private_requires_it(pytester: pytest.Pytester) -> None:
    copy(pytester, "scenarios/auth/private-key.yaml")
    options = serve_options(pytester)  # no --publish-kem
    (pytester.path / "caps.yaml").write_text("[profile-balanced, private-kem]\n")
    result = pytester.runpytest("scenarios", *options)
    result.assert_outcomes(passed=1)


@pytest.mark.spec("VEL-RTY-005")
def test_a_retry_token_from_another_connection_is_invalid(pytester: pytest.Pytester) -> None:
    copy(pytester, "scenarios/retry/tokens.yaml")
    options = serve_options(pytester, "--publish-kem", "--retry", "always")
    result = pytester.runpytest("scenarios", *options)
    result.assert_outcomes(passed=1)


@pytest.mark.spec("VEL-CONN-010")
def test_the_half_open_bound_scenario_passes_against_serve_with_that_bound(
        pytester: pytest.Pytester) -> None:
    """`serve --max-half-open-per-address 3` claimed as such: the harness's start-up checks
    leave no half-open handshake on the target (one did, so the fill step found the third
    connection refused), and the scenario closes what it filled before the sanity
    handshake after it."""
    copy(pytester, "scenarios/connection/limits.yaml")
    options = serve_options(pytester, "--publish-kem", "--max-half-open-per-address", "3")
    (pytester.path / "caps.yaml").write_text(
        "[profile-balanced, publish-kem, {half-open-per-address: 3}]\n")
    result = pytester.runpytest("-rs", "scenarios", *options, "-k", "half-open-beyond")
    result.assert_outcomes(passed=1)


NO_VN_SERVER = '''\
"""`velocity serve` that never answers an unknown version (VEL-VN-001 broken)."""
import sys
from velocity.cli import main
from velocity.core.endpoint import ServerEndpoint

ServerEndpoint._version_negotiation = lambda self, header, address: None
sys.argv[0] = "velocity"
main()
'''


@pytest.mark.spec("VEL-VN-001")
def test_a_server_that_never_answers_version_negotiation_fails_those_scenarios_only(
        pytester: pytest.Pytester) -> None:
    """The harness's start-up probe is Version Negotiation; a server silent to it is still
    started and run: the negotiation scenario FAILs, a handshake scenario PASSes (the whole
    run was INCONCLUSIVE before)."""
    copy(pytester, "scenarios/version/negotiation.yaml")
    copy(pytester, "scenarios/recovery/impaired.yaml")
    (pytester.path / "no_vn.py").write_text(NO_VN_SERVER)
    options = serve_options(pytester, "--publish-kem")
    command = options.index("--target-cmd") + 1
    options[command] = options[command].replace(str(VELOCITY), f"{sys.executable} no_vn.py", 1)
    result = pytester.runpytest("-rs", "scenarios", *options, "-k",
                                "probe-is-answered or ping-is-acknowledged")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*FAIL version/probe-is-answered*"])


def test_the_start_up_probe_tells_a_refused_port_from_a_silent_one() -> None:
    """Nothing listening is refused (keep probing: the command is still starting); a socket
    that reads and never answers is silent (after VN_PATIENCE, a handshake is tried)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((LOOPBACK, 0))
        assert answers_version_negotiation(silent.getsockname(), 0.2) is False
        free = free_udp_port()
    assert answers_version_negotiation((LOOPBACK, free), 0.5) is None
