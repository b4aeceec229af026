"""The steps of the scenario language, one coroutine each, dispatched by ``STEPS`` (the
step's kind -> its runner). A runner reads its options from the ``Step``, acts through the
run's connections and raises ``StepFailed`` (with expected, actual and the offending event)
when its check does not hold. ``expect`` reads a connection's events from its cursor on and
moves the cursor past what it matched; ``expect_close`` looks at the whole connection;
``expect_silence`` at what comes from now on."""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import Callable, Coroutine
from typing import Any

import h11

from harness.fuzz.step import fuzz_step
from harness.netsim import DIRECTIONS, KEYS
from harness.scenario import build, replay, server_role, templates
from harness.scenario.connections import connect as open_connection
from harness.scenario.connections import settle
from harness.scenario.context import Conn, Event, Run, StepFailed, StepUnsupported
from harness.scenario.expr import ExpressionError, compile_expression
from harness.scenario.matching import describe, matches, value_at
from harness.scenario.model import BRANCH_STEPS, Step
from harness.scenario.verdict import ScenarioError
from velocity.core.errors import ErrorCode, UsageError
from velocity.core.frames import Crypto, Frame, Ping, Stream
from velocity.core.packet import Epoch
from velocity.http.h1 import Response

StepRunner = Callable[[Run, Step], Coroutine[Any, Any, None]]
IMPAIRMENTS = tuple(k for k in KEYS if k != "blackhole")  # the settings impair changes
OWNERS = {"peer": ("remote",), "local": ("local",), "either": ("remote", "local")}
HOLES_PER_PACKET = 150  # one-byte CRYPTO or STREAM frames of a holes step per packet


def code_name(code: int) -> str:
    known = {e.value: e.name for e in ErrorCode}
    return f"{known[code]} (0x{code:x})" if code in known else f"0x{code:x}"


def _close_text(event: Event) -> str:
    data = event["data"]
    who = "by the target" if data["owner"] == "remote" else "by the harness"
    if "error_code" not in data:
        return f"{who} ({data.get('trigger', 'no reason')})"
    return f"{who} with {code_name(data['error_code'])}: {data.get('reason', '')!r}"


def _first(conn: Conn, name: str, start: int = 0) -> Event | None:
    return next((e for e in conn.view.events[start:] if e["name"] == name), None)


async def connect(run: Run, step: Step) -> None:
    if run.scenario.role == "server":
        await server_role.connect(run, step)
        return
    if run.target.address is None:
        raise StepUnsupported(f"{run.target.label} is not a server")
    await open_connection(run, step, run.target.address)


async def expect(run: Run, step: Step) -> None:
    conn = run.conn(step)
    name, where, count = step.options["event"], step.get("where", {}), step.get("count", 1)
    within, cut = run.within(step, 2.0)
    deadline = run.now() + within
    index, matched = conn.cursor, None
    if count == 0:  # none may come
        found = await conn.view.wait_for(lambda e: matches(e, name, where), start=index,
                                         timeout=within)
        if found is not None:
            raise StepFailed(f"a {describe(name, where)} came on connection {conn.name}, "
                             "where none may", expected="none", actual="one",
                             event=found[1])
        run.note("check", {"check": "expect", "passed": True,
                           "message": f"{conn.name}: no {describe(name, where)}"})
        return
    for got in range(count):
        found = await conn.view.wait_for(lambda e: matches(e, name, where), start=index,
                                         timeout=max(0.0, deadline - run.now()))
        if found is None:
            raise _missing(conn, describe(name, where), within, cut, got, count)
        index, matched = found[0] + 1, found[1]
    conn.cursor = index
    for key, path in step.get("save", {}).items():
        run.saved[key] = value_at(matched, path)
    run.note("check", {"check": "expect", "passed": True,
                       "message": f"{conn.name}: {describe(name, where)}"})


def _missing(conn: Conn, wanted: str, within: float, cut: bool, got: int,
             count: int) -> StepFailed:
    name = wanted.split(" ", 1)[0]
    same = [e for e in conn.view.events[conn.cursor:] if e["name"] == name]
    closed = _first(conn, "quic:connection_closed")
    reason = (f"no {wanted} on connection {conn.name} within {within:g} s"
              + (" (cut short by the run's time budget)" if cut else "")
              + (f"; {got} of {count} came" if count > 1 else "")
              + (f"; the connection was closed {_close_text(closed)}" if closed else ""))
    actual = (f"{len(same)} {name} event(s), none matching" if same else f"no {name} event")
    events = conn.view.events
    return StepFailed(reason, expected=wanted, actual=actual,
                      event=closed or (same[-1] if same else events[-1] if events else None))


