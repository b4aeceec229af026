"""The reliability runs' server (``bench.reliability.Server``) runs with the allocator it is
given (``--allocator``), which its RSS readings depend on."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.reliability import Server


@pytest.mark.parametrize("allocator", ["pymalloc", "malloc"])
def test_the_server_runs_with_the_allocator_it_is_given(tmp_path: Path,
                                                        allocator: str) -> None:
    server = Server(tmp_path, allocator=allocator)
    try:
        environ = Path(f"/proc/{server.process.pid}/environ").read_bytes().split(b"\0")
        assert f"PYTHONMALLOC={allocator}".encode() in environ
        assert server.rss_kb() > 0 and server.table() == 0
    finally:
        server.stop()
