"""Stream objects for asyncio users: a reader and a writer over one Velocity stream, with
back-pressure on writes (``drain`` waits while too much is unacknowledged)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from velocity.core.connection import Connection
from velocity.core.errors import UsageError

HIGH_WATER = 1 << 20  # unacknowledged bytes per stream before drain() waits


class StreamResetError(ConnectionError):
    def __init__(self, stream_id: int, error_code: int) -> None:
        super().__init__(f"stream {stream_id} reset by the peer (error 0x{error_code:x})")
        self.stream_id = stream_id
        self.error_code = error_code


class VelocityStream:
    """Both directions of one stream. Created by the client (``open_stream``) or handed to
    the server's stream handler."""

    def __init__(self, connection: Connection, stream_id: int,
                 transmit: Callable[[], None]) -> None:
        self._connection = connection
        self.stream_id = stream_id
        self._transmit = transmit
        self._buffer = bytearray()
        self._eof = False
        self._error: BaseException | None = None
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    # --- fed by the endpoint -------------------------------------------------------------

    def feed(self, data: bytes, end_stream: bool) -> None:
        self._buffer += data
        self._eof |= end_stream
        self._readable.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._readable.set()
        self._writable.set()

    def update_writable(self) -> None:
        if self._connection.stream_buffered(self.stream_id) < HIGH_WATER:
            self._writable.set()

    # --- reading -------------------------------------------------------------------------

    async def read(self, limit: int = -1) -> bytes:
        """Up to ``limit`` bytes (all until FIN when -1); b"" at the end of the stream."""
        while True:
            if self._buffer and (limit >= 0 or self._eof):
                size = len(self._buffer) if limit < 0 else min(limit, len(self._buffer))
                data = bytes(self._buffer[:size])
                del self._buffer[:size]
                return data
            if self._eof:
                return b""
            if self._error is not None:
                raise self._error
            self._readable.clear()
            await self._readable.wait()

    async def readexactly(self, size: int) -> bytes:
        out = bytearray()
        while len(out) < size:
            chunk = await self.read(size - len(out))
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(out), size)
            out += chunk
        return bytes(out)

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._buffer

    # --- writing -------------------------------------------------------------------------

    def write(self, data: bytes, *, end_stream: bool = False) -> None:
        if self._error is not None:
            raise self._error
        try:
            self._connection.send_stream_data(self.stream_id, data, end_stream)
        except UsageError as exc:
            raise ConnectionError(str(exc)) from None
        if self._connection.stream_buffered(self.stream_id) >= HIGH_WATER:
            self._writable.clear()
        self._transmit()

    def write_eof(self) -> None:
        self.write(b"", end_stream=True)

    async def drain(self) -> None:
        """Wait until the stream's unacknowledged data is below the high-water mark."""
        await self._writable.wait()
        if self._error is not None:
            raise self._error

    def reset(self, error_code: int) -> None:
        self._connection.reset_stream(self.stream_id, error_code)
        self._transmit()
