"""The fuzzer measured: scapy's random values of our custom fields cover their whole
ranges; a seed gives the same cases again; against a reference weakened with a planted
defect (a MAX_STREAM_DATA handler that raises IndexError on a stream id of 2^30 or more)
the fuzzer finds it, in memory and through the ``fuzz`` step over UDP, shrinks it, and
writes a scenario that fails against the weakened server and passes against the real one;
the reference itself passes a run of every generator in memory; and the in-memory pair's
restores share its discarded spaces' records, which the batch check finds changed if a
case changed them."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from scapy.packet import fuzz as scapy_fuzz

from harness.fuzz.case import LAYERS, STRATEGIES, Case, edit_hello, from_replay, to_replay
from harness.fuzz.cases import Source, freeze, layer_cases, seeded, strategy_cases
from harness.fuzz.memory import ATTACKER, MemoryTarget
from harness.fuzz.runner import Driver, FuzzSettings, Oracles, attempt, fuzz
from harness.fuzz.step import PeerDriver
from harness.layers import frames as fl
from harness.layers.fields import PacketNumberField, SizedVarIntField, VarIntField, ZeroRunField
from harness.layers.packets import VLongHeader
from harness.scenario.budget import BudgetMeter
from harness.scenario.context import Run
from harness.scenario.engine import run_scenario
from harness.scenario.loader import load_file
from harness.scenario.spec import requirements
from harness.scenario.verdict import Verdict
from harness.targets import InProcessServer, Target
from velocity.core import receiver
from velocity.core.connection import Connection
from velocity.core.endpoint import ServerEndpoint
from velocity.core.frames import ConnectionClose, MaxStreamData, encode_frames
from velocity.core.handshake.messages import ClientHello, encode_message
from velocity.core.packet import Epoch

PLANTED = 1 << 30
CLOSE = Case("frames", encode_frames([ConnectionClose(0, 0, b"")]))  # the target drains
DEFECT = Case("frames", encode_frames([MaxStreamData(PLANTED, 0)]))  # the planted one


def plant(monkeypatch: pytest.MonkeyPatch) -> None:
    """The weakened reference: MAX_STREAM_DATA for a stream id of 2^30 or more raises
    IndexError (as a handler that indexed a list by the id would)."""
    real = receiver._HANDLERS[MaxStreamData]

    def weakened(conn: Connection, frame: MaxStreamData, epoch: Epoch, now: float) -> None:
        if frame.stream_id >= PLANTED:
            raise IndexError("list index out of range")
        real(conn, frame, epoch, now)

    monkeypatch.setitem(receiver._HANDLERS, MaxStreamData, weakened)


# --- the generators -------------------------------------------------------------------------

def test_varint_randvals_cover_every_size_and_both_ends() -> None:
    with seeded("varints"):
        values = [VarIntField("v", 0).randval()._fix() for _ in range(4000)]
    assert all(0 <= v < 1 << 62 for v in values)
    assert {0, 63, 64, 16383, 16384, (1 << 30) - 1, 1 << 30, (1 << 62) - 1} <= set(values)
    sizes = [1 if v < 64 else 2 if v < 1 << 14 else 4 if v < 1 << 30 else 8 for v in values]
    assert all(sizes.count(size) > 800 for size in (1, 2, 4, 8))


def test_the_other_custom_fields_draw_over_their_ranges() -> None:
    with seeded("fields"):
        lengths = [SizedVarIntField("l", 0, 2).randval()._fix() for _ in range(2000)]
        numbers = [PacketNumberField("pn", 0).randval()._fix() for _ in range(2000)]
        runs = [ZeroRunField("run", b"").randval()._fix() for _ in range(500)]
    assert all(0 <= v < 1 << 14 for v in lengths) and max(lengths) > 0.99 * (1 << 14)
    assert min(lengths) < 0.01 * (1 << 14)
    assert all(0 <= v < 1 << 32 for v in numbers) and max(numbers) > 0.99 * (1 << 32)
    assert all(set(r) <= {0} for r in runs) and max(map(len, runs)) > 1400
    assert min(map(len, runs)) < 50
    for bits in range(4):  # a packet number is written in the header's 1..4 bytes
        with seeded(f"pn{bits}"):
            header = bytes(freeze(scapy_fuzz(VLongHeader(form=1, fixed=1, packet_type=2,
                                                          pn_length_bits=bits))))
        assert VLongHeader(header).packet_number < 1 << (8 * (bits + 1))


@pytest.mark.parametrize("name", sorted(fl.LAYERS_BY_NAME))
def test_every_fuzzed_frame_layer_builds_and_reads_back_as_its_type(name: str) -> None:
    layer = fl.LAYERS_BY_NAME[name]
    for case in layer_cases([name.lower()], 30, "layers"):
        assert case.kind == "frames" and 0 < len(case.data) <= 1100
        parsed = fl.dissect_frames(case.data)
        assert type(parsed[0]) is layer


def test_every_hello_case_is_a_client_hello_the_client_can_encode() -> None:
    # seed and count of the 1,000,000-case run whose 71st draw had a 256-byte ALPN name,
    # which a vec8 cannot carry: the client raised before anything reached the server
    base = ClientHello(bytes(32), (b"h3",), (1,), (1,), 1, b"key", ())
    for case in strategy_cases("hello", 200, "mixed/29/CLIENT_HELLO fields, hypothesis"):
        encode_message(edit_hello(case, base))


def test_a_seed_gives_the_same_cases_and_another_seed_others() -> None:
    for name in STRATEGIES:
        first = strategy_cases(name, 30, "seed-a")
        assert first == strategy_cases(name, 30, "seed-a") and len(first) == 30
        assert first != strategy_cases(name, 30, "seed-b")
    everything = [n for n in LAYERS if n != "frames"]
    assert layer_cases(everything, 60, "seed-a") == layer_cases(everything, 60, "seed-a")
    assert layer_cases(everything, 60, "seed-a") != layer_cases(everything, 60, "seed-b")


def test_every_case_reads_back_from_its_replay_form() -> None:
    cases = [*layer_cases(list(LAYERS), 40, "replay"),
             *(c for n in STRATEGIES for c in strategy_cases(n, 10, "replay"))]
    for case in cases:
        replay = yaml.safe_load(yaml.safe_dump(to_replay(case), sort_keys=False))
        assert from_replay(replay) == case


# --- in memory ------------------------------------------------------------------------------

def run_memory(cases: list[Case], **oracles: Any) -> Any:
    settings = Oracles(**oracles)

    async def make() -> Driver:
        return MemoryTarget(seed="test", oracles=settings)

    return asyncio.run(fuzz(make, cases, settings, shrink_attempts=120))


def test_in_memory_the_fuzzer_finds_the_planted_defect_and_shrinks_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    plant(monkeypatch)
    cases = layer_cases(["max_stream_data", "ping", "max_data"], 60, "planted")
    result = run_memory(cases, batch=20)
    assert result.finding is not None and result.finding.oracle == "internal_error"
    assert "IndexError" in result.finding.message
    (case,) = result.failing
    assert case.kind == "frames" and len(case.data) <= len(cases[result.index].data)
    assert [(f.name, f.stream_id >= PLANTED) for f in fl.dissect_frames(case.data)] == [
        ("MAX_STREAM_DATA", True)]  # shrunk to the one frame that fails

    async def replay(target: MemoryTarget) -> Any:
        return await attempt(target, [case])

    assert asyncio.run(replay(MemoryTarget(seed="again"))) is not None
    monkeypatch.undo()
    assert asyncio.run(replay(MemoryTarget(seed="again"))) is None


def test_in_memory_a_case_after_a_close_reaches_a_connection_that_reads_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    plant(monkeypatch)
    result = run_memory([CLOSE, CLOSE, DEFECT], batch=10)
    assert result.finding is not None and result.finding.oracle == "internal_error"
    assert result.index == 2


def test_in_memory_the_pair_shares_its_discarded_spaces_and_a_change_to_them_is_caught(
        ) -> None:
    target = MemoryTarget(seed="shared")
    assert asyncio.run(target.run(CLOSE)) is None
    assert asyncio.run(target.run(CLOSE)) is None  # on a restored pair
    pair, snapshot = target.pair, target._snapshot
    assert pair is not None and pair.main is not None and snapshot is not None
    again = snapshot.restore()
    assert again.main is not None
    for epoch in (Epoch.INITIAL, Epoch.HANDSHAKE):
        assert again.main.spaces[epoch] is pair.main.spaces[epoch]
        assert again.main.recovery.spaces[epoch] is pair.main.recovery.spaces[epoch]
    assert again.main.spaces[Epoch.APPLICATION] is not pair.main.spaces[Epoch.APPLICATION]
    assert asyncio.run(target.check()) is None
    pair.main.spaces[Epoch.INITIAL].probes = 1
    with pytest.raises(RuntimeError, match="discarded space"):
        asyncio.run(target.check())


@pytest.mark.parametrize("source", [
    Source(layers=("frames",)), Source(layers=("frames",), lengths=True),
    *(Source(strategy="frames", space=space) for space in ("initial", "handshake", "1rtt")),
    Source(strategy="hello"), Source(strategy="transport_parameters"),
    Source(strategy="crypto"), Source(strategy="datagrams"),
    Source(layers=("long_header", "short_header", "retry", "version_negotiation")),
    Source(layers=("client_hello", "finished", "server_key", "pre_shared_key")),
], ids=lambda s: "-".join((*s.layers, s.strategy or "", s.space)))
def test_the_reference_passes_every_generator_in_memory(source: Source) -> None:
    result = run_memory(source.cases(25, "reference"), batch=25)
    assert result.finding is None, (result.finding, [to_replay(c) for c in result.failing])
    assert result.cases == 25


def test_in_memory_a_server_that_stops_serving_after_raw_datagrams_fails_the_batch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # the planted defect: once a datagram from the attacker's address came, the endpoint
    # reads nothing more; the sanity handshake after the batch finds it
    real = ServerEndpoint.receive_datagram
    deaf: set[int] = set()

    def weakened(self: ServerEndpoint, data: bytes, address: Any, *, now: float,
                 arrived: float | None = None) -> None:
        if address[0] == ATTACKER:
            deaf.add(id(self))
        if id(self) not in deaf:
            real(self, data, address, now=now, arrived=arrived)

    monkeypatch.setattr(ServerEndpoint, "receive_datagram", weakened)
    result = run_memory(Source(strategy="datagrams").cases(10, "deaf"), batch=10)
    assert result.finding is not None and result.finding.oracle == "stopped_serving"


def test_in_memory_a_case_costs_the_same_however_many_clients_earlier_cases_left(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # each hello case leaves a client behind (most draining, and the virtual clock hardly
    # moves): later cases must not pay for them
    visits = [0]
    real = Connection.datagrams_to_send

    def counted(self: Connection, *, now: float) -> Any:
        visits[0] += 1
        return real(self, now=now)

    monkeypatch.setattr(Connection, "datagrams_to_send", counted)
    target = MemoryTarget(seed="visits")
    per_case = []
    for case in Source(strategy="hello").cases(60, "visits"):
        before = visits[0]
        assert asyncio.run(target.run(case)) is None
        per_case.append(visits[0] - before)
    assert max(per_case[-20:]) <= 2 * max(per_case[:20]), per_case


# --- the fuzz step over UDP -----------------------------------------------------------------

@pytest.fixture(name="server")
def _server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    server = InProcessServer(tmp_path_factory.mktemp("target"))
    try:
        yield server.start()
    finally:
        server.stop()


SCENARIO = """\
id: fuzz/planted
title: scapy MAX_STREAM_DATA frames
spec: [VEL-ERR-005]
tags: [fuzz]
role: client
budget: {timeout: 30}
parametrize: {n: [40]}
steps:
  - fuzz: {layers: [max_stream_data, ping], cases: "{n}", batch: 10, seed: planted}
