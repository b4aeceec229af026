"""Trust on first use from the command line: a pin per host:port, a changed key refused in
one line that says where the pin is, and ``velocity keys forget`` to accept the new one."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.cli.processes import fetch, fetch_json, one_line, run_cli, server


def discovered_with_tofu(target: str, env: dict[str, str]) -> str:
    done = fetch_json(target, env, "/small.txt", "--tofu")["velocity"]
    assert isinstance(done, dict) and done["auth_mode"] == "discovery"
    return str(done["key_id"])


@pytest.mark.spec("VEL-CERT-003")
def test_two_servers_on_one_host_are_pinned_apart(site: Path, env: dict[str, str],
                                                  tmp_path: Path) -> None:
    """Two servers on 127.0.0.1 with different keys: each is trusted on its first use."""
    other = tmp_path / "other"
    shutil.copytree(site, other)
    with server(site, env, "--publish-kem") as first, \
            server(other, env, "--publish-kem") as second:
        keys = discovered_with_tofu(first, env), discovered_with_tofu(second, env)
        assert keys[0] != keys[1]
        shutil.rmtree(tmp_path / "cache" / "keys")  # discover again: each checks its own pin
        assert (discovered_with_tofu(first, env), discovered_with_tofu(second, env)) == keys
    pins = sorted(p.name for p in (tmp_path / "cache" / "pins").iterdir())
    assert pins == sorted(f"127.0.0.1_{t.rsplit(':', 1)[1]}.json" for t in (first, second))


@pytest.mark.spec("VEL-CERT-003", "VEL-CERT-010")
def test_a_changed_key_is_refused_until_forgotten(site: Path, env: dict[str, str],
                                                  tmp_path: Path) -> None:
    with server(site, env, "--publish-kem") as target:
        discovered_with_tofu(target, env)
    assert run_cli(env, "keys", "rotate", "--no-overlap", "--root", str(site)).returncode == 0
    port = target.rsplit(":", 1)[1]
    pin = tmp_path / "cache" / "pins" / f"127.0.0.1_{port}.json"
    with server(site, env, "--publish-kem", "--listen", f"127.0.0.1:{port}"):
        refused = one_line(fetch(target, env, "/small.txt", "--tofu"),
                           "different key than on first use")
        assert re.search(f"the pin for {target} is {re.escape(str(pin))};.*'velocity keys "
                         f"forget {target}'", refused), refused
        forgot = run_cli(env, "keys", "forget", target)
        assert forgot.returncode == 0 and str(pin) in forgot.stdout, forgot.stderr
        assert not pin.exists()
        discovered_with_tofu(target, env)  # the new key, pinned anew
    again = run_cli(env, "keys", "forget", target)
    assert again.returncode == 0 and "nothing" not in again.stdout  # the new pin went
    assert "nothing was kept" in run_cli(env, "keys", "forget", target).stdout
    one_line(run_cli(env, "keys", "forget", "no-port"), "SERVER", "HOST:PORT")
