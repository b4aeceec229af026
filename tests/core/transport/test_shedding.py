"""Load shedding (VEL-CONN-015): while datagrams wait longer than ``shed_after`` before the
server reads them, it starts no new connection (Retry when the policy allows and the
address is not validated, else the Initial is dropped and the client's retransmission finds
room later), and its connections are served as usual. On the virtual clock: each datagram to
the server waited ``lag`` seconds."""

from __future__ import annotations

import pytest

from tests.core.transport.helpers import completed, make_client, make_crowd, terminated
from velocity.core.endpoint import EndpointConfig
from velocity.core.events import StreamDataReceived

ESTABLISHED = ("192.0.2.1", 5000)
NEWCOMER = ("192.0.2.2", 5000)
SHED_AFTER = EndpointConfig.shed_after


@pytest.mark.spec("VEL-CONN-015")
@pytest.mark.parametrize("retry", ["never", "always", "under-load"])
def test_a_server_behind_starts_no_connection_and_serves_its_own(retry: str) -> None:
    room = make_crowd(retry=retry)
    endpoint = room.endpoint
    old = room.join(ESTABLISHED, make_client("established"))
    assert room.run(lambda: completed(room.client_events[ESTABLISHED]))
    (served,) = endpoint.connections
    retries = endpoint.retries_sent
    room.lag = 2 * SHED_AFTER
    room.join(NEWCOMER, make_client("newcomer"))
    stream = old.get_next_available_stream_id()
    old.send_stream_data(stream, b"still served", end_stream=True)
    assert room.run(lambda: any(c is served and isinstance(e, StreamDataReceived)
                                for c, e in room.server_events), max_time=room.now + 1)
    room.run(lambda: False, max_time=room.now + 3)  # the newcomer's Initial, and its PTOs
    assert endpoint.connections == [served]
    assert endpoint.shed >= 1 and endpoint.refused == 0
    if retry == "never":
        assert NEWCOMER not in room.sent  # dropped: no answer at all
    else:  # asked to prove its address, then its Initial with the token was dropped
        assert endpoint.retries_sent > retries
    room.lag = 0.0  # caught up: the newcomer's next retransmission is taken
    assert room.run(lambda: completed(room.client_events[NEWCOMER]), max_time=room.now + 10)
    assert not terminated(room.client_events[NEWCOMER])


@pytest.mark.spec("VEL-CONN-015")
def test_a_wait_within_the_bound_sheds_nothing() -> None:
    room = make_crowd(retry="never")
    room.lag = SHED_AFTER  # at the bound, not past it
    room.join(NEWCOMER, make_client("newcomer"))
    assert room.run(lambda: completed(room.client_events[NEWCOMER]))
    assert room.endpoint.shed == 0
