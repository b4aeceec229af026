"""summary.md: a session's results for a CI log or a pull request: the run, the verdict
matrix by spec area, every scenario that did not pass with its reason, and the coverage
counts with the uncovered MUSTs. Text that came from a peer (reasons, actual values) is
escaped so it renders as text, never as markup."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from harness.report.results import ALL, VERDICTS, matrix

_MARKDOWN = str.maketrans({"|": r"\|", "`": r"\`", "[": r"\[", "]": r"\]", "*": r"\*",
                           "_": r"\_", "\n": " ", "\r": " "})


def text(value: object) -> str:
    """``value`` as inert Markdown: no HTML, no links, no table breaks."""
    return html.escape(str(value), quote=False).translate(_MARKDOWN)


def markdown(document: Mapping[str, Any], areas: Mapping[str, str]) -> str:
    run, records = document["run"], document["scenarios"]
    lines = [f"# Velocity/1 conformance run, {text(run['start'])}", ""]
    for target in run["targets"] or [{"label": "(no target started)", "capabilities": []}]:
        lines.append(f"- target: {text(target['label'])} (claims "
                     f"{text(', '.join(target['capabilities']) or 'nothing')})")
    lines += [f"- seed {text(run['seed'])}, strict {'on' if run['strict'] else 'off'}, "
              f"repeat {run['repeat']}, "
              f"{run['duration']:.1f} s", f"- velocity {text(run['versions']['velocity'])}, "
              f"python {text(run['versions']['python'])}, pytest "
              f"{text(run['versions']['pytest'])}", ""]
    lines += _matrix(records, areas)
    lines += _not_passed(records)
    lines += _coverage(document["coverage"])
    return "\n".join(lines) + "\n"


def _matrix(records: list[dict[str, Any]], areas: Mapping[str, str]) -> list[str]:
    table = matrix(records, areas)
    shown = [v for v in VERDICTS if table[ALL][v]]
    lines = ["## Verdicts by spec area", "",
             "| area | " + " | ".join(shown) + " | total |",
             "|---|" + "---:|" * (len(shown) + 1)]
    for area, counts in table.items():
        if area != ALL and not sum(counts.values()):
            continue
        name = "all scenarios" if area == ALL else f"{area} {areas.get(area, '')}".strip()
        lines.append(f"| {text(name)} | " + " | ".join(str(counts[v]) for v in shown)
                     + f" | {sum(counts.values())} |")
    return [*lines, ""]


def _not_passed(records: list[dict[str, Any]]) -> list[str]:
    """What did not pass, then what passed with a warning (a SHOULD-level check that
    fails under --strict, a non-preferred expect_any branch, runs lost under a pass_rate)."""
    lines = []
    for title, chosen in (
            ("Not passed", [r for r in records if r["verdict"] != "PASS"]),
            ("Passed with warnings", [r for r in records if r["verdict"] == "PASS"
                                      and r["reason"]])):
        if chosen:
            lines += [f"## {title}", ""]
        for r in chosen:
            ids = ", ".join(r["requirements"] or r["spec"])
            lines.append(f"- **{r['verdict']}** {text(r['name'])} ({text(r['file'])}:"
                         f"{r['line']}, {text(ids)}): {text(r['reason'])}")
        if chosen:
            lines.append("")
    return lines or ["Every scenario passed.", ""]


def _coverage(table: Mapping[str, Any]) -> list[str]:
    lines = ["## Requirement coverage", ""]
    for level, n in table["counts"].items():
        lines.append(f"- {level}: {n['total']}, {n['wire']} checked on the wire, {n['unit']} "
                     f"by unit tests (not observable), {n['uncovered']} uncovered")
    missing = [r["id"] for r in table["requirements"]
               if r["level"] == "MUST" and r["status"] == "uncovered"]
    if missing:
        lines += ["", f"Uncovered MUSTs ({len(missing)}): " + ", ".join(missing)]
    return lines
