"""Role: server scenarios against client targets: the in-process reference client, and
--target-cmd clients. A client weakened to follow any FALLBACK fails the forged-directive
scenario, naming the contact with the fallback port; the reference `velocity fetch` passes
it. Waits are bounded (the scenario's budget and the client run's 10 s)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from tests.harness.sessions import quiet_inner_sessions, write

pytest_plugins = ["pytester"]
__all__ = ["quiet_inner_sessions"]  # an autouse fixture
ROOT = Path(__file__).resolve().parents[2]
FORGED = (ROOT / "scenarios" / "clients" / "trust.yaml").read_text()

WEAK_CLIENT = textwrap.dedent('''\
    """A client that follows a FALLBACK it could not authenticate (VEL-FB-004 broken)."""
    import asyncio, socket, sys
    from velocity.aio.client import HandshakeError, connect
    from velocity.cli.fetch import key_from_option
    from velocity.core.connection import ConnectionConfig
    from velocity.core.handshake.client import ClientConfig
    from velocity.core.trace import Transcript
    from velocity.crypto.kem import kem_backend

    async def main(port: str, key: str) -> int:
        pinned = key_from_option(key, None)
        config = ClientConfig(kem=kem_backend(), profiles=(pinned.profile,), server_key=pinned)
        trace = Transcript()
        try:
            async with connect("127.0.0.1", int(port), ConnectionConfig(config), timeout=5,
                               tracer=trace):
                return 0
        except HandshakeError:
            directive = [e["data"] for e in trace.events if e["name"] == "velocity:message_received"
                         and e["data"].get("message_type") == "fallback"]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(b"following", ("127.0.0.1", directive[0]["port"]))
            return 1

    sys.exit(asyncio.run(main(*sys.argv[1:])))
''')


@pytest.fixture
def forged(pytester: pytest.Pytester) -> pytest.Pytester:
    write(pytester, "scenarios/clients/trust.yaml", FORGED)
    (pytester.path / "client.cap").write_text("[client]\n")
    return pytester


@pytest.mark.spec("VEL-FB-004", "VEL-FB-008")
def test_a_client_that_follows_a_forged_fallback_fails_the_scenario(
        forged: pytest.Pytester) -> None:
    (forged.path / "weak.py").write_text(WEAK_CLIENT)
    result = forged.runpytest("scenarios", "-k", "forged", "--target-caps", "client.cap",
                              "--target-cmd", f"{sys.executable} weak.py {{port}} {{kem_b64}}")
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    assert "reason: the client contacted the fallback port" in out
    assert "VEL-FB-004 [MUST] A client that sent a `server_key` block accepts a FALLBACK" in out


@pytest.mark.spec("VEL-FB-004", "VEL-FB-008")
def test_the_reference_fetch_command_refuses_the_forged_fallback(
        forged: pytest.Pytester) -> None:
    velocity = Path(sys.executable).parent / "velocity"
    result = forged.runpytest(
        "scenarios", "-k", "forged", "--target-caps", "client.cap", "--target-cmd",
        f"{velocity} fetch 127.0.0.1:{{port}} / --kem-b64 {{kem_b64}} --ca {{ca}}")
    result.assert_outcomes(passed=2)


def test_role_server_scenarios_pass_against_the_in_process_client(
        forged: pytest.Pytester) -> None:
    result = forged.runpytest("scenarios")
    result.assert_outcomes(passed=4)


def test_a_remote_server_target_cannot_run_role_server_scenarios(
        forged: pytest.Pytester) -> None:
    result = forged.runpytest("-rs", "scenarios", "-k", "other", "--target", "127.0.0.1:9")
    result.assert_outcomes(skipped=1)
    assert "does not claim client" in result.stdout.str()
