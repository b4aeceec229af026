"""EasyClient: GET and POST over Velocity/1 in a few lines. It discovers and caches the
server's ML-KEM key (PDK on later connections), rediscovers when the server rotates it,
reuses one connection for many requests, and follows a FALLBACK directive to HTTP/3 (aioquic)
or HTTPS (httpx) when the server sends one.

    with EasyClient(EasyClientConfig.builder("127.0.0.1:4433").insecure().build()) as client:
        print(client.fetch_text("/index.html"))
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from velocity.aio import runner
from velocity.aio.client import (
    FallbackError,
    HandshakeError,
    VelocityClient,
    connect,
    shown,
    split_address,
)
from velocity.core.connection import ConnectionConfig
from velocity.core.errors import ErrorCode, UsageError
from velocity.core.events import TicketReceived
from velocity.core.handshake.client import ClientConfig, PinnedServerKey
from velocity.core.handshake.common import FallbackDirected, HandshakeCompleted
from velocity.core.hybrid import PROFILES_BY_NAME, profile_named
from velocity.crypto.aead import client_aeads
from velocity.crypto.kem import kem_backend
from velocity.crypto.pki import X509Verifier, fingerprint, load_ca_file
from velocity.http.h1 import Progress, Response, request
from velocity.http.h3 import H3Client
from velocity.keystore import CachedKey, KeyCache, StoredTicket, TicketCache, TofuPins

FALLBACK_ALPNS = ("h3", "h2", "http/1.1")
MAX_DIRECTIVE_LIFETIME = 24 * 3600.0  # seconds an authenticated directive is kept at most
TICKET_WAIT = 1.0  # seconds a closing client that keeps tickets waits for one
"""What the client offers besides velocity/1, and so the only places it follows a FALLBACK
directive to (VEL-FB-006)."""


class KeyRequired(UsageError):
    """The server does not publish its ML-KEM key and none was supplied."""


class KeyChanged(UsageError):
    """STALE_KEM_KEY for a key this client may not replace by itself (VEL-FB-009)."""


class DowngradeRefused(HandshakeError):
    """An unauthenticated or wrong FALLBACK from an origin this client knows speaks
    Velocity/1 (VEL-FB-008): a possible attack, never followed."""

    def __init__(self, error: HandshakeError, origin: str, cache: Path) -> None:
        super().__init__(error.terminated)
        self.args = (f"{origin} answered with a FALLBACK directive this client cannot "
                     f"authenticate, although it knows {origin} speaks Velocity/1 (possible "
                     f"downgrade attack; not followed). If its operator retired Velocity/1, "
                     f"forget the origin: velocity keys forget {origin} (cache: {cache})",)


@dataclass(frozen=True)
class EasyClientConfig:
    """Where to connect and how far to trust. ``server_addr`` is ``HOST:PORT``; trust is a CA
    file, ``insecure``, or (by default) trust on first use of the published certificate.
    With ``early_data`` a new connection resumes with the last session ticket and sends a GET
    as 0-RTT; ``keep_tickets`` keeps that ticket in the cache directory (0600) so that a
    later process resumes too."""

    server_addr: str
    hostname: str | None = None
    server_key_autodiscover: bool = True
    key_cache_dir: Path | None = None
    pinned_key: PinnedServerKey | None = None
    ca_file: Path | None = None
    insecure: bool = False
    profile: str = "balanced"
    follow_fallback: bool = True
    early_data: bool = True
    keep_tickets: bool = False
    timeout: float = 10.0

    @staticmethod
    def builder(server_addr: str) -> EasyClientConfigBuilder:
        return EasyClientConfigBuilder(EasyClientConfig(server_addr))


@dataclass
class EasyClientConfigBuilder:
    """Fluent construction of an ``EasyClientConfig``; every method returns the builder."""

    config: EasyClientConfig

    def _set(self, **changes: Any) -> EasyClientConfigBuilder:
        self.config = replace(self.config, **changes)
        return self

    def hostname(self, name: str) -> EasyClientConfigBuilder:
        return self._set(hostname=name)

    def pinned_key(self, key: PinnedServerKey) -> EasyClientConfigBuilder:
        return self._set(pinned_key=key)

    def autodiscover(self, enabled: bool = True) -> EasyClientConfigBuilder:
        return self._set(server_key_autodiscover=enabled)

    def key_cache(self, directory: Path) -> EasyClientConfigBuilder:
        return self._set(key_cache_dir=directory)

    def trust_ca(self, ca_file: Path) -> EasyClientConfigBuilder:
        return self._set(ca_file=ca_file, insecure=False)

    def insecure(self) -> EasyClientConfigBuilder:
        return self._set(insecure=True, ca_file=None)

    def profile(self, name: str) -> EasyClientConfigBuilder:
        return self._set(profile=name)

    def follow_fallback(self, enabled: bool = True) -> EasyClientConfigBuilder:
        return self._set(follow_fallback=enabled)

    def early_data(self, enabled: bool = True) -> EasyClientConfigBuilder:
        return self._set(early_data=enabled)

    def keep_tickets(self, enabled: bool = True) -> EasyClientConfigBuilder:
        return self._set(keep_tickets=enabled)

    def timeout(self, seconds: float) -> EasyClientConfigBuilder:
        return self._set(timeout=seconds)

    def build(self) -> EasyClientConfig:
        return self.config


class PinAfterFinished:
    """The client's trust-on-first-use store: a first-use pin is written only once that
    connection's server FINISHED verified (the server proved it holds the key), never for a
    handshake that failed after the certificate (VEL-CERT-003)."""

    def __init__(self, pins: TofuPins) -> None:
        self._pins = pins
        self._pending: dict[str, str] = {}

    def pinned(self, name: str) -> str | None:
        return self._pending.get(name) or self._pins.pinned(name)

    def pin(self, name: str, digest: str) -> None:
        self._pending[name] = digest

    def clearing(self, name: str) -> str:
        return self._pins.clearing(name)

    def commit(self) -> None:
        for name, digest in self._pending.items():
            self._pins.pin(name, digest)
        self._pending.clear()

    def discard(self) -> None:
        self._pending.clear()


@dataclass(frozen=True)
class Fetched:
    """One response and how it travelled: over Velocity/1 (``handshake`` set) or through a
    fallback (``fallback`` set, ``via`` its ALPN)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    via: str
    handshake: HandshakeCompleted | None = None
    fallback: FallbackDirected | None = None
    key_cached: bool = False
    early_data: bool = False

    def text(self) -> str:
        return self.body.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Session:
    client: VelocityClient
    stack: AsyncExitStack
    key_cached: bool
    early_response: asyncio.Task[Response] | None = None  # the GET sent as 0-RTT
    early_stream: int | None = None


