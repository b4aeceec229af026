"""What the scenarios run against: the in-process reference server (one per test worker,
in a background thread with its own event loop), a server or client the harness starts
from ``--target-cmd``, or a remote deployment (``--target HOST:PORT``); what each claims
to support (``--target-caps``), the sanity handshake (a handshake and ``GET /``) around
every run against a target the harness does not own, and a cap on the scenarios running
at once against one remote target across pytest-xdist workers (flock'ed slot files)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import random
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import h11
import yaml
from cryptography.hazmat.primitives import serialization

from harness.scenario.build import datagram
from harness.schemas import SCHEMAS_DIR
from velocity.aio.client import FallbackError, connect, split_address
from velocity.aio.entropy import OsEntropy
from velocity.aio.server import VelocityServer, serve
from velocity.cli.fetch import key_from_option
from velocity.core.connection import Address, Connection, ConnectionConfig
from velocity.core.endpoint import EndpointConfig
from velocity.core.errors import UsageError
from velocity.core.handshake.client import ClientConfig, PinnedServerKey
from velocity.core.handshake.common import ReplayFilter
from velocity.core.handshake.server import ServerConfig
from velocity.core.hybrid import BALANCED, LIGHT, PROFILES_BY_NAME, SECURE
from velocity.core.seams import PlannedPacket
from velocity.core.streams import MAX_CRYPTO_RANGES, MAX_STREAM_RANGES
from velocity.crypto.aead import cpu_accelerates_aes
from velocity.crypto.identity import ServerIdentity
from velocity.crypto.kem import kem_backend
from velocity.crypto.pki import X509Verifier, load_ca_file
from velocity.crypto.sealing import RetryTokens, ticket_sealer
from velocity.http.app import Application
from velocity.http.h1 import BODY_CHUNK, SMALL_BODY, Request, Response, Route, request
from velocity.http.static import StaticFiles

CAPABILITIES: tuple[str, ...] = tuple(json.loads(
    (SCHEMAS_DIR / "scenario.schema.json").read_text())["$defs"]["capability"]["enum"])
"""The vocabulary of ``requires`` and ``--target-caps``, as the scenario schema has it."""
LIMITS = ("crypto-holes", "stream-holes", "half-open-per-address", "sessions",
          "integrity-limit")
"""The capabilities that carry a value, a bound of the target (``{crypto-holes: 64}`` in
--target-caps): the disjoint ranges of CRYPTO it holds per packet-number space, of STREAM
data per connection (VEL-STR-005), its handshakes in progress from one address
(VEL-CONN-010), its connections (VEL-CONN-005, VEL-CONN-009), the packets failing
authentication it reads before it closes with AEAD_LIMIT_REACHED (VEL-PROT-012: a test
build's lowered limit, the spec's being beyond any run). The in-process target claims the
first two (the reference's); its bound on handshakes is raised for the catalogue
(IN_PROCESS_HALF_OPEN), too high to fill, and it keeps the reference's session and
integrity limits, too high to reach."""
CONSERVATIVE = frozenset({"server", "profile-balanced"})
"""What any Velocity/1 server is assumed to do without a capability file."""
IN_PROCESS = frozenset({"server", "client", "profile-light", "profile-balanced",
                        "profile-secure", "publish-kem", "resumption", "early-data", "api",
                        "key-rotation", "failing-routes", "crypto-holes", "stream-holes",
                        "follows-fallback", "follows-unauthenticated-fallback",
                        "aes-accelerated" if cpu_accelerates_aes() else "aes-in-software"})
IN_PROCESS_LIMITS = {"crypto-holes": MAX_CRYPTO_RANGES, "stream-holes": MAX_STREAM_RANGES}
SANITY_TIMEOUT = 5.0
VN_PATIENCE = 3.0
"""Seconds a --target-cmd server that listens (its port is not refused) but does not answer
Version Negotiation is probed before its sanity handshake is tried without that answer."""
START_TIMEOUT = 20.0
LOOPBACK = "127.0.0.1"
IN_PROCESS_HALF_OPEN = 1024
"""The in-process target's bound on half-open connections per address (VEL-CONN-010; the
reference's default is 32): the whole catalogue reaches it from one address, and every
handshake a scenario fails on purpose holds its slot while it closes (three PTOs, about 3 s
before the server has an RTT sample)."""
IN_PROCESS_SHED_AFTER = 30.0
"""The in-process target's load-shedding bound (VEL-CONN-015; the reference's default is
0.25 s), out of reach: it shares its process, and the GIL, with the harness, so its reads
wait on the harness's own work (a fuzz step's burst), and shedding would drop the
catalogue's Initials as if the server were overloaded."""


