"""The client wire catalogue (HELLO_RETRY, Retry, Version Negotiation, resumption) run
against the reference CLI as the target client, through a pytester session (what an
implementer types): `velocity fetch --ca {ca} --early-data` keeps its cache in `{cache}`,
so a `run_client` resumes it with 0-RTT. Each command is bounded by the harness (a client
run at most 10 s)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.harness.sessions import quiet_inner_sessions

pytest_plugins = ["pytester"]
__all__ = ["quiet_inner_sessions"]  # an autouse fixture
ROOT = Path(__file__).resolve().parents[2]
VELOCITY = Path(sys.executable).parent / "velocity"
FETCH = (f"env VELOCITY_CACHE_DIR={{cache}} {VELOCITY} fetch 127.0.0.1:{{port}} / --ca {{ca}} "
         "--early-data")
CATALOGUE = ("scenarios/clients/hello-retry.yaml", "scenarios/clients/retry.yaml",
             "scenarios/clients/resumption.yaml")


@pytest.mark.spec("VEL-HS-021", "VEL-RTY-002", "VEL-RTY-003", "VEL-VN-004", "VEL-RES-006")
def test_velocity_fetch_meets_the_client_wire_catalogue(pytester: pytest.Pytester) -> None:
    for name in CATALOGUE:
        target = pytester.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text((ROOT / name).read_text())
    (pytester.path / "client.cap").write_text("[client]\n")
    result = pytester.runpytest("-p", "no:randomly", "scenarios", "-k",
                                "hello-retry or retry or version or resumption-with-early",
                                "--target-caps", "client.cap", "--target-cmd", FETCH)
    result.assert_outcomes(passed=12)
