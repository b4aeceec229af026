"""The server's Prometheus metrics keep a bounded set of series whatever peers send."""

from __future__ import annotations

import pytest

from tests.core.transport.helpers import both_completed, make
from velocity.core.errors import ErrorCode
from velocity.core.events import ConnectionTerminated
from velocity.metrics import ServerMetrics


def close_series(metrics: ServerMetrics) -> dict[str, float]:
    return {sample.labels["error"]: sample.value
            for family in metrics.registry.collect() if family.name == "velocity_connection_closes"
            for sample in family.samples if sample.name.endswith("_total")}


@pytest.mark.spec("VEL-ERR-007")
def test_peer_close_codes_make_a_bounded_set_of_series() -> None:
    pair = make()
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    server = pair.server
    assert server is not None
    metrics = ServerMetrics()
    codes = range(5000)
    for code in codes:
        metrics.observe(server, ConnectionTerminated(code, 0, "", True), 0.0, 1.0)
    series = close_series(metrics)
    assert len(series) <= len(ErrorCode) + 1
    registry = {code.value for code in ErrorCode}
    known = [code for code in codes if code in registry]
    assert series == {**{ErrorCode(code).name: 1.0 for code in known},
                      "other": float(len(codes) - len(known))}


@pytest.mark.spec("VEL-ERR-007")
def test_a_close_from_the_peer_is_labelled_by_name_or_other() -> None:
    metrics = ServerMetrics()
    for code in (ErrorCode.FLOW_CONTROL_ERROR, 0x3F1A):
        pair = make(seed=f"close-{code}")
        pair.connect()
        assert pair.run(lambda p=pair: both_completed(p))
        server = pair.server
        assert server is not None
        pair.client.close(code, "bye", application=False)
        assert pair.run(lambda p=pair: not p.endpoint.connections)
        server_ends = [e for e in pair.server_events if isinstance(e, ConnectionTerminated)]
        assert [e.error_code for e in server_ends] == [code]
        for event in server_ends:
            metrics.observe(server, event, 0.0, 1.0)
    assert close_series(metrics) == {"FLOW_CONTROL_ERROR": 1.0, "other": 1.0}


@pytest.mark.spec("VEL-ERR-007")
def test_an_application_close_is_labelled_application() -> None:
    """H1_NO_ERROR (0x0100) shares its number with HANDSHAKE_FAILURE: an application close is
    counted as "application", not under a transport name."""
    metrics = ServerMetrics()
    pair = make()
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    server = pair.server
    assert server is not None
    for event in (ConnectionTerminated(0x0100, 0, "done", True, application=True),
                  ConnectionTerminated(0x0100, 0, "done", True)):
        metrics.observe(server, event, 0.0, 1.0)
    labels = {s.labels["error"] for m in metrics.registry.collect() for s in m.samples
              if m.name == "velocity_connection_closes" and "error" in s.labels}
    assert labels == {"application", "HANDSHAKE_FAILURE"}
