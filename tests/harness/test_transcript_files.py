"""Transcript files: real transcripts validate (fallbacks and closes included, scenario
headers and harness events too), and a bad file is told one line per problem with its
file, line and column."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.transcript import TranscriptError, file_errors, files, load, validate
from tests.harness.transcript_runs import run_documents


def write(tmp_path: Path, document: Any, name: str = "t.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document, indent=1))
    return path


def test_a_handshake_and_its_close_validate_from_both_sides() -> None:
    for document in run_documents().values():
        assert validate(document) == []


@pytest.mark.spec("VEL-FB-002")
def test_a_fallback_transcript_validates_and_its_close_frame_keeps_its_type() -> None:
    """CONNECTION_CLOSE carries a ``frame_type`` field of its own (the frame that caused
    it): the frame's type name must not be overwritten by it."""
    documents = run_documents(mode="discovery", fallback_only=True)
    for document in documents.values():
        assert validate(document) == []
    frames = [f for e in documents["client"]["events"] if e["name"] == "quic:packet_received"
              for f in e["data"]["frames"]]
    close = [f for f in frames if f["frame_type"] == "connection_close"]
    assert close == [{"frame_type": "connection_close", "error_code": 0x108,
                      "trigger_frame_type": 0, "reason": "fallback directed"}]


def test_scenario_header_and_harness_events_validate() -> None:
    document = run_documents(scenario={"id": "handshake/pdk-completes",
                                       "params": {"profile": "light", "n": 2},
                                       "seed": 7})["client"]
    document["events"] += [
        {"time": 1, "name": "harness:step", "data": {"index": 0, "step": "connect",
                                                     "conn": "main", "args": {"key": "pdk"}}},
        {"time": 1, "name": "harness:mutation", "data": {"step": 1, "target": "client_hello",
                                                         "operation": "set",
                                                         "args": {"alpn": ["h3"]}}},
        {"time": 2, "name": "harness:check", "data": {
            "step": 2, "check": "expect_close", "passed": False,
            "requirements": ["VEL-FB-004"], "expected": ["DOWNGRADE_DETECTED"],
            "actual": None, "message": "no close within 2 s", "event": 3}},
        {"time": 3, "name": "harness:verdict", "data": {"verdict": "FAIL",
                                                        "reason": "expect_close failed",
                                                        "requirements": ["VEL-FB-004"]}}]
    assert validate(document) == []


@pytest.mark.parametrize(("event", "wrong"), [
    ({"name": "harness:step", "data": {"index": -1, "step": "connect"}}, "$.events[0].data.index"),
    ({"name": "harness:check", "data": {"check": "assert"}}, "'passed' is a required"),
    ({"name": "harness:check", "data": {"check": "assert", "passed": True,
                                        "requirements": ["FB-4"]}},
     "$.events[0].data.requirements[0]"),
    ({"name": "harness:verdict", "data": {"verdict": "GREEN"}}, "$.events[0].data.verdict"),
    ({"name": "harness:mutation", "data": {"target": "packet", "operation": "drop",
                                           "extra": 1}}, "'extra' was unexpected"),
])
def test_harness_events_have_a_defined_shape(event: dict[str, Any], wrong: str) -> None:
    document = run_documents()["client"]
    document["events"] = [{"time": 0, **event}]
    errors = validate(document)
    assert len(errors) == 1 and wrong in errors[0], errors


def test_a_file_that_is_not_json_is_one_line_with_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n "schema": "velocity-transcript/1",\n "events": [1, 2,]\n}\n')
    assert file_errors(path) == [f"{path}:3:18: not JSON: Expecting value"]
    with pytest.raises(TranscriptError) as caught:
        load(path)
    assert caught.value.lines == [f"{path}:3:18: not JSON: Expecting value"]


@pytest.mark.parametrize(("content", "problem"), [
    (b"", ":1:1: not JSON: Expecting value"),
    (b'{"a": "\xff"}', ":1: not UTF-8 text (byte 7)"),
    (b"[" * 100_000, "nested too deeply"),
])
def test_other_unreadable_files_are_one_line(tmp_path: Path, content: bytes,
                                             problem: str) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    errors = file_errors(path)
    assert len(errors) == 1 and errors[0].startswith(str(path)) and problem in errors[0], errors


def test_nan_and_infinity_are_not_json(tmp_path: Path) -> None:
    document = run_documents()["client"]
    document["events"][0]["time"] = float("inf")
    path = write(tmp_path, document)
    assert file_errors(path) == [f"{path}: not JSON: Infinity is not a JSON number"]


def test_errors_in_a_very_large_file_name_their_path_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    document = run_documents()["client"]
    document["vantage_point"] = "moon"
    path = write(tmp_path, document)
    monkeypatch.setattr(files, "LOCATE_CHARS", 100)
    (error,) = file_errors(path)
    assert error.startswith(f"{path}: $.vantage_point: 'moon' is not one of")


def test_a_missing_file_or_a_directory_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    assert file_errors(path) == [f"{path}: cannot read it: No such file or directory"]
    assert file_errors(tmp_path) == [f"{tmp_path}: cannot read it: Is a directory"]


def test_schema_errors_name_the_line_of_the_value_and_its_json_path(tmp_path: Path) -> None:
    document = run_documents()["server"]
    document["vantage_point"] = "satellite"
    document["events"][1]["data"]["header"]["packet_type"] = "zero_rtt"
    del document["events"][2]["data"]["raw"]
    path = write(tmp_path, document)
    lines = path.read_text().splitlines()
    errors = file_errors(path)
    assert len(errors) == 3, errors
    by_path = {e.split(": ")[1]: e for e in errors}
    bad_type = by_path["$.events[1].data.header.packet_type"]
    line = int(bad_type.split(":")[1])
    assert '"packet_type": "zero_rtt"' in lines[line - 1]
    assert "'zero_rtt' is not one of" in bad_type
    raw = by_path["$.events[2].data"]
    assert "'raw' is a required property" in raw and '"data": {' in lines[
        int(raw.split(":")[1]) - 1]
    assert '"vantage_point": "satellite"' in lines[
        int(by_path["$.vantage_point"].split(":")[1]) - 1]
    with pytest.raises(TranscriptError) as caught:
        load(path)
    assert caught.value.lines == errors


def test_a_json_value_of_the_wrong_kind_is_told(tmp_path: Path) -> None:
    path = write(tmp_path, [1, 2])
    errors = file_errors(path)
    assert errors == [f"{path}:1:1: $: [1, 2] is not of type 'object'"]


def test_old_server_transcripts_stay_valid(tmp_path: Path) -> None:
    """What ``serve --transcripts`` wrote before scenario headers had a shape."""
    document = run_documents()["server"]
    document["scenario"] = None
    assert file_errors(write(tmp_path, document)) == []
    assert load(write(tmp_path, document))["vantage_point"] == "server"
