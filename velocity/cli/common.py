"""What the CLI commands share: parsing ``host:port``, turning expected failures into one
line that says what to do (naming the option an OS error concerns), and running a coroutine
on the preferred event loop."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Coroutine, Iterator, Mapping
from contextlib import contextmanager
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


_LISTEN_ADVICE = {
    errno.EADDRINUSE: "stop the process using it or choose another port (0 picks a free one)",
    errno.EACCES: "ports below 1024 need privileges: choose another port or grant the "
                  "process CAP_NET_BIND_SERVICE",
    errno.EADDRNOTAVAIL: "this machine has no such address: give one of its own or 0.0.0.0",
    socket.EAI_NONAME: "give an IP address or a host name that resolves",
    socket.EAI_AGAIN: "the name server did not answer: try again, or give an IP address",
}


def os_reason(exc: OSError) -> tuple[int | None, str]:
    """The errno and the OS's words for ``exc``, looking through a wrapper that dropped them
    (uvloop's "could not bind to local_addr")."""
    if exc.errno is None and isinstance(exc.__cause__, OSError):
        exc = exc.__cause__
    return exc.errno, exc.strerror or str(exc) or type(exc).__name__


@contextmanager
def option_errors(option: str, value: object, advice: str,
                  by_errno: Mapping[int, str] | None = None) -> Iterator[None]:
    """An OSError inside becomes one line naming ``option`` and its ``value``, the OS's reason
    and what to do: ``by_errno``'s advice for that errno, else ``advice``."""
    try:
        yield
    except OSError as exc:
        code, reason = os_reason(exc)
        what = advice if code is None else (by_errno or {}).get(code, advice)
        raise click.ClickException(f"{option} {value}: {reason}; {what}") from None


@contextmanager
def listening(option: str, value: str) -> Iterator[None]:
    """Binding ``value`` given as ``option``: an OS error names both and says what to do."""
    with option_errors(option, value, "give HOST:PORT of an address on this machine (port 0 "
                       "picks a free one)", _LISTEN_ADVICE):
        yield


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
