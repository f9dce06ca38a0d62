"""Enforcement of a site policy on a qualified query, by column lineage.

Every column occurrence is classified by how it is *used* (output/grouping, filter, join,
aggregate argument) and traced through CTEs and subqueries to the base columns it comes from;
each base column is then checked against its role and allowed uses.  Projections inside a
CTE or subquery are pass-through: what matters is how the outer query uses them, and lineage
carries that use back to the base column (so renaming cannot launder a column).

Rule ids (stable; stewards cite them in ``policy test`` cases):

| id | fires when |
|---|---|
| ``R-TABLE`` | a table the policy does not list (fail closed) |
| ``R-COLUMN`` | a column the policy does not list (fail closed) |
| ``R-HIDDEN`` | a hidden column is used anywhere |
| ``R-IDENTIFIER`` | an identifier is used other than to join on or count the privacy unit |
| ``R-USE`` | a column is used in a way its ``uses`` do not allow |
| ``R-AGGREGATE`` | an aggregate the column's ``aggregates`` do not allow |
| ``R-EXTREMES`` | MIN/MAX while ``disclosure.exact_extremes`` is false |
| ``R-QI-GROUP`` | grouping by a quasi-identifier that has no public domain |
| ``R-MAX-GROUPS`` | the public domains of the group keys allow more than ``max_groups`` |
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp
from sqlglot.optimizer.scope import Scope

from fedquery.ir import RuleHit
from fedquery.policy.model import Policy
from fedquery.sql.lineage import root_scope, trace_column
from fedquery.sql.support import aggregate_name, is_aggregate

_FAMILY = {"COUNT": "COUNT", "COUNT_IF": "COUNT", "SUM": "SUM", "AVG": "AVG", "MIN": "MIN",
           "MAX": "MAX", "VAR_SAMP": "VAR", "VAR_POP": "VAR", "STDDEV_SAMP": "STDDEV",
           "STDDEV_POP": "STDDEV"}
_HINTS = {
    "R-TABLE": "ask the site's data steward to release the table in its policy",
    "R-COLUMN": "ask the site's data steward to release the column in its policy",
    "R-HIDDEN": "hidden columns cannot be used in any way",
    "R-IDENTIFIER": "use the privacy unit only to join tables or in COUNT(DISTINCT ...)",
    "R-USE": "see `fedquery policy explain` for what this column allows; for grouping, a "
             "CASE band over it may be allowed",
    "R-AGGREGATE": "use one of the aggregates the policy allows for this column",
    "R-EXTREMES": "use AVG or a GROUP BY over bands instead of exact minima and maxima",
    "R-QI-GROUP": "group by a coarser column with a public domain (e.g. an age band)",
    "R-MAX-GROUPS": "group by fewer or coarser columns",
}


@dataclass(frozen=True)
class Use:
    """How one column occurrence is used."""

    kind: str  # output | group_by | filter | join | aggregate | passthrough
    aggregate: exp.Expression | None = None  # the aggregate call, for kind == aggregate


def _aggregate_of(node: exp.Expression, stop: exp.Expression) -> exp.Expression | None:
    current = node.parent
    while current is not None and current is not stop:
        if is_aggregate(current):
            return current
        current = current.parent
    return None


def classify(column: exp.Column, scope: Scope) -> Use:
    """The use of ``column`` within ``scope`` (its innermost query)."""
    select = scope.expression
    child, node = column, column.parent
    in_filter_clause = False
    while node is not None and node is not select:
        if isinstance(node, exp.Filter) and child is node.args.get("expression"):
            in_filter_clause = True
        if isinstance(node, exp.If) and child is node.this:
            # A CASE/IF condition compares, like a filter: GROUP BY CASE WHEN age < 18 ...
            # bands a filter-only column without grouping by its exact values.
            return Use("filter")
        if isinstance(node, exp.Where | exp.Having):
            return Use("filter")
        if isinstance(node, exp.Join):
            return Use("join")
        if isinstance(node, exp.Group):
            return Use("group_by")
        if isinstance(node, exp.Order):
            return Use("group_by")
        child, node = node, node.parent
    aggregate = _aggregate_of(column, select)
    if aggregate is not None:
        return Use("filter") if in_filter_clause else Use("aggregate", aggregate)
    return Use("output") if scope.is_root else Use("passthrough")


def _is_unit(policy: Policy, units: dict[str, str], base: tuple[str, str]) -> bool:
    table, column = base
    entry = policy.table(table)
    unit = (entry.privacy_unit if entry and entry.privacy_unit else None) or units.get(table)
    return unit is not None and unit.lower() == column


def _unit_only(policy, units, scope: Scope, expr: exp.Expression) -> bool:
    """``expr`` is a column (or COALESCE of columns) tracing only to privacy units."""
    columns = [expr] if isinstance(expr, exp.Column) else (
        [expr.this, *expr.expressions] if isinstance(expr, exp.Coalesce) else [])
    if not columns or not all(isinstance(c, exp.Column) and c.table for c in columns):
        return False
    bases = set().union(*(trace_column(scope, c) for c in columns))
    return bool(bases) and all(_is_unit(policy, units, b) for b in bases)


def _identifier_use_allowed(policy, units, scope: Scope, column: exp.Column, use: Use) -> bool:
    if use.kind == "passthrough":
        return True
    if not _unit_only(policy, units, scope, column):
        return False
    parent = column.parent
    if isinstance(parent, exp.Coalesce):  # JOIN ... USING (unit)
        parent = parent.parent
    if isinstance(parent, exp.EQ):
        other = parent.expression if parent.this is column else parent.this
        return _unit_only(policy, units, scope, other)
    if isinstance(parent, exp.In) and parent.this is column and parent.args.get("query"):
        inner = parent.args["query"].this
        projections = getattr(inner, "expressions", [])
        return len(projections) == 1 and _projection_is_unit(policy, units, scope, inner)
    if use.kind == "aggregate" and isinstance(parent, exp.Distinct | exp.Coalesce):
        return isinstance(use.aggregate, exp.Count) and isinstance(use.aggregate.this,
                                                                  exp.Distinct)
    return False


def _projection_is_unit(policy, units, scope: Scope, inner: exp.Expression) -> bool:
    for child in scope.subquery_scopes + scope.set_operation_scopes:
        if child.expression is inner:
            projection = inner.expressions[0].unalias()
            return _unit_only(policy, units, child, projection)
    return False


def _is_output_alias(scope: Scope, column: exp.Column) -> bool:
    """A reference to one of the query's own output aliases (ORDER BY alias)."""
    aliases = {p.alias.lower() for p in scope.expression.expressions if p.alias}
    return column.name.lower() in aliases and column.table not in scope.sources


