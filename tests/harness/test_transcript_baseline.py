"""Baselines: one stable file per scenario id and params; a run of the same deployment
matches its baseline, another profile does not, a missing entry is reported as such and a
malformed file is one line with file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.transcript import TranscriptError, baseline_name, compare_baseline, save_baseline
from tests.harness.transcript_runs import run_documents
from velocity.core.hybrid import SECURE

ID = "handshake/pdk-completes"
PARAMS = {"profile": "balanced", "aead": "AES_128_GCM"}


def test_file_names_are_stable_readable_and_distinct() -> None:
    assert baseline_name(ID, PARAMS) == (
        "handshake.pdk-completes+aead=AES_128_GCM,profile=balanced.json")
    assert baseline_name(ID, {}) == "handshake.pdk-completes.json"
    names = {baseline_name(ID, p) for p in ({"n": 1}, {"n": "1"}, {"n": [1]}, {"n": "a/b"},
                                            {"n": "a_b"}, {"n": "x" * 300},
                                            {"n": "x" * 301})}
    assert len(names) == 7
    assert all(len(n) < 140 and "/" not in n for n in names)
    assert baseline_name(ID, {"n": 1}) == baseline_name(ID, {"n": 1})  # no per-process salt


def test_the_same_deployment_matches_its_baseline(tmp_path: Path) -> None:
    path = save_baseline(tmp_path, ID, PARAMS, run_documents(seed="saved")["client"])
    assert path == tmp_path / baseline_name(ID, PARAMS)
    stored = json.loads(path.read_text())
    assert stored["scenario"] == {"id": ID, "params": PARAMS}
    assert stored["summary"]["profile"] == "balanced"
    assert compare_baseline(tmp_path, ID, PARAMS, run_documents(seed="later")["client"]) == []


def test_another_profile_drifts_from_the_baseline(tmp_path: Path) -> None:
    save_baseline(tmp_path, ID, PARAMS, run_documents()["client"])
    drift = {d.path: d for d in compare_baseline(
        tmp_path, ID, PARAMS, run_documents(profile=SECURE, seed="x")["client"],
        ignore=["bytes_per_flight"])}
    assert (drift["profile"].before, drift["profile"].after) == ("balanced", "secure")
    assert (drift["key_shares.client.length"].before,
            drift["key_shares.client.length"].after) == (1216, 1665)
    assert not any(p.startswith("bytes_per_flight") for p in drift)


def test_a_missing_baseline_is_one_difference_saying_so(tmp_path: Path) -> None:
    save_baseline(tmp_path, ID, PARAMS, run_documents()["client"])
    other = {"profile": "light", "aead": "AES_128_GCM"}
    (missing,) = compare_baseline(tmp_path, ID, other, run_documents()["client"])
    assert missing.path == "baseline" and missing.before is None
    assert missing.after == str(tmp_path / baseline_name(ID, other))
    assert "no baseline for handshake/pdk-completes" in missing.description
    assert "--save-baseline" in missing.description
    assert compare_baseline(tmp_path / "absent", ID, PARAMS, run_documents()["client"])[
        0].path == "baseline"


@pytest.mark.parametrize(("content", "problem"), [
    ('{"schema": "velocity-baseline/1",\n "summary": {"a": 1,}}',
     ":2:21: not JSON: Expecting property name"),
    ('[1]', ":1:1: $: not a baseline"),
    ('{"schema": "velocity-baseline/1",\n "scenario": {"id": "other", "params": {}},\n'
     ' "summary": {}}', ":2:14: $.scenario: the baseline of {\"id\":\"other\""),
    ('{"schema": "velocity-baseline/1",\n "scenario": {"id": "handshake/pdk-completes", '
     '"params": {"profile": "balanced", "aead": "AES_128_GCM"}},\n "summary": [1]}',
     ":3:13: $.summary: not an object"),
])
def test_a_malformed_baseline_is_one_line_with_file_and_line(tmp_path: Path, content: str,
                                                             problem: str) -> None:
    path = tmp_path / baseline_name(ID, PARAMS)
    path.write_text(content)
    with pytest.raises(TranscriptError) as caught:
        compare_baseline(tmp_path, ID, PARAMS, run_documents()["client"])
    (line,) = caught.value.lines
    assert line.startswith(f"{path}{problem}"), line


def test_saving_again_replaces_the_baseline(tmp_path: Path) -> None:
    save_baseline(tmp_path, ID, PARAMS, run_documents(profile=SECURE)["client"])
    save_baseline(tmp_path, ID, PARAMS, run_documents()["client"])
    assert compare_baseline(tmp_path, ID, PARAMS, run_documents(seed="again")["client"]) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [baseline_name(ID, PARAMS)]
