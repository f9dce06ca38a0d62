"""``fedquery`` command line entry point."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import click

from fedquery.cli.certs import certs as certs_group
from fedquery.cli.output import FORMATS, render
from fedquery.cli.policy import policy as policy_group
from fedquery.cli.site import site as site_group
from fedquery.errors import Error, PolicyViolation


def _fail(err: Exception, code: int = 2) -> None:
    click.echo(f"error: {err}", err=True)
    sys.exit(code)


@click.group()
@click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug).")
@click.version_option(package_name="fedquery")
def main(verbose: int) -> None:
    """fedquery: privacy-preserving federated SQL for health research networks."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")


@main.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              default=Path("demo"), show_default=True, help="Where the demo data lives.")
@click.option("--sites", default=3, show_default=True, help="Number of hospitals.")
@click.option("--patients", default=20_000, show_default=True, help="Patients per hospital.")
@click.option("--seed", default=42, show_default=True, help="Seed of the synthetic data.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table",
              show_default=True)
def demo(directory: Path, sites: int, patients: int, seed: int, fmt: str) -> None:
    """Generate a federation of synthetic hospitals and answer showcase queries."""
    from fedquery.demo.showcase import REFUSED, SHOWCASE, demo_engine, ensure_demo_data

    started = time.perf_counter()
    paths = ensure_demo_data(directory, sites, patients, seed)
    click.echo(f"fedquery demo: {len(paths)} synthetic hospitals × {patients:,} patients in "
               f"{directory}/data ({time.perf_counter() - started:.1f} s), each governed by "
               "its steward's policy (policies/hospital_*.yaml)\n")
    engine = demo_engine(paths, directory / "audit")
    try:
        for title, sql in SHOWCASE:
            started = time.perf_counter()
            release = engine.execute(sql, analyst="demo")
            elapsed = (time.perf_counter() - started) * 1000
            click.echo(f"-- {title}\n{sql}\n")
            click.echo(render(release.table, fmt))
            click.echo(f"   {describe_report(release.report)}; {elapsed:.0f} ms\n")
        title, sql = REFUSED
        click.echo(f"-- {title}\n{sql}\n")
        try:
            engine.execute(sql, analyst="demo")
        except PolicyViolation as err:
            click.echo(f"   refused: {err}\n")
    except Error as err:
        _fail(err)
    finally:
        engine.close()


def describe_report(report) -> str:
    """One line under a result: who answered, what was suppressed, caveats."""
    parts = [f"sites answered: {', '.join(report.sites_answered)}"]
    if report.suppressed_cells:
        rows = ", ".join(str(i + 1) for i in report.suppressed_rows)
        parts.append(f"{report.suppressed_cells} cell(s) suppressed (rows {rows})")
    parts += list(report.notes)
    return "; ".join(parts)


main.add_command(certs_group)
main.add_command(policy_group)
main.add_command(site_group)


if __name__ == "__main__":
    main()