class TargetError(Exception):
    """The target cannot be used; the message says why (an INCONCLUSIVE verdict)."""


@dataclass(frozen=True)
class Target:
    kind: str  # "in-process", "command" or "remote"
    label: str  # for reports: what and where
    capabilities: frozenset[str]
    address: Address | None = None  # the server's (for role: client scenarios)
    server_name: str | None = None
    ca_file: Path | None = None
    keys: tuple[PinnedServerKey, ...] = ()  # the server's static keys the harness knows
    previous_keys: tuple[PinnedServerKey, ...] = ()  # keys it replaced, still accepted
    client_command: str | None = None  # for role: server scenarios against a command
    shutdown: Callable[[], None] | None = None  # a graceful stop, for a target the harness runs
    limits: dict[str, int] = field(default_factory=dict)  # the values of LIMITS it claims

    @property
    def owned(self) -> bool:
        """Whether the harness runs the target itself in this process (no sanity checks)."""
        return self.kind == "in-process"

    def missing(self, required: tuple[str, ...]) -> list[str]:
        return [c for c in required if c not in self.capabilities]


def load_capabilities(path: Path) -> tuple[frozenset[str], dict[str, int]]:
    """The capability list in ``path`` (YAML or JSON: a list of names, each of LIMITS as a
    one-entry mapping to its value) and those values; raises UsageError. ``server`` is
    assumed unless the list names ``client`` or ``server``."""
    try:
        value = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else str(exc).splitlines()[0]
        raise UsageError(f"--target-caps {path}: cannot read it: {why}") from None
    items = value if isinstance(value, list) else [None]
    limits = {k: v for item in items if isinstance(item, dict) for k, v in item.items()}
    names = [c for c in items if isinstance(c, str)]
    if len(names) + sum(isinstance(i, dict) and len(i) == 1 for i in items) != len(items):
        raise UsageError(f"--target-caps {path}: give a list of capability names, e.g. "
                         "[profile-balanced, publish-kem, {crypto-holes: 64}]")
    unknown = sorted(set(names) - set(CAPABILITIES) | set(limits) - set(LIMITS))
    if unknown:
        raise UsageError(f"--target-caps {path}: unknown capabilities {', '.join(unknown)}; "
                         f"known: {', '.join(CAPABILITIES)}")
    bad = sorted({*(n for n in names if n in LIMITS), *(k for k, v in limits.items()
                  if not isinstance(v, int) or isinstance(v, bool) or v < 1)})
    if bad:
        raise UsageError(f"--target-caps {path}: {', '.join(bad)} takes a positive count, "
                         f"e.g. {{{bad[0]}: 64}}")
    claims = frozenset(names) | frozenset(limits)
    return (claims if claims & {"client", "server"} else claims | {"server"}), limits


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


ALL_PROFILES = (BALANCED, SECURE, LIGHT)


def answers_version_negotiation(address: Address, timeout: float) -> bool | None:
    """Whether the server at ``address`` answers an Initial of an unknown version within
    ``timeout`` s: a liveness check that leaves no state on it (VEL-VN-001). None when
    nothing listens there yet (the port is refused), False when the probe goes unanswered."""
    probe = datagram({"template": "version_negotiation_probe"}, random.Random())
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(address)  # so that a refusal (ICMP) is reported to this socket
            sock.send(probe)
            sock.recv(65536)
        except ConnectionRefusedError:
            return None
        except OSError:  # no answer in time
            return False
    return True


