"""Printing benchmark results: aligned columns for a terminal, or a markdown table for
docs/performance.md."""

from __future__ import annotations

from collections.abc import Sequence

import click


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, markdown: bool) -> None:
    if markdown:
        click.echo("| " + " | ".join(header) + " |")
        click.echo("|" + "---|" * len(header))
        for row in rows:
            click.echo("| " + " | ".join(row) + " |")
        return
    lines = [tuple(header), *map(tuple, rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths,
                                                                     strict=True)))
