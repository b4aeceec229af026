"""The HTML report in a real browser: Debian's headless Chromium, driven by Playwright (never
a downloaded browser), opens report.html from disk; it renders with no console error (a
blocked load would be one: the page's policy forbids any), the screenshot is not blank,
the matrix shows the run's counts, and the verdict filters and "expand all" work."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from matplotlib.image import imread
from playwright.sync_api import Page, sync_playwright

from tests.harness.report_runs import ReportedRun, run_session, write_scenarios

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 30_000
PYTEST_VERDICTS = {"passed": "PASS", "failed": "FAIL", "skipped": "UNSUPPORTED",
                   "xfailed": "XFAIL", "error": "ERROR"}  # as this run's scenarios give them

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason=f"{CHROMIUM} is absent: apt-get install chromium "
                                       "(.ci/run installs it) to open the report in a browser")


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> ReportedRun:
    root = tmp_path_factory.mktemp("browsed")
    write_scenarios(root)
    return run_session(root)


@pytest.fixture
def page(reported: ReportedRun) -> Iterator[tuple[Page, list[str]]]:
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 900}, timeout=TIMEOUT_MS)
        try:
            tab = browser.new_page()
            tab.set_default_timeout(TIMEOUT_MS)
            tab.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                   if m.type in ("error", "warning") else None)
            tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            tab.goto((reported.folder / "report.html").as_uri(), wait_until="load")
            yield tab, problems
        finally:
            browser.close()


def test_the_report_renders_without_errors_and_is_not_blank(
        page: tuple[Page, list[str]], tmp_path: Path) -> None:
    tab, problems = page
    shot = tmp_path / "report.png"
    tab.screenshot(path=str(shot))
    assert problems == []
    pixels = imread(str(shot))[..., :3]
    assert pixels.shape[:2] == (900, 1280)
    assert (pixels.min(axis=2) < 0.9).mean() > 0.02  # something drawn: text, tables
    assert pixels.std() > 0.05


def test_the_matrix_shows_the_runs_counts(page: tuple[Page, list[str]],
                                          reported: ReportedRun) -> None:
    tab, _ = page

    def cell(area: str, verdict: str) -> int:
        text = tab.locator(
            f'#matrix tr[data-area="{area}"] td[data-verdict="{verdict}"]').inner_text()
        return int(text)

    for outcome, verdict in PYTEST_VERDICTS.items():
        assert cell("all", verdict) == reported.outcomes.get(outcome, 0), verdict
    assert cell("all", "total") == sum(reported.outcomes.values())
    assert cell("HS", "FAIL") == 1 and cell("RTY", "UNSUPPORTED") == 1
    assert tab.locator("svg").count() >= 5


def test_the_filters_and_expand_all_work(page: tuple[Page, list[str]]) -> None:
    tab, problems = page
    failed = tab.locator('section.scenario[data-verdict="FAIL"]')
    assert failed.is_visible()
    tab.locator('#filters input[value="FAIL"]').uncheck()
    assert failed.is_hidden()
    passed = tab.locator(
        'section.scenario[data-verdict="PASS"] > details').first
    assert passed.get_attribute("open") is None
    tab.locator("#expand").click()
    assert passed.get_attribute("open") is not None
    assert problems == []
