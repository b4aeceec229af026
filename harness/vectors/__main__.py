"""``python -m harness.vectors check | regenerate --i-know``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from harness.vectors import VECTORS_DIR, handshakes
from harness.vectors.check import TOPICS, run
from harness.vectors.generate import BUILDERS, build


@click.group()
def main() -> None:
    """Known-answer vectors of Velocity/1."""


@main.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              default=VECTORS_DIR, show_default=True, help="Folder holding the vector files.")
@click.option("-v", "--verbose", is_flag=True, help="List every vector, not only failures.")
def check(directory: Path, verbose: bool) -> None:
    """Schema-check every vector file and run the implementation against it."""
    console = Console()
    table = Table("topic", "vectors", "passed", "failed")
    failures = []
    for topic in TOPICS:
        outcomes = run(topic, directory)
        bad = [o for o in outcomes if not o.ok]
        failures.extend(bad)
        table.add_row(topic, str(len(outcomes)), str(len(outcomes) - len(bad)), str(len(bad)))
        if verbose:
            for o in outcomes:
                console.print(f"  {'ok  ' if o.ok else 'FAIL'} {topic}: {o.name}")
    console.print(table)
    for o in failures:
        console.print(f"[red]FAIL[/red] {o.topic}: {o.name}: {o.detail}")
    if failures:
        sys.exit(1)
    console.print("all known-answer vectors match")


@main.command()
@click.option("--i-know", is_flag=True, required=True,
              help="Confirm: this rewrites the committed vector files.")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              default=VECTORS_DIR, show_default=True)
def regenerate(i_know: bool, directory: Path) -> None:
    """Rebuild vectors/*.json from the independent generator (explicit flag only)."""
    directory.mkdir(parents=True, exist_ok=True)
    for topic in BUILDERS:
        path = directory / f"{topic}.json"
        path.write_text(json.dumps(build(topic), indent=1) + "\n")
        click.echo(f"wrote {path}")
    for path in handshakes.regenerate(directory / "handshakes", directory / "handshakes"):
        click.echo(f"wrote {path}")


if __name__ == "__main__":
    main()
