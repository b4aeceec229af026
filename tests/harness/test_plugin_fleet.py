"""A fleet gate: --target given once per node runs every scenario against each node, one
xdist group per target, in one pytest run (real `velocity serve` processes on 127.0.0.1)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.cli.processes import server

ROOT = Path(__file__).resolve().parents[2]


def test_every_scenario_runs_against_every_node_of_the_fleet(tmp_path: Path) -> None:
    env = {"VELOCITY_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    roots = []
    for name in ("a", "b"):
        root = tmp_path / name
        root.mkdir()
        (root / "index.html").write_text(name)
        roots.append(root)
    with server(roots[0], env, "--publish-kem") as first, \
            server(roots[1], env, "--publish-kem") as second:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "scenarios/handshake/basic.yaml", "-m", "smoke",
             "-v", "-p", "no:cacheprovider", "--target", first, "--target", second,
             "-n", "2", "--dist", "loadgroup"],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-3000:]
    for target in (first, second):
        assert f"handshake/completes@{target}" in done.stdout
    same = subprocess.run(
        [sys.executable, "-m", "pytest", "scenarios/handshake/basic.yaml", "-q",
         "-p", "no:cacheprovider", "--target", "127.0.0.1:9", "--target", "127.0.0.1:9"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert same.returncode != 0 and "given twice" in same.stderr
