"""The pytest plugin's collection, run in a pytester session: scenario files become one item
per document and parameter combination, tags become markers, a bad file is one collection
error that lists every problem as FILE:LINE: $.path: message, and ``-p no:velocity`` turns
the plugin off."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.targets import load_capabilities
from tests.harness.sessions import quiet_inner_sessions, write
from velocity.core.errors import UsageError

pytest_plugins = ["pytester"]
__all__ = ["quiet_inner_sessions"]  # an autouse fixture

GOOD = """\
id: demo/plain
title: A plain scenario
spec: [VEL-HS-001]
tags: [smoke, handshake]
role: client
steps:
  - wait: 0
---
id: demo/matrix
title: "Profile {profile} with {aead}"
spec: [VEL-AUTH-012]
tags: [full]
role: client
parametrize:
  profile: [light, balanced]
  aead: [AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305]
steps:
  - wait: 0
"""


def test_one_item_per_document_and_parameter_combination(pytester: pytest.Pytester) -> None:
    write(pytester, "scenarios/demo/good.yaml", GOOD)
    result = pytester.runpytest("--collect-only", "-q", "scenarios")
    result.assert_outcomes()
    ids = [line for line in result.outlines if "::" in line]
    assert ids == ["scenarios/demo/good.yaml::demo/plain", *(
        f"scenarios/demo/good.yaml::demo/matrix[profile={p}-aead={a}]"
        for p in ("light", "balanced")
        for a in ("AES_128_GCM", "AES_256_GCM", "CHACHA20_POLY1305"))]


def test_tags_and_roles_are_registered_markers(pytester: pytest.Pytester) -> None:
    write(pytester, "scenarios/demo/good.yaml", GOOD)
    smoke = pytester.runpytest("--collect-only", "-q", "--strict-markers", "-m", "smoke",
                               "scenarios")
    assert [line for line in smoke.outlines if "::" in line] == [
        "scenarios/demo/good.yaml::demo/plain"]
    roles = pytester.runpytest("--collect-only", "-q", "--strict-markers", "-m",
                               "role_client and full", "scenarios")
    assert len([line for line in roles.outlines if "::" in line]) == 6
    markers = pytester.runpytest("--markers")
    for marker in ("smoke:", "fuzz:", "interop:", "perf:", "regression:", "role_server:",
                   "amplification:", "spec(*ids)"):
        assert any(marker in line for line in markers.outlines), marker


def test_the_plugin_can_be_turned_off(pytester: pytest.Pytester) -> None:
    write(pytester, "scenarios/demo/good.yaml", GOOD)
    result = pytester.runpytest("--collect-only", "-q", "-p", "no:velocity", "scenarios")
    assert not [line for line in result.outlines if "::" in line]
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_yaml_outside_a_scenarios_directory_is_left_alone(pytester: pytest.Pytester) -> None:
    write(pytester, "deploy/config.yaml", "not: [a, scenario\n")
    result = pytester.runpytest("--collect-only", "-q", "deploy")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED


BAD = """\
id: demo/bad
title: Several problems
spec: [VEL-HS-001, VEL-XX-999]
tags: [smoke, nonsense]
role: client
budget: {timeout: -1}
steps:
  - conect: {}
  - expect: {event: quic:packet_received, within: "soon"}
  - assert: "__import__('os').system('true')"
  - expect_close: {codes: [NOT_A_CODE]}
"""


def test_a_bad_file_reports_every_problem_with_its_line(pytester: pytest.Pytester) -> None:
    write(pytester, "scenarios/demo/bad.yaml", BAD)
    result = pytester.runpytest("-q", "scenarios")
    result.assert_outcomes(errors=1)
    text = result.stdout.str()
    for expected in (
            "scenarios/demo/bad.yaml:3: $.spec[1]: VEL-XX-999 is not a requirement",
            "scenarios/demo/bad.yaml:4: $.tags[1]: 'nonsense' is not a known tag",
            "scenarios/demo/bad.yaml:6: $.budget.timeout: -1 is less than or equal to",
            "scenarios/demo/bad.yaml:8: $.steps[0].conect: unknown step 'conect'",
            "scenarios/demo/bad.yaml:9: $.steps[1].expect.within: 'soon' is not of type",
            "scenarios/demo/bad.yaml:10: $.steps[2].assert: \"__import__('os').system('true')\""
            ": only len, min, max, all, any may be called",
            "scenarios/demo/bad.yaml:11: $.steps[3].expect_close.codes[0]: NOT_A_CODE is not "
            "an error of the spec's registry"):
        assert expected in text, expected
    assert "Traceback" not in text


def test_a_yaml_syntax_error_names_its_file_and_line(pytester: pytest.Pytester) -> None:
    write(pytester, "scenarios/demo/broken.yaml", GOOD + "---\nid: x\n  title: [oops\n")
    result = pytester.runpytest("-q", "scenarios")
    result.assert_outcomes(errors=1)
    assert "scenarios/demo/broken.yaml:21: YAML syntax error:" in result.stdout.str()
    assert "Traceback" not in result.stdout.str()


def test_an_id_used_by_two_files_is_an_error(pytester: pytest.Pytester) -> None:
    write(pytester, "scenarios/a/one.yaml", GOOD)
    write(pytester, "scenarios/b/two.yaml", GOOD.split("---", maxsplit=1)[0])
    result = pytester.runpytest("--collect-only", "-q", "scenarios")
    assert ("scenarios/b/two.yaml:1: $.id: duplicate id 'demo/plain' (also in "
            "scenarios/a/one.yaml:1)") in result.stdout.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED


def test_a_whole_string_placeholder_takes_the_parameters_type(pytester: pytest.Pytester
                                                              ) -> None:
    write(pytester, "scenarios/demo/typed.yaml", """\
        id: demo/typed
        title: "waits {seconds} s"
        spec: [VEL-HS-001]
        role: client
        parametrize:
          seconds: [0, 0.01]
        steps:
          - wait: "{seconds}"
          - assert: "{seconds} < 1"
        """)
    result = pytester.runpytest("-q", "scenarios")
    result.assert_outcomes(passed=2)


def test_a_bad_option_is_one_usage_line(pytester: pytest.Pytester) -> None:
    write(pytester, "scenarios/demo/good.yaml", GOOD)
    result = pytester.runpytest("scenarios", "--target", "nowhere")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--target 'nowhere' is not HOST:PORT" in result.stderr.str()
    assert "Traceback" not in result.stderr.str()


def test_a_capability_file_claims_bounds_with_their_values(tmp_path: Path) -> None:
    caps = tmp_path / "caps.yaml"
    caps.write_text("[profile-secure, {crypto-holes: 64}, {stream-holes: 1000}]\n")
    claims, limits = load_capabilities(caps)
    assert claims == {"server", "profile-secure", "crypto-holes", "stream-holes"}
    assert limits == {"crypto-holes": 64, "stream-holes": 1000}
    for text, says in [("[crypto-holes]", "crypto-holes takes a positive count"),
                       ("[{stream-holes: 0}]", "stream-holes takes a positive count"),
                       ("[{crypto-holes: 1, stream-holes: 2}]", "give a list"),
                       ("[{tables: 3}]", "unknown capabilities tables"),
                       ("crypto-holes", "give a list")]:
        caps.write_text(text)
        with pytest.raises(UsageError, match=says):
            load_capabilities(caps)
