"""The deploy files name only options and values the CLI accepts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from velocity.cli import cli

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_systemd_unit_uses_real_serve_options() -> None:
    unit = (DEPLOY / "velocity.service").read_text()
    options = set(re.findall(r"(--[a-z-]+)", unit.split("ExecStart=", 1)[1].split("\n\n")[0]))
    help_text = CliRunner().invoke(cli, ["serve", "--help"]).output
    assert options and all(option in help_text for option in options), options
    settings = dict(line.split("=", 1) for line in (DEPLOY / "velocity.env").read_text()
                    .splitlines() if line and not line.startswith("#"))
    assert set(re.findall(r"\$\{(\w+)\}", unit)) == set(settings)
    assert "EnvironmentFile=/etc/velocity/velocity.env" in unit  # required: ExecStart needs it
    assert settings["VELOCITY_PROFILE"] in ("light", "balanced", "secure")
    assert settings["VELOCITY_RETRY"] in ("never", "always", "under-load")


def test_systemd_unit_sets_an_allocator_python_accepts() -> None:
    unit = (DEPLOY / "velocity.service").read_text()
    settings = dict(line.removeprefix("Environment=").split("=", 1)
                    for line in unit.splitlines() if line.startswith("Environment="))
    assert settings == {"PYTHONMALLOC": "malloc"}
    # an unknown PYTHONMALLOC is a fatal error at start-up; this one runs the server's code
    got = subprocess.run([sys.executable, "-c", "import velocity.cli"], timeout=60,
                         env={**os.environ, **settings}, capture_output=True, text=True,
                         check=False)
    assert got.returncode == 0, got.stderr
