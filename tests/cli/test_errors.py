"""What the user sees when something is wrong: the URL form of ``fetch``, and every OS error
in one line naming the option or argument concerned and what to do, with no traceback and no
asyncio complaint."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.processes import fetch, one_line, server


@pytest.fixture
def udp_port() -> Iterator[int]:
    """A UDP port held (bound, never read) for the test: taken, and silent."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", 0))
        yield int(held.getsockname()[1])


def test_a_followed_fallback_that_gets_no_reply(site: Path, env: dict[str, str],
                                                udp_port: int) -> None:
    """The HTTP/3 origin named by the directive never answers: one line, and no "Future
    exception was never retrieved" from an abandoned aioquic future."""
    with server(site, env, "--fallback-only", "--fallback-port", str(udp_port)) as target:
        one_line(fetch(target, env, "/small.txt", "--follow-fallback", "--insecure",
                       "--timeout", "1"), f"no HTTP/3 reply from 127.0.0.1:{udp_port}")
