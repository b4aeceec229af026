"""``velocity --version`` shows the crypto backends and which one serves each parameter set."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from velocity.cli import cli


def test_version_lists_backends_and_their_parameter_sets() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    out = result.output
    assert "wire version 0x56553100" in out
    for name in ("cryptography", "pqcrypto", "kyber-py", "dilithium-py"):
        assert name in out
    assert "ML-KEM-512 on pqcrypto" in out and "ML-KEM-768 on cryptography" in out


def test_console_script_runs() -> None:
    result = subprocess.run([sys.executable, "-m", "velocity.cli", "--version"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("velocity ")
