"""report.html: one self-contained page (inline CSS, JS and SVG; a Content-Security-Policy
that forbids loading anything) for a session of scenarios: the run, the verdict matrix by
spec area, the plots, the coverage table, and per scenario its requirements quoted from
the spec, expected against actual, the offending event, its runs and its transcript (the
flights as a sequence diagram, the events as a table). Every value that came from a
transcript, a scenario or a peer is escaped here, once, by ``esc``."""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from harness.report.diagram import sequence
from harness.report.plots import plots
from harness.report.rate import PassRate
from harness.report.results import ALL, VERDICTS, matrix
from harness.scenario.spec import Requirement
from harness.transcript import TranscriptError, load

MAX_EVENTS = 400  # rows of one transcript's event table
DATA_CHARS = 400  # characters of one event's data shown in its row
CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "img-src data:")
CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:0 16px 48px;
color:#1b1f24;background:#fff}
h1{font-size:22px;margin:20px 0 8px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid
#d0d7de}table{border-collapse:collapse;margin:6px 0}th,td{border:1px solid #d0d7de;
padding:3px 8px;text-align:left;vertical-align:top}td.n{text-align:right}td.zero{color:#afb8c1}
.v-PASS{background:#dafbe1}.v-FAIL,.v-XPASS,.v-ERROR{background:#ffebe9}
.v-UNSUPPORTED,.v-INCONCLUSIVE{background:#f6f8fa}.v-XFAIL{background:#fff8c5}
.badge{display:inline-block;min-width:96px;font-weight:600;padding:0 6px;border-radius:4px}
.muted{color:#57606a}pre{white-space:pre-wrap;word-break:break-word;background:#f6f8fa;
padding:6px;margin:4px 0}code{font-size:12px}.events td{font-size:12px}
.events tr.offending td{background:#ffebe9}.events td.data{font-family:monospace;
word-break:break-all}section.scenario{margin:6px 0}summary{cursor:pointer}
.failed{font-weight:600}.warning{color:#9a6700;font-weight:600}
.uncovered{background:#ffebe9}.plots figure{display:inline-block;
margin:0 12px 12px 0}.plots svg{max-width:100%;height:auto}
svg.sequence text{font:12px sans-serif}svg.sequence .column{font-weight:600}
svg.sequence .life{stroke:#8c959f;stroke-dasharray:4 3}svg.sequence .arrow{stroke:#0969da;
stroke-width:1.5}svg.sequence .head{fill:#0969da}#filters label{margin-right:12px}
"""
JS = """
(function () {
  var boxes = document.querySelectorAll('#filters input[type=checkbox]');
  function apply() {
    var shown = {};
    boxes.forEach(function (b) { shown[b.value] = b.checked; });
    document.querySelectorAll('section.scenario').forEach(function (s) {
      s.hidden = !shown[s.getAttribute('data-verdict')];
    });
  }
  boxes.forEach(function (b) { b.addEventListener('change', apply); });
  var toggle = document.getElementById('expand');
  if (toggle) {
    toggle.addEventListener('click', function () {
      var open = toggle.getAttribute('data-open') !== 'true';
      document.querySelectorAll('section.scenario > details').forEach(function (d) {
        d.open = open;
      });
      toggle.setAttribute('data-open', open ? 'true' : 'false');
      toggle.textContent = open ? 'collapse all' : 'expand all';
    });
  }
})();
"""


def esc(value: object) -> str:
    """Text for HTML content or a quoted attribute."""
    return html.escape(str(value), quote=True)


def _json(value: object, limit: int | None = None) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    if limit is not None and len(text) > limit:
        text = text[:limit] + f"... ({len(text) - limit} more characters)"
    return esc(text)


def render(document: Mapping[str, Any], spec: Mapping[str, Requirement],
           areas: Mapping[str, str], folder: Path) -> str:
    """The page for results.json ``document``, whose transcripts are under ``folder``."""
    records = document["scenarios"]
    body = [_header(document["run"], records), _matrix(records, areas), _plots(records),
            _coverage(document["coverage"]), _scenarios(records, spec, folder)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Velocity/1 conformance report {esc(document['run']['start'])}</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}"
            f"<script>{JS}</script></body></html>\n")


def _rows(pairs: Iterable[tuple[str, str]]) -> str:
    """Table rows from (label, already escaped HTML)."""
    return "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in pairs)


def _header(run: Mapping[str, Any], records: list[dict[str, Any]]) -> str:
    targets = "<br>".join(f"{esc(t['label'])} <span class=\"muted\">(claims "
                          f"{esc(', '.join(t['capabilities']) or 'nothing')})</span>"
                          for t in run["targets"]) or "(no target started)"
    versions = ", ".join(f"{esc(k)} {esc(v)}" for k, v in run["versions"].items())
    return ("<h1>Velocity/1 conformance report</h1><table class=\"run\">" + _rows([
        ("started", esc(run["start"])), ("duration", f"{run['duration']:.1f} s"),
        ("scenario items", str(len(records))), ("targets", targets),
        ("seed", esc(run["seed"])), ("strict", "on" if run["strict"] else "off"),
        ("repeat", esc(run["repeat"])), ("arguments", f"<code>{esc(' '.join(run['args']))}</code>"),
        ("versions", versions)]) + "</table>")


def _matrix(records: list[dict[str, Any]], areas: Mapping[str, str]) -> str:
    table = matrix(records, areas)
    head = "".join(f"<th>{v}</th>" for v in VERDICTS)
    rows = []
    for area, counts in table.items():
        name = "all scenarios" if area == ALL else f"{area} {areas.get(area, '')}"
        cells = "".join(
            f'<td class="n {f"v-{v}" if counts[v] else "zero"}" data-verdict="{v}">'
            f"{counts[v]}</td>" for v in VERDICTS)
        rows.append(f'<tr data-area="{esc(area)}"><th>{esc(name)}</th>{cells}'
                    f'<td class="n" data-verdict="total">{sum(counts.values())}</td></tr>')
    return ("<h2>Verdicts by spec area</h2><p class=\"muted\">A scenario counts once in each "
            "area its <code>spec</code> names; the last row counts each once.</p>"
            f'<table id="matrix"><thead><tr><th>area</th>{head}<th>total</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _plots(records: list[dict[str, Any]]) -> str:
    none = '<p class="muted">no run of this session measured it</p>'
    figures = "".join(f"<figure><figcaption>{esc(caption)}</figcaption>{svg or none}</figure>"
                      for caption, svg in plots(records))
    return (f"<h2>Measures</h2><p class=\"muted\">Over every run; the latency is the time of "
            f"<code>velocity:handshake_completed</code> from the run's start.</p>"
            f'<div class="plots">{figures}</div>')


def _coverage(table: Mapping[str, Any]) -> str:
    counts = "".join(f"<tr><th>{esc(level)}</th>" + "".join(
        f'<td class="n">{n[k]}</td>' for k in ("total", "wire", "unit", "uncovered")) + "</tr>"
        for level, n in table["counts"].items())
    rows = []
    for r in table["requirements"]:
        by = r["scenarios"] if r["status"] == "wire" else r["unit_tests"]
        detail = (", ".join(f"<code>{esc(n)}</code>" for n in by) if r["status"] != "uncovered"
                  else ("needs a scenario" if r["observable"] else "needs a unit test"))
        rows.append(f'<tr class="{"uncovered" if r["status"] == "uncovered" else ""}">'
                    f"<td>{esc(r['id'])}</td><td>{esc(r['level'])}</td>"
                    f"<td>{esc(r['status'])}</td><td>{detail}</td><td>{esc(r['text'])}</td></tr>")
    return ("<h2>Requirement coverage</h2><p class=\"muted\">On the wire: a scenario of this "
            "run checks it. Unit: not observable on the wire, a unit test checks it.</p>"
            '<table id="coverage-counts"><tr><th>level</th><th>total</th><th>on the wire</th>'
            f"<th>unit</th><th>uncovered</th></tr>{counts}</table><details><summary>every "
            f"requirement</summary><table id=\"coverage\"><tr><th>requirement</th><th>level</th>"
            f"<th>status</th><th>checked by</th><th>text</th></tr>{''.join(rows)}</table>"
            "</details>")


def _scenarios(records: list[dict[str, Any]], spec: Mapping[str, Requirement],
               folder: Path) -> str:
    present = [v for v in VERDICTS if any(r["verdict"] == v for r in records)]
    filters = "".join(
        f'<label><input type="checkbox" value="{v}" checked> {v} '
        f"({sum(r['verdict'] == v for r in records)})</label>" for v in present)
    sections = "".join(_scenario(i, r, spec, folder) for i, r in enumerate(records))
    return (f'<h2>Scenarios</h2><p id="filters">{filters}<button id="expand" type="button" '
            f'data-open="false">expand all</button></p>{sections}')


def _scenario(index: int, r: Mapping[str, Any], spec: Mapping[str, Requirement],
              folder: Path) -> str:
    verdict = esc(r["verdict"])
    failed = set(r["requirements"])
    quoted = "".join(
        f'<li class="{"failed" if i in failed else ""}"><b>{esc(i)}</b> '
        + (f"[{esc(spec[i].level)}] {esc(spec[i].text)}" if i in spec else "(not in the spec)")
        + "</li>" for i in dict.fromkeys([*r["requirements"], *r["spec"]]))
    facts = [("file", f"{esc(r['file'])}:{r['line']}"), ("role", esc(r["role"])),
             ("target", esc(r["target"] or "(none)")), ("seed", esc(r["seed"])),
             ("duration", f"{r['duration']:.2f} s")]
    if r["params"]:
        facts.append(("parameters", _json(r["params"])))
    if r["reason"]:
        facts.append(("reason", f"<pre>{esc(r['reason'])}</pre>"))
    if r["step"]:
        facts.append(("at step", esc(r["step"])))
    for key in ("expected", "actual"):
        if r[key] is not None:
            facts.append((key, f"<pre>{esc(r[key])}</pre>"))
    if r["event"] is not None:
        facts.append(("offending event", f"<pre>{_json(r['event'])}</pre>"))
    main = _main_run(r)
    warning = ('<span class="warning">with a warning</span> '
               if r["verdict"] == "PASS" and r["reason"] else "")
    return (f'<section class="scenario" data-verdict="{verdict}" id="scenario-{index}">'
            f'<details{"" if verdict == "PASS" else " open"}><summary>'
            f'<span class="badge v-{verdict}">{verdict}</span> {esc(r["name"])} {warning}'
            f'<span class="muted">{esc(r["title"])}</span></summary>'
            f"<table>{_rows(facts)}</table><p>Requirements:</p><ul>{quoted}</ul>"
            f"{_runs(r)}{_transcript(r, main, folder)}</details></section>")


def _main_run(r: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The run whose transcript the scenario's verdict names (else its last run)."""
    runs = r["runs"]
    named = [run for run in runs if run["transcript"] == r["transcript"]]
    return named[0] if named else (runs[-1] if runs else None)


def _runs(r: Mapping[str, Any]) -> str:
    rate = r["pass_rate"]
    if rate is None or rate["runs"] < 2:
        return ""
    shown = PassRate(rate["passed"], rate["runs"], rate["required"]).describe()
    rows = "".join(
        f'<tr><td class="n">{n}</td><td class="v-{esc(run["verdict"])}">{esc(run["verdict"])}'
        f"</td><td>{esc(run['seed'])}</td><td class=\"n\">{run['duration']:.2f} s</td>"
        f"<td>{esc(run['transcript'] or '')}</td><td>{esc(run['reason'])}</td></tr>"
        for n, run in enumerate(r["runs"], 1))
    return (f"<p>Pass rate: {esc(shown)}</p><table><tr><th>run</th><th>verdict</th><th>seed"
            f"</th><th>time</th><th>transcript</th><th>reason</th></tr>{rows}</table>")


def _transcript(r: Mapping[str, Any], run: Mapping[str, Any] | None, folder: Path) -> str:
    if run is None:
        return '<p class="muted">no run</p>'
    measures = (f"<p>handshake {_measure(run['handshake_ms'], ' ms')}, amplification ratio "
                f"{_measure(run['amplification_ratio'], '')}, "
                f"{len(run['bytes_per_flight'])} flights</p>")
    diagram = sequence(run["bytes_per_flight"], r["role"])
    if run["transcript"] is None:
        return f'{measures}{diagram}<p class="muted">no transcript written</p>'
    try:
        events = load(folder / run["transcript"])["events"]
    except TranscriptError as exc:
        return f"{measures}{diagram}<p>transcript unreadable: {esc(exc.lines[0])}</p>"
    rows = "".join(
        f'<tr class="{"offending" if event == r["event"] else ""}"><td class="n">'
        f"{esc(event['time'])}</td><td>{esc(event['name'])}</td>"
        f'<td class="data">{_json(event["data"], DATA_CHARS)}</td></tr>'
        for event in events[:MAX_EVENTS])
    more = (f"<p class=\"muted\">and {len(events) - MAX_EVENTS} more events in the file</p>"
            if len(events) > MAX_EVENTS else "")
    return (f"{measures}{diagram}<details><summary>transcript "
            f"<code>{esc(run['transcript'])}</code>: {len(events)} events</summary>"
            f'<table class="events"><tr><th>ms</th><th>event</th><th>data</th></tr>{rows}'
            f"</table>{more}</details>")


def _measure(value: float | None, unit: str) -> str:
    return "n/a" if value is None else f"{value:g}{unit}"
