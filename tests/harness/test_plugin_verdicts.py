"""Verdicts as pytest reports them, in pytester sessions against the in-process target:
PASS passes, FAIL fails with the verdict's report (the requirement quoted, expected against
actual, seed, transcript) and no traceback, UNSUPPORTED and INCONCLUSIVE skip saying so,
expect_failure gives xfail before its date, XPASS fails, an expired entry fails, ERROR is a
pytest error, SHOULD-level checks fail only under --strict."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

from harness.schemas import schema_errors
from tests.harness.sessions import quiet_inner_sessions, write

pytest_plugins = ["pytester"]
__all__ = ["quiet_inner_sessions"]  # an autouse fixture

HEAD = "title: t\nrole: client\n"


def scenario(name: str, steps: str, *, spec: str = "VEL-HS-001", extra: str = "") -> str:
    return f"id: verdicts/{name}\n{HEAD}spec: [{spec}]\n{extra}steps:\n{steps}"


VERDICTS = "---\n".join([
    scenario("pass", "  - assert: '1 + 1 == 2'\n"),
    scenario("fail", "  - assert: 'datagrams_sent > 5'\n"),
    scenario("unsupported", "  - wait: 0\n", extra="requires: [retry]\n"),
    scenario("xfail", "  - assert: '1 == 2'\n",
             extra="expect_failure: {reason: not yet, until: 2999-01-01}\n"),
    scenario("xpass", "  - assert: '1 == 1'\n",
             extra="expect_failure: {reason: not yet, until: 2999-01-01}\n"),
    scenario("expired", "  - assert: '1 == 1'\n",
             extra="expect_failure: {reason: was broken, until: 2001-01-01}\n"),
    scenario("error", "  - assert: 'len(flights) == 1'\n"),
    scenario("should", "  - assert: 'flights == 99'\n", spec="VEL-VAR-004"),
])


@pytest.fixture
def verdicts(pytester: pytest.Pytester) -> pytest.Pytester:
    write(pytester, "scenarios/verdicts/all.yaml", VERDICTS)
    return pytester


def test_each_verdict_maps_onto_its_pytest_outcome(verdicts: pytest.Pytester) -> None:
    result = verdicts.runpytest("-rA", "scenarios", "--transcripts", "transcripts")
    result.assert_outcomes(passed=2, failed=3, skipped=1, xfailed=1, errors=1, warnings=1)
    out = result.stdout.str()
    assert "PASSED scenarios/verdicts/all.yaml::verdicts/pass" in out
    assert "XFAIL scenarios/verdicts/all.yaml::verdicts/xfail - not yet" in out
    assert ("SKIPPED [1] scenarios/verdicts/all.yaml:15: UNSUPPORTED: verdicts/unsupported: "
            "in-process reference server") in out
    assert "does not claim retry" in out
    assert "ERROR scenarios/verdicts/all.yaml::verdicts/error" in out
    assert "ERROR verdicts/error (scenarios/verdicts/all.yaml:" in out
    assert "TypeError: object of type 'int' has no len()" in out
    assert "XPASS verdicts/xpass" in out and "remove the expect_failure entry" in out
    assert "expired expect_failure (until 2001-01-01: was broken)" in out
    assert "PASSED scenarios/verdicts/all.yaml::verdicts/should" in out
    assert "SHOULD-level: fails only under --strict" in out
    assert "Traceback" not in out


def test_a_fail_report_quotes_the_requirement_and_shows_the_evidence(
        verdicts: pytest.Pytester) -> None:
    result = verdicts.runpytest("scenarios", "-k", "verdicts/fail", "--seed", "41")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "FAIL verdicts/fail (scenarios/verdicts/all.yaml:8): t" in out
    assert "reason: assert 'datagrams_sent > 5' does not hold" in out
    assert "VEL-HS-001 [MUST] Messages are framed as above and carried in CRYPTO" in out
    assert "expected: datagrams_sent > 5" in out
    assert "actual:   datagrams_sent = 0" in out
    assert "seed: 41" in out
    transcript = Path(next(line.split("transcript: ")[1] for line in result.outlines
                           if "transcript: " in line))
    document = json.loads(transcript.read_text())
    assert schema_errors("transcript", document) == []
    assert document["scenario"] == {"id": "verdicts/fail", "params": {}, "seed": 41}
    assert "Traceback" not in out


def test_under_strict_a_should_level_check_fails(verdicts: pytest.Pytester) -> None:
    result = verdicts.runpytest("scenarios", "-k", "verdicts/should", "--strict")
    result.assert_outcomes(failed=1)
    assert "VEL-VAR-004 [SHOULD]" in result.stdout.str()


def test_transcripts_are_written_for_every_run_when_asked(verdicts: pytest.Pytester) -> None:
    verdicts.runpytest("scenarios", "-k", "verdicts/pass", "--transcripts", "out")
    document = json.loads((verdicts.path / "out" / "verdicts--pass.json").read_text())
    assert schema_errors("transcript", document) == []
    assert [e["name"] for e in document["events"]][-1] == "harness:verdict"


SILENT = scenario("silent", "  - connect: {}\n  - expect: {event: velocity:handshake_completed}\n")


@pytest.mark.spec("VEL-GEN-001")
def test_an_unreachable_target_is_inconclusive(pytester: pytest.Pytester) -> None:
    write(pytester, "scenarios/verdicts/silent.yaml", SILENT)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # bound, never answers
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        result = pytester.runpytest("-rs", "scenarios", "--target", f"127.0.0.1:{port}")
    result.assert_outcomes(skipped=1)
    assert (f"INCONCLUSIVE: verdicts/silent: the sanity handshake before the run failed: no "
            f"handshake and answer to GET / from 127.0.0.1:{port} within 3 s"
            ) in result.stdout.str()
    assert "Traceback" not in result.stdout.str()
    # a gate must not pass a node it could not reach: the run fails, saying why
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "velocity: 1 scenario(s) INCONCLUSIVE, the target could not be judged" in (
        result.stdout.str())


def test_a_target_command_that_exits_is_inconclusive_with_its_output(
        pytester: pytest.Pytester) -> None:
    write(pytester, "scenarios/verdicts/silent.yaml", SILENT)
    command = f"{sys.executable} -c \"import sys; print('no such key'); sys.exit(3)\" {{port}}"
    result = pytester.runpytest("-rs", "scenarios", "--target-cmd", command)
    result.assert_outcomes(skipped=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert ("INCONCLUSIVE: verdicts/silent: --target-cmd exited with status 3 before "
            "answering; its output ends: no such key") in result.stdout.str()
