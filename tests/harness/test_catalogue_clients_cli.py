"""The fallback, downgrade and certificate catalogue run against the reference CLI as the
target, through pytester sessions (what an implementer types): `velocity fetch` as the
client of role: server scenarios, in each trust mode it has (a CA file, trust on first
use, insecure: the weakened one), with and without the server's key; and `velocity serve
--fallback-only` as the server of the fallback-only scenarios, beside a server weakened to
direct a client before it checks the client's key (VEL-FB-011). Each command is bounded
by the harness (a client run at most 10 s, a server's start 20 s)."""

from __future__ import annotations

import datetime as dt
import sys
import textwrap
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
FETCH = f"env VELOCITY_CACHE_DIR={{cache}} {VELOCITY} fetch 127.0.0.1:{{port}} /"
CATALOGUE = ("scenarios/clients/trust.yaml", "scenarios/clients/downgrade.yaml",
             "scenarios/certificates/validation.yaml", "scenarios/fallback/fallback-only.yaml",
             "scenarios/fallback/legacy-client.yaml", "scenarios/clients/directive-lifetime.yaml")


@pytest.fixture
def catalogue(pytester: pytest.Pytester) -> pytest.Pytester:
    for name in CATALOGUE:
        target = pytester.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text((ROOT / name).read_text())
    (pytester.path / "client.cap").write_text("[client]\n")
    (pytester.path / "following.cap").write_text(
        "[client, follows-fallback, follows-unauthenticated-fallback]\n")
    (pytester.path / "fallback-only.cap").write_text("[fallback-only, profile-balanced]\n")
    return pytester


def fetch(catalogue: pytest.Pytester, options: str, *selection: str,
          caps: str = "client.cap") -> pytest.RunResult:
    return catalogue.runpytest("-p", "no:randomly", *selection, "--target-caps", caps,
                               "--target-cmd", f"{FETCH} {options}")


@pytest.mark.spec("VEL-CERT-002", "VEL-AUTH-021")
def test_velocity_fetch_with_a_ca_file_refuses_every_invalid_certificate(
        catalogue: pytest.Pytester) -> None:
    result = fetch(catalogue, "--ca {ca}", "scenarios/certificates")
    result.assert_outcomes(passed=3)


@pytest.mark.spec("VEL-CERT-002", "VEL-CERT-003")
def test_velocity_fetch_on_first_use_refuses_expired_and_misnamed_certificates(
        catalogue: pytest.Pytester) -> None:
    """Trust on first use pins whatever chain comes first, so only `other_ca` passes it."""
    result = fetch(catalogue, "--tofu", "scenarios/certificates")
    result.assert_outcomes(passed=2, failed=1)
    assert "FAIL certificates/invalid-certificate-is-refused [certificate=other_ca]" in (
        result.stdout.str())


@pytest.mark.spec("VEL-CERT-002", "VEL-AUTH-021")
def test_an_insecure_client_fails_every_certificate_scenario(
        catalogue: pytest.Pytester) -> None:
    result = fetch(catalogue, "--insecure", "scenarios/certificates")
    result.assert_outcomes(failed=3)
    out = result.stdout.str()
    assert "not with CERTIFICATE_INVALID (0x105)" in out
    assert "VEL-CERT-002 [MUST] A client validates: the signature chain" in out


@pytest.mark.spec("VEL-FB-004", "VEL-FB-008", "VEL-FB-009", "VEL-AUTH-012")
def test_velocity_fetch_holding_the_key_refuses_every_forged_signal(
        catalogue: pytest.Pytester) -> None:
    result = fetch(catalogue, "--ca {ca} --kem-b64 {kem_b64}", "scenarios/clients", "-k",
                   "forged-fallback or stale-key or pdk-client")
    result.assert_outcomes(passed=4)


@pytest.mark.spec("VEL-FB-006", "VEL-FB-009")
def test_velocity_fetch_discovering_ends_the_attempts_it_must_not_follow(
        catalogue: pytest.Pytester) -> None:
    result = fetch(catalogue, "--ca {ca}", "scenarios/clients", "-k",
                   "unoffered-protocol or kem-key-required-ends or discovery-validates")
    result.assert_outcomes(passed=3)


@pytest.mark.spec("VEL-FB-009")
def test_velocity_fetch_escapes_a_forged_reason_text(catalogue: pytest.Pytester) -> None:
    result = fetch(catalogue, "--ca {ca}", "scenarios/clients", "-k", "forged-reason")
    result.assert_outcomes(passed=1)