async def expect_close(run: Run, step: Step) -> None:
    conn = run.conn(step)
    codes = [c if isinstance(c, int) else ErrorCode[c].value for c in step.get("codes", [])]
    by = step.get("by", "peer")
    within, cut = run.within(step, 2.0)
    found = await conn.view.wait_for(
        lambda e: e["name"] == "quic:connection_closed" and e["data"]["owner"] in OWNERS[by],
        timeout=within)
    wanted = " or ".join(code_name(c) for c in codes) or "any code"
    if found is None:
        other = _first(conn, "quic:connection_closed")
        raise StepFailed(
            f"connection {conn.name} was not closed by {by} within {within:g} s"
            + (" (cut short by the run's time budget)" if cut else "")
            + (f"; it was closed {_close_text(other)}" if other else ""),
            expected=f"CONNECTION_CLOSE with {wanted}",
            actual=f"closed {_close_text(other)}" if other else "still open",
            event=other or (conn.view.events[-1] if conn.view.events else None))
    _check_close(step, found[1], codes, wanted)
    run.note("check", {"check": "expect_close", "passed": True,
                       "message": f"{conn.name}: {wanted}"})


def _check_close(step: Step, event: Event, codes: list[int], wanted: str) -> None:
    data = event["data"]
    code = data.get("error_code", 0)
    if codes and code not in codes:
        raise StepFailed(f"closed {_close_text(event)}, not with {wanted}",
                         expected=wanted, actual=code_name(code), event=event)
    frame_type = step.get("frame_type")
    if isinstance(frame_type, str):
        frame_type = build.FRAMES[frame_type].TYPE
    if frame_type is not None and data.get("frame_type") != frame_type:
        raise StepFailed(f"the close names frame type {data.get('frame_type')}, not "
                         f"{frame_type}", expected=f"frame_type {frame_type}",
                         actual=f"frame_type {data.get('frame_type')}", event=event)
    pattern = step.get("reason_regex")
    if pattern is not None and re.search(pattern, data.get("reason", "")) is None:
        raise StepFailed("the close's reason phrase does not match", expected=pattern,
                         actual=repr(data.get("reason", "")), event=event)


async def expect_silence(run: Run, step: Step) -> None:
    conn = run.conn(step)
    seconds, _ = run.budget.wait(float(step.get("for", 1.0)), run.now())
    types = step.get("packet_types")
    came = await conn.view.quiet(seconds, start=len(conn.view.events), packet_types=types)
    if came is not None:
        what = "a datagram" if types is None else f"a packet of type {' or '.join(types)}"
        raise StepFailed(f"the target sent {what} on connection {conn.name} during the "
                         f"{seconds:g} s of expected silence", expected=f"no {what[2:]}",
                         actual=f"{came['data']['raw'][0]['length']} bytes carrying "
                         f"{', '.join(came['data']['packet_types'])}", event=came)


async def request(run: Run, step: Step) -> None:
    conn = run.conn(step)
    peer = conn.client(step)
    options = step.options or {}
    if not options.get("early", False):
        problem = await settle(run, peer, 5.0)
        if problem is not None:
            raise StepFailed(f"cannot send the request on connection {conn.name}: {problem}",
                             expected="a connection ready for requests", actual=problem,
                             event=_first(conn, "quic:connection_closed"))
    target = run.target
    authority = target.server_name or (target.address[0] if target.address else "localhost")
    name = options.get("save") or f"request {len(run.requests) + 1}"
    run.requests[name] = run.loop.create_task(peer.request(
        options.get("method", "GET"), options.get("path", "/"), authority=authority,
        headers=list(options.get("headers", {}).items()),
        body=build.to_bytes(options.get("body", ""))))
    run.last_request = name


