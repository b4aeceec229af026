"""Text and JSON log lines: whatever a peer puts in a logged value (its close reason above
all) stays inside that value. In text lines unprintable characters and backslashes are
escaped and a value with a space, "=" or a quote is quoted, so that no value forges a line
or a field; JSON lines carry the value as it was."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterator

import pytest

from tests.http.helpers import CLIENT_HS, SERVER_HS, until
from velocity.aio.client import connect
from velocity.aio.server import serve
from velocity.aio.streams import VelocityStream
from velocity.core.connection import Connection, ConnectionConfig
from velocity.core.endpoint import EndpointConfig
from velocity.logs import configure, fields

FORGED = "bye\n2026-01-01T00:00:00.000+00:00 error   velocity.aio.server: forged by_peer=False"
NASTY = {"newline": FORGED, "escape": "\x1b[31mred\x1b[0m", "nul": "a\x00b", "cr": "a\rb",
         "separator": "a\u2028b", "bidi": "a\u202eb", "backslash": "a\\nb", "quote": 'a"b',
         "field": "x error=0x0", "empty": "", "plain": "127.0.0.1:4433"}


@pytest.fixture
def velocity_logger() -> Iterator[logging.Logger]:
    """velocity's logger, put back as it was after the test has configured it."""
    logger = logging.getLogger("velocity")
    handlers, propagate, level = logger.handlers[:], logger.propagate, logger.level
    yield logger
    logger.handlers[:], logger.propagate = handlers, propagate
    logger.setLevel(level)


FIELD = re.compile(r' ([a-z_]+)=("(?:[^"\\]|\\.)*"|[^ "]*)')


def text_fields(line: str, message: str) -> dict[str, str]:
    """The fields after ``message`` in a text line, read token by token (quotes and escapes
    undone); fails unless they make up the rest of the line exactly."""
    rest = line.split(f": {message}", 1)[1]
    tokens = list(FIELD.finditer(rest))
    assert "".join(t.group(0) for t in tokens) == rest, rest
    values = {}
    for token in tokens:
        raw = token.group(2)
        raw = raw[1:-1] if raw.startswith('"') else raw
        values[token.group(1)] = raw.encode("latin-1", "backslashreplace").decode(
            "unicode_escape")
    return values


def test_a_text_line_keeps_every_value_inside_it(velocity_logger: logging.Logger,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    configure("text")
    logging.getLogger("velocity.test").warning("connection closed\nforged", extra=fields(
        **NASTY))
    lines = capsys.readouterr().err.splitlines(keepends=True)
    assert len(lines) == 1 and lines[0].endswith("\n")
    line = lines[0].removesuffix("\n")
    assert line.isprintable(), line
    assert line.endswith(" plain=127.0.0.1:4433") and ' field="x error=0x0" ' in line
    assert text_fields(line, "connection closed\\nforged") == NASTY


def test_a_json_line_carries_values_as_they_were(velocity_logger: logging.Logger,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    configure("json")
    logging.getLogger("velocity.test").warning("connection closed", extra=fields(**NASTY))
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert {key: record[key] for key in NASTY} == NASTY


async def test_a_peers_close_reason_cannot_forge_a_server_log_line(
        velocity_logger: logging.Logger, capsys: pytest.CaptureFixture[str]) -> None:
    async def handler(stream: VelocityStream, _: Connection) -> None:
        await stream.read()

    configure("text", "info")
    server = await serve("127.0.0.1", 0, EndpointConfig(ConnectionConfig(SERVER_HS)), handler)
    try:
        async with connect(*server.address, ConnectionConfig(CLIENT_HS)) as client:
            await client.close(0x100, FORGED)
        out: list[str] = []
        assert await until(lambda: bool(out.append(capsys.readouterr().err))
                           or "connection closed" in "".join(out))
        await asyncio.sleep(0)
    finally:
        await server.close()
    lines = "".join(out).splitlines()
    closed = [line for line in lines if "connection closed" in line]
    assert len(closed) == 1
    values = text_fields(closed[0], "connection closed")
    assert values["reason"] == FORGED and values["by_peer"] == "True"
    assert not any("forged" in line for line in lines if line not in closed)
