"""``velocity transcript dump | validate | diff`` as a user runs them: real ``velocity serve``
processes on 127.0.0.1 (port 0), dumps over real UDP, with a timeout on every wait. Two dumps
of one server diff empty; a server with another profile, or in fallback-only mode, is named;
bad input is one line; the exit codes are those documented."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from harness.transcript import file_errors
from tests.cli.processes import VELOCITY, one_line, run_cli, server
from velocity.cli import cli

Dumps = dict[str, tuple[Path, subprocess.CompletedProcess[str]]]
SERVERS = {"balanced": ["--publish-kem"], "secure": ["--publish-kem", "--profile", "secure"],
           "fallback": ["--fallback-only"]}
DUMPS = {"a": ("balanced", []), "b": ("balanced", []), "secure": ("secure", ["--profile",
                                                                          "secure"]),
         "fallback": ("fallback", [])}


@pytest.fixture(scope="module")
def dumps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dumps]:
    """One server per configuration, and the dumps of DUMPS against them."""
    root = tmp_path_factory.mktemp("transcripts")
    env = {**os.environ, "VELOCITY_CACHE_DIR": str(root / "cache")}
    with ExitStack() as stack:
        targets = {}
        for name, args in SERVERS.items():
            (root / name).mkdir()
            targets[name] = stack.enter_context(server(root / name, env, *args))
        out = {}
        for name, (at, args) in DUMPS.items():
            path = root / f"{name}.json"
            out[name] = path, run_cli(env, "transcript", "dump", targets[at], "--insecure",
                                      "-o", str(path), *args)
        yield out


def velocity(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def differences(a: Path, b: Path, *args: str) -> tuple[int, dict[str, dict[str, Any]]]:
    result = velocity("transcript", "diff", str(a), str(b), "--json", *args)
    return result.exit_code, {d["path"]: d for d in json.loads(result.output)}


def test_dumps_exit_as_probe_does_and_write_valid_transcripts(dumps: Dumps) -> None:
    for name, (path, result) in dumps.items():
        assert result.returncode == (10 if name == "fallback" else 0), result.stderr
        assert file_errors(path) == []
        assert json.loads(path.read_text())["vantage_point"] == "client"
        (line,) = result.stderr.splitlines()
        assert line.endswith(f"events written to {path}")
    assert "Velocity/1, profile balanced, AES_128_GCM, ALPN velocity/1, discovery" in dumps[
        "a"][1].stderr
    assert "FALLBACK to h3 port 443 (advisory)" in dumps["fallback"][1].stderr


def test_two_dumps_of_one_server_diff_empty(dumps: Dumps) -> None:
    result = velocity("transcript", "diff", str(dumps["a"][0]), str(dumps["b"][0]))
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("no semantic difference")
    assert differences(dumps["a"][0], dumps["b"][0]) == (0, {})


def test_a_server_with_another_profile_is_named_with_its_share_sizes(dumps: Dumps) -> None:
    code, found = differences(dumps["a"][0], dumps["secure"][0])
    assert code == 1
    assert (found["profile"]["before"], found["profile"]["after"]) == ("balanced", "secure")
    assert (found["key_shares.client.length"]["before"],
            found["key_shares.client.length"]["after"]) == (1216, 1665)
    assert (found["key_shares.server.length"]["before"],
            found["key_shares.server.length"]["after"]) == (1120, 1665)
    assert found["key_shares.group"]["after"] == "SecP384r1MLKEM1024"
    table = velocity("transcript", "diff", str(dumps["a"][0]), str(dumps["secure"][0]))
    assert table.exit_code == 1
    assert "semantic differences" in table.output and "key_shares.client.length" in table.output


@pytest.mark.spec("VEL-FB-002")
def test_a_fallback_only_server_is_named(dumps: Dumps) -> None:
    code, found = differences(dumps["a"][0], dumps["fallback"][0])
    assert code == 1
    assert found["outcome"]["after"] == "fallback"
    directive = found["fallback"]["after"]
    assert (directive["alpn"], directive["port"], directive["authenticated"]) == (
        "h3", 443, False)
    assert found["close.remote"]["after"] == "NO_APPLICATION_PROTOCOL"


def test_ignore_drops_the_differences_it_names(dumps: Dumps) -> None:
    a, secure = dumps["a"][0], dumps["secure"][0]
    code, found = differences(a, secure, "--ignore", "key_shares")
    assert code == 1 and "profile" in found
    assert not any(p.startswith("key_shares") for p in found)
    _, found = differences(a, secure, "--ignore", "key_shares.*.parts")
    assert "key_shares.client.length" in found and not any(".parts" in p for p in found)
    tops = sorted({p.split(".")[0] for p in differences(a, secure)[1]})
    assert differences(a, secure, *[f"--ignore={t}" for t in tops]) == (0, {})


def test_validate_says_what_is_wrong_one_line_each(dumps: Dumps, tmp_path: Path) -> None:
    good = dumps["a"][0]
    document = json.loads(good.read_text())
    document["vantage_point"] = "moon"
    document["events"][0]["name"] = "Bad Name"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(document, indent=1))
    assert velocity("transcript", "validate", str(good)).exit_code == 0
    result = velocity("transcript", "validate", str(good), str(bad))
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[-1] == "1 of 2 valid"
    errors = lines[:-1]
    assert len(errors) == 2 and all(e.startswith(f"{bad}:") for e in errors), errors
    assert any("$.vantage_point: 'moon' is not one of" in e for e in errors)
    assert any("$.events[0].name: 'Bad Name' does not match" in e for e in errors)
    text = bad.read_text().splitlines()
    for error in errors:
        assert int(error.split(":")[1]) <= len(text)  # FILE:LINE:COL: ...


def test_diff_of_bad_input_exits_2_naming_each_file(dumps: Dumps, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema": ')
    missing = tmp_path / "missing.json"
    result = velocity("transcript", "diff", str(broken), str(missing))
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"{broken}:1:12: not JSON: Expecting value",
        f"{missing}: cannot read it: No such file or directory"]
    assert velocity("transcript", "diff", str(dumps["a"][0]), str(broken)).exit_code == 2
    directory = velocity("transcript", "diff", str(tmp_path), str(dumps["a"][0]))
    assert (directory.exit_code, directory.output) == (
        2, f"{tmp_path}: cannot read it: Is a directory\n")


@pytest.mark.parametrize(("args", "expected"), [
    (["--ca", "ca.pem", "--insecure"], "choose one of --ca and --insecure"),
    ([], "--ca FILE or --insecure"),
    (["--kem-b64", "!!"], "--kem-b64 is not valid base64"),
    (["--ca", "absent.pem"], "cannot read CA certificates from absent.pem"),
])
def test_dump_usage_errors_are_one_line(args: list[str], expected: str, tmp_path: Path) -> None:
    env = {**os.environ, "VELOCITY_CACHE_DIR": str(tmp_path)}
    result = subprocess.run([*VELOCITY, "transcript", "dump", "127.0.0.1:9", *args],
                            capture_output=True, text=True, env=env, timeout=60, check=False,
                            cwd=tmp_path)
    one_line(result, expected)


def test_a_dump_of_a_silent_port_fails_and_still_writes_the_transcript(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        path = tmp_path / "silent.json"
        result = run_cli({**os.environ}, "transcript", "dump", f"127.0.0.1:{port}",
                         "--insecure", "--timeout", "0.5", "-o", str(path))
    assert result.returncode == 1, result.stderr
    assert f"no handshake: no Velocity/1 handshake with 127.0.0.1:{port} within 0.5 s" in (
        result.stderr)
    assert file_errors(path) == []
    events = json.loads(path.read_text())["events"]
    assert {e["name"] for e in events} >= {"quic:connection_started", "quic:packet_sent"}


def test_without_the_harness_extra_the_command_says_what_to_install() -> None:
    """The entry point is there (it belongs to velocity) but its imports are not."""
    code = ("import sys; sys.modules['jsonschema'] = None; sys.argv = ['velocity', *sys.argv[1:]]"
            "; from velocity.cli import main; main()")
    for args in (["transcript", "validate", "x.json"], ["transcript"], ["transcript", "--help"]):
        result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                                text=True, timeout=60, check=False)
        one_line(result, "velocity transcript needs velocity[harness]",
                 "pip install 'velocity[harness]'")
    listing = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True,
                             text=True, timeout=60, check=False)
    assert listing.returncode == 0 and "transcript" in listing.stdout
    assert "not installed" in listing.stdout


def test_velocity_lists_the_transcript_commands() -> None:
    result = velocity("transcript", "--help")
    assert result.exit_code == 0
    assert all(name in result.output for name in ("dump", "validate", "diff"))
    assert "transcript" in velocity("--help").output