"""


def outcome(path: Path, target: Target, reports: Path) -> Any:
    (scenario,) = load_file(path, path.name, requirements())
    return asyncio.run(run_scenario(scenario, target, seed=0, strict=False,
                                    fuzz=FuzzSettings(reports=reports))).outcome


def test_the_fuzz_step_writes_a_scenario_that_fails_weakened_and_passes_fixed(
        server: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "planted.yaml"
    source.write_text(SCENARIO)
    reports = tmp_path / "reports"
    assert outcome(source, server, reports).verdict is Verdict.PASS  # the real reference
    plant(monkeypatch)
    found = outcome(source, server, reports)
    assert found.verdict is Verdict.FAIL, found.reason
    (written,) = reports.glob("*.yaml")  # named after the scenario, parameters and seed
    assert written.name == "fuzz-planted_n=40_-planted.yaml"
    assert str(written) in found.reason and "seed planted" in found.reason
    assert "internal_error" in found.reason
    replay = yaml.safe_load(written.read_text())["steps"][0]["fuzz"]["replay"]
    assert len(replay) == 1 and replay[0]["kind"] == "frames"
    again = outcome(written, server, tmp_path / "again")
    assert again.verdict is Verdict.FAIL and "internal_error" in again.reason
    monkeypatch.undo()
    assert outcome(written, server, tmp_path / "again").verdict is Verdict.PASS


def test_over_udp_a_case_after_a_close_reaches_a_connection_that_reads_it(
        server: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "after-close.yaml"
    path.write_text(SCENARIO.replace("parametrize: {n: [40]}\n", "").replace(
        "{layers: [max_stream_data, ping], cases: \"{n}\", batch: 10, seed: planted}",
        yaml.safe_dump({"replay": [to_replay(c) for c in (CLOSE, CLOSE, DEFECT)]},
                       default_flow_style=True, width=1000).strip()))
    plant(monkeypatch)
    found = outcome(path, server, tmp_path / "reports")
    assert found.verdict is Verdict.FAIL and "internal_error" in found.reason, found.reason


def test_no_two_fuzz_connections_of_a_run_share_a_dcid(server: Target, tmp_path: Path) -> None:
    # a connection still live on the target would take the Initials of another with its
    # DCID: the fuzzing driver's and the shrinking drivers' connections must all differ
    path = tmp_path / "planted.yaml"
    path.write_text(SCENARIO)
    (scenario,) = load_file(path, path.name, requirements())

    async def dcids() -> list[bytes]:
        loop = asyncio.get_running_loop()
        run = Run(scenario, server, 0, False, BudgetMeter(scenario.budget, loop.time()), loop)
        out = []
        for label in ("a.yaml:9/1", "a.yaml:9/2", "a.yaml:12/1"):
            driver = PeerDriver(run, Oracles(), label)
            try:
                for _ in range(2):
                    out.append((await driver._peer()).connection.original_dcid)
            finally:
                await driver.close()
        return out

    seen = asyncio.run(dcids())
    assert len(set(seen)) == len(seen) == 6


def test_a_fuzz_step_with_an_unknown_layer_is_a_collection_error(tmp_path: Path) -> None:
    from harness.scenario.loader import ScenarioFileError  # noqa: PLC0415

    path = tmp_path / "bad.yaml"
    path.write_text(SCENARIO.replace("max_stream_data", "nonsense"))
    with pytest.raises(ScenarioFileError) as refused:
        load_file(path, "bad.yaml", requirements())
    assert any("no layer 'nonsense'" in line and line.startswith("bad.yaml:9")
               for line in refused.value.errors)


def test_random_is_left_as_it_was() -> None:
    random.seed(5)
    expected = random.random()
    random.seed(5)
    layer_cases(["stream"], 3, "x")
    assert random.random() == expected
