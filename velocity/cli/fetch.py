"""``velocity fetch``: GET a URL over Velocity/1, discovering and caching the server's key."""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import re
import sys
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from cryptography import x509
from rich.console import Console
from rich.progress import DownloadColumn, TransferSpeedColumn
from rich.progress import Progress as RichProgress

from velocity.aio.client import FallbackError, resolve, shown, split_address
from velocity.cli.common import option_errors, parse_address, run
from velocity.core.errors import CertificateInvalid, UsageError
from velocity.core.handshake.client import PinnedServerKey
from velocity.core.hybrid import PROFILES_BY_NAME
from velocity.crypto.pki import certificate_kem_key, load_problem
from velocity.easy import AsyncEasyClient, EasyClientConfig, KeyRequired
from velocity.http.h1 import Progress

KEY_SIZES = {p.kem.sizes.encapsulation_key: p for p in PROFILES_BY_NAME.values()}


def key_from_option(kem_b64: str | None, kem_file: Path | None) -> PinnedServerKey | None:
    """A pinned key from --kem-b64 (base64) or --kem-file (a leaf certificate or base64)."""
    if kem_b64 is None and kem_file is None:
        return None
    source = "--kem-b64 is not valid base64; paste the key exactly as published"
    if kem_file is not None:
        try:
            text = kem_file.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {kem_file}: {exc.strerror}") from None
        if b"BEGIN CERTIFICATE" in text:
            return _certificate_key(kem_file, text)
        kem_b64 = text.decode("ascii", errors="replace").strip()
        source = (f"{kem_file} is neither a PEM certificate nor a base64 key; give the "
                  "server's leaf certificate or its published key")
    try:
        raw = base64.b64decode(kem_b64 or "", validate=True)
    except (binascii.Error, ValueError):
        raise UsageError(source) from None
    profile = KEY_SIZES.get(len(raw))
    if profile is None:
        raise UsageError(f"a {len(raw)}-byte key is not an ML-KEM-512/768/1024 encapsulation key")
    return PinnedServerKey(profile, raw)


def _certificate_key(path: Path, pem: bytes) -> PinnedServerKey:
    try:
        params, raw = certificate_kem_key(x509.load_pem_x509_certificate(pem))
    except (ValueError, CertificateInvalid) as exc:
        why = exc.reason if isinstance(exc, CertificateInvalid) else load_problem(exc)
        raise UsageError(f"{path} is not a Velocity leaf certificate ({why}); give the "
                         "server's leaf certificate (e.g. balanced-leaf.pem) or its published "
                         "key") from None
    return PinnedServerKey(next(p for p in KEY_SIZES.values() if p.kem == params), raw)


def request_target(path: str) -> tuple[str | None, str]:
    """PATH as (server name, request target): a path as it is (no name: TARGET's host), or
    an https URL's host (the name the certificate must carry, sent as SNI) and its path and
    query. A port in the URL is not used: the connection goes to TARGET."""
    if path.startswith("/"):
        return None, _checked_target(path, path)
    try:
        url = urllib.parse.urlsplit(path)
        host = url.hostname or ""
    except ValueError as exc:  # e.g. an unclosed or bad [IPv6] host
        raise UsageError(f"PATH {path!r} is not a URL: {exc}") from None
    if not url.scheme or not url.netloc:
        raise UsageError(f"PATH {path!r} is neither a path starting with / nor a URL "
                         "(e.g. https://example.com/index.html)")
    if url.scheme.lower() != "https":
        raise UsageError(f"PATH {path!r}: the scheme must be https")
    if url.username is not None or url.password is not None:
        raise UsageError(f"PATH {path!r} carries credentials; remove the user:password@ part")
    target = (url.path or "/") + (f"?{url.query}" if url.query else "")
    return _server_name(host, path), _checked_target(target, path)


def _checked_target(target: str, given: str) -> str:
    if not target.startswith("/") or any(not "!" <= c <= "~" for c in target):
        raise UsageError(f"PATH {given!r} is not a request path: percent-encode spaces and "
                         "other characters outside printable ASCII (e.g. %20)")
    return target


_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")


def _server_name(host: str, given: str) -> str:
    """A URL's host as a server name: an IP address, or a DNS name in ASCII (IDNA)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        name = host.encode("idna").decode("ascii")
    except UnicodeError:
        name = ""
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label)
                                               for label in name.removesuffix(".").split(".")):
        raise UsageError(f"PATH {given!r}: {host!r} is not a host name")
    return name.removesuffix(".")


PROGRESS_FROM = 1 << 20  # bodies at least this large get a progress bar on a terminal


@contextmanager
def _progress_bar(path: str) -> Iterator[Progress | None]:
    """A rich progress bar on stderr for a large body, when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    with RichProgress(*RichProgress.get_default_columns(), DownloadColumn(),
                      TransferSpeedColumn(), console=Console(stderr=True),
                      transient=True) as bar:
        task = bar.add_task(path, total=None, visible=False)

        def update(received: int, total: int | None) -> None:
            bar.update(task, completed=received, total=total,
                       visible=(total or received) >= PROGRESS_FROM)
        yield update


