"""The application the reference server runs on each stream: the JSON API demo under
``/api/`` and the static files everywhere else."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from velocity import __version__
from velocity.aio.streams import VelocityStream
from velocity.core.connection import Connection
from velocity.http.h1 import Request, Response, serve_request
from velocity.http.static import StaticFiles

SERVER = f"velocity/{__version__}"


def _json(status: int, value: Any) -> Response:
    return Response(status, [("content-type", "application/json")],
                    json.dumps(value, indent=1).encode() + b"\n")


SAFE_EARLY_METHODS = ("GET", "HEAD")


def connection_status(connection: Connection | None) -> dict[str, Any]:
    """What /api/status reports about the caller's own connection (None: the HTTP/3
    fallback origin)."""
    done = connection.handshake_summary if connection is not None else None
    if connection is None or done is None:
        return {"velocity": False}
    return {"velocity": True, "alpn": done.alpn, "profile": done.profile, "aead": done.aead,
            "auth_mode": done.mode.value, "early_data": done.early_data_accepted,
            "key_id": done.key_id.hex() if done.key_id else None,
            "kem_backend": done.kem_backend, "address_validated": connection.address_validated}


class Application:
    def __init__(self, static: StaticFiles | None, *, api: bool,
                 clock: Callable[[], dt.datetime]) -> None:
        self.static = static
        self.api = api
        self._clock = clock

    async def handle(self, request: Request, connection: Connection | None = None) -> Response:
        path = request.target.split("?", 1)[0]
        if self.api and path.startswith("/api/"):
            return self._api(path, request, connection)
        if self.static is not None:
            return await self.static(request)
        return _json(404, {"error": "not found"})

    def _api(self, path: str, request: Request, connection: Connection | None) -> Response:
        if path == "/api/status":
            return _json(200, connection_status(connection))
        if path == "/api/time":
            now = self._clock()
            return _json(200, {"iso": now.isoformat(), "unix": now.timestamp()})
        if path == "/api/echo":
            return _json(200, {"method": request.method, "target": request.target,
                               "headers": dict(request.headers),
                               "body": request.body.decode("utf-8", errors="replace")})
        return _json(404, {"error": f"no API endpoint {path}"})

    async def __call__(self, stream: VelocityStream, connection: Connection) -> None:
        """The aio server's stream handler. A request that arrived as 0-RTT early data may
        only be GET or HEAD; anything else gets 425 Too Early (VEL-HTTP-005)."""
        async def respond(request: Request) -> Response:
            if (stream.stream_id in connection.early_streams
                    and request.method not in SAFE_EARLY_METHODS):
                return _json(425, {"error": f"{request.method} is not allowed as 0-RTT early "
                                            "data; send it again after the handshake"})
            return await self.handle(request, connection)

        await serve_request(stream, respond, server=SERVER)