def sanity_config(target: Target) -> ClientConfig:
    """A plain client for the sanity handshake: PDK with a known key, else discovery with
    the CA file (or, without one, insecure: only liveness is checked)."""
    key = target.keys[0] if target.keys else None
    verifier = (X509Verifier(anchors=load_ca_file(target.ca_file), clock=_now)
                if target.ca_file else X509Verifier(insecure=True, clock=_now))
    # every profile, the default first, so any Velocity/1 server proves alive
    return ClientConfig(kem=kem_backend(), profiles=(key.profile,) if key else ALL_PROFILES,
                        server_name=target.server_name, server_key=key, verifier=verifier)


async def sanity_check(target: Target, timeout: float = SANITY_TIMEOUT) -> str | None:
    """None when the target completes a handshake and answers ``GET /`` (or, claiming
    ``fallback-only``, answers with a FALLBACK directive); else why not."""
    if target.address is None:
        return None  # a client target: there is nothing to call
    host, port = target.address
    try:
        async with asyncio.timeout(timeout):
            config = ConnectionConfig(sanity_config(target))
            async with connect(host, port, config, timeout=timeout) as client:
                stream = await client.open_stream()
                await request(stream, "GET", "/", authority=target.server_name or host)
    except FallbackError as exc:
        if "fallback-only" in target.capabilities:
            return None  # what it claims to do: it answers, with a directive
        return f"the target answered with a FALLBACK directive: {exc}"
    except TimeoutError:
        return f"no handshake and answer to GET / from {host}:{port} within {timeout:g} s"
    except (OSError, ConnectionError, h11.ProtocolError, UsageError) as exc:
        return str(exc) or type(exc).__name__
    return None


FAILING = "/.velocity-harness/fail/"
"""The in-process target's test-only routes (capability ``failing-routes``, VEL-HTTP-014):
``route`` fails while routing, ``answer`` while making the response, ``body`` once the
response has begun; ``connection`` makes the transport fail inside the request's
connection (VEL-ERR-006) as it sends the answer."""


class _Breaking:
    """A response body whose second chunk fails (a disk failing while a file is sent)."""

    def __len__(self) -> int:
        return 2 * BODY_CHUNK

    def chunks(self) -> Iterator[bytes]:
        yield bytes(BODY_CHUNK)
        raise OSError("the harness's failing body")

    def close(self) -> None:
        pass


