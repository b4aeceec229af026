"""One small session of scenarios run with ``--report`` (and ``--junitxml``) in a separate
pytest process against the in-process target, for the report tests: a handshake that
passes, a check that fails after a handshake, an UNSUPPORTED, an XFAIL, an ERROR, a
SHOULD-level failure (a PASS with a warning) and a parametrised document, across several
spec areas."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

TIMEOUT = 180  # seconds for the whole inner session

SCENARIOS = """\
id: report/handshake
title: A handshake completes
spec: [VEL-HS-001, VEL-AUTH-012]
role: client
steps:
  - connect: {}
  - expect: {event: velocity:handshake_completed, within: 3}
---
id: report/fail
title: More datagrams than a handshake needs
spec: [VEL-HS-001]
role: client
steps:
  - connect: {}
  - expect: {event: velocity:handshake_completed, within: 3}
  - assert: 'datagrams_sent > 500'
---
id: report/unsupported
title: Needs Retry
spec: [VEL-RTY-001]
role: client
requires: [retry]
steps:
  - wait: 0
---
id: report/xfail
title: Known to fail
spec: [VEL-FB-001]
role: client
expect_failure: {reason: not yet, until: 2999-01-01}
steps:
  - assert: '1 == 2'
---
id: report/error
title: A bad expression
spec: [VEL-HS-020]
role: client
steps:
  - assert: 'len(flights) == 1'
---
id: report/should
title: A SHOULD-level check that fails only under --strict
spec: [VEL-VAR-004]
role: client
steps:
  - assert: 'flights == 99'
---
id: report/matrix
title: "Parametrised {n}"
spec: [VEL-AUTH-012]
role: client
parametrize:
  n: [1, 2]
steps:
  - assert: '{n} > 0'
"""
INI = ("[pytest]\nasyncio_default_fixture_loop_scope = function\n"
       "filterwarnings = ignore::pytest.PytestAssertRewriteWarning\n")


@dataclass(frozen=True)
class ReportedRun:
    root: Path
    folder: Path  # the report's folder
    junit: Path
    output: str
    outcomes: dict[str, int]  # pytest's closing line: passed, failed, skipped, ...


def write_scenarios(root: Path, text: str = SCENARIOS, name: str = "report/all.yaml") -> None:
    path = root / "scenarios" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    (root / "pytest.ini").write_text(INI)


def run_session(root: Path, *args: str, seed: str | None = "0") -> ReportedRun:
    """``pytest scenarios --report report --junitxml junit.xml [--seed SEED] ARGS`` in
    ``root`` (``seed=None``: the session's own fresh seed)."""
    folder, junit = root / "report", root / "junit.xml"
    seeding = ["--seed", seed] if seed is not None else []
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "scenarios", "-p", "no:cacheprovider", "-rA",
         "--report", str(folder), "--junitxml", str(junit), *seeding, *args],
        cwd=root, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    closing = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    outcomes = {word.removesuffix("s"): int(n) for n, word in
                re.findall(r"(\d+) (passed|failed|skipped|xfailed|xpassed|errors?)", closing)}
    return ReportedRun(root, folder, junit, done.stdout + done.stderr, outcomes)
