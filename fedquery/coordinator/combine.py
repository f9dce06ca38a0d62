"""Combine the sites' partials and post-process them, with DuckDB over Arrow.

The result's column names and types are DuckDB's own for the analyst's query: they are taken
from DuckDB's binder run on an empty copy of the federation catalog, so a federated answer
has exactly the shape the same query has on pooled data.
"""

from __future__ import annotations

import functools
import threading

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp

from fedquery.catalog import Catalog
from fedquery.errors import CatalogError, InternalError, ProgrammingError
from fedquery.ir import FederatedPlan


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Combiner:
    def __init__(self, catalog: Catalog) -> None:
        self._con = duckdb.connect()
        for name, table in catalog.tables.items():
            cols = ", ".join(f"{_quote(c)} {t}" for c, t in table.columns.items())
            if cols:
                self._con.execute(f"CREATE TABLE {_quote(name)} ({cols})")
        self._con.execute("SET enable_external_access = false")
        self._con.execute("SET lock_configuration = true")
        self._schemas: dict[str, list[tuple[str, str]]] = {}
        self._lock = threading.Lock()

    def result_schema(self, sql: str) -> list[tuple[str, str]]:
        """(name, DuckDB type) of every output column of the analyst's query."""
        with self._lock:
            cached = self._schemas.get(sql)
        if cached is not None:
            return cached
        cur = self._con.cursor()
        try:
            rows = cur.execute(f"DESCRIBE {sql}").fetchall()
        except duckdb.BinderException as err:
            raise CatalogError(str(err).split("\n")[0]) from None
        except duckdb.Error as err:
            raise ProgrammingError(f"DuckDB cannot type the query: {err}") from None
        finally:
            cur.close()
        schema = [(r[0], r[1]) for r in rows]
        with self._lock:
            if len(self._schemas) > 1024:
                self._schemas.clear()
            self._schemas[sql] = schema
        return schema

    def combine(self, plan: FederatedPlan, partials: list[pa.Table]) -> pa.Table:
        """Merge the sites' partial tables into one row per group."""
        expected = list(plan.fragment.group_columns) + [p.name for p in plan.fragment.partials]
        expected += ["__units", "__suppressed"]
        for table in partials:
            if table.column_names != expected:
                raise InternalError(f"a site returned columns {table.column_names}, expected "
                                    f"{expected}")
        # One chunk, replies in site order: float sums add up the same way every time.
        merged = pa.concat_tables(partials, promote_options="permissive").combine_chunks()
        cur = self._con.cursor()
        try:
            cur.register("partials", merged)
            return cur.sql(plan.combine_sql).to_arrow_table()
        finally:
            cur.close()

    @functools.lru_cache(maxsize=512)  # noqa: B019 - one Combiner per engine, bounded
    def _typed_post_sql(self, post_sql: str, schema: tuple[tuple[str, str], ...]) -> str:
        """The post-processing query with every output cast to DuckDB's result type."""
        post = sqlglot.parse_one(post_sql, read="duckdb")
        outputs, flags = post.expressions[:len(schema)], post.expressions[len(schema):]
        if len(outputs) != len(schema) or len(flags) != 2 * len(schema) + 1:
            raise InternalError("the plan's outputs do not match the query's result columns")
        post.set("expressions", [
            exp.alias_(exp.cast(p.unalias(), exp.DataType.build(typ, dialect="duckdb")),
                       p.alias, quoted=True)
            for p, (_, typ) in zip(outputs, schema)] + flags)
        return post.sql("duckdb")

    def post_process(self, plan: FederatedPlan, combined: pa.Table,
                     schema: list[tuple[str, str]],
                     intervals: bool = False) -> tuple[pa.Table, tuple[int, ...], list]:
        """Rebuild the analyst's expressions, apply HAVING/ORDER BY/LIMIT, cast to DuckDB's
        result types and names.  Also returns the indices of suppressed rows and, per row and
        column, the (low, high) ends of the 95 % interval (None where there is none)."""
        sql = self._typed_post_sql(plan.post_interval_sql if intervals else plan.post_sql,
                                   tuple(schema))
        cur = self._con.cursor()
        try:
            cur.register("combined", combined)
            table = cur.sql(sql).to_arrow_table()
        except duckdb.Error as err:
            raise ProgrammingError(f"post-processing failed: {err}") from None
        finally:
            cur.close()
        width = len(schema)
        flags = table.column(3 * width).to_pylist()
        suppressed = tuple(i for i, flag in enumerate(flags) if flag)
        ends = [list(zip(table.column(width + 2 * i).to_pylist(),
                         table.column(width + 2 * i + 1).to_pylist())) for i in range(width)]
        noisy = set(plan.aggregate_outputs) if intervals else set()
        unbounded = (float("-inf"), float("inf"))
        intervals = [tuple(
            (unbounded if c in noisy else None) if e[0] is None or e[1] is None  # no claim
            else None if e[0] == e[1] else e  # exact: no interval
            for c, e in ((c, ends[c][r]) for c in range(width)))
            for r in range(table.num_rows)]
        table = table.select(list(range(width))).rename_columns(
            [name for name, _ in schema])
        fields = [f.with_metadata({b"duckdb_type": typ.encode()})
                  for f, (_, typ) in zip(table.schema, schema)]
        return table.cast(pa.schema(fields)), suppressed, intervals
