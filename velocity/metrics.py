"""Prometheus metrics of a Velocity server (served on ``--metrics-listen``): handshakes by
outcome, profile and authentication mode; handshake latency; FALLBACK directives by reason;
KEM operation latency; packets and bytes; active connections; Retry packets sent; closes by
error. Every label takes its values from a set of ours, never from a peer: profiles, modes,
fallback reasons and KEM parameter sets are the server's own, and a close's error code is
labelled by its name in the registry, any other code as "other" (VEL-ERR-007)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from velocity.core.connection import Connection
from velocity.core.errors import ErrorCode
from velocity.core.events import ConnectionTerminated, Event
from velocity.core.handshake.common import FallbackDirected, HandshakeCompleted
from velocity.core.kem import KemBackend, KemKey, KemParams

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2, 5)
ERROR_LABELS = {code.value: code.name for code in ErrorCode}


class ServerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.handshakes = Counter("velocity_handshakes", "Handshakes by outcome",
                                  ["outcome", "profile", "auth_mode"], registry=r)
        self.handshake_seconds = Histogram("velocity_handshake_duration_seconds",
                                           "First datagram to completed handshake",
                                           buckets=LATENCY_BUCKETS, registry=r)
        self.fallbacks = Counter("velocity_fallback_directives", "FALLBACK directives sent",
                                 ["reason"], registry=r)
        self.kem_seconds = Histogram("velocity_kem_operation_seconds", "ML-KEM operations",
                                     ["operation", "parameter_set"], buckets=LATENCY_BUCKETS,
                                     registry=r)
        self.packets = Counter("velocity_datagrams", "UDP datagrams", ["direction"], registry=r)
        self.bytes = Counter("velocity_bytes", "UDP payload bytes", ["direction"], registry=r)
        self.active = Gauge("velocity_active_connections", "Connections in the table",
                            registry=r)
        self.retries = Counter("velocity_retry_sent", "Retry packets sent", registry=r)
        self.shed = Counter("velocity_initials_shed",
                            "New connections' Initials dropped while the server was behind",
                            registry=r)
        self.closes = Counter("velocity_connection_closes", "Connections closed by error",
                              ["error"], registry=r)

    def observe(self, connection: Connection, event: Event, started: float,
                now: float) -> None:
        """Account one connection event (``started``: when its first datagram arrived)."""
        if isinstance(event, HandshakeCompleted):
            self.handshakes.labels("completed", event.profile, event.mode.value).inc()
            self.handshake_seconds.observe(now - started)
        elif isinstance(event, FallbackDirected):
            self.fallbacks.labels(event.reason_text).inc()
            self.handshakes.labels("fallback", "", "").inc()
        elif isinstance(event, ConnectionTerminated):
            if not connection.handshake_complete and (
                    event.error_code != ErrorCode.NO_APPLICATION_PROTOCOL):
                self.handshakes.labels("failed", "", "").inc()
            label = ("application" if event.application
                     else ERROR_LABELS.get(event.error_code, "other"))
            self.closes.labels(label).inc()

    def datagrams(self, direction: str, sizes: list[int]) -> None:
        if sizes:
            self.packets.labels(direction).inc(len(sizes))
            self.bytes.labels(direction).inc(sum(sizes))

    def serve(self, host: str, port: int) -> tuple[str, int]:
        """Start the scrape endpoint (a daemon thread); returns its bound address."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        bound: tuple[str, int] = server.server_address[:2]  # type: ignore[assignment]
        return bound


class _TimedKey:
    """A static key whose decapsulations are timed."""

    def __init__(self, inner: KemKey, timer: TimedKem) -> None:
        self._inner = inner
        self._timer = timer
        self.params = inner.params
        self.encapsulation_key = inner.encapsulation_key
        self.seed = inner.seed

    def decapsulate(self, ciphertext: bytes) -> bytes:
        shared: bytes = self._timer.timed("decapsulate", self.params, self._inner.decapsulate,
                                          ciphertext)
        return shared


class TimedKem:
    """A ``KemBackend`` that times every operation of the backend it wraps."""

    def __init__(self, inner: KemBackend, metrics: ServerMetrics) -> None:
        self._inner = inner
        self._metrics = metrics
        self.name = inner.name
        self.deterministic = inner.deterministic

    def timed(self, operation: str, params: KemParams, fn: Any, *args: Any) -> Any:
        began = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self._metrics.kem_seconds.labels(operation, params.value).observe(
                time.perf_counter() - began)

    def supports(self, params: KemParams) -> bool:
        return self._inner.supports(params)

    def name_for(self, params: KemParams) -> str:
        return self._inner.name_for(params)

    def generate(self, params: KemParams, seed: bytes) -> KemKey:
        key: KemKey = self.timed("keygen", params, self._inner.generate, params, seed)
        return key

    def load(self, params: KemParams, seed: bytes) -> KemKey:
        return _TimedKey(self._inner.load(params, seed), self)

    def encapsulate(self, params: KemParams, encapsulation_key: bytes,
                    m: bytes) -> tuple[bytes, bytes]:
        result: tuple[bytes, bytes] = self.timed("encapsulate", params, self._inner.encapsulate,
                                                 params, encapsulation_key, m)
        return result
