"""The ``velocity`` command line: parsing and presentation only; the work is done by the
packages it calls."""

from __future__ import annotations

import logging
from importlib import metadata

import click

from velocity import __version__
from velocity.core.kem import KemParams
from velocity.core.packet import VELOCITY_VERSION
from velocity.crypto.dsa import DSA_BACKENDS
from velocity.crypto.kem import BACKENDS, DEFAULT_BACKEND, kem_backend

_DISTRIBUTIONS = {"cryptography": "cryptography", "pqcrypto": "pqcrypto",
                  "kyber-py": "kyber-py", "dilithium-py": "dilithium-py"}


def _installed(name: str) -> str:
    try:
        return f"{name} {metadata.version(_DISTRIBUTIONS[name])}"
    except metadata.PackageNotFoundError:
        return f"{name} (not installed)"


def version_report() -> str:
    """What ``velocity --version`` prints: our version, the wire version, the backends and
    which backend serves each ML-KEM parameter set by default."""
    default = kem_backend(DEFAULT_BACKEND)
    serving = ", ".join(f"{p.value} on {default.name_for(p)}" for p in KemParams)
    return "\n".join([
        f"velocity {__version__} (wire version 0x{VELOCITY_VERSION:08x}, ALPN velocity/1)",
        f"ML-KEM backends: {', '.join(_installed(name) for name in BACKENDS)}",
        f"ML-DSA backends: {', '.join(_installed(name) for name in DSA_BACKENDS)}",
        f"default KEM backend: {DEFAULT_BACKEND} ({serving})",
        "byte-reproducible seeded runs: kyber-py only (the others draw their own "
        "encapsulation randomness)",
    ])


COMMANDS_GROUP = "velocity.commands"  # entry points naming more command groups (the harness's)


def _unavailable(name: str, entry: metadata.EntryPoint, exc: ImportError) -> click.Command:
    """Stands for a command whose package is missing: says in one line what to install."""
    extra = f"velocity[{','.join(entry.extras)}]" if entry.extras else entry.module
    missing = f" ({exc.name} is missing)" if exc.name else ""

    def fail(args: tuple[str, ...]) -> None:
        raise click.ClickException(f"velocity {name} needs {extra}{missing}: install it with "
                                   f"pip install '{extra}'")

    return click.Command(name, callback=fail, help=f"(not installed: needs {extra})",
                         params=[click.Argument(["args"], nargs=-1)],
                         context_settings={"ignore_unknown_options": True,
                                           "help_option_names": []})


class _Commands(click.Group):
    """The built-in commands and those installed packages declare in ``COMMANDS_GROUP``,
    which are imported only when used (or listed by --help)."""

    def _entries(self) -> dict[str, metadata.EntryPoint]:
        return {e.name: e for e in metadata.entry_points(group=COMMANDS_GROUP)
                if e.name not in self.commands}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._entries()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = self._entries().get(cmd_name)
        if entry is None:
            return super().get_command(ctx, cmd_name)
        try:
            command = entry.load()
        except ImportError as exc:
            return _unavailable(cmd_name, entry, exc)
        self.add_command(command, cmd_name)
        return command  # type: ignore[no-any-return]


def _print_version(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(version_report())
        ctx.exit()


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="Show versions and crypto backends, then exit.")
def cli() -> None:
    """Velocity/1: post-quantum transport endpoint and tools. Set VELOCITY_LOG (e.g. "info" or
    "warning,velocity.aio.server=debug") for logs on stderr."""
    from velocity.cli.common import configure_logs  # noqa: PLC0415 - see _register
    configure_logs()


def main() -> None:
    # aioquic logs a closed connection's reason itself; the commands report it in one line
    logging.getLogger("quic").addHandler(logging.NullHandler())
    cli(prog_name="velocity")


def _register() -> None:
    from velocity.cli.fetch import fetch  # noqa: PLC0415 - commands import the whole stack
    from velocity.cli.keys import keys  # noqa: PLC0415
    from velocity.cli.probe import handshake_demo, json_api_demo, probe  # noqa: PLC0415
    from velocity.cli.serve import serve  # noqa: PLC0415

    for command in (serve, fetch, probe, handshake_demo, json_api_demo, keys):
        cli.add_command(command)


_register()
