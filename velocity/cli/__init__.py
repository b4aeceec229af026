"""The ``velocity`` command line: parsing and presentation only; the work is done by the
packages it calls."""

from __future__ import annotations

import click

from velocity import __version__
from velocity.core.packet import VELOCITY_VERSION


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="velocity",
                      message=f"%(prog)s %(version)s (wire version 0x{VELOCITY_VERSION:08x})")
def cli() -> None:
    """Velocity/1: post-quantum transport endpoint and tools."""


def main() -> None:
    cli(prog_name="velocity")
