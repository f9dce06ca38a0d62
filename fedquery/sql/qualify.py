"""Qualify a parsed SELECT against a catalog schema: every column gets its table, every
projection an alias, stars are expanded, and unknown names get a helpful error.

>>> from fedquery.sql.parse import parse_statement
>>> schema = {"patients": {"sex": "VARCHAR", "age": "INTEGER"}}
>>> qualify_query(parse_statement("SELECT sex, COUNT(*) FROM patients GROUP BY 1"), schema).sql()
'SELECT "patients"."sex" AS "sex", COUNT(*) AS "_col_1" FROM "patients" AS "patients" GROUP BY "patients"."sex"'
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping

from sqlglot import exp
from sqlglot.errors import OptimizeError, SqlglotError
from sqlglot.optimizer.qualify import qualify

from fedquery.errors import CatalogError, ProgrammingError

DIALECT = "duckdb"
Schema = Mapping[str, Mapping[str, str]]

_UNRESOLVED_RE = re.compile(r"Column '\"?([^'\"]+)\"?' could not be resolved|"
                            r"Unknown column: \"?(\w+)")


def _suggest(name: str, candidates) -> str:
    close = difflib.get_close_matches(name.lower(), [c.lower() for c in candidates], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _normalise_functions(statement: exp.Expression) -> exp.Expression:
    """Rewrite DuckDB aliases that sqlglot keeps anonymous (MEAN → AVG)."""
    def rewrite(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Anonymous) and node.name.lower() == "mean" and len(
                node.expressions) == 1:
            return exp.Avg(this=node.expressions[0])
        return node
    return statement.transform(rewrite, copy=False)


def _check_tables(statement: exp.Expression, schema: Schema) -> None:
    cte_names = {cte.alias_or_name.lower() for cte in statement.find_all(exp.CTE)}
    for table in statement.find_all(exp.Table):
        name = table.name.lower()
        if name in cte_names or name in schema:
            continue
        available = ", ".join(sorted(schema)) or "none"
        raise CatalogError(f"unknown table {table.name!r}{_suggest(name, schema)}; "
                           f"tables in this federation: {available}")


def qualify_query(statement: exp.Expression, schema: Schema) -> exp.Expression:
    """Return a qualified copy of ``statement``; raise CatalogError for unknown names."""
    statement = _normalise_functions(statement.copy())
    lowered = {t.lower(): {c.lower(): typ for c, typ in cols.items()}
               for t, cols in schema.items()}
    _check_tables(statement, lowered)
    try:
        return qualify(statement, schema=lowered, dialect=DIALECT, validate_qualify_columns=True,
                       quote_identifiers=True, identify=True)
    except OptimizeError as err:
        text = str(err)
        match = _UNRESOLVED_RE.search(text)
        if match:
            column = match.group(1) or match.group(2)
            tables = {t.name.lower() for t in statement.find_all(exp.Table)}
            candidates = [c for t in tables for c in lowered.get(t, {})]
            raise CatalogError(f"unknown column {column!r}{_suggest(column, candidates)} in "
                               f"tables {', '.join(sorted(tables))}") from None
        raise ProgrammingError(f"cannot resolve the query's names: {text}") from None
    except SqlglotError as err:
        raise ProgrammingError(f"cannot resolve the query's names: {err}") from None