@pytest.mark.spec("VEL-FB-012")
@pytest.mark.parametrize("key", ["", "--kem-b64 {kem_b64}"], ids=["discovery", "pdk"])
def test_velocity_fetch_following_directives_keeps_none_for_its_next_run(
        catalogue: pytest.Pytester, key: str) -> None:
    """Each run is a new process: whatever the directive's retry_after, the next run tries
    Velocity/1 again. Discovering, the command cannot be given the key the authenticated
    scenarios need (UNSUPPORTED, not a vacuous pass). Without --follow-fallback the claim is
    false: the scenario fails at the directive it expected it to follow."""
    lifetime = "scenarios/clients/directive-lifetime.yaml"
    result = fetch(catalogue, f"--ca {{ca}} {key} --follow-fallback", lifetime,
                   caps="following.cap")
    result.assert_outcomes(passed=3) if key else result.assert_outcomes(passed=1, skipped=2)
    if not key:
        result = fetch(catalogue, "--ca {ca}", lifetime, caps="following.cap")
        result.assert_outcomes(failed=1, skipped=2)
        assert "the client did not contact the fallback port" in result.stdout.str()
        fetch(catalogue, "--ca {ca}", lifetime).assert_outcomes(skipped=3)


WEAK_SERVER = textwrap.dedent('''\
    """`velocity serve` that directs every client before it checks a server_key block
    (VEL-FB-011 broken): a key it does not hold gets an unauthenticated directive."""
    import sys
    from velocity.cli import main
    from velocity.core.handshake import server
    from velocity.core.errors import StaleKemKey

    checked = server.ServerHandshake._static_secret

    def static_secret(self, hello):
        try:
            return checked(self, hello)
        except StaleKemKey:
            return None, None

    server.ServerHandshake._static_secret = static_secret
    sys.argv[0] = "velocity"
    main()
''')


@pytest.fixture
def identity(catalogue: pytest.Pytester) -> Path:
    """A server root whose `velocity serve --self-signed` loads a saved balanced identity."""
    root = catalogue.path / "root"
    certs = root / ".velocity" / "certs"
    ServerIdentity.create(BALANCED, entropy=OsEntropy(), names=("localhost", "127.0.0.1"),
                          now=dt.datetime.now(dt.UTC)).save(certs)
    return root


def fallback_only(catalogue: pytest.Pytester, identity: Path, program: str,
                  *selection: str) -> pytest.RunResult:
    certs = identity / ".velocity" / "certs"
    return catalogue.runpytest(
        "-p", "no:randomly", "scenarios/fallback", *selection,
        "--target-caps", "fallback-only.cap",
        "--kem-file", str(certs / "balanced-leaf.pem"), "--ca", str(certs / "balanced-ca.pem"),
        "--sni", "localhost", "--target-cmd",
        f"{program} serve --root {identity} --self-signed --listen 127.0.0.1:{{port}} "
        "--fallback-only")


@pytest.mark.spec("VEL-FB-011", "VEL-FB-003", "VEL-AUTH-011")
def test_velocity_serve_fallback_only_checks_the_key_before_it_directs(
        catalogue: pytest.Pytester, identity: Path) -> None:
    """The directives to legacy clients hold there too; the scenarios that expect
    velocity/1 to be selected are left out (a fallback-only server selects nothing)."""
    result = fallback_only(catalogue, identity, str(VELOCITY), "-k", "not velocity-is-selected")
    result.assert_outcomes(passed=9)


@pytest.mark.spec("VEL-FB-011")
def test_a_fallback_only_server_that_directs_before_the_key_check_fails(
        catalogue: pytest.Pytester, identity: Path) -> None:
    (catalogue.path / "weak_serve.py").write_text(WEAK_SERVER)
    result = fallback_only(catalogue, identity, f"{sys.executable} weak_serve.py", "-k",
                           "stale or fallback-only")
    result.assert_outcomes(passed=2, failed=2)
    out = result.stdout.str()
    assert "FAIL fallback/fallback-only-checks-the-key-before-directing" in out
    assert "FAIL fallback/stale-key-is-refused-in-the-initial-space" in out
    assert "closed by the harness with DOWNGRADE_DETECTED (0x109)" in out