class _Checker:
    def __init__(self, policy: Policy, site: str, units: dict[str, str]) -> None:
        self.policy, self.site, self.units = policy, site, units
        self.hits: dict[tuple[str, str], RuleHit] = {}

    def fire(self, rule: str, subject: str, message: str) -> None:
        self.hits.setdefault((rule, subject), RuleHit(rule, self.site, subject, message,
                                                      _HINTS.get(rule, "")))

    def check_tables(self, query: exp.Expression) -> None:
        ctes = {c.alias_or_name.lower() for c in query.find_all(exp.CTE)}
        for table in query.find_all(exp.Table):
            name = table.name.lower()
            if name not in ctes and self.policy.table(name) is None:
                self.fire("R-TABLE", name, f"table {name} is not released by the policy")

    def check_column(self, scope: Scope, column: exp.Column) -> None:
        use = classify(column, scope)
        bases = trace_column(scope, column)
        if not bases and not _is_output_alias(scope, column):
            self.fire("R-COLUMN", column.sql("duckdb"), f"cannot tell which table column "
                      f"{column.sql('duckdb')} comes from, so it cannot be checked")
        for table, name in sorted(bases):
            subject = f"{table}.{name}"
            col = self.policy.column(table, name)
            if self.policy.table(table) is None:
                continue  # reported by R-TABLE
            if col is None:
                self.fire("R-COLUMN", subject, f"column {subject} is not released by the "
                          "policy")
            elif col.role == "hidden":
                self.fire("R-HIDDEN", subject, f"column {subject} is hidden")
            elif col.role == "identifier":
                if not _identifier_use_allowed(self.policy, self.units, scope, column, use):
                    self.fire("R-IDENTIFIER", subject, f"identifier {subject} used in "
                              f"{'an' if use.kind[0] in 'aeiou' else 'a'} {use.kind} position")
            elif use.kind != "passthrough":
                self.check_use(subject, col, use)

    def check_use(self, subject: str, col, use: Use) -> None:
        needed = {"output": "group_by", "group_by": "group_by", "filter": "filter",
                  "join": "filter", "aggregate": "aggregate"}[use.kind]
        if needed not in col.uses:
            self.fire("R-USE", subject, f"column {subject} may not be used for {needed} "
                      f"(allowed: {', '.join(sorted(col.uses)) or 'nothing'})")
        if needed == "group_by" and col.role == "quasi_identifier" and col.domain is None:
            self.fire("R-QI-GROUP", subject, f"quasi-identifier {subject} has no public "
                      "domain to group by")
        if use.kind == "aggregate" and col.aggregates is not None:
            family = _FAMILY.get(aggregate_name(use.aggregate) or "", "")
            if isinstance(use.aggregate, exp.Count) and isinstance(use.aggregate.this,
                                                                   exp.Distinct):
                family = "COUNT_DISTINCT"
            if family and family not in col.aggregates:
                self.fire("R-AGGREGATE", subject, f"{family} of {subject} is not allowed "
                          f"(allowed: {', '.join(sorted(col.aggregates))})")

    def check_extremes(self, query: exp.Expression) -> None:
        if self.policy.disclosure.exact_extremes:
            return
        for node in query.find_all(exp.Min, exp.Max):
            self.fire("R-EXTREMES", node.sql_name(), f"{node.sql_name()} releases an exact "
                      "individual value and the policy does not allow exact extremes")

    def check_group_count(self, scope: Scope) -> None:
        """``max_groups`` is checked before anything runs, from public facts only: the sizes
        of the group keys' domains (plus a NULL group) and the labels of CASE bands.  A key
        whose number of values cannot be bounded that way is refused when a limit is set, so
        the decision never depends on the data."""
        limit = self.policy.disclosure.max_groups
        group = scope.expression.args.get("group")
        if limit is None or group is None:
            return
        keys = ([p.unalias() for p in scope.expression.expressions
                 if not any(is_aggregate(n) for n in p.walk())]
                if group.args.get("all") else list(group.expressions))
        total = 1
        for key in keys:
            size = self._cardinality(scope, key)
            if size is None:
                self.fire("R-MAX-GROUPS", key.sql("duckdb"), "the number of groups of "
                          f"{key.sql('duckdb')} cannot be bounded by public domains, and the "
                          f"policy allows at most max_groups={limit}")
                return
            total *= size
        if total > limit:
            self.fire("R-MAX-GROUPS", "GROUP BY", f"the group keys' public domains allow up to "
                      f"{total} groups, more than max_groups={limit}")

    def _cardinality(self, scope: Scope, key: exp.Expression) -> int | None:
        """An upper bound on the distinct values of ``key`` (NULL included), or None."""
        if isinstance(key, exp.Case):
            outputs = [i.args.get("true") for i in key.args.get("ifs", [])]
            default = key.args.get("default")
            if all(isinstance(o, exp.Literal | exp.Null) for o in outputs + [default] if o):
                return len({o.sql() for o in outputs}) + 1
        columns = [c for c in key.find_all(exp.Column) if c.table]
        if not columns:
            return 1
        total = 1
        for column in columns:
            for base in trace_column(scope, column) or {("", "")}:
                spec = self.policy.column(*base)
                if spec is None or spec.domain is None:
                    return None
                total *= len(spec.domain) + 1
        return total


def enforce(query: exp.Expression, policy: Policy, site: str,
            privacy_units: dict[str, str] | None = None) -> tuple[RuleHit, ...]:
    """Every rule ``query`` breaks under ``policy`` (empty when it is allowed)."""
    checker = _Checker(policy, site, {k.lower(): v.lower() for k, v in
                                      (privacy_units or {}).items()})
    checker.check_tables(query)
    root = root_scope(query)
    for scope in root.traverse():
        for column in scope.columns:
            if column.table:
                checker.check_column(scope, column)
    checker.check_extremes(query)
    if not checker.hits:  # the group count matters only for an otherwise allowed query
        checker.check_group_count(root)
    return tuple(checker.hits.values())
