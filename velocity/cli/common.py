"""What the CLI commands share: parsing ``host:port``, turning expected failures into one
line that says what to do, and running a coroutine on the preferred event loop."""

from __future__ import annotations

import os
from collections.abc import Coroutine
from typing import Any, TypeVar

import click

import velocity.aio
from velocity import logs
from velocity.aio.client import split_address
from velocity.core.errors import UsageError

T = TypeVar("T")


def parse_address(value: str, *, what: str = "address") -> tuple[str, int]:
    try:
        return split_address(value, what=what)
    except UsageError as exc:
        raise click.ClickException(str(exc)) from None


def parse_alpn(value: str, *, what: str = "--alpn") -> tuple[bytes, ...]:
    """A comma-separated ALPN list, in preference order."""
    names = tuple(a.strip().encode() for a in value.split(","))
    if not names or any(not 0 < len(a) < 256 or not a.isascii() or not a.decode().isprintable()
                        or b" " in a for a in names):
        raise click.BadParameter("give protocol names separated by commas, e.g. velocity/1,h3",
                                 param_hint=what)
    return names


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; expected failures become one line and exit status 1."""
    try:
        return velocity.aio.run(main)
    except (UsageError, OSError, ConnectionError, TimeoutError) as exc:
        raise click.ClickException(str(exc) or type(exc).__name__) from None


def configure_logs(log_format: str = "text") -> None:
    """Logs as ``VELOCITY_LOG`` asks; a malformed value is a one-line usage error."""
    try:
        logs.configure(log_format, os.environ.get("VELOCITY_LOG", ""))
    except UsageError as exc:
        raise click.UsageError(str(exc)) from None
