"""``fedquery query``: one query from the command line, for people and scripts.

Results go to standard output in the chosen format, the privacy report to standard error, and
the exit code says what happened: 0 answered, 1 refused (policy or unsupported SQL), 2 error.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from fedquery.cli.output import FORMATS, describe_report, render
from fedquery.errors import Error, NotSupportedError, ProgrammingError

EXIT_OK, EXIT_REFUSED, EXIT_ERROR = 0, 1, 2


def exit_code_for(err: Error) -> int:
    """1 when the federation refused the query as written, 2 for every other failure."""
    return EXIT_REFUSED if isinstance(err, ProgrammingError | NotSupportedError) else EXIT_ERROR


@click.command()
@click.argument("sql", required=False)
@click.option("-f", "--file", "sql_file", type=click.File("r"),
              help="Read the SQL from this file ('-' for standard input).")
@click.option("--federation", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=lambda: os.environ.get("FEDQUERY_FEDERATION"),
              help="The federation file [default: $FEDQUERY_FEDERATION].")
@click.option("--user", help="Analyst name [default: the federation file's credentials].")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
def query(sql: str | None, sql_file, federation: Path | None, user: str | None,
          fmt: str) -> None:
    """Run one SQL query against a federation and print the released answer."""
    import fedquery

    if sql is None:
        source = sql_file if sql_file is not None else (
            None if sys.stdin.isatty() else sys.stdin)
        if source is None:
            raise click.UsageError("give the SQL as an argument, with -f FILE, or on stdin")
        sql = source.read()
    if federation is None:
        raise click.UsageError("no federation: pass --federation FILE or set "
                               "FEDQUERY_FEDERATION")
    try:
        with fedquery.connect(federation, user=user) as conn:
            cursor = conn.cursor()
            cursor.execute(sql.strip().rstrip(";"))
            report = cursor.fq_report
            click.echo(render(cursor.fetch_arrow_table(), fmt, report.intervals,
                              suppressed_rows=report.suppressed_rows,
                              withheld_columns=report.withheld_columns), nl=False)
            click.echo(describe_report(cursor.fq_report), err=True)
    except Error as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(exit_code_for(err))
