"""The engine's steps against the in-process reference server over real UDP on 127.0.0.1:
what a FAIL carries (expected, actual, the offending event), expect_any under --strict, the
datagram budget, UNSUPPORTED when no key is known for PDK, and transcripts that follow the
transcript schema. Waits are bounded; nothing counts datagrams exactly."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.scenario.budget import BudgetMeter
from harness.scenario.context import Run
from harness.scenario.engine import RunResult, run_scenario
from harness.scenario.loader import load_file
from harness.scenario.spec import requirements
from harness.scenario.verdict import Verdict
from harness.schemas import schema_errors
from harness.targets import InProcessServer, Target

HEAD = "id: e/x\ntitle: t\nspec: [VEL-HS-001]\nrole: client\n"


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    server = InProcessServer(tmp_path_factory.mktemp("target"))
    try:
        yield server.start()
    finally:
        server.stop()


async def run(tmp_path: Path, target: Target, steps: str, *, head: str = HEAD,
              strict: bool = False) -> RunResult:
    path = tmp_path / "s.yaml"
    path.write_text(head + "steps:\n" + steps)
    (scenario,) = load_file(path, "s.yaml", requirements())
    return await run_scenario(scenario, target, seed=1, strict=strict)


async def test_a_handshake_and_a_request_pass(tmp_path: Path, target: Target) -> None:
    result = await run(tmp_path, target, """\
  - connect: {profiles: [secure], key: pdk}
  - expect:
      event: velocity:handshake_completed
      where: {data.profile: secure}
      save: {m: data.mode}
  - request: {path: /index.html}
  - expect_response: {status: 200, body_regex: "harness target"}
  - assert: ["m == 'pdk'", "datagrams_received >= 1", "packets_per_space['initial'] >= 1"]
""")
    assert result.outcome.verdict is Verdict.PASS, result.outcome


async def test_an_expect_that_fails_shows_the_closest_event(tmp_path: Path,
                                                            target: Target) -> None:
    result = await run(tmp_path, target, """\
  - connect: {profiles: [balanced]}
  - expect: {event: velocity:handshake_completed, where: {data.profile: secure}, within: 1}
""")
    outcome = result.outcome
    assert outcome.verdict is Verdict.FAIL
    assert outcome.reason.startswith("no velocity:handshake_completed where data.profile = "
                                     "\"secure\" on connection main within 1 s")
    assert outcome.actual == "1 velocity:handshake_completed event(s), none matching"
    assert outcome.event is not None and outcome.event["data"]["profile"] == "balanced"
    assert outcome.step == "s.yaml:7"


async def test_expect_close_on_a_healthy_connection_fails(tmp_path: Path,
                                                          target: Target) -> None:
    result = await run(tmp_path, target, """\
  - connect: {}
  - expect_close: {codes: [PROTOCOL_VIOLATION], within: 0.3}
""")
    assert result.outcome.verdict is Verdict.FAIL
    assert result.outcome.actual == "still open"
    assert result.outcome.expected == "CONNECTION_CLOSE with PROTOCOL_VIOLATION (0xa)"


ANY = """\
  - connect: {}
  - expect_any:
      within: 2
      preferred: closed
      branches:
        closed: {close: {codes: [PROTOCOL_VIOLATION]}}
        completed: {expect: {event: velocity:handshake_completed}}
"""


@pytest.mark.parametrize("strict", [False, True])
async def test_a_branch_other_than_the_preferred_one_fails_only_under_strict(
        tmp_path: Path, target: Target, strict: bool) -> None:
    result = await run(tmp_path, target, ANY, strict=strict)
    expected = Verdict.FAIL if strict else Verdict.PASS
    assert result.outcome.verdict is expected
    assert "branch completed held, not the preferred closed" in result.outcome.reason


async def test_sending_beyond_the_datagram_budget_is_an_error(tmp_path: Path,
                                                              target: Target) -> None:
    result = await run(tmp_path, target, """\
  - connect: {}
  - send: {datagram: {template: garbage, size: 50}}
""", head=HEAD + "budget: {datagrams: 2}\n")
    assert result.outcome.verdict is Verdict.ERROR
    assert "over the budget of 2: raise budget.datagrams" in result.outcome.reason


async def test_pdk_without_a_known_key_is_unsupported(tmp_path: Path, target: Target) -> None:
    keyless = dataclasses.replace(target, keys=())
    result = await run(tmp_path, keyless, "  - connect: {key: pdk}\n")
    assert result.outcome.verdict is Verdict.UNSUPPORTED
    assert "no ML-KEM key of the target for balanced is known" in result.outcome.reason


async def test_silence_broken_by_the_target_fails_with_the_datagram(tmp_path: Path,
                                                                   target: Target) -> None:
    result = await run(tmp_path, target, """\
  - connect: {wait: none}
  - expect_silence: {for: 5}
""")
    assert result.outcome.verdict is Verdict.FAIL
    assert result.outcome.event is not None
    assert result.outcome.event["name"] == "quic:datagrams_received"


async def test_each_connection_leaves_a_transcript_of_the_schema(tmp_path: Path,
                                                                 target: Target) -> None:
    """The second connection uses PDK with the key the first one discovered."""
    keyless = dataclasses.replace(target, keys=())
    result = await run(tmp_path, keyless, """\
  - connect: {key: discovery}
  - expect: {event: velocity:handshake_completed, where: {data.mode: discovery}}
  - connect: {name: second}
  - expect: {conn: second, event: velocity:handshake_completed, where: {data.mode: pdk}}
  - finally:
      - wait: 0
""")
    assert result.outcome.verdict is Verdict.PASS, result.outcome
    assert [name for name, _ in result.documents] == ["main", "second"]
    for _, document in result.documents:
        assert schema_errors("transcript", document) == []
    main = [e["name"] for e in result.documents[0][1]["events"]]
    assert "harness:step" in main and main[-1] == "harness:verdict"
    assert "harness:step" not in [e["name"] for e in result.documents[1][1]["events"]]


@pytest.mark.parametrize(("steps", "keeps"), [
    ("  - connect: {}\n  - assert: non_minimal_varints == []\n", True),
    ("  - connect: {}\n  - finally:\n      - assert: [\"len(non_minimal_varints) == 0\"]\n",
     True),
    ("  - connect: {}\n  - assert: padding_not_last == 0\n", False),
])
async def test_a_run_keeps_payloads_only_when_an_assert_reads_them(
        tmp_path: Path, target: Target, steps: str, keeps: bool) -> None:
    """Every opened payload costs memory (a transfer's whole body): only a scenario whose
    asserts read ``non_minimal_varints`` has its connections keep them."""
    path = tmp_path / "s.yaml"
    path.write_text(HEAD + "steps:\n" + steps)
    (scenario,) = load_file(path, "s.yaml", requirements())
    loop = asyncio.get_running_loop()
    run = Run(scenario, target, 1, False, BudgetMeter(scenario.budget, loop.time()), loop)
    assert run.keeps_payloads is keeps
