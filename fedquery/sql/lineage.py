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


def projection_sources(scope: Scope, name: str) -> list[tuple[Scope, exp.Expression]]:
    """(branch scope, expression) pairs a derived table's column ``name`` is computed as."""
    return _projection_expr(scope, name)


def plain_base_column(scope: Scope, column: exp.Column) -> BaseColumn | None:
    """The one base column ``column`` is, unchanged, through CTEs and subqueries (every
    projection on the way a bare column); None if it is computed or comes from several."""
    source = scope.sources.get(column.table)
    if isinstance(source, exp.Table):
        return source.name.lower(), column.name.lower()
    if source is None:
        return None
    found = set()
    for branch, expr in _projection_expr(source, column.name.lower()):
        if not isinstance(expr, exp.Column) or not expr.table:
            return None
        found.add(plain_base_column(branch, expr))
    return found.pop() if len(found) == 1 and None not in found else None


def _projection_expr(scope: Scope, name: str) -> list[tuple[Scope, exp.Expression]]:
    """The (scope, expression) pairs a derived table's output column ``name`` is computed
    from; a set operation's columns are matched by position, named by its first branch."""
    if isinstance(scope.expression, exp.SetOperation):
        branches = _leaf_branches(scope)
        names = [p.alias_or_name.lower() for p in branches[0].expression.expressions]
        if name not in names:
            return []
        index = names.index(name)
        return [(b, _unaliased(b.expression.expressions[index])) for b in branches
                if index < len(b.expression.expressions)]
    return [(scope, _unaliased(p)) for p in scope.expression.expressions
            if p.alias_or_name.lower() == name]


def output_names(scope: Scope) -> list[str]:
    """The column names a derived table (a SELECT or a set operation) exposes."""
    first = _leaf_branches(scope)[0] if isinstance(scope.expression, exp.SetOperation) else scope
    return [p.alias_or_name.lower() for p in getattr(first.expression, "expressions", [])]


def _unaliased(projection: exp.Expression) -> exp.Expression:
    return projection.unalias() if isinstance(projection, exp.Alias) else projection


def _leaf_branches(scope: Scope) -> list[Scope]:
    """The SELECT scopes of a (possibly nested) set operation, left to right."""
    out = []
    for branch in scope.set_operation_scopes:
        out.extend(_leaf_branches(branch) if isinstance(branch.expression, exp.SetOperation)
                   else [branch])
    return out


def trace_column(scope: Scope, column: exp.Column, _depth: int = 0) -> set[BaseColumn]:
    """Base columns a qualified ``column`` of ``scope`` is derived from."""
    if _depth > 64:
        return set()
    source = scope.sources.get(column.table)
    if isinstance(source, exp.Table):
        return {(source.name.lower(), column.name.lower())}
    if isinstance(source, Scope):
        out: set[BaseColumn] = set()
        for branch, expr in _projection_expr(source, column.name.lower()):
            out |= trace_expression(branch, expr, _depth + 1)
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
