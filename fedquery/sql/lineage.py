"""Column lineage over a qualified query: which base-table columns an expression touches.

Works through CTEs, FROM-subqueries, joins and UNION ALL branches, so a column renamed or
laundered through a subquery is still traced to the table column it comes from.

>>> from fedquery.sql.parse import parse_statement
>>> from fedquery.sql.qualify import qualify_query
>>> q = qualify_query(parse_statement(
...     "WITH x AS (SELECT age AS a FROM patients) SELECT COUNT(*) FROM x WHERE a > 3"),
...     {"patients": {"age": "INTEGER"}})
>>> sorted(base_columns_of_query(q))
[('patients', 'age')]
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.optimizer.scope import Scope, build_scope

BaseColumn = tuple[str, str]  # (table, column), lower case


def _projection_expr(scope: Scope, name: str) -> list[exp.Expression]:
    """The expressions a derived table's output column ``name`` is computed from."""
    exprs = []
    if isinstance(scope.expression, exp.SetOperation):
        for branch in (scope.union_scopes or []):
            exprs.extend(_projection_expr(branch, name))
        return exprs
    for projection in scope.expression.expressions:
        if projection.alias_or_name.lower() == name:
            exprs.append(projection.unalias() if isinstance(projection, exp.Alias)
                         else projection)
    return exprs


def trace_column(scope: Scope, column: exp.Column, _depth: int = 0) -> set[BaseColumn]:
    """Base columns a qualified ``column`` of ``scope`` is derived from."""
    if _depth > 64:
        return set()
    source = scope.sources.get(column.table)
    if isinstance(source, exp.Table):
        return {(source.name.lower(), column.name.lower())}
    if isinstance(source, Scope):
        out: set[BaseColumn] = set()
        for expr in _projection_expr(source, column.name.lower()):
            out |= trace_expression(source, expr, _depth + 1)
        return out
    # Correlated reference to an outer scope.
    parent = scope.parent
    while parent is not None:
        if column.table in parent.sources:
            return trace_column(parent, column, _depth + 1)
        parent = parent.parent
    return set()


def trace_expression(scope: Scope, expression: exp.Expression,
                     _depth: int = 0) -> set[BaseColumn]:
    """Base columns any column inside ``expression`` (same scope) derives from."""
    out: set[BaseColumn] = set()
    for column in expression.find_all(exp.Column):
        if column.table:
            out |= trace_column(scope, column, _depth)
    return out


def root_scope(query: exp.Expression) -> Scope:
    scope = build_scope(query)
    if scope is None:
        raise ValueError("not a query")
    return scope


def base_columns_of_query(query: exp.Expression) -> set[BaseColumn]:
    """Every base column any part of ``query`` touches (all scopes)."""
    out: set[BaseColumn] = set()
    for scope in root_scope(query).traverse():
        for column in scope.columns:
            if column.table:
                out |= trace_column(scope, column)
    return out
