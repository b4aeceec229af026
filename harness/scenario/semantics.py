"""The rules of a scenario's steps that JSON Schema cannot state, checked at collection:
``finally`` comes last; a connection, a saved value or a response is defined before a
step uses it; ``assert`` expressions pass the evaluator's whitelist and read only known
names; regexes compile; error codes are names of the spec's registry; role-specific steps
and connect options appear only in scenarios of that role."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

from harness.fuzz.case import option_problems as fuzz_problems
from harness.scenario import build, templates
from harness.scenario.connections import TRANSPORT_PARAMETERS
from harness.scenario.expr import ExpressionError, compile_expression
from harness.scenario.model import AGGREGATES, BRANCH_STEPS, Path, Step
from velocity.core.errors import ErrorCode

Report = Callable[[Path, str], None]
Where = Callable[[Path], str]

SERVER_ROLE_STEPS = frozenset({"expect_client", "expect_no_contact", "expect_contact",
                               "run_client"})
CONNECTION_STEPS = frozenset({"expect", "expect_close", "expect_silence", "request", "send",
                              "hook", "impair", "key_update", "holes", "forge", "replay",
                              *SERVER_ROLE_STEPS})
"""The steps that act on a connection: ``conn``, else ``main``, opened by an earlier
connect."""
CLIENT_CONNECT = frozenset({"key", "server_name", "early_data", "ticket_age", "binder",
                            "token"})
SERVER_CONNECT = frozenset({"timeout", "publish_key", "fallback", "stale_key",
                            "kem_key_required", "certificate", "hello_retry", "client_key",
                            "trust", "retry", "version_negotiation", "replaces"})
TICKETS = {"client": ("none", "last"),
           "server": ("valid", "garbage", "wrong_aad", "expired", "future", "stale_age")}
REGEX_KEYS = ("reason_regex", "body_regex", "stdout_regex", "stderr_regex")


class StepChecker:
    """Walks one scenario's steps in order, remembering what each defines."""

    def __init__(self, role: str | None, report: Report, sound: Callable[[Path], bool], *,
                 network: bool) -> None:
        self.role = role  # None: unknown (the schema refused it), no role checks
        self.report = report
        self.sound = sound  # whether a path is free of schema errors (else left unchecked)
        self.network = network  # the scenario has a network: header (so a relay)
        self.connections: set[str] = set()
        self.held: set[str] = set()  # connections whose connect holds the first flight
        self.saved: set[str] = set()
        self.responses: list[str] = []
        self._rules: dict[str, Callable[[Any, Path], None]] = {
            "connect": self._connect, "expect": self._expect, "expect_any": self._expect_any,
            "expect_close": self._expect_close, "request": self._request,
            "expect_response": self._expect_response, "assert": self._assert,
            "send": self._send, "hook": self._hooks, "impair": self._impair,
            "replay": self._replay, "run_client": self._run_client, "fuzz": self._fuzz,
            "fill": self._fill}

    def steps(self, values: list[dict[str, Any]], path: Path, *, top: bool,
              where: Where) -> tuple[Step, ...]:
        """The steps at ``path`` (a validated list of one-key mappings) as ``Step`` models."""
        out = []
        for i, value in enumerate(values):
            if not self.sound((*path, i)):
                self._remember_connection(value)
                continue
            ((kind, options),) = value.items()
            step_path: Path = (*path, i, kind)
            if kind == "finally":
                if not top or i != len(values) - 1:
                    self.report(step_path, "finally must be the last step of the scenario")
                options = self.steps(options, step_path, top=False, where=where)
            else:
                self.check(kind, options, step_path)
            out.append(Step(kind, options, where((*path, i)), step_path))
        return tuple(out)

    def _remember_connection(self, value: Any) -> None:
        """A connect step with schema errors still opens its connection (no false alarms
        about later steps that use it)."""
        options = value.get("connect", False) if isinstance(value, dict) else False
        if options is None or isinstance(options, dict):
            name = (options or {}).get("name", "main")
            self.connections.add(name if isinstance(name, str) else "main")

    def check(self, kind: str, options: Any, path: Path) -> None:
        if not self.sound(path):
            return
        if kind in SERVER_ROLE_STEPS and self.role == "client":
            self.report(path, f"{kind} is a step of role: server scenarios (the harness "
                              "plays the server to test a client)")
        if kind in CONNECTION_STEPS:  # (expect_any's branches are checked as their steps)
            self._connection(options, path)
        if isinstance(options, dict):
            for key in REGEX_KEYS:
                if isinstance(options.get(key), str):
                    self._regex(options[key], (*path, key))
            for header, pattern in (options.get("headers_regex") or {}).items():
                self._regex(pattern, (*path, "headers_regex", header))
        rule = self._rules.get(kind)
        if rule is not None:
            rule(options, path)

    def _connection(self, options: Any, path: Path) -> None:
        """The connection a step acts on is opened before it."""
        conn = options.get("conn") if isinstance(options, dict) else None
        if conn is not None and conn not in self.connections:
            self.report((*path, "conn"), f"no connection {conn!r} is opened before this "
                                         f"step (a connect step with name: {conn})")
        elif conn is None and "main" not in self.connections:
            self.report(path, f"{path[-1]} acts on connection 'main', which no connect step "
                              "opens before it (add a connect step before it)")

    def _regex(self, pattern: str, path: Path) -> None:
        try:
            re.compile(pattern)
        except re.error as exc:
            self.report(path, f"not a regular expression: {exc}")

    def _connect(self, options: dict[str, Any] | None, path: Path) -> None:
        options = options or {}
        replaces = options.get("replaces")
        if replaces is not None and replaces not in self.connections:
            self.report((*path, "replaces"), f"no connection {replaces!r} is opened before "
                                             "this step")
        name = options.get("name", "main")
        if isinstance(name, str) and re.fullmatch(r"fill\d+", name):
            self.report((*path, "name"), f"{name} is a name of the fill step's connections: "
                                         "give this one another name")
        self._open(name, (*path, "name") if "name" in options else path)
        if options.get("wait") == "held":
            self.held.add(name)
        self._hooks(options.get("hooks", {}), (*path, "hooks"))
        for key in options.get("transport_parameters", {}):
            if key not in TRANSPORT_PARAMETERS:
                self.report((*path, "transport_parameters", key),
                            f"{key} is not a transport parameter the harness sets (one of "
                            f"{', '.join(TRANSPORT_PARAMETERS)})")
        if self.role not in TICKETS:
            return
        other = "server" if self.role == "client" else "client"
        wrong = SERVER_CONNECT if self.role == "client" else CLIENT_CONNECT
        for key in sorted(wrong & options.keys()):
            self.report((*path, key), f"{key} is a connect option of role: {other} scenarios")
        ticket = options.get("ticket")
        for key in sorted({"ticket_age", "binder"} & options.keys()):
            if ticket != "last":
                self.report((*path, key), f"{key} changes the ticket a connection resumes "
                                          "with: give ticket: last too")
        if ticket is not None and ticket not in TICKETS[self.role]:
            self.report((*path, "ticket"), f"ticket: {ticket} is for role: {other} scenarios; "
                                           f"here: {' or '.join(TICKETS[self.role])}")

    def _run_client(self, options: dict[str, Any], path: Path) -> None:
        """A client run again opens a connection of its own, to a connect's server."""
        self._open(options["name"], (*path, "name"))

    def _fill(self, options: dict[str, Any], path: Path) -> None:
        """A fill opens fill1 and on (a claimed bound is at least 1): later steps may name
        fill1; how many more there are is the target's."""
        if options.get("complete") and options.get("limit") != "sessions":
            self.report((*path, "complete"), "complete connections are not half-open: "
                                             "complete: true fills the sessions bound only")
        self._open("fill1", path)

    def _open(self, name: str, path: Path) -> None:
        if name in self.connections:
            self.report(path, f"a connection {name!r} is already opened: give this one another "
                              "name (name: second)")
        self.connections.add(name)

    def _impair(self, options: dict[str, Any], path: Path) -> None:
        if not self.network:
            self.report(path, "impair needs a network: header (its relay is set up by "
                              "connect; network: {} is a perfect one)")

    def _hooks(self, hooks: dict[str, Any], path: Path) -> None:
        try:
            build.check_hooks(hooks)
        except ValueError as exc:
            self.report(path, str(exc))

    def _send(self, options: dict[str, Any], path: Path) -> None:
        if "template" in options:
            try:
                for found in templates.problems(options):
                    self.report((*path, "template"), found)
            except ValueError as exc:
                self.report((*path, "frames"), str(exc))
            conn = options.get("conn", "main")
            if options["template"] == "client_initial" and conn not in self.held:
                self.report((*path, "template"), "client_initial is the first flight a "
                            f"connect with wait: held kept: connect {conn} so, and send it "
                            "once")
            self.held.discard(conn)
            return
        built = []
        for i, spec in enumerate(options.get("frames", ())):
            try:
                built.append(build.frame(spec))
            except ValueError as exc:
                self.report((*path, "frames", i), str(exc))
        problem = build.oversized(built) if built else None
        if problem is not None:
            self.report((*path, "frames"), problem)
        if "datagram" in options:
            try:
                build.mutate(build.datagram(options["datagram"], random.Random(0)),
                             options.get("mutate", []))
            except ValueError as exc:
                self.report((*path, "datagram"), str(exc))
        elif "mutate" in options:
            self.report((*path, "mutate"), "mutate applies to a datagram or a template")
        if "raw" in options and "frames" not in options:
            self.report((*path, "raw"), "raw bytes follow the frames of a packet: give frames "
                                        "too (send: {frames: [...], raw: ...})")
        if sum(k in options for k in ("frames", "datagram")) != 1:
            self.report(path, "send takes one of frames, datagram or template")

    def _replay(self, options: dict[str, Any], path: Path) -> None:
        if options.get("from") == "new_port":
            name = options.get("name", "replay")
            if name in self.connections:
                self.report((*path, "name"), f"a connection {name!r} is already opened: the "
                            "replay from a new port records its answers under another name")
            self.connections.add(name)
        elif "name" in options:
            self.report((*path, "name"), "name is the connection of a replay from: new_port")

    def _fuzz(self, options: dict[str, Any], path: Path) -> None:
        for key, message in fuzz_problems(options):
            self.report((*path, key) if key else path, message)

    def _expect(self, options: dict[str, Any], path: Path) -> None:
        for key, matcher in options.get("where", {}).items():
            if isinstance(matcher, dict) and isinstance(matcher.get("regex"), str):
                self._regex(matcher["regex"], (*path, "where", key, "regex"))
        if options.get("count") == 0 and "save" in options:
            self.report((*path, "save"), "count: 0 matches no event: there is nothing to save")
        self.saved.update(options.get("save", {}))

    def _expect_any(self, options: dict[str, Any], path: Path) -> None:
        branches = options["branches"]
        preferred = options.get("preferred")
        if preferred is not None and preferred not in branches:
            self.report((*path, "preferred"), f"{preferred!r} is not one of the branches "
                                              f"({', '.join(branches)})")
        for name, branch in branches.items():
            ((kind, value),) = branch.items()
            self.check(BRANCH_STEPS[kind], value, (*path, "branches", name, kind))

    def _expect_close(self, options: dict[str, Any], path: Path) -> None:
        for i, code in enumerate(options.get("codes", ())):
            if isinstance(code, str) and code not in ErrorCode.__members__:
                self.report((*path, "codes", i), f"{code} is not an error of the spec's "
                                                 "registry (section 15)")

    def _request(self, options: dict[str, Any] | None, path: Path) -> None:
        self.responses.append((options or {}).get("save", ""))

    def _expect_response(self, options: dict[str, Any] | None, path: Path) -> None:
        of = (options or {}).get("of")
        if not self.responses:
            self.report(path, "no request step comes before this expect_response")
        elif of is not None and of not in self.responses:
            self.report((*path, "of"), f"no request saved as {of!r} before this step "
                                       f"(a request step with save: {of})")

    def _assert(self, options: str | list[str], path: Path) -> None:
        sources = [options] if isinstance(options, str) else options
        for i, source in enumerate(sources):
            where = path if isinstance(options, str) else (*path, i)
            try:
                expression = compile_expression(source)
            except ExpressionError as exc:
                self.report(where, f"{source!r}: {exc}")
                continue
            for name in expression.names:
                if name not in AGGREGATES and name not in self.saved:
                    self.report(where, f"{source!r}: unknown name {name!r} (saved before this "
                                       f"step: {', '.join(sorted(self.saved)) or 'none'}; "
                                       f"aggregates: {', '.join(AGGREGATES)})")