class _Fault:
    """A packet mutator that raises once, a defect of the transport inside one connection
    (the seam's only use outside the scripted peer: a test build's), then takes itself off."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def __call__(self, packets: list[PlannedPacket]) -> list[PlannedPacket]:
        self.connection.seams.packet_mutator = None
        raise RuntimeError("the harness's failing connection")


def _fail(request: Request) -> Response:
    raise RuntimeError(f"the harness's failing route {request.target}")


class HarnessApplication(Application):
    """The reference application with the harness's failing routes under FAILING: never in
    a production build (only the in-process target runs it)."""

    def route(self, request: Request, connection: Connection | None = None
              ) -> Route | Response:
        where = request.target.removeprefix(FAILING)
        if where == request.target:
            return super().route(request, connection)
        if where == "route":
            return _fail(request)
        if where == "body":
            return Response(200, content=_Breaking())
        if where == "connection" and connection is not None:
            connection.seams.packet_mutator = _Fault(connection)
            return Response(200, body=b"the next packet fails\n")
        return Route(SMALL_BODY, _fail)


class InProcessServer:
    """The reference server (the application ``velocity serve --api`` runs, with the
    harness's failing routes) on 127.0.0.1:0, with a fresh identity per profile (their CAs
    in one CA file, their KEM keys known to the harness) and for each the key it replaced in
    a rotation (VEL-CERT-005: still accepted, never published), in a daemon thread running
    its own event loop."""

    def __init__(self, directory: Path, *, max_sessions: int | None = None,
                 retry: str = "never") -> None:
        self.directory = directory
        self._endpoint: dict[str, Any] = {"retry": retry, **(
            {} if max_sessions is None else {"max_sessions": max_sessions})}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="velocity-in-process-target")
        self._server: VelocityServer | None = None

    def start(self) -> Target:
        now = _now()
        identities = [ServerIdentity.create(p, entropy=OsEntropy(), now=now,
                                            names=("localhost", LOOPBACK))
                      for p in PROFILES_BY_NAME.values()]
        previous = [ServerIdentity.create(i.profile, entropy=OsEntropy(), now=now,
                                          names=("localhost", LOOPBACK),
                                          ca=(i.ca_key, i.ca_certificate)) for i in identities]
        ca_file = self.directory / "ca.pem"
        ca_file.write_bytes(b"".join(i.ca_certificate.public_bytes(serialization.Encoding.PEM)
                                     for i in identities))
        public = self.directory / "public"
        public.mkdir()
        (public / "index.html").write_text("<p>Velocity/1 harness target</p>\n")
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._serve(identities + previous, public),
                                                  self._loop)
        try:
            self._server = future.result(START_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise TargetError(f"cannot start the in-process target: {exc}") from None
        return Target("in-process", f"in-process reference server {_shown(self._server.address)}",
                      IN_PROCESS, address=self._server.address, server_name="localhost",
                      ca_file=ca_file, keys=_pinned(identities), previous_keys=_pinned(previous),
                      limits=IN_PROCESS_LIMITS)

    async def _serve(self, identities: list[ServerIdentity], public: Path) -> VelocityServer:
        """The server holding ``identities``' keys, the current ones first (the first of a
        profile is the one its CERTIFICATE carries)."""
        entropy, kem = OsEntropy(), kem_backend()
        handshake = ServerConfig(kem=kem, static_keys=tuple(i.static_key(kem) for i in identities),
                                 ticket_sealer=ticket_sealer(entropy.random(32)),
                                 replay_filter=ReplayFilter())
        app = HarnessApplication(StaticFiles(public), api=True, clock=_now)
        config = EndpointConfig(ConnectionConfig(handshake),
                                max_half_open_per_address=IN_PROCESS_HALF_OPEN,
                                shed_after=IN_PROCESS_SHED_AFTER, **self._endpoint)
        tokens = None if config.retry == "never" else RetryTokens(entropy.random(16))
        return await serve(LOOPBACK, 0, config, app, entropy=entropy, tokens=tokens)

    def stop(self) -> None:
        """Close every connection with NO_ERROR and stop (once: a second call does nothing)."""
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(TimeoutError, RuntimeError):
                asyncio.run_coroutine_threadsafe(server.close(grace=0.2), self._loop).result(5)
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()


def _pinned(identities: list[ServerIdentity]) -> tuple[PinnedServerKey, ...]:
    return tuple(PinnedServerKey(i.profile, i.encapsulation_key) for i in identities)


def _shown(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def free_udp_port(host: str = LOOPBACK) -> int:
    """A UDP port free right now (another process may take it before the command does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def command_argv(command: str, values: dict[str, str]) -> list[str]:
    """``command`` split as a shell would, with ``{name}`` placeholders filled in each
    word (so a value with spaces stays one argument)."""
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise UsageError(f"--target-cmd {command!r}: {exc}") from None
    if not words:
        raise UsageError("--target-cmd is empty: give the command that starts the target")
    for name, value in values.items():
        words = [w.replace(f"{{{name}}}", value) for w in words]
    return words


class CommandServer:
    """A server started from ``--target-cmd`` with ``{port}`` (and ``{host}``) filled in,
    waited for until it answers a sanity handshake (bounded), stopped at the end; its
    stderr (and stdout) kept in a file for the reports."""

    def __init__(self, command: str, directory: Path, *, capabilities: frozenset[str],
                 ca_file: Path | None, keys: tuple[PinnedServerKey, ...],
                 server_name: str | None) -> None:
        self.command = command
        self.log = directory / "target-cmd.log"
        self._claims = (capabilities, ca_file, keys, server_name)
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = START_TIMEOUT) -> Target:
        port = free_udp_port()
        address = (LOOPBACK, port)
        argv = command_argv(self.command, {"port": str(port), "host": LOOPBACK})
        capabilities, ca_file, keys, server_name = self._claims
        target = Target("command", f"--target-cmd {argv[0]} on {LOOPBACK}:{port}",
                        capabilities, address=address, server_name=server_name,
                        ca_file=ca_file, keys=keys)
        with self.log.open("wb") as log:
            try:
                self._process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                                 stderr=subprocess.STDOUT,
                                                 start_new_session=True)
            except OSError as exc:
                raise TargetError(f"--target-cmd: cannot run {argv[0]!r}: "
                                  f"{exc.strerror or exc}") from None
        deadline = time.monotonic() + timeout
        silent_since: float | None = None  # the first probe that went unanswered, not refused
        while True:
            code = self._process.poll()
            if code is not None:
                raise TargetError(f"--target-cmd exited with status {code} before answering;"
                                  f" its output ends: {self.output_tail()}")
            # a handshake abandoned while the target starts would hold one of the address's
            # half-open slots until the target's handshake timeout (VEL-CONN-010), and a
            # scenario that fills them would find one fewer: a stateless probe first, and
            # the handshake alone for a target that listens and stays silent to it
            # (VEL-VN-001 broken: its Version Negotiation scenarios fail, the others run)
            answered = answers_version_negotiation(address, 0.5)
            if answered is False and silent_since is None:
                silent_since = time.monotonic()
            patient = silent_since is None or time.monotonic() - silent_since < VN_PATIENCE
            reason = (asyncio.run(sanity_check(target)) if answered or not patient
                      else "no Version Negotiation answer")
            if reason is None:
                return target
            if time.monotonic() > deadline:
                self.stop()
                raise TargetError(f"--target-cmd did not answer a Velocity/1 handshake on "
                                  f"{LOOPBACK}:{port} within {timeout:g} s ({reason}); its "
                                  f"output ends: {self.output_tail()}")
            time.sleep(0.2)

    def output_tail(self, lines: int = 8) -> str:
        try:
            text = self.log.read_text(errors="replace").strip()
        except OSError:
            return "(no output)"
        return " | ".join(text.splitlines()[-lines:]) or "(no output)"

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, 5)


