"""The scenario loader: every problem of a file on its line (schema errors, YAML's own
errors, and the rules a schema cannot state), parametrisation and substitution, and no
input, however broken, that raises anything but ScenarioFileError."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.peer.hostile import KEY_SHARES
from harness.scenario.connections import TRANSPORT_PARAMETERS
from harness.scenario.loader import ScenarioFileError, load_file
from harness.scenario.model import Scenario
from harness.scenario.spec import requirements
from harness.schemas import SCHEMAS_DIR
from velocity.core.connection import ConnectionConfig

SPEC = requirements()
HEAD = "id: t/x\ntitle: t\nspec: [VEL-HS-001]\nrole: client\n"


def load(tmp_path: Path, text: str | bytes) -> list[Scenario]:
    path = tmp_path / "s.yaml"
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    return load_file(path, "s.yaml", SPEC)


def problems(tmp_path: Path, text: str | bytes) -> list[str]:
    with pytest.raises(ScenarioFileError) as refused:
        load(tmp_path, text)
    return refused.value.errors


@pytest.mark.parametrize(("text", "expected"), [
    (HEAD + "steps:\n  - assert: &a '1 == 1'\n  - assert: *a\n",
     "s.yaml:7: $.steps[1].assert: YAML aliases (*name) are not supported"),
    (HEAD + "role: server\nsteps:\n  - wait: 0\n", "s.yaml:5: $.role: duplicate key"),
    (HEAD + "steps:\n  - wait: .nan\n", "s.yaml:6: $.steps[0].wait: nan is not a finite number"),
    (HEAD + "expect_failure: {reason: r, until: 2027-02-30}\nsteps:\n  - wait: 0\n",
     "s.yaml:5: $.expect_failure.until: '2027-02-30' is not a 'date'"),
    (HEAD + "steps:\n  - wait: 0\n  - 7: x\n", "s.yaml:7: $.steps[1]: the key 7 is not a string"),
    ("", "s.yaml:1: no scenario in this file"),
    (HEAD + "steps: " + "[" * 5000 + "]" * 5000 + "\n", "s.yaml:1: YAML nested too deeply"),
    (HEAD + "steps:\n  - connect: {publish_key: true}\n",
     "s.yaml:6: $.steps[0].connect.publish_key: publish_key is a connect option of role: server"),
    (HEAD + "steps:\n  - connect: {ticket: garbage}\n",
     "s.yaml:6: $.steps[0].connect.ticket: ticket: garbage is for role: server scenarios"),
    (HEAD + "steps:\n  - expect_client: {exit_code: 0}\n",
     "s.yaml:6: $.steps[0].expect_client: expect_client is a step of role: server scenarios"),
    (HEAD + "steps:\n  - run_client: {name: again}\n",
     "s.yaml:6: $.steps[0].run_client: run_client is a step of role: server scenarios"),
    (HEAD.replace("client", "server") + "steps:\n  - connect: {}\n  - connect: {name: b, "
     "replaces: other}\n", "s.yaml:7: $.steps[1].connect.replaces: no connection 'other' is "
     "opened before this step"),
    (HEAD.replace("client", "server") + "steps:\n  - connect: {}\n  - run_client: {name: "
     "main}\n", "s.yaml:7: $.steps[1].run_client.name: a connection 'main' is already opened"),
    (HEAD.replace("client", "server") + "steps:\n  - connect: {ticket: last}\n",
     "s.yaml:6: $.steps[0].connect.ticket: ticket: last is for role: client scenarios; here: "
     "valid or garbage or wrong_aad or expired or future or stale_age"),
    (HEAD + "steps:\n  - expect: {conn: other, event: quic:x}\n",
     "s.yaml:6: $.steps[0].expect.conn: no connection 'other' is opened before this step"),
    (HEAD + "steps:\n  - forge: {limit: integrity-limit}\n",
     "s.yaml:6: $.steps[0].forge: forge acts on connection 'main', which no connect step opens "
     "before it"),
    (HEAD + "steps:\n  - connect: {name: a}\n  - expect_any: {branches: {x: {close: {}}}}\n",
     "s.yaml:7: $.steps[1].expect_any.branches.x.close: close acts on connection 'main'"),
    (HEAD + "steps:\n  - connect: {name: a}\n  - request: {conn: a, path: /}\n"
     "  - expect_any: {branches: {ok: {response: {status: [200]}}, x: {close: {conn: a}}}}\n"
     "  - expect: {event: a:b}\n",
     "s.yaml:9: $.steps[3].expect: expect acts on connection 'main'"),
    (HEAD + "steps:\n  - connect: {}\n  - connect: {}\n",
     "s.yaml:7: $.steps[1].connect: a connection 'main' is already opened"),
    (HEAD + "steps:\n  - fill: {limit: half-open-per-address, complete: true}\n",
     "s.yaml:6: $.steps[0].fill.complete: complete connections are not half-open"),
    (HEAD + "steps:\n  - connect: {name: fill2}\n",
     "s.yaml:6: $.steps[0].connect.name: fill2 is a name of the fill step's connections"),
    (HEAD + "steps:\n  - assert: 'saved_later > 1'\n  - expect: {event: a:b, save: {saved_later: "
     "time}}\n", "s.yaml:6: $.steps[0].assert: 'saved_later > 1': unknown name 'saved_later'"),
    (HEAD + "steps:\n  - expect_response: {}\n",
     "s.yaml:6: $.steps[0].expect_response: no request step comes before this expect_response"),
    (HEAD + "steps:\n  - finally: [{wait: 0}]\n  - wait: 0\n",
     "s.yaml:6: $.steps[0].finally: finally must be the last step of the scenario"),
    (HEAD + "steps:\n  - expect_any: {preferred: c, branches: {a: {silence: {}}}}\n",
     "s.yaml:6: $.steps[0].expect_any.preferred: 'c' is not one of the branches (a)"),
    (HEAD + "steps:\n  - connect: {}\n  - send: {frames: [{type: strem}]}\n",
     "s.yaml:7: $.steps[1].send.frames[0]: no frame type 'strem'"),
    (HEAD + "steps:\n  - connect: {}\n  - send: {frames: [{type: stream, data: x}]}\n",
     "s.yaml:7: $.steps[1].send.frames[0]: a stream frame needs stream_id"),
    (HEAD + "steps:\n  - connect: {}\n  - send: {frames: [{type: max_data, maximum: "
     "18446744073709551616}]}\n", "s.yaml:7: $.steps[1].send.frames[0]: a max_data frame "
     "cannot be encoded: 18446744073709551616 does not fit a varint"),
    (HEAD + "steps:\n  - connect: {}\n  - send: {frames: [{type: stream, stream_id: 0, data: "
     "{repeat: a, count: 2000}}]}\n", "s.yaml:7: $.steps[1].send.frames: the frames of one "
     "send take 2004 bytes; one packet carries at most 1100"),
    (HEAD + "steps:\n  - connect: {hooks: {message: {CLIENT_HELLO: {set: {alpns: [h3]}}}}}\n",
     "s.yaml:6: $.steps[0].connect.hooks: CLIENT_HELLO has no field alpns"),
    (HEAD + "steps:\n  - connect: {}\n  - send: {datagram: {hex: '00'}, mutate: [{xor: "
     "{offset: 3, mask: ff}}]}\n", "s.yaml:7: $.steps[1].send.datagram: xor at 3 runs past"),
    (HEAD + "steps:\n  - connect: {}\n  - send: {template: client_hello}\n",
     "s.yaml:7: $.steps[1].send.template: 'client_hello' is not a known packet template"),
    (HEAD + "steps:\n  - connect: {}\n  - send: {template: client_initial}\n",
     "s.yaml:7: $.steps[1].send.template: client_initial is the first flight a connect with "
     "wait: held kept"),
    (HEAD + "steps:\n  - connect: {}\n  - send: {template: one_rtt}\n",
     "s.yaml:7: $.steps[1].send.template: the one_rtt template carries the step's frames"),
    (HEAD + "steps:\n  - connect: {}\n  - send: {template: one_rtt, frames: [{type: ping}], "
     "mutate: [{set: header.dcidd, value: 1}]}\n",
     "s.yaml:7: $.steps[1].send.template: no header field 'dcidd'"),
    (HEAD + "steps:\n  - connect: {}\n  - send: {template: one_rtt, frames: [{type: ping}], "
     "mutate: [{set: header.pn_length, value: 5}]}\n",
     "s.yaml:7: $.steps[1].send.template: header.pn_length is at most 4"),
    (HEAD + "steps:\n  - connect: {}\n  - send: {template: one_rtt, frames: [{type: ping}], "
     "mutate: [{set: 'frames[0].offset', value: 1}]}\n",
     "s.yaml:7: $.steps[1].send.template: frames[0] (ping) has no field offset"),
    (HEAD + "steps:\n  - connect: {}\n  - send: {template: handshake_finished, mutate: "
     "[{drop: 0}]}\n", "s.yaml:7: $.steps[1].send.template: the FINISHED leaves with the "
     "target's flight"),
    (HEAD + "steps:\n  - connect: {}\n  - send: {datagram: {hex: '00'}, mutate: [{drop: 0}]}"
     "\n", "s.yaml:7: $.steps[1].send.datagram: drop applies to packet templates"),
    (HEAD + "steps:\n  - connect: {}\n  - replay: {name: again}\n",
     "s.yaml:7: $.steps[1].replay.name: name is the connection of a replay from: new_port"),
    (HEAD + "steps:\n  - connect: {}\n  - replay: {from: new_port}\n  - expect: {conn: "
     "replay2, event: a:b}\n", "s.yaml:8: $.steps[2].expect.conn: no connection 'replay2'"),
    (HEAD.replace("VEL-HS-001", "VEL-CERT-004") + "steps:\n  - wait: 0\n",
     "s.yaml:3: $.spec[0]: VEL-CERT-004 is not observable on the wire"),
    (HEAD + "parametrize: {a: [1, 2, 3, 4], b: [1, 2, 3, 4], c: [1, 2, 3, 4], d: [1, 2, 3, 4, "
     "5]}\nsteps:\n  - wait: 0\n", "s.yaml:5: $.parametrize: 320 combinations; at most 256"),
    (HEAD + "network: {los: 0.1}\nsteps:\n  - wait: 0\n",
     "s.yaml:5: $.network.los: unknown key 'los'; allowed here: loss, burst_loss"),
    (HEAD + "network:\n  s2c: {loss: 0.1, rebind: true}\nsteps:\n  - wait: 0\n",
     "s.yaml:6: $.network.s2c.rebind: unknown key 'rebind'; allowed here: loss"),
    (HEAD + "network: {}\nsteps:\n  - connect: {}\n  - impair:\n      c2s: {burst: 1}\n",
     "s.yaml:9: $.steps[1].impair.c2s.burst: unknown key 'burst'; allowed here: loss"),
    (HEAD + "network: {}\nsteps:\n  - connect: {}\n  - impair: {rebind: false}\n",
     "s.yaml:8: $.steps[1].impair.rebind: True was expected"),
    (HEAD + "steps:\n  - connect: {}\n  - impair: {loss: 0.1}\n",
     "s.yaml:7: $.steps[1].impair: impair needs a network: header"),
    (HEAD + "steps:\n  - connect: {client_key: pinned}\n",
     "s.yaml:6: $.steps[0].connect.client_key: client_key is a connect option of role: server"),
    (HEAD + "steps:\n  - wait: 0\n---\n" + HEAD + "steps:\n  - wait: 0\n",
     "s.yaml:8: $.id: duplicate id 't/x' (first at line 1)"),
])
def test_each_problem_is_placed_on_its_line(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(tmp_path, text)
    assert any(line.startswith(expected) for line in found), found


def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    assert problems(tmp_path, HEAD.encode() + b"steps:\n  - wait: \xff\n") == [
        "s.yaml:6: not UTF-8 text (invalid start byte)"]


def test_schema_errors_do_not_hide_the_other_problems(tmp_path: Path) -> None:
    found = problems(tmp_path, HEAD.replace("VEL-HS-001", "VEL-HS-999")
                     + "budget: {timeout: 0}\nsteps:\n  - wait: x\n  - assert: 'nope'\n")
    assert [line.split(": ")[1] for line in found] == [
        "$.spec[0]", "$.budget.timeout", "$.steps[0].wait", "$.steps[1].assert"]


def test_substitution_keeps_types_and_leaves_other_braces(tmp_path: Path) -> None:
    scenarios = load(tmp_path, "id: t/x\ntitle: 'wait {s} s'\nspec: [VEL-HS-001]\nrole: client\n"
                     "parametrize: {s: [0.5, 2]}\nsteps:\n  - wait: '{s}'\n  - connect: {}\n"
                     "  - expect_close: {reason_regex: 'a{2}{s}'}\n")
    assert [s.name for s in scenarios] == ["t/x[s=0.5]", "t/x[s=2]"]
    first = scenarios[0]
    assert first.title == "wait 0.5 s" and first.params == (("s", 0.5),)
    assert first.steps[0].options == 0.5
    assert first.steps[2].options == {"reason_regex": "a{2}0.5"}
    assert first.steps[2].where == "s.yaml:9"


GOOD = """\
id: fuzz/good
title: "a {p}"
spec: [VEL-HS-001, VEL-CONN-001]
tags: [smoke]
role: client
budget: {timeout: 5, datagrams: 10}
parametrize: {p: [light, balanced]}
expect_failure: {reason: x, until: 2030-01-01}
steps:
  - connect: {profiles: ["{p}"], hooks: {crypto: {chunks: [100]}, key_share: short}}
  - expect: {event: "quic:packet_received", where: {"data.frames[*].frame_type": crypto}}
  - expect_any: {branches: {a: {close: {codes: [PROTOCOL_VIOLATION]}}}, preferred: a}
  - send: {frames: [{type: stream, stream_id: 0, data: {hex: "00ff"}}]}
  - request: {save: r}
  - expect_response: {of: r, status: [200]}
  - assert: ["amplification_ratio <= 3"]
  - finally:
      - wait: 0.1
