"""The flights of one run as a sequence diagram in inline SVG: a column for the client and
one for the server, an arrow per flight (``harness.transcript.summary``'s runs of fresh
packets in one direction) labelled with its packets, bytes and packet types. Every label
is escaped: packet types come from the transcript."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

MAX_FLIGHTS = 60
WIDTH, LEFT, RIGHT = 560, 90, 470
TOP, ROW = 48, 30


def _text(x: float, y: float, value: str, *, anchor: str = "middle", cls: str = "") -> str:
    return (f'<text x="{x:g}" y="{y:g}" text-anchor="{anchor}" class="{cls}">'
            f"{html.escape(value)}</text>")


def _arrow(y: float, rightwards: bool) -> str:
    start, end = (LEFT, RIGHT) if rightwards else (RIGHT, LEFT)
    tip = -8 if rightwards else 8
    return (f'<line x1="{start}" y1="{y:g}" x2="{end + tip}" y2="{y:g}" class="arrow"/>'
            f'<polygon points="{end},{y:g} {end + tip},{y - 4:g} {end + tip},{y + 4:g}" '
            'class="head"/>')


def sequence(flights: Sequence[Mapping[str, Any]], role: str) -> str:
    """The diagram of ``flights`` as the harness saw them in a role ``role`` scenario (the
    harness is the client in role: client)."""
    if not flights:
        return '<p class="muted">no flight recorded</p>'
    shown = flights[:MAX_FLIGHTS]
    height = TOP + ROW * len(shown) + (ROW if len(flights) > MAX_FLIGHTS else 10)
    who = {"client": "harness" if role == "client" else "target",
           "server": "target" if role == "client" else "harness"}
    parts = [f'<svg class="sequence" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
             f'height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" '
             f'aria-label="{len(flights)} flights between client and server">',
             _text(LEFT, 16, f"client ({who['client']})", cls="column"),
             _text(RIGHT, 16, f"server ({who['server']})", cls="column"),
             f'<line x1="{LEFT}" y1="24" x2="{LEFT}" y2="{height}" class="life"/>',
             f'<line x1="{RIGHT}" y1="24" x2="{RIGHT}" y2="{height}" class="life"/>']
    for index, flight in enumerate(shown):
        y = TOP + ROW * index
        from_client = (flight["direction"] == "sent") == (role == "client")
        packets = flight["packets"]
        label = (f"{packets} packet{'s' if packets != 1 else ''}, {flight['bytes']} B: "
                 + ", ".join(str(s) for s in flight["spaces"]))
        parts += [_text((LEFT + RIGHT) / 2, y - 5, label, cls="label"), _arrow(y, from_client)]
    if len(flights) > MAX_FLIGHTS:
        parts.append(_text((LEFT + RIGHT) / 2, height - 8,
                           f"and {len(flights) - MAX_FLIGHTS} more flights", cls="label"))
    return "".join([*parts, "</svg>"])
