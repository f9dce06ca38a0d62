"""The engine-adapter interface: where a site's data lives and how its fragment runs there.

The planner writes every fragment once, as a sqlglot AST rendered in DuckDB's dialect (the
federation's lingua franca: its types and semantics are DuckDB's).  An adapter

* ``render``\\s that fragment for its engine — unchanged for DuckDB, transpiled with sqlglot
  and corrected wherever the engine's semantics differ for PostgreSQL (and, later, Trino or
  Spark SQL; see ``connectors/README.md``);
* ``execute``\\s it there and returns Arrow with exactly the schema the fragment has on DuckDB,
  so that every site's reply combines identically at the coordinator;
* ``describe``\\s its tables with federation (DuckDB) type names;
* says which ``data_version`` it answers from (noisy answers are cached per version).

Protection (noise, encryption) is never an adapter's business: it happens in the site process
on the Arrow the adapter returns.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from fedquery.errors import ProgrammingError
from fedquery.ir import TableInfo

#: The dialect fragments are written in (``fedquery.plan``).
PLANNER_DIALECT = "duckdb"


@runtime_checkable
class EngineAdapter(Protocol):
    """What a site needs from the engine holding its data."""

    #: sqlglot dialect name of the engine ("duckdb", "postgres", ...).
    dialect: str
    # An adapter may also set ``exact_data_version = True`` when ``data_version()`` changes
    # exactly when the data a fragment reads does (see ``site.unit_stats``); absent: False.

    def render(self, fragment: str | exp.Expression) -> str:
        """The planner's fragment (DuckDB SQL text or AST) as SQL for this engine."""

    def execute(self, fragment: str) -> pa.Table:
        """Render and run a planner fragment; Arrow with the fragment's DuckDB schema."""

    def describe(self) -> tuple[TableInfo, ...]:
        """The offered tables and their columns, with federation (DuckDB) type names."""

    def data_version(self) -> str:
        """Changes whenever the data may have changed."""

    def close(self) -> None:
        """Release connections and files."""


# Statements and clauses that change data, schema, session or transaction state.  A fragment
# holding any of them is refused before it reaches a database, whatever the engine.
_FORBIDDEN = (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Alter,
              exp.TruncateTable, exp.Command, exp.Copy, exp.Set, exp.Transaction, exp.Commit,
              exp.Rollback, exp.Into, exp.Lock, exp.Pragma, exp.Use, exp.Describe,
              exp.LoadData, exp.Grant, exp.Analyze, exp.Cache, exp.Uncache, exp.Refresh,
              exp.Attach, exp.Detach, exp.Kill, exp.Summarize, exp.Returning, exp.Revoke)


def parse_single_select(sql: str, dialect: str, what: str = "fragment") -> exp.Expression:
    """Parse ``sql`` and check that it is one read-only SELECT (CTEs and subqueries allowed,
    no DML, DDL, session or transaction statement anywhere inside); return its AST.

    >>> parse_single_select("SELECT 1 AS x", "postgres").sql()
    'SELECT 1 AS x'
    >>> parse_single_select("WITH d AS (DELETE FROM t RETURNING *) SELECT 1", "postgres")
    Traceback (most recent call last):
    ...
    fedquery.errors.ProgrammingError: the site refuses the fragment: it must be one read-only SELECT, and it contains DELETE
    """
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except ParseError:
        raise ProgrammingError(f"the site refuses the {what}: it is not SQL it can "
                               "check") from None
    if len(statements) != 1:
        raise ProgrammingError(f"the site refuses the {what}: it must be one SELECT, not "
                               f"{len(statements)} statements")
    statement = statements[0]
    for node in statement.walk():
        if isinstance(node, _FORBIDDEN):
            kind = (node.key or type(node).__name__).upper()
            raise ProgrammingError(f"the site refuses the {what}: it must be one read-only "
                                   f"SELECT, and it contains {kind}")
    if not isinstance(statement, exp.Select):
        kind = (statement.key or type(statement).__name__).upper()
        raise ProgrammingError(f"the site refuses the {what}: it must be one read-only "
                               f"SELECT, not {kind}")
    return statement
