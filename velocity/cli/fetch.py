"""``velocity fetch``: GET a URL over Velocity/1, discovering and caching the server's key."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import sys
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import httpx
from cryptography import x509

from velocity.aio.client import FallbackError, HandshakeError, VelocityClient, connect
from velocity.cli.common import parse_address, run
from velocity.core.connection import ConnectionConfig
from velocity.core.errors import ErrorCode, UsageError
from velocity.core.handshake.client import ClientConfig, PinnedServerKey
from velocity.core.handshake.common import FallbackDirected
from velocity.core.hybrid import PROFILES_BY_NAME, Profile
from velocity.crypto.kem import kem_backend
from velocity.crypto.pki import X509Verifier, certificate_kem_key, fingerprint, load_ca_file
from velocity.http.h1 import Response, request
from velocity.http.h3 import fetch_h3
from velocity.keystore import CachedKey, KeyCache, TofuPins

KEY_SIZES = {p.kem.sizes.encapsulation_key: p for p in PROFILES_BY_NAME.values()}


async def follow(directive: FallbackDirected, target: str, path: str, *, insecure: bool,
                 timeout: float) -> dict[str, Any]:
    """Fetch where a FALLBACK directive points: only to the same host unless the directive
    was authenticated by the server's key (VEL-FB-005), and only over HTTP/3 or HTTPS."""
    origin_host = target.rpartition(":")[0]
    host = directive.host or origin_host
    if host != origin_host and not directive.authenticated:
        raise UsageError(f"not following an unauthenticated directive to another host "
                         f"({host}); fetch from it directly if you trust it")
    if directive.alpn == "h3":
        response = await fetch_h3(host, directive.port, path, verify=not insecure,
                                  timeout=timeout)
    elif directive.alpn in ("http/1.1", "h2"):
        async with httpx.AsyncClient(verify=not insecure, timeout=timeout) as client:
            reply = await client.get(f"https://{host}:{directive.port}{path}")
        response = Response(reply.status_code, list(reply.headers.items()), reply.content)
    else:
        raise UsageError(f"cannot follow a directive to {directive.alpn}")
    return {"status": response.status, "headers": dict(response.headers),
            "body": response.body,
            "fallback": {"alpn": directive.alpn, "host": host, "port": directive.port,
                         "reason": directive.reason_text,
                         "authenticated": directive.authenticated}}


async def _fetch_or_follow(attempt: Coroutine[Any, Any, dict[str, Any]], target: str,
                           path: str, *, follow_fallback: bool, insecure: bool,
                           timeout: float) -> dict[str, Any]:
    try:
        return await attempt
    except FallbackError as exc:
        directive = exc.directive
        if not follow_fallback:
            host = directive.host or target.rpartition(":")[0]
            raise UsageError(
                f"the server sends clients elsewhere: {directive.alpn} at {host}:"
                f"{directive.port} ({directive.reason_text}"
                f"{', authenticated' if directive.authenticated else ''}); "
                "add --follow-fallback to go there") from None
        return await follow(directive, target, path, insecure=insecure, timeout=timeout)


def key_from_option(kem_b64: str | None, kem_file: Path | None) -> PinnedServerKey | None:
    """A pinned key from --kem-b64 (base64) or --kem-file (a leaf certificate or base64)."""
    if kem_b64 is None and kem_file is None:
        return None
    if kem_file is not None:
        try:
            text = kem_file.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {kem_file}: {exc.strerror}") from None
        if b"BEGIN CERTIFICATE" in text:
            params, raw = certificate_kem_key(x509.load_pem_x509_certificate(text))
            return PinnedServerKey(next(p for p in KEY_SIZES.values() if p.kem == params), raw)
        kem_b64 = text.decode("ascii", errors="replace").strip()
    try:
        raw = base64.b64decode(kem_b64 or "", validate=True)
    except (binascii.Error, ValueError):
        raise UsageError("--kem-b64 is not valid base64; paste the key exactly as "
                         "published") from None
    profile = KEY_SIZES.get(len(raw))
    if profile is None:
        raise UsageError(f"a {len(raw)}-byte key is not an ML-KEM-512/768/1024 encapsulation key")
    return PinnedServerKey(profile, raw)