async def _fetch(config: EasyClientConfig, path: str) -> dict[str, Any]:
    try:
        await resolve(*split_address(config.server_addr))
    except OSError as exc:
        raise UsageError(f"TARGET {config.server_addr}: {exc}; check the host name") from None
    async with AsyncEasyClient(config) as client:
        try:
            with _progress_bar(path) as progress:
                got = await client.fetch(path, progress=progress)
        except KeyRequired:
            raise UsageError(f"{config.server_addr} does not publish its ML-KEM key; supply it "
                             "with --kem-file FILE or --kem-b64 KEY") from None
        except FallbackError as exc:
            directive = exc.directive
            raise UsageError(
                f"the server sends clients elsewhere: {shown(directive.alpn)} at "
                f"{shown(directive.host or client.host)}:{directive.port} "
                f"({shown(directive.reason_text)}"
                f"{', authenticated' if directive.authenticated else ''}); "
                "add --follow-fallback to go there") from None
        result: dict[str, Any] = {"status": got.status, "headers": dict(got.headers),
                                  "body": got.body}
        if got.fallback is not None:
            d = got.fallback
            result["fallback"] = {"alpn": d.alpn, "host": d.host or client.host,
                                  "port": d.port, "reason": d.reason_text,
                                  "authenticated": d.authenticated}
        if got.handshake is not None:
            done = got.handshake
            result["velocity"] = {
                "auth_mode": done.mode.value, "profile": done.profile, "aead": done.aead,
                "key_id": done.key_id.hex() if done.key_id else None,
                "kem_backend": done.kem_backend, "trust": client.trust,
                "key_cached": got.key_cached, "early_data": got.early_data}
        return result


@click.command()
@click.argument("target")
@click.argument("path", default="/")
@click.option("--kem-b64", help="The server's ML-KEM encapsulation key, base64 (PDK mode).")
@click.option("--kem-file", type=click.Path(path_type=Path),
              help="The server's leaf certificate (PEM) or its key in base64.")
@click.option("--ca", type=click.Path(path_type=Path), help="Trust anchors (PEM) for discovery.")
@click.option("--tofu", is_flag=True, help="Trust on first use (the default for discovery).")
@click.option("--insecure", is_flag=True, help="Accept any certificate (testing only).")
@click.option("--no-discover", is_flag=True, help="Only use a given or cached key.")
@click.option("--profile", type=click.Choice(list(PROFILES_BY_NAME)), default="balanced",
              show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the body here.")
@click.option("--json", "as_json", is_flag=True, help="Print what happened as JSON.")
@click.option("--timeout", type=click.FloatRange(0.1), default=10.0, show_default=True)
@click.option("--follow-fallback", is_flag=True,
              help="Follow a FALLBACK directive (same host, or authenticated) over HTTP/3 "
                   "or HTTPS.")
@click.option("--early-data", is_flag=True,
              help="Resume with the session ticket a previous fetch kept and send the GET as "
                   "0-RTT; keep this connection's ticket (0600, in the cache directory).")
def fetch(target: str, path: str, kem_b64: str | None, kem_file: Path | None, ca: Path | None,
          tofu: bool, insecure: bool, no_discover: bool, profile: str, output: Path | None,
          as_json: bool, timeout: float, follow_fallback: bool, early_data: bool) -> None:
    """GET PATH from TARGET (HOST:PORT) over Velocity/1. PATH is a path (/index.html?q) or
    an https:// URL, whose host is then the server name the certificate must carry (sent as
    SNI) while the connection still goes to TARGET."""
    parse_address(target, what="TARGET")
    if sum((ca is not None, tofu, insecure)) > 1:
        raise click.ClickException("choose one of --ca, --tofu and --insecure")
    try:
        hostname, request_path = request_target(path)
        pinned = key_from_option(kem_b64, kem_file)
    except UsageError as exc:
        raise click.ClickException(str(exc)) from None
    config = EasyClientConfig(target, hostname=hostname,
                              server_key_autodiscover=not no_discover,
                              pinned_key=pinned, ca_file=ca, insecure=insecure,
                              profile=profile, follow_fallback=follow_fallback,
                              early_data=early_data, keep_tickets=early_data, timeout=timeout)
    result = run(_fetch(config, request_path))
    body: bytes = result.pop("body")
    if insecure and not as_json:  # --json says so in its "trust" field (VEL-CERT-003)
        click.echo("velocity fetch: --insecure: the server's certificate was not validated; "
                   "anyone on the path could have answered", err=True)
    if output is not None:
        with option_errors("-o", output, "give a file in an existing directory this user "
                           "can write to"):
            output.write_bytes(body)
    if as_json:
        result["bytes"] = len(body)
        result["sha256"] = hashlib.sha256(body).hexdigest()
        click.echo(json.dumps(result, indent=1))
    elif output is None:
        sys.stdout.buffer.write(body)
    if result["status"] >= 400:
        sys.exit(1)
