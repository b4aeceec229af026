"""The ``velocity`` CLI run as a user runs it: subprocesses with a timeout on every wait, and
a server's stderr read on a thread, so that waiting for its banner is bounded (failing with
what the server printed) and the pipe never fills while it serves."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest

from harness.targets import stop_process

VELOCITY = [sys.executable, "-m", "velocity.cli"]
BANNER_WITHIN = 60.0  # seconds: a cold start imports the whole stack on a busy machine


class Stderr:
    """A process's stderr, line by line, read on a thread."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        self.process = process
        self.seen: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._ended = False
        self._reader = threading.Thread(target=self._read, args=(process.stderr,), daemon=True)
        self._reader.start()

    def _read(self, pipe: IO[str]) -> None:
        for line in pipe:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, text: str, within: float = BANNER_WITHIN) -> str:
        """The next line containing ``text``; fails, showing what the process printed, if it
        exits or ``within`` seconds pass first."""
        deadline = time.monotonic() + within
        while not self._ended and (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                self._ended = True
                break
            self.seen.append(line)
            if text in line:
                return line
        why = (f"exited with {self.process.wait(10)}" if self._ended
               else f"printed no {text!r} within {within:g} s")
        pytest.fail(f"the process {why}; its stderr:\n{''.join(self.seen)}")

    def rest(self, within: float = 10.0) -> list[str]:
        """The lines after those waited for, once the process has closed its stderr."""
        self._reader.join(within)
        lines = []
        while not self._lines.empty():
            line = self._lines.get_nowait()
            if line is not None:
                lines.append(line)
        self.seen.extend(lines)
        return lines


@contextmanager
def started(args: list[str], env: dict[str, str], *,
            program: tuple[str, ...] = tuple(VELOCITY)) -> Iterator[Stderr]:
    """``velocity ARGS`` (or another ``program``) running for the block, then terminated
    (killed if it lingers)."""
    process = subprocess.Popen([*program, *args], stderr=subprocess.PIPE, text=True, env=env)
    try:
        yield Stderr(process)
    finally:
        stop_process(process, 10)


def target_of(banner: str) -> str:
    """HOST:PORT from ``serving ... on udp://HOST:PORT (...)``."""
    return banner.split("udp://", 1)[1].split(" ", 1)[0]


@contextmanager
def server(root: Path, env: dict[str, str], *args: str) -> Iterator[str]:
    """``velocity serve --self-signed`` on ROOT (port 0 unless ``--listen`` is given); yields
    the HOST:PORT it serves on."""
    listen = [] if "--listen" in args else ["--listen", "127.0.0.1:0"]
    with started(["serve", "--root", str(root), "--self-signed", *listen, *args],
                 env) as stderr:
        yield target_of(stderr.wait_for("serving "))


def run_cli(env: dict[str, str], *args: str, timeout: float = 60
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VELOCITY, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


def fetch(target: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(env, "fetch", target, *args)


def fetch_json(target: str, env: dict[str, str], *args: str) -> dict[str, object]:
    result = fetch(target, env, *args, "--json")
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


def one_line(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    """A failure told in exactly one line of stderr holding each of ``expected``: no
    traceback, no asyncio complaint."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "Future exception" not in result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]