def stop_process(process: subprocess.Popen[Any], wait: float) -> None:
    """Terminate ``process`` and wait for it, killing it when it lingers past ``wait``."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(wait)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(wait)


class ConnectionSlots:
    """At most ``limit`` scenario runs at a time against one target, across every process
    of this user on this machine (pytest-xdist workers): a run holds an flock on one of
    ``limit`` slot files named after the target."""

    def __init__(self, target: str, limit: int, directory: Path | None = None) -> None:
        self.limit = limit
        self.target = target
        root = directory or Path(tempfile.gettempdir()) / f"velocity-harness-{os.getuid()}"
        root.mkdir(mode=0o700, exist_ok=True)
        digest = hashlib.sha256(target.encode()).hexdigest()[:16]
        self._paths = [root / f"slot-{digest}-{i}.lock" for i in range(limit)]

    @contextlib.contextmanager
    def hold(self, timeout: float) -> Iterator[None]:
        """Hold a slot for the block; raises TargetError if none frees up in ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for path in self._paths:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    os.close(fd)
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    continue
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    os.close(fd)
                return
            if time.monotonic() > deadline:
                raise TargetError(f"all {self.limit} connection slots to {self.target} stayed "
                                  f"busy for {timeout:g} s (other workers hold them)")
            time.sleep(0.05)


