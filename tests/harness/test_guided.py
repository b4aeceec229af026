"""The coverage-guided fuzzer (harness.fuzz.guided): it finds a bug planted in a decoder
that random bytes would almost never reach, replays what it found, reads its seed corpus
from the known-answer vectors and a live transcript, and writes loadable scenarios."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.fuzz import guided_targets as g
from harness.fuzz.guided import connection_scenario
from harness.scenario.engine import run_scenario
from harness.scenario.loader import load_file
from harness.scenario.spec import requirements
from harness.scenario.verdict import Verdict
from harness.targets import InProcessServer, Target
from velocity.core.connection import Address
from velocity.core.endpoint import ServerEndpoint
from velocity.core.frames import PathChallenge, Ping, encode_frames

ROOT = Path(__file__).resolve().parents[2]

# A decoder with a deliberate IndexError: a PATH_CHALLENGE whose data starts with "BUG"
# indexes a one-element list by its fourth byte.
PLANTED = '''
from velocity.core.errors import ProtocolError
from velocity.core.frames import PathChallenge, decode_frames
from velocity.core.packet import PacketType


def decode(data: bytes) -> object:
    try:
        frames = decode_frames(data, PacketType.ONE_RTT)
    except ProtocolError:
        return None
    for frame in frames:
        if isinstance(frame, PathChallenge) and frame.data[:3] == b"BUG":
            return [frame][frame.data[3]]
    return frames
'''


def _guided(cwd: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.fuzz.guided", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_finds_a_planted_index_error_and_replays_it(tmp_path: Path) -> None:
    """From one seed (an all-zero PATH_CHALLENGE) the fuzzer needs three exact bytes and a
    fourth not zero: about 2**24 blind mutations, where the comparison it watches points it
    there in some tens of thousands (a few seconds; the bound leaves room for a loaded
    machine)."""
    (tmp_path / "planted_decoder.py").write_text(PLANTED)
    seeds = tmp_path / "corpus" / "planted_decoder.decode"
    seeds.mkdir(parents=True)
    (seeds / "path-challenge").write_bytes(encode_frames([PathChallenge(bytes(8))]))
    found = _guided(tmp_path, "--seconds", "90", "--target", "planted_decoder:decode",
                    "--corpus", str(tmp_path / "corpus"), timeout=240)
    assert found.returncode == 1, found.stdout + found.stderr
    assert "FINDING: IndexError: list index out of range" in found.stdout
    written = re.search(r"replay: python -m harness.fuzz.guided --replay (\S+)", found.stdout)
    assert written is not None, found.stdout
    crash = tmp_path / written.group(1)
    data = crash.read_bytes()
    frames = [f for f in g.decode_frames(data, g.PacketType.ONE_RTT)
              if isinstance(f, PathChallenge)]
    assert any(f.data.startswith(b"BUG") and f.data[3] for f in frames)
    replayed = _guided(tmp_path, "--replay", str(crash), timeout=120)
    assert replayed.returncode == 1
    assert "IndexError" in replayed.stderr and "reproduced" in replayed.stdout


def test_a_run_without_finding_exits_0_and_reports_its_speed(tmp_path: Path) -> None:
    done = _guided(tmp_path, "--seconds", "2", "--target", "params", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    speed = re.search(r"params: (\d+) execs in \d+ s \((\d+) execs/s\), coverage (\d+)",
                      done.stdout)
    assert speed is not None, done.stdout
    assert int(speed.group(1)) > 100 and int(speed.group(3)) > 10


def test_a_bad_target_is_a_one_line_usage_error(tmp_path: Path) -> None:
    done = _guided(tmp_path, "--seconds", "1", "--target", "nope", timeout=60)
    assert done.returncode == 2
    assert "--target nope: not one of frames" in done.stderr
    assert "Traceback" not in done.stderr


def _vector_hex(name: str) -> list[bytes]:
    document = json.loads((ROOT / "vectors" / name).read_text())
    return [bytes.fromhex(v["hex"]) for v in document["vectors"]]


def test_the_corpus_holds_the_known_answer_vectors() -> None:
    frames = g.seeds("frames")
    for payload in _vector_hex("frames.json"):
        assert bytes([3]) + payload in frames  # as a 1-RTT payload, among others
    headers = g.seeds("headers")
    assert all(h in headers for h in _vector_hex("headers.json"))
    messages = g.seeds("messages")
    pdk = json.loads((ROOT / "vectors" / "handshakes" / "pdk.json").read_text())
    assert bytes.fromhex(pdk["flights"][0]["messages"][0]) in messages
    for target in g.TARGETS:
        for data in g.seeds(target):
            g.TARGETS[target](data)  # the seeds themselves are no findings


def test_the_live_transcript_takes_the_fuzzed_server_through_its_handshake() -> None:
    """The seeded server of the connection target reads every datagram of the transcript,
    so mutations start from a connected server (its Handshake and 1-RTT keys)."""
    datagrams = g.live_transcript().client_datagrams
    conn = g.server_connection(datagrams[0])
    for index, datagram in enumerate(datagrams):
        g.deliver(conn, datagram, (index + 1) * g.STEP)
    assert conn.handshake_complete
    sealed = g.seal(conn, g.ONE_RTT, encode_frames([Ping()]))
    assert sealed is not None
    before = len(conn.spaces[g.Epoch.APPLICATION].received)
    g.deliver(conn, sealed, 1.0)
    assert sum(b - a for a, b in conn.spaces[g.Epoch.APPLICATION].received) > before


def test_a_connection_input_becomes_a_loadable_scenario(tmp_path: Path) -> None:
    first = g.live_transcript().client_datagrams[0]
    wait_a_second = g.INITIAL | 4 << 2  # four units of g.WAIT
    data = g.join_chunks([(g.RAW, first), (wait_a_second, encode_frames([Ping()]))])
    text = connection_scenario(data, Path("reports/fuzz/guided-connection-crash-x"))
    assert text is not None
    assert first.hex() in text and "  - wait: 1\n" in text
    path = tmp_path / "guided-x.yaml"
    path.write_text(text)
    [scenario] = load_file(path, "guided-x.yaml", requirements())
    assert scenario.id.startswith("regressions/guided-connection-")
    live = [(g.RAW, d) for d in g.live_transcript().client_datagrams]
    assert connection_scenario(g.join_chunks([*live, (g.ONE_RTT, b"\x01")]),
                               Path("x")) is None  # the 1-RTT keys are this server's


@pytest.mark.parametrize("chunks", [[], [(g.RAW, b"")], [(g.HANDSHAKE, b"\x01")]])
def test_a_connection_input_without_readable_datagrams_is_no_finding(
        chunks: list[tuple[int, bytes]]) -> None:
    g.fuzz_connection(g.join_chunks(chunks))


def _serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    server = InProcessServer(tmp_path_factory.mktemp("target"))
    try:
        yield server.start()
    finally:
        server.stop()


# two servers, so that the weakened run meets no connection the first one left draining
reference = pytest.fixture(_serve, name="reference")
weakened = pytest.fixture(_serve, name="weakened")


async def test_a_connection_scenario_passes_a_server_that_survives_and_fails_one_that_dies(
        tmp_path: Path, reference: Target, weakened: Target,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The scenario of an input (here the reference client's first datagram and a PING
    Initial) runs against the in-process reference and passes; against a server that stops
    reading once that input's DCID reached it, as if the input had killed it, it fails."""
    first = g.live_transcript().client_datagrams[0]
    data = g.join_chunks([(g.RAW, first), (g.INITIAL, encode_frames([Ping()]))])
    path = tmp_path / "guided-x.yaml"
    path.write_text(connection_scenario(data, Path("x")) or "")
    [scenario] = load_file(path, "guided-x.yaml", requirements())
    passed = await run_scenario(scenario, reference, seed=0, strict=False)
    assert passed.outcome.verdict is Verdict.PASS, passed.outcome

    dcid = g.server_connection(first).original_dcid
    receive = ServerEndpoint.receive_datagram

    def dies_of_the_input(self: ServerEndpoint, datagram: bytes, address: Address, *,
                          now: float) -> None:
        if getattr(self, "dead", False):
            return
        self.dead = dcid in datagram[:32]  # type: ignore[attr-defined]
        receive(self, datagram, address, now=now)

    monkeypatch.setattr(ServerEndpoint, "receive_datagram", dies_of_the_input)
    failed = await run_scenario(scenario, weakened, seed=0, strict=False)
    assert failed.outcome.verdict is Verdict.FAIL, failed.outcome
    assert failed.outcome.reason.startswith("no quic:datagrams_received"), failed.outcome
