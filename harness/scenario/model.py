"""The typed view of one validated scenario document for one parameter combination: the
header (``Scenario``, ``Budget``, ``Network``, ``ExpectFailure``) and its steps, plus the
parametrisation rules: the cartesian product of ``parametrize`` and ``"{name}"``
substitution. Nothing here reads files or YAML (``loader`` does)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_COMBINATIONS = 256
_PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)\}")
Path = tuple[str | int, ...]  # a JSON path into a document: keys and list indexes
AGGREGATES = ("amplification_ratio", "bytes_per_flight", "flights", "packets_per_space",
              "datagrams_sent", "datagrams_received", "handshake_ms", "close_code",
              "packets_dropped", "padding_not_last", "non_minimal_varints")
"""The transcript aggregates an ``assert`` may read, besides the values earlier steps saved."""
BRANCH_STEPS = {"expect": "expect", "close": "expect_close", "silence": "expect_silence",
                "response": "expect_response"}
"""An ``expect_any`` branch's key -> the step it runs."""


@dataclass(frozen=True)
class Budget:
    timeout: float = 10.0  # seconds for the whole run
    datagrams: int = 2000  # datagrams the harness may send
    rate: float | None = None  # datagrams per second the harness may send (None: no cap)


Settings = tuple[tuple[str, Any], ...]  # keys of harness.netsim.Impairment and their values


@dataclass(frozen=True)
class Network:
    """Impairment between the harness and the target (the ``network`` header): the
    settings of both directions, and those ``c2s`` and ``s2c`` change for one."""

    both: Settings = ()
    c2s: Settings = ()
    s2c: Settings = ()

    @classmethod
    def of(cls, header: Mapping[str, Any]) -> Network:
        def settings(values: Mapping[str, Any]) -> Settings:
            return tuple(sorted((k, v) for k, v in values.items() if k not in ("c2s", "s2c")))

        return cls(settings(header), settings(header.get("c2s", {})),
                   settings(header.get("s2c", {})))


@dataclass(frozen=True)
class ExpectFailure:
    reason: str
    until: dt.date

    def expired(self, today: dt.date) -> bool:
        return today > self.until


@dataclass(frozen=True)
class Step:
    """One step: its kind (the step's one key), its value as written (after substitution;
    for ``finally`` a tuple of steps), where it is (``file:line``) and its JSON path."""

    kind: str
    options: Any
    where: str
    path: Path

    def get(self, key: str, default: Any = None) -> Any:
        """An option of a mapping-valued step, or ``default`` when it is not given."""
        options = self.options if isinstance(self.options, Mapping) else {}
        value = options.get(key, default)
        return default if value is None else value

    @property
    def sources(self) -> list[str]:
        """An ``assert`` step's expressions, one or a list as written, as a list."""
        return [self.options] if isinstance(self.options, str) else list(self.options)


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    spec: tuple[str, ...]
    role: str  # the part the harness plays: "client" or "server"
    steps: tuple[Step, ...]
    file: str  # as shown in reports (relative to the rootdir)
    line: int  # where the document starts
    tags: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    budget: Budget = field(default_factory=Budget)
    seed: int | str | None = None  # None: the run's --seed
    network: Network | None = None
    expect_failure: ExpectFailure | None = None
    pass_rate: float | None = None  # the share of --repeat runs that must pass (None: all)
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def params_id(self) -> str:
        """``profile=light-aead=AES_128_GCM`` (empty without parameters)."""
        return "-".join(f"{k}={_shown(v)}" for k, v in self.params)

    @property
    def name(self) -> str:
        """The pytest item name: the id, with the parameters in brackets."""
        return f"{self.id}[{self.params_id}]" if self.params else self.id


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def combinations(parametrize: Mapping[str, list[Any]] | None) -> list[dict[str, Any]]:
    """The cartesian product of the ``parametrize`` lists, in the order written
    (the last name varies fastest); one empty combination without parameters."""
    if not parametrize:
        return [{}]
    names = list(parametrize)
    return [dict(zip(names, values, strict=True))
            for values in itertools.product(*(parametrize[n] for n in names))]


def count_combinations(parametrize: Mapping[str, list[Any]] | None) -> int:
    total = 1
    for values in (parametrize or {}).values():
        total *= len(values)
    return total


def substitute(value: Any, params: Mapping[str, Any]) -> Any:
    """``value`` with ``"{name}"`` replaced by the parameter's value in every string: a
    string that is exactly ``"{name}"`` takes the value itself (with its type); inside a
    longer string the value is written as text. Braces around anything but a parameter
    name (a regex's ``{2}``, say) are left as they are."""
    if isinstance(value, str):
        whole = _PLACEHOLDER.fullmatch(value)
        if whole and whole[1] in params:
            return params[whole[1]]
        return _PLACEHOLDER.sub(
            lambda m: _shown(params[m[1]]) if m[1] in params else m[0], value)
    if isinstance(value, list):
        return [substitute(v, params) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, params) for k, v in value.items()}
    return value