def _verifier(ca: Path | None, tofu: bool, insecure: bool) -> tuple[X509Verifier, str]:
    chosen = sum((ca is not None, tofu, insecure))
    if chosen > 1:
        raise UsageError("choose one of --ca, --tofu and --insecure")
    def clock() -> dt.datetime:
        return dt.datetime.now(dt.UTC)
    if ca is not None:
        return X509Verifier(anchors=load_ca_file(ca), clock=clock), "ca"
    if insecure:
        return X509Verifier(insecure=True, clock=clock), "insecure"
    return X509Verifier(tofu=TofuPins(), clock=clock), "tofu"


async def _attempt(host: str, port: int, config: ClientConfig, path: str,
                   timeout: float) -> tuple[VelocityClient, Any]:
    async with connect(host, port, ConnectionConfig(config), timeout=timeout) as client:
        response = await request(await client.open_stream(), "GET", path,
                                 authority=f"{host}:{port}")
        return client, response


async def _fetch(target: str, path: str, pinned: PinnedServerKey | None, profile: Profile,
                 trust: tuple[X509Verifier, str], discover: bool,
                 timeout: float) -> dict[str, Any]:
    host, port = parse_address(target, what="TARGET")
    cache = KeyCache()
    cached = cache.get(host, port) if pinned is None else None
    if cached is not None:
        pinned = PinnedServerKey(PROFILES_BY_NAME[cached.profile], cached.raw_key)
    if pinned is None and not discover:
        raise UsageError(f"no key for {host}:{port}; supply --kem-file or --kem-b64, or "
                         "allow discovery")
    config = ClientConfig(kem=kem_backend(), profiles=(profile,), server_name=host,
                          server_key=pinned, verifier=trust[0],
                          alpn=(b"velocity/1", b"h3"))
    try:
        client, response = await _attempt(host, port, config, path, timeout)
    except HandshakeError as exc:
        if exc.error_code == ErrorCode.STALE_KEM_KEY and discover:
            cache.drop(host, port)  # the server rotated its key: rediscover once
            client, response = await _attempt(host, port, replace(config, server_key=None),
                                              path, timeout)
        elif exc.error_code == ErrorCode.KEM_KEY_REQUIRED:
            raise UsageError(f"{host}:{port} does not publish its ML-KEM key; supply it with "
                             "--kem-file FILE or --kem-b64 KEY") from None
        else:
            raise
    learned = client.learned_key
    if learned is not None:
        cache.put(host, port, CachedKey(
            next(p.name for p in PROFILES_BY_NAME.values() if p.code == learned.profile),
            learned.key_id.hex(), base64.b64encode(learned.encapsulation_key).decode(),
            fingerprint(learned.certificate_chain[0])))
    done = client.completed
    assert done is not None  # connect() returns only after the handshake
    return {"status": response.status, "headers": dict(response.headers),
            "body": response.body,
            "velocity": {"auth_mode": done.mode.value, "profile": done.profile,
                         "aead": done.aead, "key_id": done.key_id.hex() if done.key_id else None,
                         "kem_backend": done.kem_backend, "trust": trust[1],
                         "key_cached": learned is not None}}


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
def fetch(target: str, path: str, kem_b64: str | None, kem_file: Path | None, ca: Path | None,
          tofu: bool, insecure: bool, no_discover: bool, profile: str, output: Path | None,
          as_json: bool, timeout: float, follow_fallback: bool) -> None:
    """GET PATH from TARGET (HOST:PORT) over Velocity/1."""
    parse_address(target, what="TARGET")
    try:
        pinned = key_from_option(kem_b64, kem_file)
        trust = _verifier(ca, tofu, insecure)
    except UsageError as exc:
        raise click.ClickException(str(exc)) from None
    result = run(_fetch_or_follow(
        _fetch(target, path, pinned, PROFILES_BY_NAME[profile], trust, not no_discover, timeout),
        target, path, follow_fallback=follow_fallback, insecure=insecure, timeout=timeout))
    body: bytes = result.pop("body")
    if output is not None:
        output.write_bytes(body)
    if as_json:
        result["bytes"] = len(body)
        result["sha256"] = hashlib.sha256(body).hexdigest()
        click.echo(json.dumps(result, indent=1))
    elif output is None:
        sys.stdout.buffer.write(body)
    if result["status"] >= 400:
        sys.exit(1)
