"""Role: server scenarios, where the harness is the server and the target a client. Each
``connect`` starts the scripted peer as a server (harness.peer.ServerPeer) on 127.0.0.1:0
with an identity generated for the run and the options' policy (profiles, key
publication, FALLBACK and its MAC, a stale key or a certificate the client must refuse),
then the target client against it: the reference AsyncEasyClient as a task of the run's
loop (the in-process target), or ``--target-cmd`` with ``{port}``, ``{host}``, ``{ca}``,
``{kem_b64}``, ``{kem_file}`` and ``{cache}`` filled in. The fallback port of the
directive is a decoy listener that must hear nothing (``expect_no_contact``). The server
may misbehave (harness.peer.misbehaving: HELLO_RETRY, tickets, Retry, Version
Negotiation); ``run_client`` runs the client again against a connect's server with the
same private cache (resumption, 0-RTT, trust on first use), and a connect that
``replaces`` another takes its port and the client's cache (a key rotated or changed)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import re
import shutil
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from cryptography.hazmat.primitives.serialization import Encoding

from harness.peer import ServerPeer
from harness.peer.misbehaving import StatelessAnswers, chain, hello_retry_hook, sealer_for
from harness.scenario.build import install_hooks
from harness.scenario.context import Conn, Run, StepFailed, StepUnsupported
from harness.scenario.model import Step
from harness.targets import LOOPBACK, command_argv
from velocity.core.connection import Connection, ConnectionConfig
from velocity.core.endpoint import EndpointConfig
from velocity.core.handshake.client import PinnedServerKey
from velocity.core.handshake.common import ReplayFilter, TicketSealer
from velocity.core.handshake.messages import Fallback, Message
from velocity.core.handshake.server import FallbackPolicy, ServerConfig
from velocity.core.hybrid import PROFILES_BY_NAME, Profile
from velocity.core.protection import Aead
from velocity.crypto.identity import ServerIdentity
from velocity.crypto.kem import kem_backend
from velocity.crypto.sealing import RetryTokens, ticket_sealer
from velocity.easy import AsyncEasyClient, EasyClientConfig
from velocity.http.app import Application
from velocity.http.static import StaticFiles

CONNECT_WAIT = 5.0  # seconds connect waits for the client's first connection (timeout)
COMMAND_START = 10.0  # seconds more for a command client, which starts a process first
CLIENT_RUN = 10.0  # seconds a client run may take
CLIENT_STOP = 2.0  # seconds a stopped command client has to exit before it is killed
CONTACT_WAIT = 3.0  # seconds expect_contact waits for the decoy to hear the client
TICKET_LIFETIME = 43200  # seconds, the reference server's (ServerConfig.ticket_lifetime)
ClientResult = tuple[int, str, str]  # exit code, stdout, stderr


class Decoy(asyncio.DatagramProtocol):
    """A UDP listener on the directive's fallback port: counts what reaches it."""

    def __init__(self) -> None:
        self.received = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.received += 1


@dataclass
class Served:
    """One connect step's server, a client run against it (the connect's, or a
    ``run_client``'s: ``owner`` False, the server is the connect's), and the fallback decoy."""

    server: ServerPeer
    client: asyncio.Task[ClientResult]
    decoy: Decoy
    fallback_port: int
    directory: Path
    files: dict[str, str]
    identity: ServerIdentity
    pinned: PinnedServerKey | None
    trust: str
    owner: bool = True
    closed: bool = False
    contacts_before: int = 0  # what the decoy had heard when this client run began

    @property
    def contacts(self) -> int:
        """Datagrams on the fallback port since this client run began."""
        return self.decoy.received - self.contacts_before

    async def stop_client(self) -> None:
        """Stop the client run (a command gets SIGTERM, then SIGKILL after CLIENT_STOP)."""
        self.client.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.client

    async def stop(self) -> None:
        """Stop the client run and the server; the files stay (a replacement uses them)."""
        await self.stop_client()
        if self.owner and not self.closed:
            self.closed = True
            await self.server.close(grace=0.2)

    async def close(self) -> None:
        await self.stop()
        if self.owner:
            if self.decoy.transport is not None:
                self.decoy.transport.close()
            shutil.rmtree(self.directory, ignore_errors=True)


def _identity(run: Run, profile: Profile, name: str, certificate: str,
              ca: ServerIdentity | None = None) -> ServerIdentity:
    """A new key and leaf, under a new CA or ``ca``'s."""
    now = dt.datetime.now(dt.UTC)
    if certificate == "expired":
        now -= dt.timedelta(days=30)
    names = ("wrong-name.invalid",) if certificate == "wrong_name" else ("localhost", LOOPBACK)
    return ServerIdentity.create(profile, entropy=run.entropy(f"{name}/{certificate}"),
                                 names=names, now=now, leaf_days=1 if certificate == "expired"
                                 else 90, ca=(ca.ca_key, ca.ca_certificate) if ca else None)


