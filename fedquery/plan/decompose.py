"""Rule: decompose every aggregate of the query into additive per-site partials.

| Analyst writes            | Site partials                 | Combined (over ``c_*``)          |
|---------------------------|-------------------------------|----------------------------------|
| COUNT(*), COUNT(x)        | count                         | Σ count                          |
| COUNT(DISTINCT unit)      | count of distinct units       | Σ (a unit at two sites counts 2) |
| SUM(x)                    | sum                           | Σ sum                            |
| AVG(x)                    | sum, count                    | Σsum / Σcount                    |
| VAR_*/STDDEV_*(x)         | sum, sum of squares, count    | from the three sums              |
| MIN(x), MAX(x)            | min / max                     | min / max                        |

``FILTER (WHERE …)`` is kept on every partial of its aggregate.  Identical partials are shared
(``AVG(x)`` and ``SUM(x)`` use one sum).

>>> from fedquery.plan.state import PlanState
>>> from fedquery.sql import parse_statement, qualify_query
>>> q = qualify_query(parse_statement("SELECT AVG(x), SUM(x) FROM t"), {"t": {"x": "INTEGER"}})
>>> [(p.name, p.kind, p.sql) for p in decompose_aggregates(PlanState(q)).partials]
[('p_0', 'sum', 'SUM("t"."x")'), ('p_1', 'count', 'COUNT("t"."x")')]
"""

from __future__ import annotations

from dataclasses import replace

import sqlglot
from sqlglot import exp

from fedquery.errors import NotSupportedError
from fedquery.ir import Partial
from fedquery.plan.state import AggregateUse, PlanState
from fedquery.sql.lineage import root_scope, trace_expression
from fedquery.sql.support import aggregate_name, is_aggregate, walk_same_scope

DIALECT = "duckdb"
_COMBINE = {"count": "SUM", "count_distinct_unit": "SUM", "sum": "SUM", "sumsq": "SUM",
            "min": "MIN", "max": "MAX"}


def aggregate_units(expression: exp.Expression) -> list[exp.Expression]:
    """Aggregate calls in ``expression`` (same scope), each with its FILTER if it has one."""
    units = []
    for node in walk_same_scope(expression):
        if isinstance(node, exp.Filter) and is_aggregate(node.this):
            units.append(node)
        elif is_aggregate(node) and not isinstance(node.parent, exp.Filter):
            units.append(node)
    return units


class _Partials:
    """Allocates shared partial columns ``p_i`` and their combined columns ``c_i``."""

    def __init__(self) -> None:
        self.partials: list[Partial] = []
        self._by_sql: dict[str, str] = {}

    def add(self, kind: str, aggregate: exp.Expression, condition: exp.Expression | None,
            argument: exp.Expression | None) -> exp.Column:
        if condition is not None:
            aggregate = exp.Filter(this=aggregate, expression=condition.copy())
        sql = aggregate.sql(DIALECT)
        key = f"{kind}:{sql}"
        if key not in self._by_sql:
            name = f"p_{len(self.partials)}"
            self._by_sql[key] = name
            self.partials.append(Partial(
                name, kind, sql, _COMBINE[kind],
                argument.sql(DIALECT) if argument is not None else "",
                condition.this.sql(DIALECT) if condition is not None else ""))
        return exp.column("c_" + self._by_sql[key][2:], quoted=True)


def _template(sql: str, **columns: exp.Column) -> exp.Expression:
    """Parse a combine expression written as SQL, with ``{name}`` standing for a column."""
    return sqlglot.parse_one(sql.format(**{k: c.sql(DIALECT) for k, c in columns.items()}),
                             read=DIALECT)


def _variance(n: exp.Column, s: exp.Column, q: exp.Column, population: bool) -> exp.Expression:
    """Variance from count n, sum s and sum of squares q; NULL where DuckDB gives NULL
    (no rows, or one row for the sample variance); clamped at 0 against rounding."""
    minimum, denominator = ("0", "{n}") if population else ("1", "({n} - 1)")
    return _template(
        "CASE WHEN {n} > " + minimum + " THEN GREATEST(({q} - CAST({s} AS DOUBLE) * "
        "CAST({s} AS DOUBLE) / {n}) / " + denominator + ", 0.0) END", n=n, s=s, q=q)


