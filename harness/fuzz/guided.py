"""Coverage-guided fuzzing of the decoders and one server connection with atheris
(libFuzzer driving Python): ``python -m harness.fuzz.guided --seconds N --target T``.

Each target (harness.fuzz.guided_targets, or ``MODULE:FUNCTION`` for one of your own) runs
in a child process that first imports the modules under test with atheris' instrumentation,
so the branches an input reaches guide the next mutations. The seed corpus is the
repository's known-answer vectors and seeded live transcripts. A finding (an exception
other than a protocol error, or a value that does not survive its own encoding) is written
to reports/fuzz/ with the command that replays it; for the connection target also a
scenario YAML that sends its datagrams, to keep as a regression scenario. Exit status: 0 no
finding, 1 a finding."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

TARGET_NAMES = ("frames", "headers", "messages", "params", "connection")
# the modules whose branches guide each target's search: these and what they import are
# instrumented (all of velocity takes seconds); MODULE:FUNCTION instruments MODULE
INSTRUMENTED = {
    "frames": ["velocity.core.frames"],
    "headers": ["velocity.core.packet"],
    "messages": ["velocity.core.handshake.messages"],
    "params": ["velocity.core.transport_params"],
    "connection": ["velocity.core.connection", "velocity.core.endpoint"],
}
REPORTS = Path("reports") / "fuzz"
STARTUP_SLACK = 120  # seconds for a child to start, load its corpus and report, past --seconds


def load_target(name: str) -> Callable[[bytes], None]:
    """A built-in target by name, or ``MODULE:FUNCTION``."""
    if ":" in name:
        module_name, _, function = name.partition(":")
        try:
            target = getattr(importlib.import_module(module_name), function)
        except (ImportError, AttributeError) as exc:
            raise click.UsageError(f"--target {name}: {exc}") from None
        return target  # type: ignore[no-any-return]
    # late: a fuzzing child imports the modules under test instrumented before this one
    from harness.fuzz import guided_targets  # noqa: PLC0415

    if name not in guided_targets.TARGETS:
        raise click.UsageError(f"--target {name}: not one of {', '.join(TARGET_NAMES)}, "
                               "all, or MODULE:FUNCTION")
    return guided_targets.TARGETS[name]


def _worker(target: str, seconds: int, seed: int, corpus: Path, artifacts: str) -> None:
    """In the child: instrument, then hand the target to libFuzzer (which exits)."""
    import atheris  # noqa: PLC0415  (the optional fuzz extra)

    modules = INSTRUMENTED.get(target) or [target.partition(":")[0]]
    with atheris.instrument_imports(include=[m.partition(".")[0] for m in modules]):
        for module in modules:  # and, once, every velocity module each imports
            importlib.import_module(module)
    function = load_target(target)
    atheris.Setup([sys.argv[0], f"-max_total_time={seconds}", f"-seed={seed}",
                   f"-artifact_prefix={artifacts}", "-print_final_stats=1", "-timeout=30",
                   str(corpus)], function)
    atheris.Fuzz()


@dataclass
class Outcome:
    target: str
    execs: int
    execs_per_second: int
    coverage: int
    features: int
    corpus: int
    finding: Path | None
    error: str
    log: Path
    seconds: float  # the child's wall time, start-up included


def _stat(text: str, name: str) -> int:
    found = re.findall(rf"stat::{name}:\s*(\d+)", text)
    return int(found[-1]) if found else 0


def _last(text: str, pattern: str) -> int:
    found = re.findall(pattern, text)
    return int(found[-1]) if found else 0


def _file_name(target: str) -> str:
    return target.replace(":", ".").replace("/", "_")


def _seed_corpus(target: str, corpus: Path) -> None:
    if ":" in target:
        return
    from harness.fuzz.guided_targets import seeds  # noqa: PLC0415  (see load_target)

    for data in seeds(target):
        (corpus / f"seed-{hashlib.sha1(data).hexdigest()}").write_bytes(data)


def fuzz_one(target: str, seconds: int, seed: int, corpus: Path | None) -> Outcome:
    """Fuzz ``target`` for ``seconds`` in a child process; its log goes to reports/fuzz/."""
    REPORTS.mkdir(parents=True, exist_ok=True)
    name = _file_name(target)
    scratch = None if corpus is not None else Path(tempfile.mkdtemp(prefix="guided-"))
    directory = corpus / name if corpus is not None else scratch
    assert directory is not None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _seed_corpus(target, directory)
        log = REPORTS / f"guided-{name}.log"
        command = [sys.executable, "-m", "harness.fuzz.guided", "--worker", target,
                   "--seconds", str(seconds), "--seed", str(seed), "--corpus", str(directory)]
        started = time.monotonic()
        try:
            done = subprocess.run(command, capture_output=True, text=True, errors="replace",
                                  timeout=seconds + STARTUP_SLACK, check=False)
            text = done.stdout + done.stderr
        except subprocess.TimeoutExpired as exc:
            partial = [p.decode(errors="replace") if isinstance(p, bytes) else p or ""
                       for p in (exc.stdout, exc.stderr)]
            text = "".join(partial) + "\nthe fuzzer did not stop in time"
        log.write_text(text)
        elapsed = time.monotonic() - started
        written = re.findall(r"Test unit written to (\S+)", text)
        finding = Path(written[-1]) if written else None
        error = ""
        if finding is not None:
            lines = [ln for ln in text.splitlines() if re.match(r"^\w[\w.]*(Error|Exception)", ln)]
            error = lines[-1] if lines else "see the log"
        elif "DONE" not in text and "Done " not in text:
            error = f"the fuzzer ended without a result: {log}"
        return Outcome(target,
                       _stat(text, "number_of_executed_units") or _last(text, r"#(\d+)\s"),
                       _stat(text, "average_exec_per_sec") or _last(text, r"exec/s: (\d+)"),
                       _last(text, r"cov: (\d+)"),
                       _last(text, r"ft: (\d+)"), _last(text, r"corp: (\d+)"), finding, error,
                       log, elapsed)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _hex_step(datagram: bytes) -> str:
    return f"  - send: {{datagram: {{hex: {datagram.hex()}}}}}"


def connection_scenario(data: bytes, source: Path) -> str | None:
    """A scenario sending the datagrams a connection input made, in order, from a quiet
    socket, closing their connection, then a well-formed Initial on a fresh DCID that must
    still be answered; None when a datagram needed this seeded server's Handshake or 1-RTT
    keys."""
    from harness.fuzz import guided_targets as g  # noqa: PLC0415  (see load_target)

    run = g.ConnectionRun()
    with contextlib.suppress(Exception):  # the finding: the datagrams up to it are kept
        g.run_connection(data, run)
    if not run.portable or not run.datagrams:
        return None
    digest = hashlib.sha1(data).hexdigest()[:12]
    probe_dcid = hashlib.sha1(data).digest()[:8]
    close = g.client_initial(run.dcid, 1 << 20, g.CLOSE_PAYLOAD)
    drops = ", ".join(str(i) for i in range(16))
    lines = [
        "# A finding of the coverage-guided fuzzer (python -m harness.fuzz.guided --target",
        f"# connection), input {source}: its datagrams in order from a quiet socket (they use",
        "# raw bytes and Initial keys only, so any server can be sent them), a CONNECTION_CLOSE",
        "# Initial for their DCID (that connection drains, silent), then a PING Initial on a",
        "# fresh DCID, which the server must still answer (VEL-ERR-005). Whether the connection",
        "# itself closed with a protocol error is checked by the unit test of the fix. Replay",
        f"# in process: python -m harness.fuzz.guided --replay {source}",
        f"id: regressions/guided-connection-{digest}",
        f"title: A server survives the datagrams of guided-fuzzing input {digest}",
        "spec: [VEL-ERR-005]",
        "tags: [full, fuzz, regression]",
        "role: client",
        f"budget: {{timeout: {8 + sum(run.waits):g}, datagrams: {len(run.datagrams) + 3}}}",
        "steps:",
        "  - connect: {wait: none, hooks: {message: {CLIENT_HELLO: {drop: true}}, "
        f"packets: {{drop: [{drops}]}}}}}}",
        *(line for wait, datagram in zip(run.waits, run.datagrams, strict=True)
          for line in ([f"  - wait: {wait:g}"] if wait else []) + [_hex_step(datagram)]),
        _hex_step(close),
        "  - wait: 0.5",
        _hex_step(g.client_initial(probe_dcid, 0, g.PING_PAYLOAD)),
        "  # past the probe's own send: only what came after it answers it",
        "  - expect: {event: quic:datagrams_sent, where: {data.origin: harness}, "
        f"count: {len(run.datagrams) + 2}}}",
        "  - expect: {event: quic:datagrams_received, within: 2}",
        "  - finally:",
        "    " + _hex_step(g.client_initial(probe_dcid, 1, g.CLOSE_PAYLOAD)),
    ]
    return "\n".join(lines) + "\n"


def replay(path: Path, target: str | None) -> int:
    """Run one input through its target without instrumentation: 1 if it still fails."""
    if target is None:
        match = re.match(r"guided-(.+?)-(crash|timeout|oom|leak)-", path.name)
        if match is None:
            raise click.UsageError(f"{path}: name the target with --target (the file name "
                                   "does not say it)")
        target = match.group(1)
        if target not in TARGET_NAMES and "." in target:
            module, _, function = target.rpartition(".")
            target = f"{module}:{function}"
    function = load_target(target)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise click.UsageError(f"{path}: {exc.strerror}") from None
    try:
        function(data)
    except Exception:
        traceback.print_exc()
        click.echo(f"reproduced: {path} fails the {target} target")
        return 1
    click.echo(f"no failure: {path} passes the {target} target")
    return 0


@click.command()
@click.option("--seconds", type=click.IntRange(1), default=10, show_default=True,
              help="How long to fuzz each target.")
@click.option("--target", default="all", show_default=True,
              help=f"{'|'.join(TARGET_NAMES)}|all, or MODULE:FUNCTION.")
@click.option("--corpus", type=click.Path(file_okay=False, path_type=Path),
              help="Keep each target's corpus in DIR/<target> (grown by the run).")
@click.option("--seed", type=click.IntRange(0), default=1, show_default=True,
              help="libFuzzer's random seed.")
@click.option("--replay", "replay_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Run one saved input through its target and exit.")
@click.option("--worker", hidden=True)
def main(seconds: int, target: str, corpus: Path | None, seed: int,
         replay_file: Path | None, worker: str | None) -> None:
    """Coverage-guided fuzzing of Velocity's decoders and a server connection (atheris)."""
    if worker is not None:
        assert corpus is not None
        _worker(worker, seconds, seed, corpus,
                str(REPORTS / f"guided-{_file_name(worker)}-"))
        return
    if replay_file is not None:
        sys.exit(replay(replay_file, None if target == "all" else target))
    targets = list(TARGET_NAMES) if target == "all" else [target]
    for name in targets:
        load_target(name)  # a bad name is a usage error before anything runs
    found = False
    for name in targets:
        outcome = fuzz_one(name, seconds, seed, corpus)
        click.echo(f"{name}: {outcome.execs} execs in {outcome.seconds:.0f} s "
                   f"({outcome.execs_per_second} execs/s), coverage {outcome.coverage} "
                   f"edges, {outcome.features} features, corpus {outcome.corpus}")
        if outcome.finding is not None:
            found = True
            click.echo(f"  FINDING: {outcome.error}\n  input: {outcome.finding} "
                       f"(log {outcome.log})\n  replay: python -m harness.fuzz.guided "
                       f"--replay {outcome.finding}")
            if name == "connection":
                scenario = connection_scenario(outcome.finding.read_bytes(), outcome.finding)
                if scenario is None:
                    click.echo("  no scenario: a datagram needed this seeded server's "
                               "Handshake or 1-RTT keys")
                else:
                    path = outcome.finding.with_suffix(".yaml")
                    path.write_text(scenario)
                    click.echo(f"  scenario: {path} (copy it to scenarios/regressions/"
                               "guided-*.yaml)")
        elif outcome.error:
            found = True
            click.echo(f"  ERROR: {outcome.error}")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
