"""``fedquery site ...``: commands for a site operator."""

from __future__ import annotations

import sys

import click


@click.group()
def site() -> None:
    """Run and inspect a site."""


@site.group()
def audit() -> None:
    """The site's hash-chained audit log."""


@audit.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--expect-head", help="A head hash exported earlier: it must still be in the log.")
def verify(file: str, expect_head: str | None) -> None:
    """Check the hash chain of an audit log; exit 1 if it was tampered with."""
    from fedquery.site.audit import verify as verify_log
    from fedquery.site.audit import verify_command_output
    code, text = verify_command_output(verify_log(file, expect_head=expect_head))
    click.echo(text)
    sys.exit(code)
