"""``fedquery policy ...``: the data steward's tools."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fedquery.errors import ConfigError, Error


@click.group()
def policy() -> None:
    """Write, check, explain and test site disclosure policies."""


@policy.command()
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the schema to this file instead of standard output.")
def schema(output: Path | None) -> None:
    """Print the policy JSON Schema (editors use it for completion and checking)."""
    from fedquery.policy.load import schema_text
    if output is None:
        click.echo(schema_text(), nl=False)
    else:
        output.write_text(schema_text())
        click.echo(f"wrote {output}", err=True)


def _connector_for(policy_path: Path, site: str | None, explicit: Path | None) -> Path | None:
    if explicit is not None:
        return explicit
    if site is None:
        return None
    candidate = policy_path.absolute().parent.parent / "connectors" / f"{site}.yaml"
    return candidate if candidate.exists() else None


@policy.command()
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--connector", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Check against this site's data (default: ../connectors/<site>.yaml if "
                   "it exists and its data is present).")
def check(files: tuple[Path, ...], connector: Path | None) -> None:
    """Validate policy files, cross-check them against the site's data, warn on risks."""
    from fedquery.policy.load import load_policy
    from fedquery.policy.steward import lint
    from fedquery.site.check import check_policy_against_data
    from fedquery.site.connector import load_connector, open_adapter, privacy_units

    failed = False
    for path in files:
        try:
            pol = load_policy(path, resolve_secrets=False)
        except ConfigError as err:
            click.echo(f"FAIL {path}\n{err}")
            failed = True
            continue
        problems: list[str] = []
        conn_path = _connector_for(path, pol.site, connector)
        note = "no connector: data not cross-checked"
        if conn_path is not None:
            try:
                conn = load_connector(conn_path)
                adapter = open_adapter(conn)
            except ConfigError as err:
                if connector is not None:  # asked for explicitly: not being able to is a failure
                    problems = [f"cannot open the connector's data: {err}"]
                note = f"data not cross-checked ({err})".replace("\n", " ")
            else:
                if pol.site and pol.site != conn.site:
                    problems = [f"the policy is for site {pol.site!r} but the connector "
                                f"{conn_path} is for {conn.site!r}"]
                else:
                    problems = check_policy_against_data(pol, adapter, privacy_units(conn))
                adapter.close()
                note = f"cross-checked against {conn_path}"
        status = "FAIL" if problems else "ok"
        click.echo(f"{status} {path} ({note})")
        for problem in problems:
            click.echo(f"  error: {path}: {problem}")
        for warning in lint(pol):
            click.echo(f"  warning: {warning}")
        failed = failed or bool(problems)
    sys.exit(1 if failed else 0)


@policy.command()
@click.argument("sql")
@click.option("--policy", "policies", multiple=True, required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A site's policy file (repeat for each site).")
def explain(sql: str, policies: tuple[Path, ...]) -> None:
    """Say, without running it, what each site would let SQL return and why."""
    from fedquery.policy.load import load_policy
    from fedquery.policy.steward import explain as explain_query
    try:
        click.echo(explain_query(sql, [load_policy(p, resolve_secrets=False)
                                       for p in policies]))
    except Error as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)


@policy.command(name="test")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
def test_cases(files: tuple[Path, ...]) -> None:
    """Run steward-written cases (SQL → allow / refuse: rule id) against their policy."""
    from fedquery.policy.steward import run_cases
    failures = 0
    for path in files:
        try:
            results = run_cases(path)
        except ConfigError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)
        for result in results:
            mark = "ok  " if result.passed else "FAIL"
            click.echo(f"{mark} {path}: {result.name} ({result.detail})")
            failures += not result.passed
        click.echo(f"{sum(r.passed for r in results)} passed, "
                   f"{sum(not r.passed for r in results)} failed")
    sys.exit(1 if failures else 0)
