"""Interval arithmetic over SQL expressions: the range an aggregated expression can take, from
the public bounds of the columns it reads.  Differential privacy needs it to know how far one
patient can move a sum; the clamp in the site's SQL makes the bound hold whatever the data.

>>> from sqlglot import parse_one
>>> b = {("labs", "value"): (0.0, 500.0)}
>>> expression_bounds(parse_one('2 * "labs"."value" + 1'), lambda c: b.get(("labs", c.name)))
(1.0, 1001.0)
>>> expression_bounds(parse_one("CASE WHEN x > 3 THEN 1 ELSE 0 END"), lambda c: None)
(0.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Callable

from sqlglot import exp

Bounds = tuple[float, float]


def _hull(*intervals: Bounds) -> Bounds:
    return min(i[0] for i in intervals), max(i[1] for i in intervals)


def _mul(a: Bounds, b: Bounds) -> Bounds:
    products = [x * y for x in a for y in b]
    return min(products), max(products)


def expression_bounds(node: exp.Expression,
                      column_bounds: Callable[[exp.Column], Bounds | None]) -> Bounds | None:
    """(low, high) of ``node``'s values, or None when it cannot be bounded."""
    def walk(n: exp.Expression) -> Bounds | None:
        if isinstance(n, exp.Paren | exp.Alias):
            return walk(n.this)
        if isinstance(n, exp.Literal) and not n.is_string:
            value = float(n.this)
            return value, value
        if isinstance(n, exp.Boolean):
            return (1.0, 1.0) if n.this else (0.0, 0.0)
        if isinstance(n, exp.Column):
            return column_bounds(n)
        if isinstance(n, exp.Cast | exp.TryCast):
            return walk(n.this)
        if isinstance(n, exp.Neg):
            inner = walk(n.this)
            return None if inner is None else (-inner[1], -inner[0])
        if isinstance(n, exp.Add | exp.Sub | exp.Mul):
            a, b = walk(n.this), walk(n.expression)
            if a is None or b is None:
                return None
            if isinstance(n, exp.Add):
                return a[0] + b[0], a[1] + b[1]
            if isinstance(n, exp.Sub):
                return a[0] - b[1], a[1] - b[0]
            return _mul(a, b)
        if isinstance(n, exp.Div):
            a, b = walk(n.this), walk(n.expression)
            if a is None or b is None or b[0] <= 0 <= b[1]:
                return None  # division by something that may be 0
            return _mul(a, (1 / b[1], 1 / b[0]))
        if isinstance(n, exp.Case):
            branches = [i.args.get("true") for i in n.args.get("ifs", [])]
            default = n.args.get("default")
            parts = [walk(b) for b in branches + ([default] if default else [])]
            if any(p is None for p in parts):
                return None
            return _hull(*parts) if parts else None
        if isinstance(n, exp.If):
            parts = [walk(n.args["true"])] + (
                [walk(n.args["false"])] if n.args.get("false") else [])
            return None if any(p is None for p in parts) else _hull(*parts)
        if isinstance(n, exp.Coalesce):
            parts = [walk(a) for a in [n.this, *n.expressions]]
            return None if any(p is None for p in parts) else _hull(*parts)
        if isinstance(n, exp.Greatest | exp.Least):
            parts = [walk(a) for a in [n.this, *n.expressions]]
            if any(p is None for p in parts):
                return None
            pick = max if isinstance(n, exp.Greatest) else min
            return pick(p[0] for p in parts), pick(p[1] for p in parts)
        if isinstance(n, exp.Abs):
            inner = walk(n.this)
            if inner is None:
                return None
            lo, hi = inner
            return (0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi))), max(abs(lo), abs(hi))
        if isinstance(n, exp.Round | exp.Floor | exp.Ceil):
            inner = walk(n.this)
            return None if inner is None else (inner[0] - 1, inner[1] + 1)
        if isinstance(n, exp.Predicate | exp.Not | exp.And | exp.Or):
            return 0.0, 1.0  # a boolean used as a number
        return None

    return walk(node)
