"""The report a session writes with ``--report``: results.json follows its schema and holds
the run and every scenario item with its evidence and measures, summary.md has the matrix
and the failures, report.html is one self-contained page with the matrix, the plots and
per-scenario details, and escapes what a peer controls; JUnit XML names each scenario and
carries its verdict and requirements; the folder is chosen, or made under reports/."""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from harness.coverage import coverage, spec_areas
from harness.report.html import render
from harness.report.results import Results, matrix
from harness.report.summary import markdown
from harness.scenario.spec import SPEC_FILE, requirements
from harness.schemas import schema_errors
from tests.harness.report_runs import ReportedRun, run_session, write_scenarios
from tests.harness.sessions import quiet_inner_sessions, write

pytest_plugins = ["pytester"]
__all__ = ["quiet_inner_sessions"]  # an autouse fixture

HOSTILE = '<script>alert("peer")</script><img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> ReportedRun:
    root = tmp_path_factory.mktemp("reported")
    write_scenarios(root)
    return run_session(root)


def results(run: ReportedRun) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((run.folder / "results.json").read_text())
    return document


def by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in document["scenarios"]}


def test_results_json_follows_its_schema_and_holds_the_run(reported: ReportedRun) -> None:
    assert reported.outcomes == {"passed": 4, "failed": 1, "skipped": 1, "xfailed": 1,
                                 "error": 1}, reported.output
    document = results(reported)
    assert schema_errors("results", document) == []
    run = document["run"]
    assert run["seed"] == "0" and run["strict"] is False and run["repeat"] == 1
    assert run["duration"] > 0 and run["start"].endswith("+00:00")
    [target] = run["targets"]
    assert target["label"].startswith("in-process reference server 127.0.0.1:")
    assert "server" in target["capabilities"] and "retry" not in target["capabilities"]
    assert {"velocity", "python", "pytest"} <= set(run["versions"])
    verdicts = {name: r["verdict"] for name, r in by_name(document).items()}
    assert verdicts == {"report/handshake": "PASS", "report/fail": "FAIL",
                        "report/unsupported": "UNSUPPORTED", "report/xfail": "XFAIL",
                        "report/error": "ERROR", "report/should": "PASS",
                        "report/matrix[n=1]": "PASS",
                        "report/matrix[n=2]": "PASS"}


@pytest.mark.spec("VEL-REC-002")
def test_a_session_without_seed_draws_a_fresh_one_and_names_it(tmp_path: Path) -> None:
    # connection ids drawn from a fixed default seed would collide, on a remote target, with
    # those a previous run left closing there; the fresh seed is what reproduces the run
    write_scenarios(tmp_path)
    run = run_session(tmp_path, seed=None)
    seed = results(run)["run"]["seed"]
    assert re.fullmatch(r"s[0-9a-f]{8}", seed), seed
    assert by_name(results(run))["report/fail"]["seed"] == seed
    assert f"seed: {seed}" in run.output, run.output  # the failure names it


def test_a_record_has_the_evidence_and_the_measures(reported: ReportedRun) -> None:
    records = by_name(results(reported))
    fail = records["report/fail"]
    assert fail["requirements"] == [] and fail["spec"] == ["VEL-HS-001"]
    assert fail["expected"] == "datagrams_sent > 500"
    assert re.fullmatch(r"datagrams_sent = \d+", fail["actual"])
    assert fail["step"] == "scenarios/report/all.yaml:16" and fail["seed"] == 0
    assert fail["transcript"] == "transcripts/report--fail.json"
    assert (reported.folder / fail["transcript"]).is_file()
    [run] = records["report/handshake"]["runs"]
    assert run["verdict"] == "PASS" and run["duration"] > 0
    assert run["handshake_ms"] > 0
    assert run["bytes_per_flight"][0]["direction"] == "sent"
    assert "initial" in run["bytes_per_flight"][0]["spaces"]
    assert run["amplification_ratio"] > 0
    assert records["report/matrix[n=2]"]["params"] == {"n": 2}
    unsupported = records["report/unsupported"]
    assert "does not claim retry" in unsupported["reason"]
    assert unsupported["runs"][0]["transcript"] is None


