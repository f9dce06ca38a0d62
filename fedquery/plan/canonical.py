"""A canonical text for a qualified query, so that semantically equal queries written
differently (whitespace, case, table aliases, output aliases, the order of AND/OR operands)
share one noisy answer: repeating a query, or rewording it, gains an attacker nothing.

>>> from fedquery.sql import analyze
>>> s = {"p": {"a": "INT", "b": "INT"}}
>>> one = canonical_text(analyze("SELECT COUNT(*) AS n FROM p WHERE a > 1 AND b < 2", s))
>>> two = canonical_text(analyze("select count(*) from P as x where x.B<2 and x.A>1", s))
>>> one == two
True
"""

from __future__ import annotations

from collections import Counter

from sqlglot import exp

from fedquery.sql.support import contains_aggregate

DIALECT = "duckdb"


def _sort_connectives(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.And | exp.Or):
        kind = type(node)
        operands = sorted(node.flatten(), key=lambda o: o.sql(DIALECT))
        result = operands[0]
        for operand in operands[1:]:
            result = kind(this=result, expression=operand)
        return result
    return node


def canonical_text(query: exp.Expression) -> str:
    """The canonical SQL text of a qualified query (never executed; only compared)."""
    query = query.copy()
    group = query.args.get("group")
    if group is not None and group.args.get("all"):  # GROUP BY ALL = the non-aggregates
        keys = [p.unalias() for p in query.expressions if not contains_aggregate(p)]
        query.set("group", exp.Group(expressions=[k.copy() for k in keys]))
    names = Counter(t.name.lower() for t in query.find_all(exp.Table))
    renames = {}
    for table in query.find_all(exp.Table):
        alias = table.alias_or_name
        if names[table.name.lower()] == 1 and alias != table.name:
            renames[alias] = table.name.lower()
            table.set("alias", exp.TableAlias(this=exp.to_identifier(table.name.lower(),
                                                                       quoted=True)))
    for column in query.find_all(exp.Column):
        if column.table in renames:
            column.set("table", exp.to_identifier(renames[column.table], quoted=True))
    # Output aliases of the outer query only: inner aliases carry meaning.
    query.set("expressions", [p.unalias() for p in query.expressions])
    return query.transform(_sort_connectives).sql(DIALECT, comments=False)