async def expect_response(run: Run, step: Step) -> None:
    name = step.get("of") or run.last_request
    task = run.requests.get(name or "")
    if task is None:
        raise ScenarioError("expect_response without a request before it")
    within, cut = run.within(step, 5.0)
    try:
        response = await asyncio.wait_for(asyncio.shield(task), within)
    except TimeoutError:
        raise StepFailed(f"no response to {name} within {within:g} s"
                         + (" (cut short by the run's time budget)" if cut else ""),
                         expected="an HTTP response", actual="none") from None
    except (ConnectionError, OSError, h11.ProtocolError) as exc:
        raise StepFailed(f"{name} failed: {exc}", expected="an HTTP response",
                         actual=f"{type(exc).__name__}: {exc}") from None
    _check_response(step, response)


def _check_response(step: Step, response: Response) -> None:
    status = step.get("status")
    allowed = status if isinstance(status, list) else [status] if status is not None else []
    if allowed and response.status not in allowed:
        raise StepFailed(f"the response status is {response.status}",
                         expected=f"status {' or '.join(map(str, allowed))}",
                         actual=f"status {response.status}")
    for header, value in step.get("headers", {}).items():
        if response.header(header) != value:
            raise StepFailed(f"the response header {header} is {response.header(header)!r}",
                             expected=f"{header}: {value}",
                             actual=f"{header}: {response.header(header)}")
    for header, pattern in step.get("headers_regex", {}).items():
        if re.search(pattern, response.header(header) or "") is None:
            raise StepFailed(f"the response header {header} is {response.header(header)!r}",
                             expected=f"{header} matching {pattern}",
                             actual=f"{header}: {response.header(header)}")
    pattern = step.get("body_regex")
    body = response.body.decode(errors="replace")
    if pattern is not None and re.search(pattern, body) is None:
        raise StepFailed("the response body does not match", expected=pattern,
                         actual=json.dumps(body[:200]))


async def expect_any(run: Run, step: Step) -> None:
    """The first branch that holds names the outcome; a branch other than ``preferred``
    fails under --strict and is a warning otherwise."""
    within = step.get("within", 2.0)
    branches: dict[str, asyncio.Task[None]] = {}
    for name, branch in step.options["branches"].items():
        ((kind, options),) = branch.items()
        sub = Step(BRANCH_STEPS[kind], {"within": within, **(options or {})}, step.where, step.path)
        branches[name] = run.loop.create_task(STEPS[sub.kind](run, sub))
    failures: dict[str, StepFailed] = {}
    winner = None
    pending = set(branches.values())
    while pending and winner is None:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for name, task in branches.items():
            if task in done and name not in failures:
                error = task.exception()
                if error is None:
                    winner = winner or name
                elif isinstance(error, StepFailed):
                    failures[name] = error
                else:
                    raise error
    for task in pending:
        task.cancel()
    if winner is None:
        raise StepFailed("no branch of expect_any held: " + "; ".join(
            f"{n}: {f.reason}" for n, f in failures.items()),
            expected=" or ".join(branches), actual="none held",
            event=next((f.event for f in failures.values() if f.event), None))
    run.note("check", {"check": "expect_any", "passed": True, "message": winner})
    preferred = step.get("preferred")
    if preferred is not None and winner != preferred:
        message = f"expect_any: branch {winner} held, not the preferred {preferred}"
        if run.strict:
            raise StepFailed(f"{message} (--strict)", expected=preferred, actual=winner)
        run.warnings.append(message)


async def send(run: Run, step: Step) -> None:
    conn = run.conn(step)
    peer = conn.client(step)
    options = step.options
    await run.sleep(run.budget.pace(1, run.now()))
    if "template" in options:
        try:
            noted, conn.last_send = await templates.send(peer, options,
                                                         run.within(step, 2.0)[0])
        except ValueError as exc:
            raise ScenarioError(f"send {options['template']}: {exc}") from None
        run.note("send", {"conn": conn.name, **noted})
    elif "datagram" in options:
        rng = random.Random(f"{run.seed}/{run.scenario.name}/{step.where}")
        data = build.mutate(build.datagram(options["datagram"], rng), options.get("mutate", []))
        peer.send_datagram(data)
        conn.last_send = [data]
        run.note("send", {"conn": conn.name, "datagram_length": len(data)})
    else:
        epoch, packet_type = build.SPACES[options.get("space", "1rtt")]
        frames, trailer = build.frames(options["frames"]), build.to_bytes(options.get("raw", ""))
        if epoch is Epoch.INITIAL and peer.connection.spaces[epoch].discarded:
            peer.send_datagram(build.late_initial(peer.connection, frames, trailer))
        else:
            peer.connection.send_frames(epoch, frames, packet_type=packet_type, trailer=trailer)
            peer.flush()
        run.note("send", {"conn": conn.name, "space": options.get("space", "1rtt"),
                          "frames": [f["type"] for f in options["frames"]]})
    run.check_budget()


