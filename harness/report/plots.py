"""The report's plots, drawn by matplotlib (its object API, no pyplot state) as SVG text to
inline in the page: handshake latency, bytes per flight and the amplification ratio over
every run of the session. Only fixed labels are drawn; nothing from a transcript reaches a
text element."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

SIZE = (5.6, 3.0)  # inches: two plots side by side
LIMIT = 3.0  # VEL-CONN-001: at most three times the bytes received before validation
COLOURS = {"client": "#1f77b4", "server": "#d62728"}


def plots(records: Iterable[Mapping[str, Any]]) -> list[tuple[str, str | None]]:
    """(caption, SVG) for each plot over every run of ``records``; None for a measure no
    run has."""
    runs = [(record["role"], run) for record in records for run in record["runs"]]
    figures = [
        ("Handshake latency", _latency([r["handshake_ms"] for _, r in runs])),
        ("Bytes per flight", _flights(runs)),
        ("Amplification ratio", _amplification([r["amplification_ratio"] for _, r in runs])),
    ]
    return [(caption, None if figure is None else _svg(figure, caption))
            for caption, figure in figures]


def _figure() -> tuple[Figure, Axes]:
    figure = Figure(figsize=SIZE, layout="constrained")
    return figure, figure.add_subplot()


def _latency(values: list[float | None]) -> Figure | None:
    found = [v for v in values if v is not None]
    if not found:
        return None
    figure, axes = _figure()
    axes.hist(found, bins=max(5, min(30, len(found))), color=COLOURS["client"])
    axes.set_xlabel("handshake latency (ms, from the run's start)")
    axes.set_ylabel("runs")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    return figure


def _flights(runs: list[tuple[str, Mapping[str, Any]]]) -> Figure | None:
    """Each flight of each run at (its index in the run, its bytes), by who sent it."""
    points: dict[str, tuple[list[int], list[int]]] = {"client": ([], []), "server": ([], [])}
    for role, run in runs:
        for index, flight in enumerate(run["bytes_per_flight"], 1):
            harness_sent = flight["direction"] == "sent"
            sender = role if harness_sent else ("server" if role == "client" else "client")
            points[sender][0].append(index)
            points[sender][1].append(flight["bytes"])
    if not any(xs for xs, _ in points.values()):
        return None
    figure, axes = _figure()
    for sender, (xs, ys) in points.items():
        if xs:
            axes.scatter(xs, ys, s=14, alpha=0.6, color=COLOURS[sender],
                         label=f"from the {sender}")
    axes.set_xlabel("flight (in the order sent)")
    axes.set_ylabel("bytes")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend()
    return figure


def _amplification(values: list[float | None]) -> Figure | None:
    found = [v for v in values if v is not None]
    if not found:
        return None
    figure, axes = _figure()
    top = max(LIMIT, *found) * 1.05  # the limit in view, bins of one width from 0
    axes.hist(found, bins=[top * i / 30 for i in range(31)], color=COLOURS["server"])
    axes.axvline(LIMIT, linestyle="--", color="black", label="3x limit (VEL-CONN-001)")
    axes.set_xlabel("server bytes / client bytes before address validation")
    axes.set_ylabel("runs")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend()
    return figure


def _svg(figure: Figure, name: str) -> str:
    """The figure as an inline ``<svg>`` element (its ids salted by ``name``, so several
    plots in one page do not share one; no date, so the same data gives the same text)."""
    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue().decode("utf-8")
    return text[text.index("<svg"):]
