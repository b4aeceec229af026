"""Range headers (VEL-HTTP-013): one byte range, its positions of any length (Python's int()
refuses strings of more than 4300 digits), answered 206 with the bytes it selects or 416
when it selects none, never a reset stream or a traceback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.http.helpers import get, running
from velocity.http.static import byte_range

NINES = "9" * 5000
SIZE = 10


@pytest.mark.spec("VEL-HTTP-013")
@pytest.mark.parametrize(("header", "selected"), [
    ("bytes=0-0", (0, 1)), ("bytes=3-", (3, SIZE)), ("bytes=3-5", (3, 6)),
    ("bytes=3-999", (3, SIZE)), ("bytes=-3", (SIZE - 3, SIZE)), ("bytes=-999", (0, SIZE)),
    (" bytes=2-4 ", (2, 5)), ("bytes=" + "0" * 5000 + "7-", (7, SIZE)),
    (f"bytes=0-{NINES}", (0, SIZE)), (f"bytes=-{NINES}", (0, SIZE)),
    (f"bytes={NINES}-", None), (f"bytes={NINES}-{NINES}", None), (f"bytes={SIZE}-", None),
    ("bytes=-0", None), ("bytes=5-2", None), ("bytes=-", None), ("bytes=", None),
    ("bytes=0-1,3-4", None), ("items=0-1", None), ("bytes=\u0663-", None),  # Arabic 3
    ("bytes=0x1-2", None), ("bytes=+1-2", None), ("bytes=1-2\n", (1, 3)),
])
def test_a_range_selects_its_bytes_or_none(header: str, selected: tuple[int, int] | None
                                           ) -> None:
    assert byte_range(header, SIZE) == selected


@pytest.mark.spec("VEL-HTTP-013")
def test_nothing_is_selected_of_an_empty_file() -> None:
    assert [byte_range(h, 0) for h in ("bytes=0-", "bytes=-1", "bytes=0-0")] == [None] * 3


@pytest.mark.spec("VEL-HTTP-013")
async def test_ranges_of_any_length_are_answered(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "public"
    root.mkdir()
    data = bytes(range(100))
    (root / "page.bin").write_bytes(data)
    async with running(root) as client:
        for first in (NINES, "100", "0" * 5000 + "100"):
            past = await get(client, "/page.bin", headers=[("range", f"bytes={first}-")])
            assert past.status == 416 and past.header("content-range") == "bytes */100"
        whole = await get(client, "/page.bin", headers=[("range", f"bytes=-{NINES}")])
        assert whole.status == 206 and whole.body == data
        assert whole.header("content-range") == "bytes 0-99/100"
        tail = await get(client, "/page.bin", headers=[("range", f"bytes=90-{NINES}")])
        assert tail.status == 206 and tail.body == data[90:]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
