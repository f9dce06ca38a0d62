"""``fedquery shell``: the interactive SQL shell."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from fedquery.cli.output import FORMATS
from fedquery.errors import Error

BANNER = ("fedquery shell: aggregate SQL over the federation's sites; end a statement with ';'. "
          "\\? lists the commands, \\q quits.")


def open_shell(connection, fmt: str = "table") -> None:
    """Run the interactive shell on an open connection (used by ``demo`` too)."""
    from fedquery.cli.shell.app import run_shell
    from fedquery.cli.shell.session import ShellSession
    run_shell(ShellSession(connection, fmt=fmt, interactive=True), banner=BANNER)


@click.command()
@click.option("--federation", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=lambda: os.environ.get("FEDQUERY_FEDERATION"),
              help="The federation file [default: $FEDQUERY_FEDERATION].")
@click.option("--user", help="Analyst name [default: the federation file's credentials].")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
def shell(federation: Path | None, user: str | None, fmt: str) -> None:
    """Open an interactive SQL shell on a federation."""
    import fedquery

    if federation is None:
        raise click.UsageError("no federation: pass --federation FILE or set "
                               "FEDQUERY_FEDERATION")
    try:
        connection = fedquery.connect(federation, user=user)
    except Error as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    with connection:
        open_shell(connection, fmt)
