"""``velocity transcript``: ``dump`` (connect once and write the client's transcript, the
deployment guide's handshake-transcript dump), ``validate`` and ``diff``. A command group of
the harness that the ``velocity`` command finds through its ``velocity.commands`` entry
points, so that the endpoint never imports the harness. Exit codes of ``diff``: 0 the same,
1 drift, 2 bad input; of ``validate``: 0 all valid, 1 otherwise; of ``dump``: those of
``velocity probe``."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Column, Table

from harness.transcript.diff import Difference, diff
from harness.transcript.files import TranscriptError, file_errors, load
from harness.transcript.summary import summary
from velocity import __version__
from velocity.cli.common import option_errors, parse_address, parse_alpn, run
from velocity.cli.fetch import key_from_option
from velocity.cli.probe import EXIT_FAILURE, EXIT_FALLBACK, EXIT_VELOCITY, probe_target
from velocity.core.errors import UsageError
from velocity.core.handshake.client import PinnedServerKey
from velocity.core.hybrid import PROFILES_BY_NAME
from velocity.core.trace import Transcript
from velocity.crypto.pki import X509Verifier, load_ca_file

EXIT_SAME, EXIT_DRIFT, EXIT_BAD_INPUT = 0, 1, 2


@click.group()
def transcript() -> None:
    """Record, check and compare connection transcripts (qlog-shaped JSON)."""


def _verifier(ca: Path | None, insecure: bool, key: PinnedServerKey | None
              ) -> X509Verifier | None:
    clock = lambda: dt.datetime.now(dt.UTC)  # noqa: E731 - the verifier's clock
    if ca is not None and insecure:
        raise UsageError("choose one of --ca and --insecure")
    if ca is not None:
        return X509Verifier(anchors=load_ca_file(ca), clock=clock)
    if insecure:
        return X509Verifier(insecure=True, clock=clock)
    if key is None:
        raise UsageError("say how to trust a discovered certificate: --ca FILE or --insecure "
                         "(or give the key with --kem-b64 KEY or --kem-file FILE)")
    return None  # PDK: the pinned key is the trust


async def _dump(host: str, port: int, **probe: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Connect once; (what happened as ``probe`` says it, the client's transcript)."""
    recorder = Transcript()
    result = await probe_target(host, port, transcript=recorder, **probe)
    loop_now, wall_now = asyncio.get_running_loop().time(), time.time()
    document = recorder.document(
        producer={"name": "velocity", "version": __version__}, vantage_point="client",
        target=f"{host}:{port}", scenario=None)
    if recorder.start is not None:  # the loop's clock is not the wall clock
        document["reference_time"] = round(wall_now - (loop_now - recorder.start), 6)
    return result, document


def _outcome(facts: dict[str, Any], probed: dict[str, Any]) -> str:
    """What a dumped connection came to, in a few words (``probed``: what ``probe_target``
    made of it)."""
    if facts["outcome"] == "velocity":
        return (f"Velocity/1, profile {facts['profile']}, {facts['aead']}, ALPN "
                f"{facts['alpn']}, {facts['auth_mode']}")
    if facts["outcome"] == "fallback":
        directive = facts["fallback"]
        return (f"FALLBACK to {directive['alpn']} port {directive['port']} "
                f"({'authenticated' if directive['authenticated'] else 'advisory'})")
    why = probed.get("note") or probed.get("reason") or facts["close"]["remote"]
    return f"no handshake: {why}"


@transcript.command()
@click.argument("target")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Write the transcript here (default: standard output).")
@click.option("--sni", help="Server name to send and to check the certificate for "
                            "(default: TARGET's host).")
@click.option("--ca", type=click.Path(path_type=Path), help="Trust anchors (PEM) for discovery.")
@click.option("--insecure", is_flag=True, help="Accept any certificate (testing only).")
@click.option("--kem-b64", help="The server's ML-KEM encapsulation key, base64 (PDK mode).")
@click.option("--kem-file", type=click.Path(path_type=Path),
              help="The server's leaf certificate (PEM) or its key in base64.")
