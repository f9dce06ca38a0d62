"""Rule: build the site fragment: the query's FROM/JOIN/WHERE (and CTEs) computing every
partial per group key.  HAVING, ORDER BY, LIMIT and DISTINCT are not pushed: they act on
combined values, after the sites.

>>> from fedquery.plan.state import PlanState
>>> from fedquery.plan.groups import resolve_group_keys
>>> from fedquery.plan.decompose import decompose_aggregates
>>> from fedquery.sql import parse_statement, qualify_query
>>> q = qualify_query(parse_statement("SELECT sex, AVG(age) FROM p WHERE age > 3 GROUP BY sex "
...                                   "ORDER BY 2 LIMIT 1"), {"p": {"sex": "VARCHAR", "age": "INT"}})
>>> s = push_to_sites(decompose_aggregates(resolve_group_keys(PlanState(q))))
>>> s.fragment_sql
'SELECT "p"."sex" AS "g_0", SUM("p"."age") AS "p_0", COUNT("p"."age") AS "p_1" FROM "p" AS "p" WHERE "p"."age" > 3 GROUP BY "p"."sex"'
"""

from __future__ import annotations

from dataclasses import replace

import sqlglot
from sqlglot import exp

from fedquery.plan.state import PlanState

DIALECT = "duckdb"


def push_to_sites(state: PlanState) -> PlanState:
    fragment = state.query.copy()
    for arg in ("having", "order", "limit", "offset", "distinct", "qualify"):
        fragment.set(arg, None)
    projections = [exp.alias_(key.copy(), name, quoted=True)
                   for key, name in zip(state.group_keys, state.group_names)]
    projections += [exp.alias_(sqlglot.parse_one(p.sql, read=DIALECT), p.name, quoted=True)
                    for p in state.partials]
    fragment.set("expressions", projections)
    if state.group_keys:
        fragment.set("group", exp.Group(expressions=[k.copy() for k in state.group_keys]))
    else:
        fragment.set("group", None)
    return replace(state, fragment_sql=fragment.sql(DIALECT))