@dataclass(frozen=True)
class _EarlyGet:
    """The GET a resumed connection sends as 0-RTT."""

    path: str
    headers: list[tuple[str, str]] | None
    progress: Progress | None


class AsyncEasyClient:
    """The asyncio form; ``async with AsyncEasyClient(config) as client: ...``."""

    def __init__(self, config: EasyClientConfig) -> None:
        self.config = config
        self.host, self.port = split_address(config.server_addr, what="server_addr")
        self.profile = profile_named(config.profile)
        self._cache = KeyCache(config.key_cache_dir)
        self._tickets = TicketCache(config.key_cache_dir) if config.keep_tickets else None
        self._pins = (PinAfterFinished(TofuPins(config.key_cache_dir, port=self.port))
                      if config.ca_file is None and not config.insecure else None)
        self._resumed = False  # whether the last attempt offered a ticket
        self._server_name = config.hostname or self.host  # what certificates are checked for
        self._pin_name = self._server_name  # what the verifier pins under
        self._verifier = self._make_verifier()
        self._trust_id = self._make_trust_id()
        self._session: _Session | None = None
        self._connecting = asyncio.Lock()  # concurrent first requests share one handshake
        # an authenticated directive this client follows until the loop time given
        # (VEL-FB-012, at most a day: VEL-FB-013); an unauthenticated one is followed for one
        # request, never kept
        self._directive: tuple[FallbackDirected, float] | None = None
        self._resumption: tuple[TicketReceived, bytes] | None = None  # ticket, token; used once
        self._h3: H3Client | None = None  # the fallback connection, reused across fetches
        self._https: httpx.AsyncClient | None = None

    def _make_verifier(self) -> X509Verifier:
        def clock() -> dt.datetime:
            return dt.datetime.now(dt.UTC)
        if self.config.ca_file is not None:
            return X509Verifier(anchors=load_ca_file(self.config.ca_file), clock=clock)
        if self.config.insecure:
            return X509Verifier(insecure=True, clock=clock)
        assert self._pins is not None
        return X509Verifier(tofu=self._pins, clock=clock)

    def _make_trust_id(self) -> str:
        """What admitted a learned key: a key cached under one trust (or for one name) is not
        used under another, so no cached key skips the current trust's validation."""
        if self.config.ca_file is not None:
            anchors = self.config.ca_file.read_bytes()
            return "ca:" + hashlib.sha256(anchors).hexdigest()[:16]
        return "insecure" if self.config.insecure else "tofu"

    def _admits(self, trust: str) -> bool:
        """Whether a key learned under ``trust`` is good enough for this client: any for
        insecure mode, a CA-validated one for trust on first use, otherwise the same trust."""
        mine = self._trust_id
        return mine in ("insecure", trust) or (mine == "tofu" and trust.startswith("ca:"))

    @property
    def authority(self) -> str:
        """The Host of requests: the server name when one is given (a URL's host), else
        HOST:PORT."""
        return self.config.hostname or f"{self.host}:{self.port}"

    @property
    def trust(self) -> str:
        return "ca" if self.config.ca_file else "insecure" if self.config.insecure else "tofu"

    async def __aenter__(self) -> AsyncEasyClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _close_fallback(self) -> None:
        h3, https, self._h3, self._https = self._h3, self._https, None, None
        if h3 is not None:
            await h3.close()
        if https is not None:
            await https.aclose()

    async def close(self) -> None:
        await self._close_fallback()
        await self._close_session()

    async def _close_session(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            if self._tickets is not None and not session.client.tickets:
                # a resumed GET's answer can beat our FINISHED, and so the ticket the server
                # issues on it: without this wait every second fetch is a full handshake
                await session.client.wait_ticket(min(TICKET_WAIT, self.config.timeout))
            if session.client.tickets:
                self._resumption = (session.client.tickets[-1], session.client.new_token or b"")
                if self._tickets is not None:
                    self._store_ticket(*self._resumption)
            await session.stack.aclose()

    def _store_ticket(self, received: TicketReceived, token: bytes) -> None:
        """Write the ticket with its issue time on the wall clock (its age must survive the
        process; the handshake counts on the loop's clock)."""
        assert self._tickets is not None
        age = asyncio.get_running_loop().time() - received.ticket.issued_ms / 1000
        self._tickets.put(self.host, self.port, StoredTicket.keep(
            received, token, issued_unix=time.time() - age))

    def _take_ticket(self) -> tuple[TicketReceived, bytes] | None:
        """The last ticket (used once): this client's, else one a previous process stored,
        unless it has outlived its lifetime."""
        resumption, self._resumption = self._resumption, None
        if self._tickets is None:
            return resumption
        stored = self._tickets.take(self.host, self.port)  # consumed either way
        if resumption is not None or stored is None:
            return resumption
        age = time.time() - stored.issued_unix
        if not 0 <= age < stored.lifetime:
            return None
        issued = asyncio.get_running_loop().time() - age
        return stored.restore(issued_ms=int(issued * 1000))

    async def fetch(self, path: str = "/", *, method: str = "GET",
                    headers: list[tuple[str, str]] | None = None, body: bytes = b"",
                    progress: Progress | None = None) -> Fetched:
        """One request; ``progress`` hears of the response body as it arrives over Velocity/1
        (bytes so far, content-length or None). Raises FallbackError when the server directs
        elsewhere and following is off, UsageError when no key is known and discovery is off
        or refused, and ConnectionError/TimeoutError/OSError for the network."""
        directive = self._kept_directive()
        if directive is None:
            try:
                return await self._over_velocity(path, method, headers, body, progress)
            except FallbackError as exc:
                if not self.config.follow_fallback:
                    raise
                directive = exc.directive
                self._keep_directive(directive)
        return await self._follow(directive, path, method, headers, body)

    def _kept_directive(self) -> FallbackDirected | None:
        if self._directive is not None:
            directive, until = self._directive
            if asyncio.get_running_loop().time() < until:
                return directive
            self._directive = None  # its retry_after is over: try Velocity/1 again
        return None

    def _keep_directive(self, directive: FallbackDirected) -> None:
        """Keep an authenticated directive for its retry_after (0: this client's life, at
        most a day); an unauthenticated one only served the request that met it."""
        if directive.authenticated:
            keep = directive.retry_after or MAX_DIRECTIVE_LIFETIME
            self._directive = (directive, asyncio.get_running_loop().time()
                               + min(keep, MAX_DIRECTIVE_LIFETIME))

    async def fetch_text(self, path: str = "/") -> str:
        return (await self.fetch(path)).text()

    async def fetch_json(self, path: str = "/", *, payload: Any = None) -> Any:
        if payload is None:
            return (await self.fetch(path)).json()
        return (await self.fetch(path, method="POST", body=json.dumps(payload).encode(),
                                 headers=[("content-type", "application/json")])).json()

    async def _over_velocity(self, path: str, method: str,
                             headers: list[tuple[str, str]] | None, body: bytes,
                             progress: Progress | None) -> Fetched:
        async with self._connecting:
            reused = (self._session is not None
                      and self._session.client.router.terminated is None)
            if not reused:
                await self._close_session()
                early = (method, body) == ("GET", b"") and self.config.early_data
                self._session = await self._connect(
                    _EarlyGet(path, headers, progress) if early else None)
            session = self._session
            assert session is not None
            pending, session.early_response = session.early_response, None
        try:
            if pending is not None:
                response = await pending
            else:
                response = await request(await session.client.open_stream(), method, path,
                                         authority=self.authority,
                                         headers=headers, body=body, progress=progress)
        except ConnectionError:
            await self._close_session()
            if not reused:
                raise
            return await self._over_velocity(path, method, headers, body,
                                             progress)  # reconnect once
        # a discovery client's request left with its FINISHED; the response is readable only
        # once the server's FINISHED verified, so this returns at once
        handshake = await session.client.wait_handshake()
        self._remember(session)
        return Fetched(response.status, response.headers, response.body, "velocity/1",
                       handshake=handshake, key_cached=session.key_cached,
                       early_data=pending is not None and session.early_stream is not None
                       and session.client.connection.sent_early(session.early_stream))

    def _client_config(self) -> ClientConfig:
        pinned = self.config.pinned_key
        if pinned is None:
            cached = self._cache.get(self.host, self.port)
            if cached is not None and cached.server_name == self._server_name and (
                    self._admits(cached.trust)):
                pinned = PinnedServerKey(PROFILES_BY_NAME[cached.profile], cached.raw_key)
        if pinned is None and not self.config.server_key_autodiscover:
            raise UsageError(f"no key for {self.host}:{self.port}; supply the server's key or "
                             "allow discovery")
        return ClientConfig(kem=kem_backend(), profiles=(self.profile,), aeads=client_aeads(),
                            server_name=self._server_name, server_key=pinned,
                            verifier=self._verifier, known_origin=self._knows_origin(),
                            alpn=(b"velocity/1", *(a.encode() for a in FALLBACK_ALPNS)))

    def _knows_origin(self) -> bool:
        """VEL-FB-008: a pinned or cached key or a trust-on-first-use pin for this origin
        (a ticket counts too: the handshake knows when it offers one)."""
        return (self.config.pinned_key is not None
                or self._cache.get(self.host, self.port) is not None
                or (self._pins is not None and self._pins.pinned(self._pin_name) is not None))

    async def _connect(self, early_get: _EarlyGet | None) -> _Session:
        """A new connection; with ``early_get`` it resumes with the last ticket and sends
        that GET as 0-RTT."""
        config = self._client_config()
        try:
            return await self._retrying(config, early_get)
        except HandshakeError as exc:
            if exc.error_code == ErrorCode.DOWNGRADE_DETECTED:
                raise DowngradeRefused(exc, f"{self.host}:{self.port}",
                                       self._cache.directory.parent) from None
            if exc.error_code == ErrorCode.KEM_KEY_REQUIRED and config.server_key is None:
                raise KeyRequired(f"{self.host}:{self.port} does not publish its ML-KEM key; "
                                  "supply it (EasyClientConfig.pinned_key)") from None
            raise

    async def _retrying(self, config: ClientConfig, early_get: _EarlyGet | None) -> _Session:
        """One attempt, and the one retry an unauthenticated answer allows (VEL-FB-009):
        after STALE_KEM_KEY a rediscovery under the trust that admitted the key; after a
        refused resumption (an unauthenticated FALLBACK or KEM_KEY_REQUIRED: the server
        could not open the ticket) the same origin in PDK mode, whose answer is MACed."""
        try:
            return await self._open(config, early_get)
        except HandshakeError as exc:
            resumed = self._resumed
            if exc.error_code == ErrorCode.STALE_KEM_KEY and self.config.server_key_autodiscover:
                self._may_rediscover()
                # the cached key is replaced only by one this handshake validates, and the
                # origin stays known, so no unauthenticated FALLBACK is followed meanwhile
                return await self._open(replace(config, server_key=None, known_origin=True),
                                        None)
            if resumed and config.server_key is not None and exc.error_code in (
                    ErrorCode.DOWNGRADE_DETECTED, ErrorCode.KEM_KEY_REQUIRED):
                return await self._open(config, None)
            raise

    def _may_rediscover(self) -> None:
        """STALE_KEM_KEY may start a rediscovery only where the same trust can judge its
        answer: not for a key the user gave, nor one learned under another trust."""
        origin = f"{self.host}:{self.port}"
        if self.config.pinned_key is not None:
            raise KeyChanged(f"{origin} does not know the key it was given (STALE_KEM_KEY); "
                             "give its current key, or allow discovery without a pinned key")
        cached = self._cache.get(self.host, self.port)
        if cached is not None and cached.trust != self._trust_id:
            raise KeyChanged(f"{origin} says the key this client keeps for it is stale "
                             f"(STALE_KEM_KEY); that key was admitted under {cached.trust}, "
                             f"not {self._trust_id}: fetch with that trust, or forget it: "
                             f"velocity keys forget {origin}")

    async def _open(self, config: ClientConfig, early_get: _EarlyGet | None) -> _Session:
        connection_config = ConnectionConfig(config)
        resume = self._take_ticket() if early_get is not None else None
        self._resumed = resume is not None
        if resume is not None:
            received, token = resume
            connection_config = ConnectionConfig(
                replace(config, ticket=received.ticket, early_data=True),
                remembered_transport_parameters=received.transport_parameters, token=token)
        else:
            early_get = None
        stack = AsyncExitStack()
        pending: asyncio.Task[Response] | None = None
        early_stream: int | None = None
        try:
            client = await stack.enter_async_context(connect(
                self.host, self.port, connection_config, timeout=self.config.timeout,
                early=early_get is not None))
            if early_get is not None:
                stream = await client.open_stream()
                early_stream = stream.stream_id
                pending = asyncio.ensure_future(request(
                    stream, "GET", early_get.path, authority=self.authority,
                    headers=early_get.headers, progress=early_get.progress))
                try:
                    await asyncio.wait_for(client.wait_handshake(), self.config.timeout)
                except TimeoutError:
                    raise TimeoutError(f"no Velocity/1 handshake with {self.host}:{self.port} "
                                       f"within {self.config.timeout:g} s") from None
        except BaseException:
            if pending is not None:
                pending.cancel()
            await stack.aclose()
            if self._pins is not None:
                self._pins.discard()
            raise
        return _Session(client, stack, key_cached=client.learned_key is not None,
                        early_response=pending, early_stream=early_stream)

    def _remember(self, session: _Session) -> None:
        """Once the server's FINISHED verified (it holds the key): cache a key learned in
        discovery, keep a first-use pin (VEL-HS-101, VEL-AUTH-022)."""
        learned, session.client.learned_key = session.client.learned_key, None
        if self._pins is not None:
            self._pins.commit()
        if learned is None:
            return
        self._cache.put(self.host, self.port, CachedKey(
            next(p.name for p in PROFILES_BY_NAME.values() if p.code == learned.profile),
            learned.key_id.hex(), base64.b64encode(learned.encapsulation_key).decode(),
            fingerprint(learned.certificate_chain[0]), self._server_name, self._trust_id))

    async def _follow(self, directive: FallbackDirected, path: str, method: str,
                      headers: list[tuple[str, str]] | None, body: bytes) -> Fetched:
        """Where a FALLBACK directive points: only the same host unless the directive was
        authenticated by the server's key (VEL-FB-005), and only to a protocol this client
        offered (VEL-FB-006)."""
        host = directive.host or self.host
        if host != self.host and not directive.authenticated:
            raise UsageError(f"not following an unauthenticated directive to another host "
                             f"({shown(host)}); fetch from it directly if you trust it")
        if directive.alpn not in FALLBACK_ALPNS:
            raise UsageError(f"cannot follow a directive to {shown(directive.alpn)}: this client "
                             f"offered only velocity/1, {', '.join(FALLBACK_ALPNS)}")
        if directive.alpn == "h3":
            if self._h3 is None or self._h3.closed:
                await self._close_fallback()
                self._h3 = await H3Client(host, directive.port, verify=not self.config.insecure,
                                          timeout=self.config.timeout).__aenter__()
            response = await self._h3.request(method, path, headers=headers, body=body)
        else:
            if self._https is None:
                self._https = httpx.AsyncClient(verify=not self.config.insecure,
                                                timeout=self.config.timeout)
            reply = await self._https.request(method, f"https://{host}:{directive.port}{path}",
                                              headers=headers, content=body)
            response = Response(reply.status_code, list(reply.headers.items()), reply.content)
        return Fetched(response.status, response.headers, response.body, directive.alpn,
                       fallback=directive)


class EasyClient:
    """The blocking form: the same client on its own event loop, kept between calls so that
    one connection serves many requests. ``with EasyClient(config) as client: ...``."""

    def __init__(self, config: EasyClientConfig) -> None:
        self._runner = runner()
        self._client = AsyncEasyClient(config)

    def __enter__(self) -> EasyClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._runner.run(self._client.close())
        self._runner.close()

    def fetch(self, path: str = "/", *, method: str = "GET",
              headers: list[tuple[str, str]] | None = None, body: bytes = b"",
              progress: Progress | None = None) -> Fetched:
        return self._runner.run(self._client.fetch(path, method=method, headers=headers,
                                                   body=body, progress=progress))

    def fetch_text(self, path: str = "/") -> str:
        return self._runner.run(self._client.fetch_text(path))

    def fetch_json(self, path: str = "/", *, payload: Any = None) -> Any:
        return self._runner.run(self._client.fetch_json(path, payload=payload))
