"""Fuzz cases per second, for each kind of case: drawn (scapy or hypothesis), run in memory
against the reference endpoint (harness.fuzz.memory: function calls on a virtual clock,
every oracle), and run over UDP through the scripted peer against the in-process reference
server (the ``fuzz`` step, oracles after every batch). Runs exclude drawing the cases. One
process, so one core for the in-memory column (the in-process server's thread shares it
over UDP).

    python -m bench.fuzz [--cases 2000] [--udp-cases 1000] [--markdown]
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import click

from bench.report import print_table
from harness.fuzz.cases import Source
from harness.fuzz.memory import MemoryTarget
from harness.fuzz.runner import Driver, Oracles, fuzz
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


def drawn(source: Source, count: int) -> float:
    started = time.perf_counter()
    source.cases(count, "bench")
    return count / (time.perf_counter() - started)


def in_memory(source: Source, count: int) -> float:
    cases = source.cases(count, "bench")
    oracles = Oracles()

    async def make() -> Driver:
        return MemoryTarget(seed="bench", oracles=oracles)

    result = asyncio.run(fuzz(make, cases, oracles))
    assert result.finding is None, result.finding
    return result.rate


def over_udp(target: Target, directory: Path, step: str, count: int) -> float:
    path = directory / "bench.yaml"
    path.write_text(f"id: bench/fuzz\ntitle: bench\nspec: [VEL-ERR-005]\ntags: [fuzz]\n"
                    f"role: client\nbudget: {{timeout: 600}}\nsteps:\n"
                    f"  - fuzz: {{{step}, cases: {count}, batch: 500}}\n")
    (scenario,) = load_file(path, path.name, requirements())
    result = asyncio.run(run_scenario(scenario, target, seed="bench", strict=False))
    assert result.outcome.verdict is Verdict.PASS, result.outcome.reason
    (note,) = [e["data"] for e in result.documents[0][1]["events"]
               if e["name"] == "harness:fuzz"]
    return float(note["cases"]) / float(note["seconds"])


@click.command()
@click.option("--cases", type=click.IntRange(1), default=2000, show_default=True)
@click.option("--udp-cases", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--markdown", is_flag=True, help="Print the table as markdown.")
def main(cases: int, udp_cases: int, markdown: bool) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        server = InProcessServer(Path(scratch))
        target = server.start()
        try:
            for name, (step, source) in SOURCES.items():
                many = cases // 10 if name in NEW_CONNECTION else cases
                udp = udp_cases // 10 if name in NEW_CONNECTION else udp_cases
                rows.append([name, f"{drawn(source, many):.0f}", f"{in_memory(source, many):.0f}",
                             f"{over_udp(target, Path(scratch), step, udp):.0f}"])
        finally:
            server.stop()
    print_table(["cases", "drawn/s", "in memory/s", "over UDP/s"], rows, markdown=markdown)


if __name__ == "__main__":
    main()