@dataclass(frozen=True)
class TargetOptions:
    """The plugin's target options, checked (``from_values`` raises UsageError)."""

    address: Address | None = None  # --target
    command: str | None = None  # --target-cmd
    capabilities: frozenset[str] | None = None  # --target-caps (None: not given)
    server_name: str | None = None  # --sni
    ca_file: Path | None = None  # --ca
    keys: tuple[PinnedServerKey, ...] = ()  # --kem-b64 / --kem-file
    previous_keys: tuple[PinnedServerKey, ...] = ()  # --kem-previous-file
    limits: dict[str, int] = field(default_factory=dict)  # --target-caps's valued claims
    concurrency: int = 4  # --target-concurrency

    @classmethod
    def from_values(cls, *, target: str | None, command: str | None, caps: Path | None,
                    sni: str | None, ca: Path | None, kem_b64: str | None,
                    kem_file: Path | None, concurrency: int,
                    kem_previous_file: Path | None = None) -> TargetOptions:
        if target is not None and command is not None:
            raise UsageError("give --target HOST:PORT or --target-cmd CMD, not both")
        if concurrency < 1:
            raise UsageError("--target-concurrency takes a number of runs, at least 1")
        if command is not None:
            command_argv(command, {})
        if ca is not None:
            load_ca_file(ca)
        key = key_from_option(kem_b64, kem_file)
        previous = key_from_option(None, kem_previous_file)
        claims, limits = (None, {}) if caps is None else load_capabilities(caps)
        return cls(address=None if target is None else split_address(target, what="--target"),
                   command=command, capabilities=claims, limits=limits,
                   server_name=sni, ca_file=ca, keys=() if key is None else (key,),
                   previous_keys=() if previous is None else (previous,),
                   concurrency=concurrency)


class Targets:
    """The session's target, made on first use (a failure is kept and reported by every
    run), stopped by ``close``."""

    def __init__(self, options: TargetOptions) -> None:
        self.options = options
        self._directory: Path | None = None
        self._target: Target | TargetError | None = None
        self._owned: InProcessServer | CommandServer | None = None
        self._slots: ConnectionSlots | None = None

    def get(self) -> Target:
        if self._target is None:
            try:
                made = self._make()
                self._target = made if self._owned is None else replace(
                    made, shutdown=self._shutdown)
            except TargetError as exc:
                self._target = exc
        if isinstance(self._target, TargetError):
            raise self._target
        return self._target

    def replaced(self, target: Target) -> bool:
        """Whether ``target`` was shut down (a run's ``shutdown`` step) since it was made."""
        return self._target is not target

    def _shutdown(self) -> None:
        """Stop the target the harness runs, gracefully (the in-process server closes every
        connection with NO_ERROR; a command gets SIGTERM); the next run starts a new one."""
        owned, self._owned, self._target = self._owned, None, None
        if owned is not None:
            owned.stop()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    def _make(self) -> Target:
        o = self.options
        if o.address is not None:
            host = o.address[0]
            self._slots = ConnectionSlots(_shown(o.address), o.concurrency)
            return Target("remote", f"remote {_shown(o.address)}",
                          o.capabilities or CONSERVATIVE, address=o.address,
                          server_name=o.server_name or host, ca_file=o.ca_file, keys=o.keys,
                          previous_keys=o.previous_keys, limits=o.limits)
        self._directory = Path(tempfile.mkdtemp(prefix="velocity-target-"))
        if o.command is not None and "client" in (o.capabilities or ()):
            return Target("command", f"--target-cmd client {shlex.split(o.command)[0]}",
                          o.capabilities or CONSERVATIVE, client_command=o.command)
        if o.command is not None:
            self._owned = CommandServer(o.command, self._directory,
                                        capabilities=o.capabilities or CONSERVATIVE,
                                        ca_file=o.ca_file, keys=o.keys, server_name=o.server_name)
            return replace(self._owned.start(), previous_keys=o.previous_keys, limits=o.limits)
        self._owned = InProcessServer(self._directory)
        return self._owned.start()

    @contextlib.contextmanager
    def slot(self, timeout: float) -> Iterator[None]:
        """Hold one of the remote target's run slots for the block (no cap otherwise)."""
        if self._slots is None:
            yield
            return
        with self._slots.hold(timeout):
            yield

    def close(self) -> None:
        if self._owned is not None:
            self._owned.stop()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
