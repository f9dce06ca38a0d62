"""Rule: add per-cell disclosure checks to the site fragment.

When the requirements ask for small-cell or dominance control, the site must know, per group,
how many privacy units contribute to each aggregate and how much the largest contributors hold
of each sum.  Both need a per-unit aggregation first, so the fragment becomes

    SELECT f.*, d.__n_*, d.__top_*, d.__abs_*
    FROM (<fragment>) f LEFT JOIN (<per-group checks over per-unit sub-totals>) d ON <keys>

The check columns never leave the site: ``protect.disclosure`` reads and drops them.
Plans for the ``open`` policy (minimum cell 1, no dominance) are unchanged.
"""

from __future__ import annotations

from dataclasses import replace

import sqlglot
from sqlglot import exp

from fedquery.errors import NotSupportedError
from fedquery.ir import CellChecks
from fedquery.plan.state import PlanState
from fedquery.sql.lineage import output_names, root_scope, trace_column

DIALECT = "duckdb"


def _q(name: str) -> str:
    return '"' + name + '"'


def unit_expression(state: PlanState) -> exp.Column | None:
    """A column of the outer query's FROM that is a privacy unit, or None."""
    scope = root_scope(state.query)
    for alias, source in scope.sources.items():
        if isinstance(source, exp.Table):
            unit = state.privacy_units.get(source.name.lower())
            if unit:
                return exp.column(unit, table=alias, quoted=True)
            continue
        for name in output_names(source):
            candidate = exp.column(name, table=alias, quoted=True)
            bases = trace_column(scope, candidate)
            if bases and all(state.privacy_units.get(t) == c for t, c in bases):
                return candidate
    return None


def _contributor_sql(partial) -> str:
    """Per unit, how many rows feed this partial (> 0 means the unit contributes)."""
    if partial.kind in ("count", "count_distinct_unit"):
        return partial.sql
    count = f"COUNT({partial.argument})"
    return f"{count} FILTER (WHERE {partial.condition})" if partial.condition else count


def _per_unit_sql(state: PlanState, unit: exp.Column, contributors: list[str],
                  sums: list[str]) -> str:
    query = state.query.copy()
    for arg in ("having", "order", "limit", "offset", "distinct", "qualify"):
        query.set(arg, None)
    projections = [exp.alias_(k.copy(), g, quoted=True)
                   for k, g in zip(state.group_keys, state.group_names)]
    projections.append(exp.alias_(unit.copy(), "__unit", quoted=True))
    projections += [exp.alias_(sqlglot.parse_one(sql, read=DIALECT), f"__c_{i}", quoted=True)
                    for i, sql in enumerate(contributors)]
    projections += [exp.alias_(sqlglot.parse_one(sql, read=DIALECT), f"__s_{j}", quoted=True)
                    for j, sql in enumerate(sums)]
    query.set("expressions", projections)
    query.set("group", exp.Group(expressions=[k.copy() for k in state.group_keys]
                                 + [unit.copy()]))
    return query.sql(DIALECT)


def add_disclosure_checks(state: PlanState) -> PlanState:
    req = state.requirements
    if not req.needs_cell_checks or state.bounding is not None:
        return state  # under noise, cells are checked on the noisy counts (protect.noise)
    unit = unit_expression(state)
    if unit is None:
        raise NotSupportedError(
            "small-cell control needs the privacy unit: select the privacy unit column "
            "(e.g. patient_id) in the subquery or CTE the query reads from")
    contributors = list(dict.fromkeys(
        _contributor_sql(p) for p in state.partials if p.kind not in ("min", "max")) or
        ["COUNT(*)"])
    sums = [p.sql for p in state.partials if p.kind == "sum"] if req.dominance else []
    groups = [_q(g) for g in state.group_names]
    partition = f"PARTITION BY {', '.join(groups)} " if groups else ""
    ranks = "".join(f", ROW_NUMBER() OVER ({partition}ORDER BY ABS({_q(f'__s_{j}')}) DESC "
                    f"NULLS LAST) AS {_q(f'__r_{j}')}" for j in range(len(sums)))
    counts = [f"COUNT(*) FILTER (WHERE {_q(f'__c_{i}')} > 0) AS {_q(f'__n_{i}')}"
              for i in range(len(contributors))]
    n = req.dominance[0] if req.dominance else 0
    tops = [f"SUM(ABS({_q(f'__s_{j}')})) FILTER (WHERE {_q(f'__r_{j}')} <= {n}) AS "
            f"{_q(f'__top_{j}')}, SUM(ABS({_q(f'__s_{j}')})) AS {_q(f'__abs_{j}')}"
            for j in range(len(sums))]
    checks_sql = (f"WITH {_q('__per_unit')} AS ({_per_unit_sql(state, unit, contributors, sums)}),"
                  f" {_q('__ranked')} AS (SELECT *{ranks} FROM {_q('__per_unit')}) "
                  f"SELECT {', '.join(groups + counts + tops)} FROM {_q('__ranked')}"
                  + (f" GROUP BY {', '.join(groups)}" if groups else ""))
    check_columns = [f"d.{_q(f'__n_{i}')}" for i in range(len(contributors))]
    check_columns += [f"d.{_q(c)}" for j in range(len(sums))
                      for c in (f"__top_{j}", f"__abs_{j}")]
    join = (" LEFT JOIN (" + checks_sql + ") AS d ON " + " AND ".join(
        f"f.{g} IS NOT DISTINCT FROM d.{g}" for g in groups)) if groups else (
        " CROSS JOIN (" + checks_sql + ") AS d")
    sql = f"SELECT f.*, {', '.join(check_columns)} FROM ({state.fragment_sql}) AS f{join}"
    checks = CellChecks(
        min_cell_count=req.min_cell_count, dominance=req.dominance,
        zero_cells_disclosive=req.zero_cells_disclosive,
        contributors=tuple(f"__n_{i}" for i in range(len(contributors))),
        dominant=tuple((f"__top_{j}", f"__abs_{j}") for j in range(len(sums))))
    return replace(state, fragment_sql=sql, checks=checks)