def test_the_coverage_table_counts_each_scenario_once(reported: ReportedRun) -> None:
    table = results(reported)["coverage"]
    rows = {r["id"]: r for r in table["requirements"]}
    assert rows["VEL-AUTH-012"]["scenarios"] == ["report/handshake", "report/matrix"]
    assert rows["VEL-AUTH-012"]["status"] == "wire"
    assert rows["VEL-HS-003"]["status"] == "uncovered"
    assert rows["VEL-CERT-004"]["observable"] is False  # in this root no unit test names it
    must = table["counts"]["MUST"]
    assert must["total"] == must["wire"] + must["unit"] + must["uncovered"]
    assert all(r["level"] in ("MUST", "SHOULD") for r in table["requirements"])


def test_summary_md_has_the_matrix_and_what_did_not_pass(reported: ReportedRun) -> None:
    text = (reported.folder / "summary.md").read_text()
    assert "| area | PASS | FAIL | UNSUPPORTED | XFAIL | ERROR | total |" in text
    assert "| HS handshake messages | 1 | 1 | 0 | 0 | 1 | 3 |" in text
    assert "| all scenarios | 4 | 1 | 1 | 1 | 1 | 8 |" in text
    assert ("- **FAIL** report/fail (scenarios/report/all.yaml:9, VEL-HS-001): assert "
            "'datagrams\\_sent &gt; 500' does not hold") in text
    assert ("## Passed with warnings\n\n- **PASS** report/should (scenarios/report/all.yaml:"
            "41, VEL-VAR-004): assert 'flights == 99' does not hold (SHOULD-level: fails only "
            "under --strict)") in text
    assert "Uncovered MUSTs (" in text


def test_junit_names_each_scenario_with_its_verdict_and_requirements(
        reported: ReportedRun) -> None:
    cases = {c.get("name", ""): c for c in ET.parse(reported.junit).getroot().iter("testcase")}
    records = by_name(results(reported))
    assert set(cases) == set(records)
    for name, case in cases.items():
        properties = {p.get("name"): p.get("value", "") for p in case.iter("property")}
        assert properties["verdict"] == records[name]["verdict"]
        assert properties["spec"] == " ".join(records[name]["spec"])
    failure = cases["report/fail"].find("failure")
    assert failure is not None and "VEL-HS-001 [MUST]" in (failure.text or "")
    skipped = cases["report/unsupported"].find("skipped")
    assert skipped is not None and "UNSUPPORTED" in skipped.get("message", "")
    assert cases["report/error"].find("error") is not None


def test_the_html_report_is_one_self_contained_page(reported: ReportedRun) -> None:
    page = (reported.folder / "report.html").read_text()
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r"<(link|img|iframe|object|embed)\b", page)
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert not re.search(r"\b(src|href)=\"(https?:)?//", page)
    assert page.count("<svg") >= 3 + 2  # three plots, a sequence diagram per transcript
    assert '<tr data-area="all">' in page
    assert "VEL-HS-001</b> [MUST] Messages are framed as above" in page
    assert "datagrams_sent &gt; 500" in page  # expected
    assert "quic:packet_sent" in page  # the events table
    assert "client (harness)" in page and "server (target)" in page


