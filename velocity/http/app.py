"""The application the reference server runs on each stream: the JSON API demo under
``/api/`` and the static files everywhere else. /api/status and /api/time take a body of at
most SMALL_BODY bytes (1 KiB), /api/echo one of at most ECHO_MAX_BODY (64 KiB)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from velocity import __version__
from velocity.aio.streams import VelocityStream
from velocity.core.connection import Connection
from velocity.http.h1 import (
    DEFAULT_TIMEOUTS,
    SMALL_BODY,
    Request,
    Response,
    Route,
    Timeouts,
    serve_request,
)
from velocity.http.static import StaticFiles

SERVER = f"velocity/{__version__}"


def _json(status: int, value: Any) -> Response:
    return Response(status, [("content-type", "application/json")],
                    json.dumps(value, indent=1).encode() + b"\n")


def _echo(request: Request) -> Response:
    return _json(200, {"method": request.method, "target": request.target,
                       "headers": dict(request.headers),
                       "body": request.body.decode("utf-8", errors="replace")})


SAFE_EARLY_METHODS = ("GET", "HEAD")
ECHO_MAX_BODY = 64 << 10  # bytes of body /api/echo takes; a longer one gets 413


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
    """Routes each request by its head (VEL-HTTP-008): the JSON API under /api/ when enabled,
    else the static files, each route with its own bound on the request body."""

    def __init__(self, static: StaticFiles | None, *, api: bool,
                 clock: Callable[[], dt.datetime], timeouts: Timeouts = DEFAULT_TIMEOUTS) -> None:
        self.static = static
        self.api = api
        self._clock = clock
        self.timeouts = timeouts

    def route(self, request: Request, connection: Connection | None = None
              ) -> Route | Response:
        """The route for a request head, or the answer to give without reading its body."""
        path = request.target.split("?", 1)[0]
        if self.api and path.startswith("/api/"):
            return self._api(path, connection)
        if self.static is not None:
            return self.static.route(request)
        return _json(404, {"error": "not found"})

    def _api(self, path: str, connection: Connection | None) -> Route | Response:
        if path == "/api/status":
            return Route(SMALL_BODY, lambda _: _json(200, connection_status(connection)))
        if path == "/api/time":
            return Route(SMALL_BODY, lambda _: self._time())
        if path == "/api/echo":
            return Route(ECHO_MAX_BODY, _echo)
        return _json(404, {"error": f"no API endpoint {path}"})

    def _time(self) -> Response:
        now = self._clock()
        return _json(200, {"iso": now.isoformat(), "unix": now.timestamp()})

    async def __call__(self, stream: VelocityStream, connection: Connection) -> None:
        """The aio server's stream handler. A request that arrived as 0-RTT early data may
        only be GET or HEAD; anything else gets 425 Too Early (VEL-HTTP-005), its body
        unread."""
        def dispatch(request: Request) -> Route | Response:
            if (stream.stream_id in connection.early_streams
                    and request.method not in SAFE_EARLY_METHODS):
                return _json(425, {"error": f"{request.method} is not allowed as 0-RTT early "
                                            "data; send it again after the handshake"})
            return self.route(request, connection)

        await serve_request(stream, dispatch, server=SERVER, timeouts=self.timeouts)