def _files(directory: Path, identity: ServerIdentity, trusted: ServerIdentity,
           known: ServerIdentity) -> dict[str, str]:
    """The placeholders a client command takes: the CA it trusts, the key it knows."""
    ca, leaf, cache = directory / "ca.pem", directory / "leaf.pem", directory / "cache"
    ca.write_bytes(trusted.ca_certificate.public_bytes(Encoding.PEM))
    leaf.write_bytes(known.leaf.public_bytes(Encoding.PEM))
    cache.mkdir(mode=0o700)
    return {"ca": str(ca), "kem_file": str(leaf), "cache": str(cache),
            "kem_b64": base64.b64encode(known.encapsulation_key).decode(),
            "host": LOOPBACK}


def _fallback_hook(mac: str) -> Callable[[Message], Message | None]:
    """The server's FALLBACK with its MAC as sent (valid), removed or corrupted."""
    def hook(message: Message) -> Message | None:
        if not isinstance(message, Fallback) or mac == "valid":
            return message
        forged = b"" if mac == "none" else bytes(b ^ 0x5A for b in message.mac) or b"\x00"
        return dataclasses.replace(message, mac=forged)
    return hook


async def _decoy(port: int | None) -> tuple[Decoy, int]:
    decoy = Decoy()
    loop = asyncio.get_running_loop()
    try:
        await loop.create_datagram_endpoint(lambda: decoy, local_addr=(LOOPBACK, port or 0),
                                            family=socket.AF_INET)
    except OSError as exc:
        raise StepUnsupported(f"cannot listen on the fallback port {port}: {exc}") from None
    transport = cast(asyncio.DatagramTransport, decoy.transport)
    return decoy, int(transport.get_extra_info("sockname")[1])


async def connect(run: Run, step: Step) -> Conn:
    options: dict[str, Any] = step.options or {}
    command = run.target.client_command
    if options.get("client_key") == "pinned" and command is not None and not any(
            p in command for p in ("{kem_b64}", "{kem_file}")):
        raise StepUnsupported("client_key: pinned gives a command client the server's key "
                              "through {kem_b64} or {kem_file}, and this command has neither")
    name = options.get("name", "main")
    profiles = tuple(PROFILES_BY_NAME[p] for p in options.get("profiles", ["balanced"]))
    certificate = options.get("certificate", "valid")
    replaced = run.served[options["replaces"]] if "replaces" in options else None
    identity = _identity(run, profiles[0], name, certificate, replaced.identity if replaced
                         and certificate != "other_ca" else None)
    stale = bool(options.get("stale_key"))
    other = (_identity(run, profiles[0], name, "other") if stale or certificate == "other_ca"
             else identity)
    fallback = options.get("fallback", {})
    decoy, port = await _decoy(fallback.get("port"))
    directory = Path(tempfile.mkdtemp(prefix="velocity-served-"))
    files = _files(directory, identity, other if certificate == "other_ca" else identity,
                   other if stale else identity)
    if replaced is not None:  # the new server takes its port, the client keeps its cache
        files["cache"] = replaced.files["cache"]
        await replaced.stop()
    server = _listen(run, name, options, identity, port, directory,
                     int(replaced.files["port"]) if replaced else 0)
    files["port"] = str(server.address[1])
    pinned = (PinnedServerKey(profiles[0], (other if stale else identity).encapsulation_key)
              if options.get("client_key") == "pinned" or stale else None)
    trust = _trust(run, options.get("trust", "ca"))
    client = run.loop.create_task(_client(run, files, profiles[0], pinned, trust))
    served = Served(server, client, decoy, port, directory, files, identity, pinned, trust)
    run.served[name] = served
    if options.get("wait") == "none":  # nothing may reach the endpoint: read the wire
        server.wire.transcript.start = run.harness.start
        conn = run.connections[name] = Conn(name, server.wire, server.address)
    else:
        conn = await _first_connection(run, name, served, _connect_wait(run, options))
    run.note("serve", {"conn": name, "at": f"{LOOPBACK}:{server.address[1]}",
                       "fallback_port": port, "certificate": certificate})
    return conn


def _connect_wait(run: Run, options: dict[str, Any]) -> float:
    """How long a client run may take to open its first connection (``timeout``)."""
    start = COMMAND_START if run.target.client_command is not None else 0.0
    return float(options.get("timeout", CONNECT_WAIT)) + start


def _trust(run: Run, trust: str) -> str:
    if trust != "ca" and run.target.client_command is not None:
        raise StepUnsupported(f"trust: {trust} is the in-process client's; a command "
                              "client's trust mode is the command's own")
    return trust