def _hostile(document: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The report's document with peer-controlled text everywhere a peer reaches."""
    out = copy.deepcopy(document)
    fail = next(r for r in out["scenarios"] if r["name"] == "report/fail")
    fail["reason"] = fail["actual"] = HOSTILE
    fail["event"] = {"name": "quic:connection_closed", "data": {"reason": HOSTILE}}
    fail["runs"][0]["bytes_per_flight"][0]["spaces"] = [HOSTILE]
    transcript = json.loads((folder / fail["transcript"]).read_text())
    check = next(e for e in transcript["events"] if e["name"] == "harness:check")
    check["data"]["message"] = HOSTILE
    (folder / "hostile.json").write_text(json.dumps(transcript))
    fail["transcript"] = fail["runs"][0]["transcript"] = "hostile.json"
    return out


def test_what_a_peer_controls_is_escaped(reported: ReportedRun) -> None:
    document = _hostile(results(reported), reported.folder)
    assert schema_errors("results", document) == []
    areas = spec_areas(SPEC_FILE)
    page = render(document, requirements(SPEC_FILE), areas, reported.folder)
    assert "transcript unreadable" not in page
    assert HOSTILE not in page and "<img" not in page and page.count("<script>") == 1
    assert page.count("&lt;script&gt;alert(") == 5  # reason, actual, event, flight, data
    text = markdown(document, areas)
    assert "<script>" not in text and "&lt;script&gt;" in text


def test_a_document_that_breaks_the_schema_is_refused(tmp_path: Path) -> None:
    collected = Results(start=dt.datetime.now(dt.UTC), seed="0", strict=False, repeat=1,
                        args=[])
    collected.add({"record": {"file": "f", "line": 1, "nodeid": "n", "runs": [],
                              "transcript": None}, "target": None})
    with pytest.raises(ValueError, match=r"results\.json breaks its schema"):
        collected.document(dt.datetime.now(dt.UTC), coverage({}, {}, {}), tmp_path)


def test_the_matrix_counts_a_scenario_once_per_area_it_names() -> None:
    records = [{"verdict": "PASS", "spec": ["VEL-HS-001", "VEL-HS-002", "VEL-AUTH-012"]},
               {"verdict": "FAIL", "spec": ["VEL-HS-003"]}]
    table = matrix(records, ["GEN", "HS", "AUTH"])
    assert list(table) == ["GEN", "HS", "AUTH", "all"]
    assert table["HS"] == {"PASS": 1, "FAIL": 1} and table["AUTH"] == {"PASS": 1}
    assert table["GEN"] == {} and table["all"] == {"PASS": 1, "FAIL": 1}


PLAIN = "id: plain/one\ntitle: t\nspec: [VEL-HS-001]\nrole: client\nsteps:\n  - wait: 0\n"


def test_a_bare_report_goes_to_a_timestamped_folder_under_reports(
        pytester: pytest.Pytester) -> None:
    write(pytester, "scenarios/plain/one.yaml", PLAIN)
    result = pytester.runpytest("scenarios", "--report")
    result.assert_outcomes(passed=1)
    [folder] = (pytester.path / "reports").iterdir()
    assert re.fullmatch(r"\d{8}T\d{6}Z", folder.name)
    assert sorted(p.name for p in folder.iterdir()) == [
        "report.html", "results.json", "summary.md", "transcripts"]
    assert f"velocity report: {folder / 'report.html'}" in result.stdout.str()


def test_a_report_folder_that_cannot_be_made_is_one_line(pytester: pytest.Pytester) -> None:
    write(pytester, "scenarios/plain/one.yaml", PLAIN)
    (pytester.path / "blocker").write_text("a file, not a folder")
    result = pytester.runpytest("scenarios", "--report", "blocker/run")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--report blocker/run: cannot create that folder" in result.stderr.str()
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_under_xdist_the_workers_records_reach_one_report(pytester: pytest.Pytester) -> None:
    write(pytester, "scenarios/plain/one.yaml", PLAIN + "---\n" + PLAIN.replace(
        "plain/one", "plain/two") + "---\n" + PLAIN.replace("plain/one", "plain/three"))
    result = pytester.runpytest_subprocess("scenarios", "-n", "2", "-p", "no:cacheprovider",
                                           "--report", "out", timeout=120)
    result.assert_outcomes(passed=3)
    document = json.loads((pytester.path / "out" / "results.json").read_text())
    assert sorted(r["id"] for r in document["scenarios"]) == [
        "plain/one", "plain/three", "plain/two"]
    assert all(r["runs"][0]["transcript"].startswith("transcripts/")
               for r in document["scenarios"])
