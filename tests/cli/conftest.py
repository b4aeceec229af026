"""Fixtures for the CLI tests: a private key cache per test and a small site to serve."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "VELOCITY_CACHE_DIR": str(tmp_path / "cache")}


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "public"
    root.mkdir()
    for name, size in (("small.txt", 100), ("medium.bin", 200_000), ("large.bin", 2_000_000)):
        (root / name).write_bytes(hashlib.shake_256(name.encode()).digest(size))
    return root
