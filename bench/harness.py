"""The harness's own speed, as its users wait for it: the wall time of the POP smoke gate
against a separately started `velocity serve` (what an operator's CI waits for), and of the
whole catalogue in-process with pytest-xdist (what an implementer waits for). Each is a
whole `pytest` process, start-up included; medians of several runs.

    python -m bench.harness [--runs 3] [--workers 2] [--markdown]
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from bench.report import print_table

ROOT = Path(__file__).resolve().parents[1]
BANNER = re.compile(r"udp://(\S+?):(\d+) ")


@contextmanager
def velocity_server(directory: Path) -> Iterator[tuple[str, Path]]:
    """A `velocity serve` process: (HOST:PORT, its balanced CA file)."""
    root = directory / "public"
    root.mkdir()
    (root / "index.html").write_text("bench")
    process = subprocess.Popen(
        [sys.executable, "-m", "velocity.cli", "serve", "--root", str(root), "--self-signed",
         "--publish-kem", "--api", "--listen", "127.0.0.1:0"],
        stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            found = BANNER.search(line)
            if found:
                yield (f"{found.group(1)}:{found.group(2)}",
                       root / ".velocity" / "certs" / "balanced-ca.pem")
                return
        raise RuntimeError("velocity serve printed no banner within 30 s")
    finally:
        process.terminate()
        process.wait(10)


def timed(args: list[str]) -> tuple[float, str]:
    """Wall seconds of one pytest process, and its last line (the counts)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", *args, "-q", "-p",
                           "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, check=False)
    elapsed = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    summary = lines[-1] if lines else f"exit {done.returncode}"
    if done.returncode != 0:
        raise RuntimeError(f"pytest {' '.join(args)} failed: {summary}")
    return elapsed, summary


@click.command()
@click.option("--runs", type=click.IntRange(1), default=3, show_default=True)
@click.option("--workers", type=click.IntRange(1), default=2, show_default=True)
@click.option("--markdown", is_flag=True, help="Print the table as markdown.")
def main(runs: int, workers: int, markdown: bool) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as scratch, velocity_server(Path(scratch)) as (
            target, ca):
        caps = Path(scratch) / "caps.yaml"
        caps.write_text("[profile-balanced, publish-kem, api]\n")
        smoke = [timed(["scenarios/", "-m", "smoke", "--target", target, "--sni",
                        "localhost", "--ca", str(ca), "--target-caps", str(caps)])
                 for _ in range(runs)]
    rows.append(["smoke gate, separate server", f"{statistics.median(t for t, _ in smoke):.2f}",
                 smoke[-1][1]])
    catalogue = [timed(["scenarios/", "-n", str(workers)]) for _ in range(runs)]
    rows.append([f"whole catalogue, -n {workers}",
                 f"{statistics.median(t for t, _ in catalogue):.2f}", catalogue[-1][1]])
    print_table(["run", "wall s (median)", "last run"], rows, markdown=markdown)


if __name__ == "__main__":
    main()
