"""``fedquery demo``: a local federation of synthetic hospitals over TLS, and its tour."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import click

from fedquery.cli.output import FORMATS
from fedquery.errors import Error

_DIR = click.Path(file_okay=False, path_type=Path)


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def _start_sites(directory: Path):
    from fedquery.demo.federation import KEY_HOLDER
    from fedquery.demo.launcher import SiteProcesses
    from fedquery.transport.federation import load_federation

    federation = load_federation(directory / "federation.yaml", secrets=False)
    processes = SiteProcesses(directory)
    secure = federation.key_holder is not None
    try:
        if secure:  # the key holder first: the sites fetch its public context
            processes.start_key_holder(KEY_HOLDER, _port(federation.key_holder.endpoint),
                                       federation.path)
        for site in federation.sites:
            processes.start(site.name, _port(site.endpoint),
                            federation=federation.path if secure else None)
    except BaseException:
        processes.stop()
        raise
    return federation, processes


@click.group(invoke_without_command=True)
@click.option("--dir", "directory", type=_DIR, default=Path("demo"), show_default=True,
              help="Where the demo federation lives.")
@click.option("--sites", default=3, show_default=True, help="Number of hospitals.")
@click.option("--patients", default=20_000, show_default=True, help="Patients per hospital.")
@click.option("--seed", default=42, show_default=True, help="Seed of the synthetic data.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table",
              show_default=True)
@click.option("--no-shell", is_flag=True,
              help="Stop after the tour (the shell opens only on a terminal anyway).")
@click.pass_context
def demo(ctx, directory: Path, sites: int, patients: int, seed: int, fmt: str,
         no_shell: bool) -> None:
    """Set up a federation of synthetic hospitals, start its sites over TLS, take the tour,
    then open the SQL shell on it (when attached to a terminal).

    Everything it starts, it stops on exit.
    """
    if ctx.invoked_subcommand is not None:
        return
    import fedquery
    from fedquery.demo.federation import init_demo
    from fedquery.demo.showcase import run_tour

    started = time.perf_counter()
    try:
        federation_file = init_demo(directory, sites=sites, patients=patients, seed=seed)
        federation, processes = _start_sites(directory)
    except Error as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    with processes:
        click.echo(f"fedquery demo: {sites} synthetic hospitals × {patients:,} patients, each a "
                   f"separate site process serving Arrow Flight over TLS, governed by its "
                   f"steward's policy ({time.perf_counter() - started:.1f} s to start)\n"
                   f"federation file: {federation_file}\n")
        try:
            with fedquery.connect(federation_file) as conn:
                run_tour(conn, click.echo, fmt)
                if not no_shell and sys.stdin.isatty() and sys.stdout.isatty():
                    from fedquery.cli.shell import open_shell
                    click.echo("The sites stay up while the shell is open; \\q stops them.")
                    open_shell(conn, fmt)
        except Error as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)
    click.echo("demo sites stopped.")


@demo.command()
@click.argument("directory", type=_DIR)
@click.option("--sites", default=3, show_default=True, help="Number of hospitals.")
@click.option("--patients", default=20_000, show_default=True, help="Patients per hospital.")
@click.option("--seed", default=42, show_default=True, help="Seed of the synthetic data.")
@click.option("--secure", is_flag=True, help="Sites' policies ask for secure aggregation.")
@click.option("--postgres", "postgres", metavar="DSN", default=None,
              help="Load the last hospital into this PostgreSQL database and push its "
                   "fragments down there: a mixed federation.")
@click.option("--pg-schema", default="fedquery_demo", show_default=True,
              help="The PostgreSQL schema for --postgres (its tables are replaced).")
def init(directory: Path, sites: int, patients: int, seed: int, secure: bool,
         postgres: str | None, pg_schema: str) -> None:
    """Write a demo federation (data, connectors, policies, certificates, token,
    federation.yaml) without starting it."""
    from fedquery.demo.federation import PG_DSN_ENV, init_demo
    try:
        path = init_demo(directory, sites=sites, patients=patients, seed=seed, secure=secure,
                         postgres=postgres, pg_schema=pg_schema)
    except Error as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    env = (f"the PostgreSQL site reads its DSN from ${PG_DSN_ENV}:\n"
           f"  export {PG_DSN_ENV}='<the DSN you gave>'\n" if postgres else "")
    click.echo(f"wrote {path}\n{env}start the sites with:  fedquery demo up {directory}\n"
               f"then query with:       fedquery query --federation {path} \"SELECT sex, "
               "COUNT(*) FROM patients GROUP BY sex\"")


@demo.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
def up(directory: Path) -> None:
    """Run a demo federation's sites in the foreground until interrupted."""
    try:
        federation, processes = _start_sites(directory)
    except Error as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with processes:
        for site in federation.sites:
            click.echo(f"{site.name}: {site.endpoint}")
        click.echo(f"sites are up; in another terminal:\n  fedquery query --federation "
                   f"{federation.path} \"SELECT sex, COUNT(*) FROM patients GROUP BY sex\"\n"
                   "press Ctrl-C to stop them")
        while not stop.wait(0.5):
            dead = [s for s, p in processes.processes.items() if p.poll() is not None]
            if dead:
                click.echo(f"error: site {dead[0]} stopped; see "
                           f"{directory / 'state' / dead[0] / 'site.log'}", err=True)
                sys.exit(2)
    click.echo("sites stopped.")