"""


def test_the_fuzz_seed_is_a_good_file(tmp_path: Path) -> None:
    assert len(load(tmp_path, GOOD)) == 2


@given(st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 3),
                          st.sampled_from([*"{}[]:-,'\" \n\t&*!|>#0aZ.", "~", "{p}", "1e999"])),
                min_size=1, max_size=8))
def test_a_mangled_file_is_collected_or_refused_never_a_crash(
        tmp_path_factory: pytest.TempPathFactory,
        edits: list[tuple[int, int, str]]) -> None:
    text = GOOD
    for where, action, char in edits:
        position = where % max(1, len(text))
        if action == 0:
            text = text[:position] + text[position + 1:]
        elif action == 1:
            text = text[:position] + char + text[position:]
        else:
            text = text[:position] + char + text[position + 1:]
    try:
        load(tmp_path_factory.mktemp("fuzz"), text)
    except ScenarioFileError as refused:
        assert refused.errors and all(line.startswith("s.yaml:") for line in refused.errors)


def test_the_schema_names_what_the_harness_builds() -> None:
    """The schema's closed lists are the ones the code acts on."""
    schema = json.loads((SCHEMAS_DIR / "scenario.schema.json").read_text())
    hooks = schema["$defs"]["step"]["properties"]["hook"]["properties"]
    assert tuple(hooks["key_share"]["enum"]) == KEY_SHARES
    assert set(TRANSPORT_PARAMETERS) <= {f.name for f in dataclasses.fields(ConnectionConfig)}


def test_an_expect_any_response_branch_needs_no_connection(tmp_path: Path) -> None:
    """A response branch reads the request's answer, not a connection: only the expect that
    really acts on the unopened main is reported."""
    text = (HEAD + "steps:\n  - connect: {name: a}\n  - request: {conn: a, path: /}\n"
            "  - expect_any: {branches: {ok: {response: {status: [200]}}, x: {close: "
            "{conn: a}}}}\n  - expect: {event: a:b}\n")
    assert problems(tmp_path, text) == [
        "s.yaml:9: $.steps[3].expect: expect acts on connection 'main', which no connect "
        "step opens before it (add a connect step before it)"]