@click.option("--profile", type=click.Choice(list(PROFILES_BY_NAME)), default="balanced",
              show_default=True)
@click.option("--alpn", default="velocity/1", show_default=True,
              help="Comma-separated ALPN identifiers to offer.")
@click.option("--timeout", type=click.FloatRange(0.1), default=5.0, show_default=True)
def dump(target: str, output: Path | None, sni: str | None, ca: Path | None, insecure: bool,
         kem_b64: str | None, kem_file: Path | None, profile: str, alpn: str,
         timeout: float) -> None:
    """Connect once to TARGET (HOST:PORT) and write the client's transcript. Exit 0:
    Velocity/1, 10: fallback, 1: failure (the transcript is written in every case)."""
    host, port = parse_address(target, what="TARGET")
    offered = parse_alpn(alpn)
    try:
        key = key_from_option(kem_b64, kem_file)
        verifier = _verifier(ca, insecure, key)
    except UsageError as exc:
        raise click.ClickException(str(exc)) from None
    result, document = run(_dump(host, port, alpn=offered, profile=profile, server_key=key,
                                 timeout=timeout, server_name=sni, verifier=verifier))
    text = json.dumps(document, indent=1) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        with option_errors("-o", output, "give a file in an existing directory this user "
                           "can write to"):
            output.write_text(text)
    events = len(document["events"])
    click.echo(f"{target}: {_outcome(summary(document), result)}; {events} events written to "
               f"{output or 'standard output'}", err=True)
    raise SystemExit({"velocity": EXIT_VELOCITY, "fallback": EXIT_FALLBACK}.get(
        result["outcome"], EXIT_FAILURE))


@transcript.command()
@click.argument("files", nargs=-1, required=True,
                type=click.Path(path_type=Path))
def validate(files: tuple[Path, ...]) -> None:
    """Check each FILE against the transcript schema: one line per problem
    (FILE:LINE:COL: what); exit 1 if any file is invalid."""
    bad = 0
    for path in files:
        errors = file_errors(path)
        for line in errors:
            click.echo(line, err=True)
        bad += bool(errors)
    click.echo(f"{len(files) - bad} of {len(files)} valid", err=True)
    if bad:
        raise SystemExit(1)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list) and all(isinstance(v, str | int) for v in value):
        return ", ".join(map(str, value))
    return value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))


def _table(differences: list[Difference]) -> None:
    table = Table(Column("what", no_wrap=True), Column("A", overflow="fold"),
                  Column("B", overflow="fold"), title=f"{len(differences)} semantic differences")
    for d in differences:
        table.add_row(d.path, _cell(d.before), _cell(d.after))
    Console().print(table)


@transcript.command("diff")
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("--ignore", multiple=True, metavar="PATH",
              help="Drop differences under this dotted path (* matches one part), e.g. "
                   "bytes_per_flight or packets_per_space.*.received; repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON.")
def diff_command(a: Path, b: Path, ignore: tuple[str, ...], as_json: bool) -> None:
    """Compare the semantic facts of transcripts A and B (volatile fields normalised).
    Exit 0: the same, 1: they differ, 2: bad input."""
    documents, problems = [], []
    for path in (a, b):
        try:
            documents.append(load(path))
        except TranscriptError as exc:
            problems += exc.lines
    for line in problems:
        click.echo(line, err=True)
    if problems:
        raise SystemExit(EXIT_BAD_INPUT)
    differences = diff(documents[0], documents[1], ignore=ignore)
    if as_json:
        click.echo(json.dumps([d.as_json() for d in differences], indent=1))
    elif differences:
        _table(differences)
    else:
        click.echo(f"{a} and {b}: no semantic difference")
    raise SystemExit(EXIT_DRIFT if differences else EXIT_SAME)
