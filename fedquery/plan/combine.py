"""Rules: the combine query (merge the sites' partials per group) and the post-processing
query (rebuild the analyst's expressions from combined values; HAVING, ORDER BY, LIMIT).

The combine query reads a relation ``partials`` (every site's rows) and yields the group
columns ``g_*`` and combined columns ``c_*``; the post-processing query reads ``combined`` and
yields the output columns ``o_*``.
"""

from __future__ import annotations

from dataclasses import replace

from sqlglot import exp

from fedquery.errors import ProgrammingError
from fedquery.plan.decompose import aggregate_units
from fedquery.plan.intervals import interval_sql
from fedquery.plan.state import PlanState

DIALECT = "duckdb"
SUPPRESSED = "__suppressed"  # a cell suppressed by a site's or the combined disclosure check
MAX_INTERVAL_SQL = 8000  # characters; interval arithmetic deeper than this is not claimed
SITES = "__sites"  # how many sites contributed to a cell
UNITS = "__units"  # units behind a cell's least-populated aggregate, as each site counted them
UNITS_REPORTED = "__units_reported"  # how many sites counted them


def build_combine(state: PlanState) -> PlanState:
    """``SELECT g_*, SUM(p_i) AS c_i, … FROM partials GROUP BY g_*``."""
    groups = [exp.column(g, quoted=True) for g in state.group_names]
    aggs = [exp.alias_(exp.func(p.combine, exp.column(p.name, quoted=True)), "c_" + p.name[2:],
                       quoted=True) for p in state.partials]
    flags = [exp.alias_(exp.func("BOOL_OR", exp.column(SUPPRESSED, quoted=True)), SUPPRESSED,
                        quoted=True),
             exp.alias_(exp.Count(this=exp.Star()), SITES, quoted=True),
             exp.alias_(exp.Sum(this=exp.column(UNITS, quoted=True)), UNITS, quoted=True),
             exp.alias_(exp.Count(this=exp.column(UNITS, quoted=True)), UNITS_REPORTED,
                        quoted=True)]
    select = exp.select(*groups, *aggs, *flags).from_("partials")
    if groups:
        select = select.group_by(*[g.copy() for g in groups])
    return replace(state, combine_sql=select.sql(DIALECT))


def _rewriter(state: PlanState):
    keys = {k.sql(comments=False): exp.column(g, quoted=True)
            for k, g in zip(state.group_keys, state.group_names)}
    aggs = {a.key: a.combined for a in state.aggregates}

    def rewrite(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Filter | exp.AggFunc | exp.Anonymous):
            units = aggregate_units(node)
            if units and units[0] is node:
                combined = aggs[node.sql(DIALECT)].copy()
                # Keep the combined expression one operand wherever it is substituted.
                return combined if isinstance(combined, exp.Column | exp.Func) else exp.paren(
                    combined, copy=False)
        replacement = keys.get(node.sql(comments=False))
        if replacement is not None:
            return replacement.copy()
        return node

    def to_post(expression: exp.Expression) -> exp.Expression:
        out = expression.copy().transform(rewrite)
        for column in out.find_all(exp.Column):
            if column.table:
                raise ProgrammingError(
                    f"column {column.sql(DIALECT)} must appear in the GROUP BY clause or be "
                    "used in an aggregate function")
        return out
    return to_post


def _order_items(state: PlanState, to_post) -> list[exp.Expression]:
    order = state.query.args.get("order")
    if order is None:
        return []
    aliases = {p.alias.lower(): p.unalias() for p in state.query.expressions if p.alias}
    items = []
    for ordered in order.expressions:
        target = ordered.this
        if isinstance(target, exp.Column) and not target.table and target.name.lower() in aliases:
            target = aliases[target.name.lower()]
        item = ordered.copy()
        item.set("this", to_post(target))
        items.append(item)
    return items


def build_post_process(state: PlanState) -> PlanState:
    """``SELECT <expr over g_*, c_*> AS o_i … FROM combined [WHERE having] [ORDER BY] [LIMIT]``."""
    to_post = _rewriter(state)
    query = state.query
    rewritten = [to_post(p.unalias()) for p in query.expressions]
    outputs = [exp.alias_(e, f"o_{i}", quoted=True) for i, e in enumerate(rewritten)]
    noisy = frozenset("c_" + p.name[2:] for p in state.partials
                      if p.kind in ("count", "count_distinct_unit", "sum", "sumsq"))
    ends = []
    noisy_plan = state.requirements.noise != "none"
    for i, expression in enumerate(rewritten):  # 95 % interval ends (see plan/intervals.py)
        if not noisy_plan:  # exact answers have no intervals: skip the arithmetic
            ends += [exp.alias_(exp.Null(), f"o_{i}_{end}", quoted=True) for end in ("lo", "hi")]
            continue
        lo, hi = (exp.Null(), exp.Null()) if query.args.get("distinct") else interval_sql(
            expression, noisy)
        if len(lo.sql(DIALECT)) + len(hi.sql(DIALECT)) > MAX_INTERVAL_SQL:
            lo, hi = exp.Null(), exp.Null()  # too deep to propagate usefully: no claim
        ends += [exp.alias_(lo, f"o_{i}_lo", quoted=True),
                 exp.alias_(hi, f"o_{i}_hi", quoted=True)]
    placeholders = [exp.alias_(exp.Null(), e.alias, quoted=True) for e in ends]
    flag = exp.column(SUPPRESSED, quoted=True)
    post = exp.select(*outputs, *placeholders, flag).from_("combined")
    if query.args.get("distinct"):
        post.set("distinct", exp.Distinct())
    having = query.args.get("having")
    if having is not None:
        post = post.where(to_post(having.this))
    order_items = _order_items(state, to_post)
    if order_items:
        post.set("order", exp.Order(expressions=order_items))
    for arg in ("limit", "offset"):
        if query.args.get(arg) is not None:
            post.set(arg, query.args[arg].copy())
    with_intervals = post.copy()
    with_intervals.set("expressions", [*outputs, *ends, flag.copy()])
    aggregate_outputs = tuple(i for i, e in enumerate(rewritten) if any(
        c.name.startswith("c_") for c in e.find_all(exp.Column)))
    return replace(state, post_sql=post.sql(DIALECT),
                   post_interval_sql=with_intervals.sql(DIALECT),
                   aggregate_outputs=aggregate_outputs)
