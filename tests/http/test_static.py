"""The static file server over real files and symlinks, through a real server on 127.0.0.1:
every path is judged by its final target (inside the root, nothing hidden), and no
filesystem error escapes as an exception (which would reset the stream)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.http.helpers import get, running
from velocity.aio.client import VelocityClient
from velocity.http.h1 import Response

KEY = "a private key"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "public"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("doc a")
    (root / ".velocity" / "certs").mkdir(parents=True)
    (root / ".velocity" / "certs" / "balanced-kem.key").write_text(KEY)
    (root / ".hidden.txt").write_text(KEY)
    (tmp_path / "outside.txt").write_text(KEY)
    links = {
        "keys": root / ".velocity" / "certs",  # a directory inside the root, but hidden
        "key.txt": root / ".velocity" / "certs" / "balanced-kem.key",
        "public.txt": root / ".hidden.txt",
        "out.txt": tmp_path / "outside.txt",
        "out-dir": tmp_path,
        "loop": root / "loop",
        "ping": root / "pong",
        "pong": root / "ping",
        "dangling.txt": root / "missing.txt",
    }
    for name, target in links.items():
        os.symlink(target, root / name)
    (root / "indexed").mkdir()
    os.symlink(root / ".velocity" / "certs" / "balanced-kem.key",
               root / "indexed" / "index.html")
    return root


async def answers(client: VelocityClient, target: str) -> Response | str:
    """The response, or what happened instead."""
    try:
        return await get(client, target)
    except ConnectionError as exc:
        return f"no response: {exc}"


PATHS = [
    ("/" + "a" * 300, 404),  # ENAMETOOLONG: one component over 255 bytes
    ("/docs/" + "b" * 256 + "/a.txt", 404),
    ("/" + "c/" * 2100, 404),  # the whole path over PATH_MAX
    ("/loop", 404), ("/loop/x", 404), ("/ping", 404),  # ELOOP
    ("/keys/balanced-kem.key", 404),  # a symlink into .velocity/
    ("/key.txt", 404), ("/public.txt", 404),  # symlinks to hidden files
    ("/out.txt", 404), ("/out-dir/outside.txt", 404),  # symlinks out of the root
    ("/dangling.txt", 404), ("/docs/a.txt/x", 404),  # ENOENT, ENOTDIR
    ("/docs%2fa.txt", 400), ("/docs%2Fa.txt", 400), ("/docs%5ca.txt", 400),
    ("/docs%5Ca.txt", 400), ("/docs/a.txt%00", 400), ("/%ff", 400),
]


@pytest.mark.spec("VEL-HTTP-006", "VEL-HTTP-007")
@pytest.mark.parametrize("listing", [False, True])
async def test_every_path_is_judged_by_its_final_target(root: Path, listing: bool) -> None:
    wrong = []
    async with running(root, listing=listing) as client:
        for target, status in PATHS:
            response = await answers(client, target)
            if isinstance(response, str) or response.status != status or (
                    KEY.encode() in response.body or b"balanced-kem" in response.body):
                wrong.append((target[:40], response))
        assert (await get(client, "/docs/a.txt")).body == b"doc a"
    assert not wrong


@pytest.mark.spec("VEL-HTTP-007")
async def test_index_files_and_listings_are_judged_too(root: Path) -> None:
    async with running(root) as client:
        assert (await get(client, "/indexed/")).status == 404  # its index: a key's symlink
    async with running(root, listing=True) as client:
        listing = await get(client, "/indexed/")  # listed instead, the key not read
        assert listing.status == 200 and KEY.encode() not in listing.body
        assert (await get(client, "/keys/")).status == 404  # hidden, through a symlink
        docs = await get(client, "/docs/")
        assert docs.status == 200 and b"a.txt" in docs.body


@pytest.mark.spec("VEL-HTTP-007")
async def test_an_unreadable_file_or_directory_is_not_found(root: Path) -> None:
    (root / "locked.txt").write_text("locked")
    (root / "locked").mkdir()
    (root / "locked" / "index.html").write_text("locked")
    for path in (root / "locked.txt", root / "locked"):
        path.chmod(0)
    try:
        if os.access(root / "locked.txt", os.R_OK):
            pytest.skip("this user (root) may read a file with mode 000")
        async with running(root, listing=True) as client:
            for target in ("/locked.txt", "/locked/", "/locked/index.html"):
                response = await answers(client, target)
                assert not isinstance(response, str) and response.status == 404, target
    finally:
        (root / "locked.txt").chmod(0o600)
        (root / "locked").chmod(0o700)


async def test_a_fifo_is_not_served(root: Path) -> None:
    os.mkfifo(root / "pipe")  # opening it for reading would block the server
    async with running(root) as client:
        assert (await get(client, "/pipe")).status == 404