def _listen(run: Run, name: str, options: dict[str, Any], identity: ServerIdentity,
            fallback_port: int, directory: Path, port: int) -> ServerPeer:
    config = _server_config(run, name, options, identity, fallback_port)
    public = directory / "public"
    public.mkdir()
    (public / "index.html").write_text("velocity harness server\n")
    app = Application(StaticFiles(public), api=True, clock=lambda: dt.datetime.now(dt.UTC))
    retry = options.get("retry")
    always = retry in ("valid", "twice")
    server = ServerPeer.listen(
        EndpointConfig(ConnectionConfig(config), retry="always" if always else "never"), app,
        host=LOOPBACK, port=port, entropy=run.entropy(name),
        tokens=RetryTokens(run.entropy(f"{name}/retry").random(16)) if always else None)
    server.keep_payloads = run.keeps_payloads
    hello_retry = options.get("hello_retry")
    retried = hello_retry_hook(
        PROFILES_BY_NAME[hello_retry.get("profile", identity.profile.name)].code,
        hello_retry.get("count", 1)) if hello_retry else None
    server.configure = _configure(options.get("hooks", {}),
                                  options.get("fallback", {}).get("mac", "valid"), retried)
    if retry not in (None, "valid") or "version_negotiation" in options:
        server.answer = StatelessAnswers(
            server.send_raw, run.entropy(f"{name}/answers"), retry=retry,
            version_negotiation=options.get("version_negotiation"))
    return server


async def _first_connection(run: Run, name: str, served: Served, timeout: float, *,
                            index: int = 0) -> Conn:
    """The connection the client opened to ``served``'s server (its ``index``-th)."""
    allowed, _ = run.budget.wait(timeout, run.now())
    view = await served.server.wait_connection(allowed, index=index)
    if view is None:
        result = await _result(served, 0.1)
        raise StepFailed(f"the target client did not connect within {allowed:g} s",
                         expected="a connection to the harness's server",
                         actual=_describe(result) if result else "no connection")
    view.transcript.start = run.harness.start
    conn = run.connections[name] = Conn(name, view, served.server.address)
    return conn


async def run_client(run: Run, step: Step) -> None:
    """Run the target client again against the server of connect ``conn``, with the same
    cache; its first new connection is ``name``."""
    first = served(run, step)
    name = step.options["name"]
    method = step.get("method", "GET")
    if method != "GET" and run.target.client_command is not None:
        raise StepUnsupported(f"a command client fetches with GET, not {method}")
    for earlier in run.served.values():  # one client run at a time: it ends, as a user's
        if earlier.server is first.server and not earlier.client.done():
            await earlier.stop_client()
    index = len(first.server.views)
    client = run.loop.create_task(_client(run, first.files, first.identity.profile, first.pinned,
                                          first.trust, early_data=step.get("early_data", False),
                                          method=method))
    again = run.served[name] = dataclasses.replace(first, client=client, owner=False,
                                                   contacts_before=first.decoy.received)
    await _first_connection(run, name, again, _connect_wait(run, step.options), index=index)
    run.note("run_client", {"conn": name, "of": step.get("conn", "main"), "method": method})


def _server_config(run: Run, name: str, options: dict[str, Any], identity: ServerIdentity,
                   fallback_port: int) -> ServerConfig:
    kem = kem_backend()
    fallback = options.get("fallback", {})
    return ServerConfig(
        kem=kem, static_keys=(identity.static_key(kem),), profiles=(identity.profile,),
        aeads=tuple(Aead[a] for a in options.get("aeads", [a.name for a in Aead])),
        publish_key=options.get("publish_key", True) and not options.get("kem_key_required"),
        fallback=FallbackPolicy(fallback.get("alpn", "h3").encode(), fallback.get("host", ""),
                                fallback_port, fallback.get("mode", "off"),
                                fallback.get("retry_after", 0)),
        ticket_sealer=_tickets(run, name, options.get("ticket", "valid")),
        replay_filter=ReplayFilter(), ticket_lifetime=TICKET_LIFETIME,
        alpn=tuple(a.encode() for a in options.get("alpn", ["velocity/1"])))


def _tickets(run: Run, name: str, kind: str) -> TicketSealer:
    key = run.entropy(f"{name}/tickets").random(32)
    return sealer_for(kind, ticket_sealer(key), key=key, lifetime_s=TICKET_LIFETIME,
                      entropy=run.entropy(f"{name}/bad-tickets"))


def _configure(hooks: dict[str, Any], mac: str,
               hello_retry: Callable[[Message], Message | None] | None,
               ) -> Callable[[Connection], None]:
    def configure(connection: Connection) -> None:
        install_hooks(connection, hooks)
        handshake = connection.handshake
        handshake.message_hook = chain(handshake.message_hook, hello_retry,
                                       _fallback_hook(mac) if mac != "valid" else None)
    return configure


