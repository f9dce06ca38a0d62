"""The planner: a tuple of small pure rules run in order by one driver.

>>> from fedquery.sql import parse_statement, qualify_query
>>> q = qualify_query(parse_statement("SELECT sex, COUNT(*) AS n FROM p GROUP BY sex"),
...                   {"p": {"sex": "VARCHAR"}})
>>> plan = plan_query(q)
>>> plan.fragment.sql
'SELECT "p"."sex" AS "g_0", COUNT(*) AS "p_0" FROM "p" AS "p" GROUP BY "p"."sex"'
>>> plan.combine_sql
'SELECT "g_0", SUM("p_0") AS "c_0", BOOL_OR(CAST("__suppressed" AS BOOLEAN)) AS "__suppressed", COUNT(*) AS "__sites", SUM("__units") AS "__units", COUNT("__units") AS "__units_reported" FROM partials GROUP BY "g_0"'
>>> plan.post_sql
'SELECT "g_0" AS "o_0", "c_0" AS "o_1", NULL AS "o_0_lo", NULL AS "o_0_hi", NULL AS "o_1_lo", NULL AS "o_1_hi", "__suppressed" FROM combined'
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping

from sqlglot import exp

from fedquery.ir import Bounding, FederatedPlan, Requirements, SiteFragment
from fedquery.plan.combine import build_combine, build_post_process
from fedquery.plan.bounding import bound_contributions
from fedquery.plan.decompose import decompose_aggregates
from fedquery.plan.disclosure import add_disclosure_checks
from fedquery.plan.fragment import push_to_sites
from fedquery.plan.groups import resolve_group_keys
from fedquery.plan.secure import lay_out_slots
from fedquery.plan.state import PlanState

log = logging.getLogger(__name__)

Rule = Callable[[PlanState], PlanState]

RULES: tuple[Rule, ...] = (
    resolve_group_keys,
    decompose_aggregates,
    push_to_sites,
    lay_out_slots,
    bound_contributions,
    add_disclosure_checks,
    build_combine,
    build_post_process,
)


def _fingerprint(state: PlanState) -> str:
    """Identifies what the sites compute: group keys and partials (not the FROM text, which
    may differ harmlessly when sites expand ``*`` over extra local columns)."""
    parts = [k.sql() for k in state.group_keys]
    parts += [f"{p.name}:{p.kind}:{p.sql}" for p in state.partials]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def plan_query(query: exp.Expression, privacy_units: Mapping[str, str] | None = None,
               requirements: Requirements = Requirements(), bounding: Bounding | None = None,
               rules: tuple[Rule, ...] = RULES, public_domains: tuple = ()) -> FederatedPlan:
    """Plan a qualified, supported SELECT into site fragment + combine + post-processing.

    ``bounding`` (a site's contribution bounds) turns on the differential-privacy rewrite."""
    state = PlanState(query=query, privacy_units=dict(privacy_units or {}),
                      requirements=requirements, bounding=bounding,
                      public_domains=tuple(public_domains))
    for rule in rules:
        state = rule(state)
        log.debug("plan rule %s done", rule.__name__)
    fragment = SiteFragment(state.fragment_sql, state.group_names, state.partials, state.checks,
                            state.row_cap, state.threshold)
    ctes = {cte.alias_or_name.lower() for cte in query.find_all(exp.CTE)}
    tables = tuple(sorted({t.name.lower() for t in query.find_all(exp.Table)} - ctes))
    return FederatedPlan(fragment=fragment, combine_sql=state.combine_sql,
                         post_sql=state.post_sql,
                         post_interval_sql=state.post_interval_sql,
                         output_names=tuple(p.alias_or_name for p in query.expressions),
                         aggregate_outputs=state.aggregate_outputs,
                         secure_groups=state.secure_groups,
                         fingerprint=_fingerprint(state), tables=tables, notes=state.notes)
