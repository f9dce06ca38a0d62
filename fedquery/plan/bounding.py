"""Rule: bound every privacy unit's contribution, in the site's SQL, before noise.

Under differential privacy the fragment becomes three steps:

1. ``__rows``: the query's rows (FROM/JOIN/WHERE) with the group keys, the privacy unit, and
   per row the value each partial adds — clamped to public bounds and, for sums of real
   values, encoded as fixed-point integers;
2. ``__capped``: at most ``row_cap`` rows per unit, chosen by a keyed hash of the row (the
   site's secret key, so the choice is deterministic and unpredictable — not ``random()``);
3. the partials per group: sums of the bounded per-row values.  When every group key has a
   public domain, every key of the domain (and NULL) gets a row, zeros included, so which
   groups exist is never revealed by the data.  Otherwise each group also counts its units,
   and the site releases only the groups that pass OpenDP's threshold mechanism on that
   count (``protect.noise.threshold_keys``).

One unit then changes any partial vector by at most ``row_cap × per_row`` (L1 and L2): that is
the sensitivity ``protect.noise`` calibrates to.  MIN and MAX cannot be bounded this way and
are refused.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.scope import ScopeType

from fedquery.errors import NotSupportedError
from fedquery.ir import Partial
from fedquery.plan.bounds import expression_bounds
from fedquery.plan.disclosure import unit_expression
from fedquery.plan.state import PlanState
from fedquery.sql.lineage import (plain_base_column, projection_sources, root_scope,
                                  trace_column)
from fedquery.sql.support import walk_same_scope

DIALECT = "duckdb"
KEY_UNITS = "__key_units"  # per group: distinct units, for the threshold on data-driven keys


def _rounded(value: float) -> float:
    """``value`` rounded half away from zero, as SQL ROUND does (for value ≥ 0)."""
    return float(math.floor(value + 0.5))


def _number(node) -> float | None:
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal):
        value = _number(node.this)
        return None if value is None else -value
    if isinstance(node, exp.Literal) and not node.is_string:
        return float(node.this)
    return None


def _q(name: str) -> str:
    return '"' + name + '"'


def _literal(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


class KeyDomains:
    """The public values of group keys (policy domains and CASE labels) in one query."""

    def __init__(self, state: PlanState) -> None:
        self.state = state
        self.scope = root_scope(state.query)
        self.domains = dict(state.bounding.domains)

    def key_values(self, key: exp.Expression) -> list | None:
        """The public values of a group key (NULL included), or None if it has none."""
        if isinstance(key, exp.Case):
            outputs = [i.args.get("true") for i in key.args.get("ifs", [])]
            default = key.args.get("default")
            every = outputs + ([default] if default else [])
            if all(isinstance(o, exp.Literal) for o in every):
                values = list(dict.fromkeys(o.to_py() for o in every))
                return values if default is not None else values + [None]
            return None
        if isinstance(key, exp.Column):
            base = plain_base_column(self.scope, key)
            domain = self.domains.get(base) if base else None
            if domain is not None:
                return list(domain) + [None]
        return None


class _Context(KeyDomains):
    def __init__(self, state: PlanState) -> None:
        super().__init__(state)
        self.bounds = dict(state.bounding.column_bounds)
        self.where = self._where_bounds()

    def _where_bounds(self) -> dict:
        """Bounds the outer WHERE imposes (``x BETWEEN a AND b``, ``x >= a``, ``x < b``…):
        rows outside are never aggregated, so a sum may use the tighter range."""
        where = self.state.query.args.get("where")
        out: dict = {}
        conjuncts = where.this.flatten() if where is not None and isinstance(
            where.this, exp.And) else ([where.this] if where is not None else [])
        for node in conjuncts:
            if isinstance(node, exp.Between) and isinstance(node.this, exp.Column):
                low, high = node.args.get("low"), node.args.get("high")
                if _number(low) is not None and _number(high) is not None:
                    self._tighten(out, node.this, _number(low), _number(high))
            elif isinstance(node, exp.GTE | exp.GT | exp.LTE | exp.LT) and isinstance(
                    node.this, exp.Column) and _number(node.expression) is not None:
                value = _number(node.expression)
                lower = isinstance(node, exp.GTE | exp.GT)
                self._tighten(out, node.this, value if lower else float("-inf"),
                              float("inf") if lower else value)
        return out

    def _tighten(self, out: dict, column: exp.Column, low: float, high: float) -> None:
        for base in trace_column(self.scope, column):
            old = out.get(base, (float("-inf"), float("inf")))
            out[base] = (max(old[0], low), min(old[1], high))

    def column_bounds(self, column: exp.Column, scope=None):
        """Bounds of a column: the policy's (tightened by the outer WHERE) for a table
        column; through a CTE or subquery, the bounds of the expression it is computed as."""
        scope = scope or self.scope
        source = scope.sources.get(column.table)
        if isinstance(source, exp.Table):
            base = (source.name.lower(), column.name.lower())
            policy = self.bounds.get(base)
            if policy is None:
                return None
            lo, hi = self.where.get(base, policy) if scope is self.scope else policy
            lo, hi = max(policy[0], lo), min(policy[1], hi)
            return None if lo > hi else (lo, hi)
        if source is None:
            return None
        parts = [expression_bounds(expr, lambda c, s=branch: self.column_bounds(c, s))
                 for branch, expr in projection_sources(source, column.name.lower())]
        if not parts or any(p is None for p in parts):
            return None
        return min(p[0] for p in parts), max(p[1] for p in parts)


def _row_value(ctx: _Context, partial: Partial) -> tuple[str, float, int, tuple | None]:
    """(per-row SQL, the most one row adds, fixed-point factor, argument clamp)."""
    cond = partial.condition
    guard = (lambda v: f"CASE WHEN {cond} THEN {v} ELSE 0 END") if cond else (lambda v: v)
    if partial.kind in ("count", "count_distinct_unit"):
        agg = sqlglot.parse_one(partial.sql, read=DIALECT)
        agg = agg.this if isinstance(agg, exp.Filter) else agg
        if isinstance(agg, exp.CountIf):
            test = agg.this.sql(DIALECT)
        elif partial.kind == "count_distinct_unit" or isinstance(agg.this, exp.Star):
            test = "TRUE"
        else:
            test = f"{partial.argument} IS NOT NULL"
        if cond:
            test = f"({test}) AND ({cond})"
        return f"CASE WHEN {test} THEN 1 ELSE 0 END", 1.0, 1, None
    argument = sqlglot.parse_one(partial.argument, read=DIALECT)
    bounds = expression_bounds(argument, ctx.column_bounds)
    if bounds is None:
        raise NotSupportedError(
            f"cannot bound {partial.argument} for differential privacy: every column it reads "
            "needs bounds in the site's policy (and no division by a value that may be 0)")
    lo, hi = bounds
    scale = ctx.state.bounding.fixed_point
    clamped = f"LEAST(GREATEST(CAST({partial.argument} AS DOUBLE), {lo!r}), {hi!r})"
    # The encoded value is ROUND(v × scale) (half away from zero, as DuckDB rounds), so the
    # largest one row can add is the rounded encoding of the largest |v|.
    if partial.kind == "sum":
        per_row = _rounded(max(abs(lo), abs(hi)) * scale)
        value = f"CAST(ROUND({clamped} * {scale}) AS BIGINT)"
    else:  # sumsq
        per_row = _rounded(max(lo * lo, hi * hi) * scale)
        value = f"CAST(ROUND({clamped} * {clamped} * {scale}) AS BIGINT)"
    value = f"CASE WHEN {partial.argument} IS NULL THEN 0 ELSE {value} END"
    return guard(value), float(per_row), scale, (lo, hi)


def _key_count(ctx: _Context) -> int | None:
    """How many groups the public domains allow (1 without GROUP BY; None if unknown)."""
    total = 1
    for key in ctx.state.group_keys:
        values = ctx.key_values(key)
        if values is None:
            return None
        total *= len(values)
    return total


def _keys_sql(ctx: _Context, names) -> str | None:
    values = [ctx.key_values(k) for k in ctx.state.group_keys]
    if any(v is None for v in values):
        return None
    rows = [f"({', '.join(_literal(v) for v in combo)})" for combo in
            itertools.product(*values)]
    columns = ", ".join(_q(n) for n in names)
    return f"SELECT * FROM (VALUES {', '.join(rows)}) AS k({columns})"


def _row_cap(state: PlanState) -> int:
    """Rows one unit may add to the query: the largest ``max_rows_per_unit`` of the tables
    it reads (a join of a one-row-per-patient table with labs is capped at the labs' cap)."""
    caps = dict(state.bounding.row_caps)
    # Tables read as rows (FROM, JOIN, derived tables, CTEs); a subquery in a predicate
    # (IN / EXISTS) only filters and cannot repeat a row.
    tables = {source.name.lower() for scope in root_scope(state.query).traverse()
              if scope.scope_type != ScopeType.SUBQUERY
              for source in scope.sources.values() if isinstance(source, exp.Table)}
    missing = sorted(t for t in tables if t not in caps)
    if missing:
        raise NotSupportedError(f"table {missing[0]} has no max_rows_per_unit in the site's "
                                "policy, so one patient's contribution cannot be bounded")
    return max(caps[t] for t in tables)


def _conjuncts(node: exp.Expression | None) -> list[exp.Expression]:
    if node is None:
        return []
    return list(node.flatten()) if isinstance(node, exp.And) else [node]


def _refuse_link(what: str) -> None:
    raise NotSupportedError(
        f"{what}: under differential privacy every table must be linked to the privacy unit "
        "(JOIN ... ON a.patient_id = b.patient_id; unit IN (SELECT unit ...); EXISTS "
        "correlated on the unit), so that one patient can only touch their own rows")


def _check_unit_links(state: PlanState) -> None:
    """One patient must not reach other patients' rows: joins and predicate subqueries are
    allowed only through equality of privacy units (a join on an attribute, a cross join or
    an uncorrelated EXISTS would let one patient switch every row on or off)."""
    units = state.privacy_units

    def unit(scope, node) -> bool:
        columns = [node] if isinstance(node, exp.Column) else (
            [node.this, *node.expressions] if isinstance(node, exp.Coalesce) else [])
        if not columns or not all(isinstance(c, exp.Column) and c.table for c in columns):
            return False
        bases = set().union(*(trace_column(scope, c) for c in columns))
        return bool(bases) and all(units.get(t) == c for t, c in bases)

    def unit_equality(scope, conjuncts) -> bool:
        return any(isinstance(c, exp.EQ) and unit(scope, c.this) and unit(scope, c.expression)
                   for c in conjuncts)

    def child(scope, select):
        for sub in scope.subquery_scopes:
            if sub.expression is select:
                return sub
        return None

    for scope in root_scope(state.query).traverse():
        select = scope.expression
        if not isinstance(select, exp.Select):
            continue
        for join in select.args.get("joins") or []:
            if not unit_equality(scope, _conjuncts(join.args.get("on"))):
                _refuse_link(f"the join with {join.this.sql(DIALECT)} is not on the unit")
        for node in walk_same_scope(select):
            if isinstance(node, exp.In) and node.args.get("query") is not None:
                inner = node.args["query"].this
                sub = child(scope, inner)
                if (sub is None or not unit(scope, node.this) or len(inner.expressions) != 1
                        or not unit(sub, inner.expressions[0].unalias())):
                    _refuse_link("an IN subquery that is not unit IN (SELECT unit ...)")
            elif isinstance(node, exp.Exists):
                sub = child(scope, node.this)
                if sub is None or not unit_equality(
                        sub, _conjuncts(sub.expression.args.get("where") and
                                        sub.expression.args["where"].this)):
                    _refuse_link("an EXISTS subquery not correlated on the unit")
            elif isinstance(node, exp.Subquery) and not isinstance(
                    node.parent, exp.In | exp.Exists | exp.From | exp.Join):
                _refuse_link("a scalar subquery")


def _within_cap(state: PlanState, cap: int) -> bool:
    """True when the site's statistics show that no unit can reach more than ``cap`` rows:
    the query reads base tables only (FROM and JOINs on the unit, no CTE, derived table,
    set operation or table function that could repeat a row), and the product over them of
    the most rows any unit has in each is at most the cap.  A LEFT JOIN keeps a row where
    the other side has none, hence max(n, 1)."""
    observed = dict(state.bounding.observed_rows)
    query = state.query
    if (not observed or not isinstance(query, exp.Select) or query.args.get("with")
            or query.args.get("from_") is None):
        return False
    sources = [query.args["from_"].this, *(j.this for j in query.args.get("joins") or [])]
    if not all(isinstance(s, exp.Table) and isinstance(s.this, exp.Identifier)
               for s in sources):
        return False
    names = [s.name.lower() for s in sources]
    return all(n in observed for n in names) and math.prod(
        max(observed[n], 1) for n in names) <= cap


def _capped(cap: int, columns: list[str], hash_parts: str, key: str) -> str:
    """The CTEs ``__over`` and ``__capped``: each unit's rows in ``__rows`` (its ``columns``),
    at most ``cap`` of them — for a unit with more, the ``cap`` rows with the smallest keyed
    hash.

    Units within the cap (usually all of them) keep every row without a sort: only the rows
    of over-cap units go through the window.  Rows whose unit is NULL count as one unit, as
    ``PARTITION BY`` groups them.  The result is the same as the window over every row."""
    rows, unit, over = _q("__rows"), _q("__unit"), _q("__over")
    names = ", ".join(_q(c) for c in columns)
    linked = f"SELECT 1 FROM {over} WHERE {over}.{unit} = {rows}.{unit}"
    return (f"{over} AS (SELECT {unit} FROM {rows} GROUP BY {unit} HAVING COUNT(*) > {cap}), "
            f"{_q('__capped')} AS ("
            f"SELECT {names} FROM {rows} WHERE {unit} IS NOT NULL AND NOT EXISTS ({linked}) "
            f"UNION ALL SELECT {names} FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY {unit} "
            f"ORDER BY md5(concat_ws('|', '{key}', {hash_parts}))) AS {_q('__rank')} "
            f"FROM {rows} WHERE {unit} IS NULL OR EXISTS ({linked})) AS {_q('__ranked')} "
            f"WHERE {_q('__rank')} <= {cap})")


def bound_contributions(state: PlanState) -> PlanState:
    if state.bounding is None:
        return state
    _check_unit_links(state)
    ctx = _Context(state)
    unit = unit_expression(state)
    if unit is None:
        raise NotSupportedError("differential privacy needs the privacy unit: select the "
                                "privacy unit column (e.g. patient_id) in the subquery or CTE "
                                "the query reads from")
    for partial in state.partials:
        if partial.kind in ("min", "max"):
            raise NotSupportedError(f"{partial.kind.upper()} cannot be released with "
                                    "differential privacy; use a GROUP BY over bands (binned "
                                    "counts) instead")
    cap = _row_cap(state)
    n_keys = _key_count(ctx)
    rows, partials = [], []
    for j, partial in enumerate(state.partials):
        sql, per_row, fixed_point, arg_bounds = _row_value(ctx, partial)
        rows.append(f"{sql} AS {_q(f'__v_{j}')}")
        # One unit adds at most `cap` rows; a distinct-unit count moves by at most 1 in each
        # of the groups the unit reaches, so by at most min(cap, number of groups).
        sensitivity = (min(cap, n_keys) if partial.kind == "count_distinct_unit" and n_keys
                       else cap * per_row)
        partials.append(replace(partial, per_row=per_row, fixed_point=fixed_point,
                                arg_bounds=arg_bounds, sensitivity=float(sensitivity)))
    groups = list(state.group_names)
    key_sql = [f"{k.sql(DIALECT)} AS {_q(g)}" for k, g in zip(state.group_keys, groups)]
    # The hash that picks which of an over-cap unit's rows are kept reads these columns
    # (carried through __rows so that it is computed only for the rows of over-cap units).
    hashed = ([f"{p.argument} AS {_q(f'__a_{j}')}" for j, p in enumerate(state.partials)
               if p.argument]
              + [f"({p.condition}) AS {_q(f'__c_{j}')}" for j, p in enumerate(state.partials)
                 if p.condition])
    hashed_names = ([f"__a_{j}" for j, p in enumerate(state.partials) if p.argument]
                    + [f"__c_{j}" for j, p in enumerate(state.partials) if p.condition])
    hash_parts = ", ".join(f"CAST({_q(name)} AS VARCHAR)"
                           for name in ["__unit", *groups, *hashed_names])
    columns = ["__unit", *groups, *(f"__v_{j}" for j in range(len(rows))), *hashed_names]
    key = state.bounding.hash_key.replace("'", "''")
    source = state.query.copy()
    for arg in ("having", "order", "limit", "offset", "distinct", "qualify", "group"):
        source.set(arg, None)
    source.set("expressions", [sqlglot.parse_one(f"{unit.sql(DIALECT)} AS {_q('__unit')}",
                                                 read=DIALECT)]
               + [sqlglot.parse_one(s, read=DIALECT) for s in key_sql + rows + hashed])
    sums = ", ".join(f"COALESCE(SUM({_q(f'__v_{j}')}), 0) AS {_q(p.name)}"
                     if p.kind != "count_distinct_unit" else
                     f"COUNT(DISTINCT {_q('__unit')}) FILTER (WHERE {_q(f'__v_{j}')} > 0) AS "
                     f"{_q(p.name)}" for j, p in enumerate(partials))
    group_by = f" GROUP BY {', '.join(_q(g) for g in groups)}" if groups else ""
    select_groups = "".join(f"{_q(g)}, " for g in groups)
    capped = (f"{_q('__capped')} AS (SELECT * FROM {_q('__rows')})"
              if _within_cap(state, cap) else _capped(cap, columns, hash_parts, key))
    fragment = (f"WITH {_q('__rows')} AS ({source.sql(DIALECT)}), {capped} "
                f"SELECT {select_groups}{sums} FROM {_q('__capped')}{group_by}")
    if groups:
        keys = _keys_sql(ctx, groups)
        if keys is None:
            # Keys the data reveals: each group also reports how many units it holds, and
            # the site releases only groups whose noisy unit count passes OpenDP's threshold
            # (protect.noise.threshold_keys).  The column never leaves the site.
            units = f", COUNT(DISTINCT {_q('__unit')}) AS {_q(KEY_UNITS)}"
            fragment = fragment.replace(f" FROM {_q('__capped')}{group_by}",
                                        f"{units} FROM {_q('__capped')}{group_by}")
            return replace(state, fragment_sql=fragment, partials=tuple(partials),
                           row_cap=cap, threshold=True)
        join = " AND ".join(f"k.{_q(g)} IS NOT DISTINCT FROM f.{_q(g)}" for g in groups)
        filled = ", ".join(f"COALESCE(f.{_q(p.name)}, 0) AS {_q(p.name)}" for p in partials)
        fragment = (f"SELECT {', '.join('k.' + _q(g) for g in groups)}, {filled} FROM "
                    f"({keys}) AS k LEFT JOIN ({fragment}) AS f ON {join}")
    return replace(state, fragment_sql=fragment, partials=tuple(partials), row_cap=cap)
