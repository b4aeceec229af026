"""``velocity serve``: static files (and the JSON API) over Velocity/1."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import signal
import tempfile
from dataclasses import replace
from pathlib import Path

import click

from velocity.aio.entropy import OsEntropy
from velocity.aio.server import KeyRotation, Rotating
from velocity.aio.server import serve as serve_udp
from velocity.cli.common import (
    configure_logs,
    listening,
    option_errors,
    parse_address,
    parse_alpn,
    run,
)
from velocity.cli.keys import OVERLAP
from velocity.core.connection import ConnectionConfig
from velocity.core.endpoint import RETRY_POLICIES, EndpointConfig
from velocity.core.errors import UsageError
from velocity.core.handshake.common import ReplayFilter, StaticKey
from velocity.core.handshake.server import FallbackPolicy, ServerConfig
from velocity.core.hybrid import PROFILES_BY_NAME, profile_named
from velocity.core.kem import KemBackend
from velocity.crypto.identity import (
    ServerIdentity,
    previous_static_key,
    static_key_from_files,
)
from velocity.crypto.kem import BACKENDS, kem_backend
from velocity.crypto.sealing import RetryTokens, RotatingSealer, ticket_sealer
from velocity.http.app import Application
from velocity.http.h1 import DEFAULT_TIMEOUTS, Timeouts
from velocity.http.h3 import ensure_tls_certificate, serve_h3
from velocity.http.static import StaticFiles
from velocity.logs import FORMATS
from velocity.metrics import ServerMetrics, TimedKem


def load_identity(root: Path, profile_name: str, *, self_signed: bool, cert: Path | None,
                  key: Path | None, kem: KemBackend) -> StaticKey:
    if cert is not None or key is not None:
        if cert is None or key is None:
            raise UsageError("give both --cert and --key")
        return static_key_from_files(cert, key, kem)
    if not self_signed:
        raise UsageError("the server needs a key: use --self-signed, or --cert FILE --key FILE")
    profile = profile_named(profile_name)
    directory = root / ".velocity" / "certs"
    if (directory / f"{profile.name}-kem.key").exists():
        return ServerIdentity.load(profile, directory).static_key(kem)
    identity = ServerIdentity.create(profile, entropy=OsEntropy(), names=("localhost",
                                     "127.0.0.1", "::1"), now=dt.datetime.now(dt.UTC))
    identity.save(directory)
    return identity.static_key(kem)


async def _serve(root: Path, listen: str, handshake: ServerConfig, *, api: bool,
                 listing: bool, retry: str, max_sessions: int, max_half_open: int,
                 shed_after: float, handshake_timeout: float, metrics: ServerMetrics | None,
                 h3_listen: str | None, transcripts: Path | None, timeouts: Timeouts) -> None:
    host, port = parse_address(listen, what="--listen")
    entropy = OsEntropy()
    app = Application(StaticFiles(root, listing=listing), api=api, timeouts=timeouts,
                      clock=lambda: dt.datetime.now(dt.UTC))
    origin = None
    if h3_listen is not None:
        h3_host, h3_port = parse_address(h3_listen, what="--h3-listen")
        cert, key = ensure_tls_certificate(root / ".velocity" / "certs",
                                           (h3_host, "localhost", "127.0.0.1"))
        with listening("--h3-listen", h3_listen):
            origin = await serve_h3(h3_host, h3_port, app.route, certificate=cert, key=key)
        bound = origin.address
        click.echo(f"HTTP/3 fallback origin on udp://{bound[0]}:{bound[1]}", err=True)
        if handshake.fallback.port == 0:
            handshake = replace(handshake, fallback=replace(handshake.fallback,
                                                            port=int(bound[1])))
    static_key = handshake.static_keys[0]
    config = EndpointConfig(ConnectionConfig(handshake, handshake_timeout=handshake_timeout),
                            retry=retry, max_sessions=max_sessions,
                            max_half_open_per_address=max_half_open, shed_after=shed_after)
    tokens = RetryTokens(entropy.random(16))
    with listening("--listen", listen):
        server = await serve_udp(host, port, config, app, tokens=tokens, metrics=metrics,
                                 transcripts=transcripts)
    sealers: list[tuple[Rotating, int]] = [(tokens, 16)]
    if isinstance(handshake.ticket_sealer, RotatingSealer):
        sealers.append((handshake.ticket_sealer, 32))
    rotation = KeyRotation(sealers, entropy)
    bound_host, bound_port = server.address
    click.echo(f"serving {root} on udp://{bound_host}:{bound_port} "
               f"(profile {static_key.profile.name}, key id {static_key.key_id.hex()}, "
               f"publishes its key: {'yes' if handshake.publish_key else 'no'})", err=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    rotation.stop()
    await server.close()
    if origin is not None:
        origin.close()


def _finite(_: click.Context, __: click.Parameter, seconds: float) -> float:
    if not math.isfinite(seconds):
        raise click.BadParameter(f"{seconds} is not a number of seconds")
    return seconds


@click.command()
@click.option("--root", type=click.Path(path_type=Path), default=Path("public"),
              show_default=True, help="Directory to serve.")
@click.option("--listen", default="127.0.0.1:4433", show_default=True, help="HOST:PORT (UDP).")
@click.option("--self-signed", is_flag=True,
              help="Create (or reuse) a CA, leaf and ML-KEM key under ROOT/.velocity/certs.")
@click.option("--cert", type=click.Path(path_type=Path), help="Leaf certificate (PEM).")
@click.option("--key", type=click.Path(path_type=Path), help="ML-KEM key file (PEM).")
@click.option("--profile", type=click.Choice(list(PROFILES_BY_NAME)), default="balanced",
              show_default=True)
@click.option("--publish-kem", is_flag=True, help="Send the certificate to discovering clients.")
@click.option("--api", is_flag=True, help="Serve the JSON API under /api/.")
@click.option("--listing", is_flag=True, help="List directories without an index file.")
@click.option("--retry", type=click.Choice(RETRY_POLICIES), default="under-load",
              show_default=True,
              help="Ask clients to prove their address: never, always, or under load (when "
                   "many handshakes wait, or the table is full).")
@click.option("--max-sessions", type=click.IntRange(1), default=10_000, show_default=True)
@click.option("--max-half-open-per-address", "max_half_open", type=click.IntRange(1),
              default=EndpointConfig.max_half_open_per_address, show_default=True,
              help="Handshakes in progress from one IP address; more are refused.")
@click.option("--shed-after", type=click.FloatRange(0, min_open=True), callback=_finite,
              default=EndpointConfig.shed_after, show_default=True,
              help="Seconds a datagram may wait to be read; past that the server is behind "
                   "and starts no new connection (Retry, if the policy allows, else the "
                   "Initial is dropped) until it has caught up.")
@click.option("--handshake-timeout", type=click.FloatRange(0, min_open=True),
              default=ConnectionConfig.handshake_timeout, show_default=True,
              help="Seconds a handshake may take; then the connection is dropped.")
@click.option("--kem-backend", "backend", type=click.Choice(list(BACKENDS)),
              default="cryptography", show_default=True)
@click.option("--alpn", default="velocity/1", show_default=True,
              help="Protocols served over Velocity/1, in preference order; a client that "
                   "offers none of them gets a FALLBACK directive.")
@click.option("--fallback-only", is_flag=True,
              help="Answer every client with a FALLBACK directive.")
@click.option("--fallback-alpn", default="h3", show_default=True)
@click.option("--fallback-host", default="", help="Host in the directive (default: same).")
@click.option("--fallback-port", type=click.IntRange(1, 65535), default=None,
              help="Port in the directive [default: the --h3-listen port, else 443].")
@click.option("--h3-listen", help="HOST:PORT of an embedded HTTP/3 origin (aioquic).")
@click.option("--metrics-listen", help="HOST:PORT for the Prometheus scrape endpoint.")
@click.option("--transcripts", type=click.Path(file_okay=False, path_type=Path),
              help="Write a JSON transcript of every connection into this directory (every "
                   "packet is recorded: for tests and diagnosis, not bulk traffic).")
@click.option("--log-format", type=click.Choice(FORMATS), default="text", show_default=True,
              help="Log lines on stderr; levels come from VELOCITY_LOG (default: warning).")
@click.option("--header-timeout", type=click.FloatRange(0, min_open=True), callback=_finite,
              default=DEFAULT_TIMEOUTS.header, show_default=True,
              help="Seconds a request's head may take to arrive; then 408.")
@click.option("--body-timeout", type=click.FloatRange(0, min_open=True), callback=_finite,
              default=DEFAULT_TIMEOUTS.body, show_default=True,
              help="Seconds a request's body may take to arrive after its head; then 408.")
def serve(root: Path, listen: str, self_signed: bool, cert: Path | None, key: Path | None,
          profile: str, publish_kem: bool, api: bool, listing: bool, retry: str,
          max_sessions: int, max_half_open: int, shed_after: float, handshake_timeout: float,
          backend: str, alpn: str, fallback_only: bool, fallback_alpn: str,
          fallback_host: str, fallback_port: int | None, h3_listen: str | None,
          metrics_listen: str | None, transcripts: Path | None, log_format: str,
          header_timeout: float, body_timeout: float) -> None:
    """Serve ROOT over Velocity/1."""
    parse_address(listen, what="--listen")
    served = parse_alpn(alpn)
    configure_logs(log_format)
    metrics = ServerMetrics() if metrics_listen else None
    kem: KemBackend = kem_backend(backend) if metrics is None else TimedKem(
        kem_backend(backend), metrics)
    try:
        StaticFiles(root)  # before anything is created under ROOT
        static_key = load_identity(root, profile, self_signed=self_signed, cert=cert, key=key,
                                   kem=kem)
        previous = previous_static_key(static_key.profile, root / ".velocity" / "certs", kem,
                                       now=dt.datetime.now(dt.UTC), overlap=OVERLAP)
    except UsageError as exc:
        raise click.ClickException(str(exc)) from None
    if transcripts is not None:
        with option_errors("--transcripts", transcripts,
                           "give a directory this user can create and write in"):
            transcripts.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=transcripts).close()  # writable: found out now
    if metrics is not None and metrics_listen is not None:
        with listening("--metrics-listen", metrics_listen):
            bound = metrics.serve(*parse_address(metrics_listen, what="--metrics-listen"))
        click.echo(f"metrics on http://{bound[0]}:{bound[1]}/metrics", err=True)
    port = fallback_port or (0 if h3_listen else 443)  # 0: the origin's port, once bound
    fallback = FallbackPolicy(fallback_alpn.encode(), fallback_host, port,
                              "fallback-only" if fallback_only else "off")
    keys = (static_key,) if previous is None else (static_key, previous)
    # it takes the profiles it holds a key for: one it cannot authenticate in would end
    # in a misleading KEM_KEY_REQUIRED instead of a HELLO_RETRY to one it can
    handshake = ServerConfig(kem=kem, static_keys=keys, publish_key=publish_kem,
                             profiles=tuple(dict.fromkeys(k.profile for k in keys)),
                             ticket_sealer=ticket_sealer(OsEntropy().random(32)),
                             replay_filter=ReplayFilter(), fallback=fallback, alpn=served)
    run(_serve(root, listen, handshake, api=api, listing=listing, retry=retry,
               max_sessions=max_sessions, max_half_open=max_half_open, shed_after=shed_after,
               handshake_timeout=handshake_timeout, metrics=metrics, h3_listen=h3_listen,
               transcripts=transcripts, timeouts=Timeouts(header_timeout, body_timeout)))
