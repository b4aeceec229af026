"""The soak's plot (``bench.reliability soak --plot``): RSS and the connection table over the
run as an SVG document, and a folder that is not there refused before the run starts."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from bench.reliability import soak_plot


def test_the_soak_plot_is_an_svg_of_the_samples() -> None:
    points = [(i * 30.0, 60_000 + min(i, 8) * 1_000, 10 + i % 5) for i in range(60)]
    svg = soak_plot(points, 61_000, 68_000, 60)
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    assert "RSS (MB)" in svg and "connections in the table" in svg and "baseline" in svg


def test_a_plot_in_a_missing_folder_is_refused_at_once(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "bench.reliability", "soak", "--short",
                           "--plot", str(tmp_path / "absent" / "soak.svg")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "no folder" in done.stderr and "Traceback" not in done.stderr
