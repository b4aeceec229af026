"""Root fixtures shared by every test directory: the shared vectors folder and hypothesis
profiles. The conformance plugin itself lives in ``harness/``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent

settings.register_profile("default", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=20000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def shared_vectors() -> Path:
    """The public known-answer vectors in ../shared/vectors (or $VELOCITY_SHARED_VECTORS).

    Tests that need them skip, saying so, when the folder is absent."""
    path = Path(os.environ.get("VELOCITY_SHARED_VECTORS", ROOT.parent / "shared" / "vectors"))
    if not (path / "README.md").is_file():
        pytest.skip(f"public vectors folder {path} not found; primitive known-answer checks "
                    "were not run")
    return path
