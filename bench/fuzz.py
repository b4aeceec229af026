"""Fuzz cases per second, for each kind of case: drawn (scapy or hypothesis), run in memory
against the reference endpoint (harness.fuzz.memory: function calls on a virtual clock,
every oracle), both (end to end), and run over UDP through the scripted peer against the
in-process reference server (the ``fuzz`` step, oracles after every batch; drawing
excluded). One process, so one core for the in-memory columns (the in-process server's
thread shares it over UDP).

    python -m bench.fuzz [--cases 2000] [--udp-cases 1000] [--markdown]

``--mixed N`` runs N cases in memory instead, every source in turn (rounds of ``--round``
cases of each, a tenth of that for the hello source, which takes a handshake a case), each
round drawn under its own seed ``mixed/<round>`` on a fresh target, across ``--processes``
processes; it prints cases/s (drawing excluded and included) and each oracle failure with
its seed (an exception the harness raises too, and that round is not counted), and exits
1 on any. The 1,000,000-case run of docs/reliability.md:

    python -m bench.fuzz --mixed 1000000 --processes 2
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from bench.report import print_table
from harness.fuzz.case import Case, to_replay
from harness.fuzz.cases import Source
from harness.fuzz.memory import MemoryTarget
from harness.fuzz.runner import Driver, Oracles, Result, fuzz
from harness.scenario.engine import run_scenario
from harness.scenario.loader import load_file
from harness.scenario.spec import requirements
from harness.scenario.verdict import Verdict
from harness.targets import InProcessServer, Target

SOURCES = {
    "frames, scapy fuzz() (1-RTT)": ("layers: [frames]", Source(layers=("frames",))),
    "frames, hypothesis (1-RTT)": ("strategy: frames", Source(strategy="frames")),
    "raw datagrams, hypothesis": ("strategy: datagrams", Source(strategy="datagrams")),
    "packet headers, scapy fuzz()": (
        "layers: [long_header, short_header, retry, version_negotiation]",
        Source(layers=("long_header", "short_header", "retry", "version_negotiation"))),
    "CLIENT_HELLO fields, hypothesis": ("strategy: hello", Source(strategy="hello")),
}
NEW_CONNECTION = ("CLIENT_HELLO fields, hypothesis",)  # a handshake per case: fewer cases


def draw(source: Source, count: int) -> tuple[list[Case], float]:
    """The cases, and the seconds drawing them took, collecting their garbage included
    (hypothesis leaves a lot in cycles: a collection of it that fell in the run cost the
    run up to a tenth of its time)."""
    started = time.perf_counter()
    cases = source.cases(count, "bench")
    gc.collect()
    return cases, time.perf_counter() - started


def drawn(source: Source, count: int) -> float:
    return count / draw(source, count)[1]


def in_memory(source: Source, count: int) -> tuple[float, float]:
    """Cases/s run, and drawn and run."""
    cases, drawing = draw(source, count)
    result = run_in_memory(cases, "bench")
    assert result.finding is None, result.finding
    return result.rate, result.cases / (drawing + result.seconds)


def run_in_memory(cases: list[Case], seed: str) -> Result:
    oracles = Oracles()

    async def make() -> Driver:
        return MemoryTarget(seed=seed, oracles=oracles)

    return asyncio.run(fuzz(make, cases, oracles))


@dataclass
class Mixed:
    """What a share of the mixed run did: per source, cases and seconds drawing and
    running; the findings, one line each."""

    cases: dict[str, int] = field(default_factory=dict)
    drawing: dict[str, float] = field(default_factory=dict)
    running: dict[str, float] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)

    def add(self, other: Mixed) -> None:
        for name in other.cases:
            self.cases[name] = self.cases.get(name, 0) + other.cases[name]
            self.drawing[name] = self.drawing.get(name, 0.0) + other.drawing[name]
            self.running[name] = self.running.get(name, 0.0) + other.running[name]
        self.findings += other.findings


def mixed_rounds(total: int, size: int) -> list[list[tuple[str, int]]]:
    """The rounds of a mixed run of ``total`` cases: (source, count) in turn."""
    rounds, left = [], total
    while left > 0:
        current = []
        for name in SOURCES:
            count = min(left, max(1, size // 10) if name in NEW_CONNECTION else size)
            if count:
                current.append((name, count))
                left -= count
        rounds.append(current)
    return rounds


def mixed_share(total: int, size: int, share: int, shares: int) -> Mixed:
    """Every ``shares``-th round of the mixed run, from round ``share`` on."""
    out = Mixed()
    rounds = mixed_rounds(total, size)
    for index in range(share, len(rounds), shares):
        for name, count in rounds[index]:
            seed = f"mixed/{index}/{name}"
            started = time.perf_counter()
            cases = SOURCES[name][1].cases(count, seed)
            drawn_at = time.perf_counter()
            try:
                result = run_in_memory(cases, seed)
            except Exception as exc:  # the harness's own fault: the run goes on without it
                out.findings.append(f"{name}, seed {seed!r}: the harness raised "
                                    f"{type(exc).__name__}: {exc}")
                continue
            out.cases[name] = out.cases.get(name, 0) + result.cases
            out.drawing[name] = out.drawing.get(name, 0.0) + drawn_at - started
            out.running[name] = out.running.get(name, 0.0) + result.seconds
            if result.finding is not None:
                replay = [to_replay(c) for c in result.failing]
                out.findings.append(f"{name}, seed {seed!r}, case {result.index}: "
                                    f"{result.finding.oracle}: {result.finding.message}; "
                                    f"shrunk to replay: {replay}")
        done = sum(out.cases.values())
        print(f"[share {share}] round {index}: {done} cases, {len(out.findings)} findings",
              file=sys.stderr, flush=True)
    return out


def mixed(total: int, size: int, processes: int, markdown: bool) -> None:
    started = time.perf_counter()
    out = Mixed()
    if processes == 1:
        out.add(mixed_share(total, size, 0, 1))
    else:
        with concurrent.futures.ProcessPoolExecutor(processes) as pool:
            for share in pool.map(mixed_share, [total] * processes, [size] * processes,
                                  range(processes), [processes] * processes):
                out.add(share)
    wall = time.perf_counter() - started
    rows = [[name, str(out.cases[name]), f"{out.cases[name] / out.running[name]:.0f}",
             f"{out.cases[name] / (out.running[name] + out.drawing[name]):.0f}"]
            for name in out.cases]
    cases, running = sum(out.cases.values()), sum(out.running.values())
    rows.append(["all", str(cases), f"{cases / running:.0f}",
                 f"{cases / (running + sum(out.drawing.values())):.0f}"])
    print_table(["cases", "run", "in memory/s", "drawn and run/s"], rows, markdown=markdown)
    click.echo(f"{cases} cases in {wall:.0f} s of wall time on {processes} process(es) "
               f"({cases / wall:.0f}/s); {len(out.findings)} oracle failure(s)")
    for finding in out.findings:
        click.echo(finding)
    if out.findings:
        raise SystemExit(1)


def over_udp(target: Target, directory: Path, step: str, count: int) -> float:
    path = directory / "bench.yaml"
    path.write_text(f"id: bench/fuzz\ntitle: bench\nspec: [VEL-ERR-005]\ntags: [fuzz]\n"
                    f"role: client\nbudget: {{timeout: 600}}\nsteps:\n"
                    f"  - fuzz: {{{step}, cases: {count}, batch: 500}}\n")
    (scenario,) = load_file(path, path.name, requirements())
    # a seed of its own (so client connection IDs of its own) for each run on the server
    result = asyncio.run(run_scenario(scenario, target, seed=step, strict=False))
    assert result.outcome.verdict is Verdict.PASS, result.outcome.reason
    (note,) = [e["data"] for e in result.documents[0][1]["events"]
               if e["name"] == "harness:fuzz"]
    return float(note["cases"]) / float(note["seconds"])


@click.command()
@click.option("--cases", type=click.IntRange(1), default=2000, show_default=True)
@click.option("--udp-cases", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--mixed", "mixed_cases", type=click.IntRange(1), default=None,
              help="Run this many cases in memory, mixing the sources, instead.")
@click.option("--round", "round_size", type=click.IntRange(10), default=2000,
              show_default=True, help="Cases of each source a round of --mixed.")
@click.option("--processes", type=click.IntRange(1), default=1, show_default=True,
              help="Processes --mixed runs on.")
@click.option("--markdown", is_flag=True, help="Print the table as markdown.")
def main(cases: int, udp_cases: int, mixed_cases: int | None, round_size: int,
         processes: int, markdown: bool) -> None:
    if mixed_cases is not None:
        mixed(mixed_cases, round_size, processes, markdown)
        return
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        server = InProcessServer(Path(scratch))
        target = server.start()
        try:
            for name, (step, source) in SOURCES.items():
                many = max(1, cases // 10) if name in NEW_CONNECTION else cases
                udp = max(1, udp_cases // 10) if name in NEW_CONNECTION else udp_cases
                run, end_to_end = in_memory(source, many)
                rows.append([name, f"{drawn(source, many):.0f}", f"{run:.0f}",
                             f"{end_to_end:.0f}",
                             f"{over_udp(target, Path(scratch), step, udp):.0f}"])
        finally:
            server.stop()
    print_table(["cases", "drawn/s", "in memory/s", "drawn and run in memory/s",
                 "over UDP/s"], rows, markdown=markdown)


if __name__ == "__main__":
    main()