async def hook(run: Run, step: Step) -> None:
    build.install_hooks(run.conn(step).client(step).connection,
                        {k: v for k, v in step.options.items() if k != "conn"})


async def impair(run: Run, step: Step) -> None:
    """Change the connection's relay now, in both directions or in ``c2s`` / ``s2c`` only;
    ``blackhole: S`` drops everything for S seconds, ``rebind: true`` gives the harness a
    new source port towards the target (NAT rebinding)."""
    conn = run.conn(step)
    relay = conn.relay
    if relay is None:
        raise ScenarioError("impair needs the scenario's network: header (the relay is set "
                            "up by connect)")
    for direction in (None, *DIRECTIONS):
        options = step.options if direction is None else step.options.get(direction, {})
        changes = {k: v for k, v in options.items() if k in IMPAIRMENTS}
        if changes:
            relay.change(changes, direction)
        if "blackhole" in options:
            relay.blackhole(float(options["blackhole"]), direction)
    if step.options.get("rebind"):
        new = await relay.rebind()
        run.note("rebind", {"conn": conn.name, "port": new and new[1]})
    run.note("impair", {"conn": conn.name, **step.options})


async def wait(run: Run, step: Step) -> None:
    await run.sleep(float(step.options))


async def key_update(run: Run, step: Step) -> None:
    """Update the connection's 1-RTT send keys (the packets of later steps carry the new
    key phase); ``force`` even when RFC 9001 6.1 forbids it, to test the receiver."""
    conn = run.conn(step)
    options = step.options or {}
    try:
        conn.client(step).connection.request_key_update(force=options.get("force", False))
    except UsageError as exc:
        raise ScenarioError(f"key_update on connection {conn.name}: {exc} (or give force: "
                            "true)") from None
    run.note("key_update", {"conn": conn.name, "force": options.get("force", False)})


async def fill(run: Run, step: Step) -> None:
    """Open as many connections as the target's claimed bound ``limit``, named fill1...,
    each left half-open (its FINISHED is never sent) once the target answered its first
    flight, or with ``complete`` each with its handshake complete, left open."""
    if run.target.address is None:
        raise StepUnsupported(f"{run.target.label} is not a server")
    bound = _claimed(run, step.options["limit"])
    complete = step.get("complete", False)
    run.linger = FILL_LINGER
    for index in range(1, bound + 1):
        options: dict[str, Any] = {"name": f"fill{index}"} if complete else {
            "name": f"fill{index}", "wait": "none",
            "hooks": {"message": {"FINISHED": {"drop": True}}}}
        conn = await open_connection(run, Step("connect", options, step.where, step.path),
                                     run.target.address)
        within, _ = run.within(step, 3.0)
        answered = await conn.view.wait_for(_confirmed if complete else _answered,
                                            timeout=within)
        closed = _first(conn, "quic:connection_closed")
        if answered is None or closed is not None:
            raise StepFailed(f"the target did not take connection {index} of the {bound} its "
                             f"{step.options['limit']} bound allows"
                             + (f": it was closed {_close_text(closed)}" if closed else ""),
                             expected=f"{bound} connections", actual=f"{index - 1}",
                             event=closed)
        run.check_budget()


FILL_LINGER = 3.5
"""Seconds a run that filled a bound waits after closing its connections (three PTOs of
draining at the target, longer on a loaded machine), so the sanity handshake after it, and
the next run, find room."""


def _answered(event: Event) -> bool:
    return bool(event["name"] == "quic:datagrams_received")


def _confirmed(event: Event) -> bool:
    """HANDSHAKE_DONE came: the target has the client's FINISHED, its handshake is over."""
    return event["name"] == "quic:packet_received" and any(
        f["frame_type"] == "handshake_done" for f in event["data"].get("frames", []))


def _claimed(run: Run, limit: str) -> int:
    bound = run.target.limits.get(limit)
    if bound is None:
        raise StepUnsupported(f"{run.target.label} does not give its {limit} bound (list "
                              f"{{{limit}: N}} in --target-caps FILE)")
    return bound