async def _client(run: Run, files: dict[str, str], profile: Profile,
                  pinned: PinnedServerKey | None, trust: str, *, early_data: bool = False,
                  method: str = "GET") -> ClientResult:
    """Run the target client once against the served port: (exit code, stdout, stderr).
    The in-process client keeps its tickets in the cache, for a later run's 0-RTT."""
    command = run.target.client_command
    if command is not None:
        return await _command(command_argv(command, files))
    config = EasyClientConfig(
        f"{LOOPBACK}:{files['port']}", hostname="localhost", key_cache_dir=Path(files["cache"]),
        ca_file=Path(files["ca"]) if trust == "ca" else None, insecure=trust == "insecure",
        profile=profile.name, early_data=early_data, keep_tickets=True, timeout=CLIENT_RUN,
        pinned_key=pinned)
    try:
        async with AsyncEasyClient(config) as client:
            fetched = await client.fetch("/", method=method)
    except Exception as exc:  # what the client reports, as a CLI would on stderr
        return 1, "", f"{type(exc).__name__}: {exc}"
    return 0, fetched.text(), ""


async def _command(argv: list[str]) -> ClientResult:
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        return 127, "", f"cannot run {argv[0]!r}: {exc.strerror or exc}"
    try:
        out, err = await asyncio.wait_for(process.communicate(), CLIENT_RUN)
    except (TimeoutError, asyncio.CancelledError):
        # stopped as a user would stop it (it may write what it keeps), killed if it lingers
        process.terminate()
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), CLIENT_STOP)
        except TimeoutError:
            process.kill()
            await process.wait()
        raise
    return process.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


async def _result(served: Served, seconds: float) -> ClientResult | None:
    try:
        return await asyncio.wait_for(asyncio.shield(served.client), seconds)
    except TimeoutError:
        return None


def _describe(result: ClientResult) -> str:
    code, out, err = result
    return f"exit {code}; stdout {out[-300:]!r}; stderr {err[-300:]!r}"


def served(run: Run, step: Step) -> Served:
    name = step.get("conn", "main")
    found = run.served.get(name)
    if found is None:
        raise StepUnsupported(f"{step.kind} needs a role: server connect step ({name!r})")
    return found


async def expect_client(run: Run, step: Step) -> None:
    """How the target client ended: its exit code, stdout and stderr."""
    within, cut = run.within(step, CLIENT_RUN)
    result = await _result(served(run, step), within)
    if result is None:
        raise StepFailed(f"the target client did not finish within {within:g} s"
                         + (" (cut short by the run's time budget)" if cut else ""),
                         expected="the client's exit", actual="still running")
    code, out, err = result
    wanted = step.get("exit_code", 0)
    if not (code != 0 if wanted == "nonzero" else code == wanted):
        raise StepFailed(f"the target client exited with {code}",
                         expected=f"exit {wanted}", actual=_describe(result))
    for key, text in (("stdout_regex", out), ("stderr_regex", err)):
        pattern = step.get(key)
        if pattern is not None and re.search(pattern, text) is None:
            raise StepFailed(f"the client's {key[:6]} does not match", expected=pattern,
                             actual=_describe(result))


def _decoy_of(run: Run, step: Step) -> Served:
    """The connect whose decoy a contact step reads (only its fallback port is watched)."""
    found = served(run, step)
    port = step.get("port", "fallback")
    if port not in ("fallback", found.fallback_port):
        raise StepUnsupported(f"the harness listens only on the fallback port "
                              f"{found.fallback_port}, not {port}")
    return found


async def expect_contact(run: Run, step: Step) -> None:
    """Something reaches the decoy on the directive's fallback port within ``within``
    seconds: the client followed the directive."""
    found = _decoy_of(run, step)
    within, cut = run.within(step, CONTACT_WAIT)
    deadline = run.now() + within
    while not found.contacts and run.now() < deadline:
        await run.sleep(min(0.05, max(deadline - run.now(), 0.0)))
    if not found.contacts:
        raise StepFailed(f"the client did not contact the fallback port {found.fallback_port} "
                         f"within {within:g} s"
                         + (" (cut short by the run's time budget)" if cut else ""),
                         expected="the directive followed", actual="no datagram")
    run.note("check", {"check": "expect_contact", "passed": True,
                       "message": f"{found.contacts} datagram(s) on the fallback port"})


async def expect_no_contact(run: Run, step: Step) -> None:
    """Nothing reaches the decoy on the directive's fallback port for ``for`` seconds."""
    found = _decoy_of(run, step)
    await run.sleep(float(step.get("for", 1.0)))
    if found.contacts:
        raise StepFailed(f"the client contacted the fallback port {found.fallback_port} "
                         f"({found.contacts} datagram(s))", expected="no contact",
                         actual=f"{found.contacts} datagram(s)")
