"""The ``replay`` step: datagrams a connection of the run sent (its view keeps their bytes)
sent again verbatim, from that connection's socket or from a new source port whose answers
are recorded as a connection of their own. The flights: ``client_initial`` (every datagram
the connection sent before it received one: the Initial packets with its CLIENT_HELLO, and
the 0-RTT packets that went with them), ``last`` (what the connection's last ``send`` of a
template or a datagram put on the wire) or a list of indexes (its datagrams counted from
0)."""

from __future__ import annotations

from typing import Any

from harness.peer import RawPeer, View
from harness.scenario.context import Conn, Run
from harness.scenario.model import Step
from harness.scenario.verdict import ScenarioError


def recorded(conn: Conn, flight: str | list[int]) -> list[bytes]:
    """The datagrams of ``flight`` (see the module) in the order they were sent."""
    view = conn.view
    sent = [data for _, data in view.outbox]
    if flight == "client_initial":
        first_answer = view.inbox[0][0] if view.inbox else None
        return [data for index, data in view.outbox
                if first_answer is None or index < first_answer]
    if flight == "last":
        return conn.last_send
    assert isinstance(flight, list)  # the schema's third form
    missing = [i for i in flight if i >= len(sent)]
    if missing:
        raise ScenarioError(f"replay names datagram {missing[0]}, but the connection sent "
                            f"{len(sent)}")
    return [sent[i] for i in flight]


async def replay(run: Run, step: Step) -> None:
    conn = run.conn(step)
    options: dict[str, Any] = step.options or {}
    flight = options.get("flight", "client_initial")
    datagrams = recorded(conn, flight)
    if not datagrams:
        raise ScenarioError(f"connection {conn.name} sent nothing to replay")
    await run.sleep(run.budget.pace(len(datagrams), run.now()))
    source = options.get("from", "same")
    noted: dict[str, Any] = {"conn": conn.name, "flight": flight, "from": source,
                             "datagrams": len(datagrams),
                             "lengths": [len(d) for d in datagrams]}
    if source == "new_port":
        name = options.get("name", "replay")
        target = run.target.address or conn.address
        view = View(run.loop)
        view.transcript.start = run.harness.start
        raw = await RawPeer.open(target, view)
        run.connections[name] = Conn(name, view, target, raw=raw)
        raw.send(datagrams, origin="replay")
        noted["name"] = name
    else:
        peer = conn.client(step)
        for data in datagrams:
            peer.send_datagram(data, origin="replay")
    run.note("replay", noted)
    run.check_budget()
