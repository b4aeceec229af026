"""``velocity keys show|rotate|forget``: the server's static ML-KEM keys under ROOT/.velocity,
and what ``velocity fetch`` keeps about a server (its pin, key and ticket)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import click

from velocity.aio.entropy import OsEntropy
from velocity.cli.common import parse_address
from velocity.core.errors import UsageError
from velocity.core.hybrid import PROFILES_BY_NAME, profile_named
from velocity.crypto.identity import ServerIdentity, previous_static_key, rotate_identity
from velocity.crypto.kem import kem_backend
from velocity.crypto.keyring import DEFAULT_OVERLAP_MS
from velocity.keystore import forget as forget_server

OVERLAP = dt.timedelta(milliseconds=DEFAULT_OVERLAP_MS)


def certs_dir(root: Path) -> Path:
    return root / ".velocity" / "certs"


@click.group()
def keys() -> None:
    """Show or rotate the server's static ML-KEM key; forget a server's pin."""


_root = click.option("--root", type=click.Path(path_type=Path), default=Path("public"),
                     show_default=True, help="The served directory (keys in ROOT/.velocity).")
_profile = click.option("--profile", type=click.Choice(list(PROFILES_BY_NAME)),
                        default="balanced", show_default=True)


@keys.command()
@_root
@_profile
@click.option("--json", "as_json", is_flag=True)
def show(root: Path, profile: str, as_json: bool) -> None:
    """The current key (and the previous one while its overlap lasts)."""
    try:
        identity = ServerIdentity.load(profile_named(profile), certs_dir(root))
        previous = previous_static_key(profile_named(profile), certs_dir(root), kem_backend(),
                                       now=dt.datetime.now(dt.UTC), overlap=OVERLAP)
    except UsageError as exc:
        made = (certs_dir(root) / f"{profile}-kem.key").exists()
        raise click.ClickException(f"{exc}" if made else f"{exc}; create keys with "
                                   "'velocity serve --self-signed'") from None
    info = {"profile": profile, "key_id": identity.key_id.hex(),
            "fingerprint": identity.fingerprint,
            "encapsulation_key_b64": base64.b64encode(identity.encapsulation_key).decode(),
            "leaf": str(certs_dir(root) / f"{profile}-leaf.pem"),
            "previous_key_id": previous.key_id.hex() if previous else None}
    if as_json:
        click.echo(json.dumps(info, indent=1))
        return
    for name, value in info.items():
        click.echo(f"{name}: {value}")


@keys.command()
@_root
@_profile
@click.option("--no-overlap", is_flag=True,
              help="Stop accepting the previous key at once (clients must rediscover).")
def rotate(root: Path, profile: str, no_overlap: bool) -> None:
    """Replace the static key; the previous one stays accepted for 7 days."""
    try:
        previous, new = rotate_identity(profile_named(profile), certs_dir(root),
                                        entropy=OsEntropy(), now=dt.datetime.now(dt.UTC),
                                        keep_previous=not no_overlap)
    except (UsageError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"rotated {profile}: key id {previous.key_id.hex()} -> {new.key_id.hex()}"
               f"{'' if no_overlap else ' (previous accepted for 7 days)'}; restart the server")


@keys.command()
@click.argument("server")
def forget(server: str) -> None:
    """Forget what fetch keeps about SERVER (HOST:PORT): its trust-on-first-use pin, its
    cached key and session ticket. The next fetch trusts the key it is shown."""
    host, port = parse_address(server, what="SERVER")
    try:
        gone = forget_server(host, port)
    except (UsageError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"forgot {server}: removed {', '.join(str(p) for p in gone)}" if gone
               else f"nothing was kept for {server}")
