"""``fedquery certs ...``: the network operator's federation CA and site certificates."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fedquery.errors import ConfigError


def _fail(err: Exception) -> None:
    message = " ".join(str(err).split())   # one line, whatever the error text holds
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


@click.group()
def certs() -> None:
    """Create the federation CA and sign TLS certificates for sites."""


@certs.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True,
              help="Replace an existing CA (every certificate it signed stops working).")
def init(directory: Path, force: bool) -> None:
    """Create a federation CA in DIRECTORY: ca.pem (share it) and ca.key (keep it safe)."""
    from fedquery.transport.certs import fingerprint, init_ca
    try:
        files = init_ca(directory, force=force)
        digest = fingerprint(files.cert.read_bytes())
    except (ConfigError, OSError) as err:
        _fail(err)
    click.echo(f"wrote {files.cert} (CA certificate: give it to every client)")
    click.echo(f"wrote {files.key} (CA private key, mode 0600: keep it offline)")
    click.echo(f"CA fingerprint (SHA-256): {digest}")


@certs.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.argument("name")
@click.option("--host", "hosts", multiple=True, metavar="H",
              help="DNS name or IP address the holder is reached at (repeatable; default "
                   "127.0.0.1 and localhost).")
@click.option("--days", default=825, show_default=True, help="Validity in days.")
@click.option("--force", is_flag=True, help="Replace an existing NAME.pem/NAME.key.")
def issue(directory: Path, name: str, hosts: tuple[str, ...], days: int, force: bool) -> None:
    """Sign a TLS certificate for NAME with the CA in DIRECTORY: NAME.pem and NAME.key."""
    from fedquery.transport.certs import DEFAULT_HOSTS, fingerprint
    from fedquery.transport.certs import issue as issue_cert
    try:
        files = issue_cert(directory, name, hosts=hosts or DEFAULT_HOSTS, days=days,
                           force=force)
        digest = fingerprint(files.ca.read_bytes())
    except (ConfigError, OSError) as err:
        _fail(err)
    click.echo(f"wrote {files.cert} (certificate for {name}: "
               f"{', '.join(hosts or DEFAULT_HOSTS)})")
    click.echo(f"wrote {files.key} (private key, mode 0600)")
    click.echo(f"signed by {files.ca}, CA fingerprint (SHA-256): {digest}")
