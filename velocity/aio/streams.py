"""Stream objects for asyncio users: a reader and a writer over one Velocity stream, with
back-pressure on writes (``drain`` waits while too much is unacknowledged). Each direction
fails on its own: a peer's RESET_STREAM ends reading, its STOP_SENDING ends writing, and the
connection's end ends both."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from velocity.core.connection import Connection
from velocity.core.errors import UsageError
from velocity.core.streams import is_unidirectional

HIGH_WATER = 1 << 20  # unacknowledged bytes per stream before drain() waits


class StreamResetError(ConnectionError):
    def __init__(self, stream_id: int, error_code: int) -> None:
        super().__init__(f"stream {stream_id} reset by the peer (error 0x{error_code:x})")
        self.stream_id = stream_id
        self.error_code = error_code


class VelocityStream:
    """Both directions of one stream. Created by the client (``open_stream``) or handed to
    the server's stream handler."""

    def __init__(self, connection: Connection, stream_id: int, transmit: Callable[[], None],
                 release: Callable[[int], None]) -> None:
        self._connection = connection
        self.stream_id = stream_id
        self._transmit = transmit
        self._release = release  # told by close(): the user is done with the stream
        local = (stream_id & 0x01) == (0 if connection.is_client else 1)
        one_way = is_unidirectional(stream_id)
        self._buffer = bytearray()
        self._eof = one_way and local  # our unidirectional stream: nothing to read
        self._stopped = False  # stop_reading was called: what arrives is dropped
        self._ended = one_way and not local  # FIN written, reset, or nothing to write
        self._read_error: BaseException | None = None
        self._write_error: BaseException | None = None
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    # --- fed by the endpoint -------------------------------------------------------------

    def feed(self, data: bytes, end_stream: bool) -> None:
        if not self._stopped:
            self._buffer += data
        self._eof |= end_stream
        self._readable.set()

    def fail(self, error: BaseException, *, reading: bool = True,
             writing: bool = True) -> None:
        """End reading, writing or both with ``error`` (what is buffered can still be
        read)."""
        if reading:
            self._read_error = error
            self._readable.set()
        if writing:
            self._write_error = error
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
            if self._read_error is not None:
                raise self._read_error
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

    def stop_reading(self, error_code: int) -> None:
        """Read no more: drop what is buffered and whatever still arrives, and ask the peer
        with STOP_SENDING ``error_code`` to stop sending, unless its data is all here or it
        reset the stream."""
        if not self._stopped and not self._eof and self._read_error is None:
            self._connection.stop_stream(self.stream_id, error_code)
            self._transmit()
        self._stopped = True
        self._buffer.clear()

    # --- writing -------------------------------------------------------------------------

    def write(self, data: bytes, *, end_stream: bool = False) -> None:
        if self._write_error is not None:
            raise self._write_error
        if self._ended:
            raise ConnectionError(f"stream {self.stream_id} has no open sending side")
        try:
            self._connection.send_stream_data(self.stream_id, data, end_stream)
        except UsageError as exc:
            raise ConnectionError(str(exc)) from None
        self._ended |= end_stream
        if self._connection.stream_buffered(self.stream_id) >= HIGH_WATER:
            self._writable.clear()
        self._transmit()

    def write_eof(self) -> None:
        self.write(b"", end_stream=True)

    async def drain(self) -> None:
        """Wait until the stream's unacknowledged data is below the high-water mark."""
        await self._writable.wait()
        if self._write_error is not None:
            raise self._write_error

    def reset(self, error_code: int) -> None:
        self._connection.reset_stream(self.stream_id, error_code)
        self._ended = True
        self._transmit()

    def close(self, error_code: int) -> None:
        """The user is done with the stream: reset an unended sending side and stop an
        unended receiving side, both with ``error_code``; the endpoint then forgets the
        stream once the connection has."""
        try:
            if not self._ended and self._write_error is None:
                self.reset(error_code)
            self.stop_reading(error_code)
        finally:
            self._release(self.stream_id)