def _check_distinct_unit(state: PlanState, agg: exp.Count) -> exp.Expression:
    distinct = agg.this
    args = distinct.expressions
    if len(args) != 1:
        raise NotSupportedError("COUNT(DISTINCT ...) of several columns is not supported")
    arg = args[0]
    bases = trace_expression(root_scope(state.query), arg)
    units = {(t, u) for t, u in state.privacy_units.items()}
    # A JOIN ... USING (unit) column is qualified as COALESCE(a.unit, b.unit).
    columns = [arg] if isinstance(arg, exp.Column) else (
        [arg.this, *arg.expressions] if isinstance(arg, exp.Coalesce) else [])
    if (not columns or not all(isinstance(c, exp.Column) for c in columns) or not bases
            or not bases <= units):
        known = ", ".join(f"{t}.{u}" for t, u in sorted(state.privacy_units.items())) or "none"
        raise NotSupportedError(
            f"COUNT(DISTINCT {arg.sql(DIALECT)}) cannot be combined across sites: the same "
            "value can occur at several sites; only COUNT(DISTINCT <privacy unit>) is "
            f"supported (privacy units: {known})")
    return arg


def _decompose(state: PlanState, unit: exp.Expression, alloc: _Partials) -> exp.Expression:
    agg = unit.this if isinstance(unit, exp.Filter) else unit
    cond = unit.expression if isinstance(unit, exp.Filter) else None
    name = aggregate_name(agg)
    if isinstance(agg, exp.Anonymous):  # MEAN is rewritten at qualification; others refused
        raise NotSupportedError(f"aggregate {name} is not supported")
    arg = agg.this
    if isinstance(agg, exp.Count):
        if isinstance(arg, exp.Distinct):
            unit_col = _check_distinct_unit(state, agg)
            return alloc.add("count_distinct_unit", agg.copy(), cond, unit_col)
        return alloc.add("count", agg.copy(), cond, None if isinstance(arg, exp.Star) else arg)
    if isinstance(agg, exp.CountIf):
        return alloc.add("count", agg.copy(), cond, arg)
    if isinstance(agg, exp.Min | exp.Max):
        kind = "min" if isinstance(agg, exp.Min) else "max"
        return alloc.add(kind, agg.copy(), cond, arg)
    total = alloc.add("sum", exp.Sum(this=arg.copy()), cond, arg)
    if isinstance(agg, exp.Sum):
        return total
    count = alloc.add("count", exp.Count(this=arg.copy()), cond, arg)
    if isinstance(agg, exp.Avg):
        return _template("CAST({s} AS DOUBLE) / NULLIF({n}, 0)", s=total, n=count)
    squares = alloc.add("sumsq", _template("SUM(CAST({x} AS DOUBLE) * CAST({x} AS DOUBLE))",
                                           x=arg), cond, arg)
    population = isinstance(agg, exp.VariancePop | exp.StddevPop)
    variance = _variance(count, total, squares, population)
    if isinstance(agg, exp.Variance | exp.VariancePop):
        return variance
    return exp.Sqrt(this=exp.paren(variance, copy=False))


def decompose_aggregates(state: PlanState) -> PlanState:
    query = state.query
    sources = list(query.expressions)
    for part in ("having", "order"):
        if query.args.get(part) is not None:
            sources.append(query.args[part])
    alloc = _Partials()
    uses: dict[str, AggregateUse] = {}
    notes = list(state.notes)
    for source in sources:
        for unit in aggregate_units(source):
            key = unit.sql(DIALECT)
            if key in uses:
                continue
            combined = _decompose(state, unit, alloc)
            uses[key] = AggregateUse(key, aggregate_name(
                unit.this if isinstance(unit, exp.Filter) else unit), combined)
    if any(p.kind == "count_distinct_unit" for p in alloc.partials):
        notes.append("COUNT(DISTINCT unit) is summed over sites: a unit present at two sites "
                     "is counted twice")
    if not uses:
        raise NotSupportedError("queries must aggregate (COUNT, SUM, AVG, ...)")
    return replace(state, aggregates=tuple(uses.values()), partials=tuple(alloc.partials),
                   notes=tuple(notes))
