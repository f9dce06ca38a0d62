"""Rule: resolve the GROUP BY keys to expressions.

Ordinals and select aliases are already expanded by qualification; this rule expands
``GROUP BY ALL`` (every non-aggregate projection) and removes duplicate keys.

>>> from fedquery.plan.state import PlanState
>>> from fedquery.sql import parse_statement, qualify_query
>>> q = qualify_query(parse_statement("SELECT sex, age // 10, COUNT(*) FROM p GROUP BY ALL"),
...                   {"p": {"sex": "VARCHAR", "age": "INTEGER"}})
>>> [k.sql("duckdb") for k in resolve_group_keys(PlanState(q)).group_keys]
['"p"."sex"', '"p"."age" // 10']
"""

from __future__ import annotations

from dataclasses import replace

from sqlglot import exp

from fedquery.errors import NotSupportedError, ProgrammingError
from fedquery.plan.state import PlanState
from fedquery.sql.support import contains_aggregate


def resolve_group_keys(state: PlanState) -> PlanState:
    group = state.query.args.get("group")
    if group is None:
        return replace(state, group_keys=())
    if group.args.get("all"):
        candidates = [p.unalias() for p in state.query.expressions
                      if not contains_aggregate(p)]
    else:
        candidates = list(group.expressions)
    keys: dict[str, exp.Expression] = {}
    for key in candidates:
        if contains_aggregate(key):
            raise ProgrammingError(f"GROUP BY cannot contain an aggregate: {key.sql('duckdb')}")
        if key.find(exp.Subquery, exp.Select):
            raise NotSupportedError("subqueries in GROUP BY are not supported")
        keys.setdefault(key.sql(), key)
    return replace(state, group_keys=tuple(keys.values()))