async def holes(run: Run, step: Step) -> None:
    """One more disjoint range than the target's claimed bound (``limit``: crypto-holes, in
    the 1-RTT CRYPTO stream, or stream-holes, on ``stream_id``): one byte at every other
    offset from 1, nothing at 0, so every byte waits (VEL-STR-005)."""
    conn = run.conn(step)
    peer = conn.client(step)
    limit = step.options["limit"]
    bound = _claimed(run, limit)
    stream_id = step.get("stream_id", 0)
    frames: list[Frame] = [
        Crypto(1 + 2 * i, b"x") if limit == "crypto-holes" else Stream(stream_id, b"x", 1 + 2 * i)
        for i in range(bound + 1)]
    for first in range(0, len(frames), HOLES_PER_PACKET):
        await run.sleep(run.budget.pace(1, run.now()))
        peer.connection.send_frames(Epoch.APPLICATION, frames[first:first + HOLES_PER_PACKET])
        peer.flush()
        run.check_budget()
    run.note("send", {"conn": conn.name, "space": "1rtt", "holes": len(frames), "limit": limit})


async def forge(run: Run, step: Step) -> None:
    """One more 1-RTT packet failing authentication than the target's claimed
    integrity limit (VEL-PROT-012), or with ``over: false`` as many as the limit: a PING
    each, its last byte (the AEAD tag's) flipped after sealing, paced within the budget;
    it stops early when the connection closes (a target stricter than it claims)."""
    conn = run.conn(step)
    peer = conn.client(step)
    bound = _claimed(run, step.options["limit"])
    count = bound + 1 if step.get("over", True) else bound
    if not peer.connection.handshake_complete:
        raise ScenarioError(f"forge sends 1-RTT packets: connection {conn.name} has no 1-RTT "
                            "keys yet (a connect that waits until it is ready comes first)")
    forged = 0
    while forged < count and _first(conn, "quic:connection_closed") is None:
        await run.sleep(run.budget.pace(1, run.now()))
        peer.connection.send_frames(Epoch.APPLICATION, [Ping()])
        _, sent = peer.transmit(lambda datagrams: [d[:-1] + bytes([d[-1] ^ 1])
                                                   for d in datagrams])
        if not sent:
            raise ScenarioError(f"connection {conn.name} sent nothing to forge after "
                                f"{forged} forgeries")
        forged += len(sent)
        run.check_budget()
    run.note("send", {"conn": conn.name, "space": "1rtt", "forged": forged, "limit": bound})


async def shutdown(run: Run, step: Step) -> None:
    """Shut the target down gracefully (a target the harness runs: the in-process server
    is stopped, a --target-cmd process gets SIGTERM); it is started again for the next
    run."""
    if run.target.shutdown is None:
        raise StepUnsupported(f"{run.target.label} is not run by the harness, which cannot "
                              "shut it down")
    await asyncio.get_running_loop().run_in_executor(None, run.target.shutdown)
    run.note("shutdown", {"target": run.target.label})


async def check(run: Run, step: Step) -> None:
    """``assert``: every expression holds over the saved values and the aggregates."""
    sources = step.sources
    expressions = [compile_expression(source) for source in sources]
    namespace = run.namespace({name for e in expressions for name in e.names})
    for source, expression in zip(sources, expressions, strict=True):
        try:
            value = expression.evaluate(namespace)
        except ExpressionError as exc:
            raise ScenarioError(f"assert {exc}") from None
        run.note("check", {"check": "assert", "passed": bool(value), "message": source})
        if not value:
            shown = ", ".join(f"{name} = {namespace[name]!r}" for name in expression.names
                              if name in namespace)
            raise StepFailed(f"assert {source!r} does not hold", expected=source,
                             actual=shown or repr(value))


STEPS: dict[str, StepRunner] = {
    "connect": connect, "send": send, "hook": hook, "expect": expect,
    "expect_any": expect_any, "expect_close": expect_close, "expect_silence": expect_silence,
    "request": request, "expect_response": expect_response, "wait": wait, "assert": check,
    "key_update": key_update, "shutdown": shutdown, "holes": holes, "fill": fill,
    "forge": forge,
    "impair": impair, "expect_client": server_role.expect_client,
    "expect_no_contact": server_role.expect_no_contact,
    "expect_contact": server_role.expect_contact, "run_client": server_role.run_client,
    "replay": replay.replay, "fuzz": fuzz_step}
