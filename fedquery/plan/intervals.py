"""Interval arithmetic in SQL: for an output expression over combined values ``c_j`` whose
95 % intervals are ``c_j ± w_j``, the SQL of the interval's low and high ends.

This is the documented method for derived values (AVG, VAR, ratios, any expression over
aggregates): propagate the direct aggregates' intervals through the expression.  Each end is
conservative for its expression; jointly the intervals of k direct aggregates hold with
probability ≥ 1 − k·α (union bound).  Where an expression cannot be propagated (a division by
an interval containing 0, an unknown function), the ends are NULL: no interval is claimed.

>>> from sqlglot import parse_one
>>> lo, hi = interval_sql(parse_one('"c_0" / NULLIF("c_1", 0)'), frozenset({"c_0", "c_1"}))
>>> lo.sql()[:40]
'CASE WHEN ("c_1" - "w_1") > 0 OR ("c_1" '
"""

from __future__ import annotations

from sqlglot import exp

Interval = tuple[exp.Expression, exp.Expression]


def _p(node: exp.Expression) -> exp.Expression:
    return exp.paren(node, copy=False)


def _null() -> exp.Expression:
    return exp.Null()


def _func(name: str, *args: exp.Expression) -> exp.Expression:
    return exp.func(name, *[a.copy() for a in args])


def _size(node: exp.Expression) -> int:
    return sum(1 for _ in node.walk())


def _products(a: Interval, b: Interval) -> Interval:
    # each end holds every operand end twice: refuse before building what would be dropped
    if 4 * sum(_size(end) for end in (*a, *b)) > MAX_NODES:
        raise _NoClaim
    products = [_p(exp.Mul(this=x.copy(), expression=y.copy())) for x in a for y in b]
    return (exp.func("LEAST", *products),
            exp.func("GREATEST", *[product.copy() for product in products]))


MAX_NODES = 1000  # ends larger than this are too deep to propagate usefully: no claim


class _NoClaim(Exception):
    """A part of the expression has no interval, so the whole has none."""


def interval_sql(node: exp.Expression, noisy: frozenset[str] = frozenset()) -> Interval:
    """(low SQL, high SQL) of ``node``; a combined column in ``noisy`` (``c_j``) reads ``w_j``
    for its half-width, every other column is exact.  Both ends are NULL (no claim) when any
    part cannot be propagated or the ends grow past MAX_NODES nodes (a product of intervals
    copies its operands eight times, so nested products grow geometrically: stopping early
    keeps planning fast)."""
    try:
        return _ends(node, noisy)
    except _NoClaim:
        return _null(), _null()


def _ends(node: exp.Expression, noisy: frozenset[str]) -> Interval:
    lo, hi = _propagate(node, noisy)
    if isinstance(lo, exp.Null) or isinstance(hi, exp.Null) or _size(lo) + _size(hi) > MAX_NODES:
        raise _NoClaim
    return lo, hi


def _propagate(node: exp.Expression, noisy: frozenset[str]) -> Interval:
    if isinstance(node, exp.Paren):
        return _ends(node.this, noisy)
    if isinstance(node, exp.Column):
        name = node.name
        if name in noisy:
            w = exp.column("w_" + name[2:], quoted=True)
            return (_p(exp.Sub(this=node.copy(), expression=w)),
                    _p(exp.Add(this=node.copy(), expression=w.copy())))
        return node.copy(), node.copy()  # group keys are exact
    if isinstance(node, exp.Literal | exp.Null | exp.Boolean):
        return node.copy(), node.copy()
    if isinstance(node, exp.Cast):
        lo, hi = _ends(node.this, noisy)
        return (exp.cast(lo, exp.DataType.build("DOUBLE")),
                exp.cast(hi, exp.DataType.build("DOUBLE")))
    if isinstance(node, exp.Neg):
        lo, hi = _ends(node.this, noisy)
        return exp.Neg(this=hi), exp.Neg(this=lo)
    if isinstance(node, exp.Add):
        (al, ah), (bl, bh) = (_ends(node.this, noisy),
                              _ends(node.expression, noisy))
        return _p(exp.Add(this=al, expression=bl)), _p(exp.Add(this=ah, expression=bh))
    if isinstance(node, exp.Sub):
        (al, ah), (bl, bh) = (_ends(node.this, noisy),
                              _ends(node.expression, noisy))
        return _p(exp.Sub(this=al, expression=bh)), _p(exp.Sub(this=ah, expression=bl))
    if isinstance(node, exp.Mul):
        return _products(_ends(node.this, noisy), _ends(node.expression, noisy))
    if isinstance(node, exp.Div):
        a, (bl, bh) = _ends(node.this, noisy), _ends(node.expression, noisy)
        safe = exp.or_(exp.GT(this=bl.copy(), expression=exp.Literal.number(0)),
                       exp.LT(this=bh.copy(), expression=exp.Literal.number(0)))
        inverse = (_p(exp.Div(this=exp.Literal.number("1.0"), expression=bh.copy())),
                   _p(exp.Div(this=exp.Literal.number("1.0"), expression=bl.copy())))
        lo, hi = _products(a, inverse)
        return (exp.Case(ifs=[exp.If(this=safe, true=lo)]),
                exp.Case(ifs=[exp.If(this=safe.copy(), true=hi)]))
    if isinstance(node, exp.Nullif):
        return _ends(node.this, noisy)
    if isinstance(node, exp.Sqrt):
        lo, hi = _ends(node.this, noisy)
        return (_func("SQRT", _func("GREATEST", lo, exp.Literal.number("0.0"))),
                _func("SQRT", _func("GREATEST", hi, exp.Literal.number("0.0"))))
    if isinstance(node, exp.Round):
        lo, hi = _ends(node.this, noisy)
        digits = node.args.get("decimals")
        extra = [digits.copy()] if digits is not None else []
        return exp.Round(this=lo, decimals=extra[0] if extra else None), exp.Round(
            this=hi, decimals=extra[0].copy() if extra else None)
    if isinstance(node, exp.Greatest | exp.Least):
        parts = [_ends(a, noisy) for a in [node.this, *node.expressions]]
        name = "GREATEST" if isinstance(node, exp.Greatest) else "LEAST"
        return _func(name, *[p[0] for p in parts]), _func(name, *[p[1] for p in parts])
    if isinstance(node, exp.Case) and not node.args.get("default") and len(
            node.args.get("ifs", [])) == 1:
        branch = node.args["ifs"][0]
        lo, hi = _ends(branch.args["true"], noisy)
        return (exp.Case(ifs=[exp.If(this=branch.this.copy(), true=lo)]),
                exp.Case(ifs=[exp.If(this=branch.this.copy(), true=hi)]))
    raise _NoClaim
