"""What the plugin's pytester tests share: scenario files written into the inner session's
directory, and an autouse fixture that keeps the inner sessions' start-up warnings (every
installed plugin loads there) out of the outer report. The harness is imported here, in
the outer process: pytester forgets after each inline session the modules it imported, and
cryptography's bindings do not survive being imported twice."""

from __future__ import annotations

import textwrap

import pytest

import harness.collect  # noqa: F401  (see above)


@pytest.fixture(autouse=True)
def quiet_inner_sessions(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n"
                     "filterwarnings = ignore::pytest.PytestAssertRewriteWarning\n")


def write(pytester: pytest.Pytester, path: str, text: str) -> None:
    target = pytester.path / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(textwrap.dedent(text))
