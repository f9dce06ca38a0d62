"""Interval arithmetic over combined values (plan/intervals.py): the ends it claims hold for
every value in the operands' intervals, and it claims nothing where it cannot propagate."""

from __future__ import annotations

import itertools

import duckdb
import pytest
from sqlglot import exp, parse_one

from fedquery.plan.intervals import MAX_NODES, interval_sql

NOISY = frozenset({"c_0", "c_1", "c_2"})


def _ends(sql: str, values: dict[str, float], widths: dict[str, float]):
    lo, hi = interval_sql(parse_one(sql, read="duckdb"), NOISY)
    columns = {**values, **{"w_" + k[2:]: w for k, w in widths.items()}}
    select = ", ".join(f"{v!r}::DOUBLE AS \"{k}\"" for k, v in columns.items())
    con = duckdb.connect()
    try:
        return con.execute(f"SELECT {lo.sql('duckdb')}, {hi.sql('duckdb')} FROM "
                           f"(SELECT {select})").fetchone()
    finally:
        con.close()


@pytest.mark.parametrize("sql", [
    '"c_0" + "c_1"', '"c_0" - "c_1"', '"c_0" * "c_1"', '"c_0" / NULLIF("c_1", 0)',
    'SQRT("c_0")', 'GREATEST("c_0", "c_1")', '-"c_0" * 2 + "c_1"',
])
def test_the_ends_hold_every_value_the_operands_can_take(sql):
    values, widths = {"c_0": 40.0, "c_1": 7.0}, {"c_0": 3.0, "c_1": 2.0}
    lo, hi = _ends(sql, values, widths)
    con = duckdb.connect()
    try:
        for a, b in itertools.product((37.0, 40.0, 43.0), (5.0, 7.0, 9.0)):
            value = con.execute(f'SELECT {sql} FROM (SELECT {a}::DOUBLE AS "c_0", '
                                f'{b}::DOUBLE AS "c_1")').fetchone()[0]
            assert lo - 1e-9 <= value <= hi + 1e-9, (sql, a, b)
    finally:
        con.close()


def test_a_part_without_an_interval_leaves_the_whole_without_one():
    # GREATEST ignores NULL arguments in DuckDB: a NULL end inside it would claim a bogus
    # interval, so an unknown part must void the whole expression
    lo, hi = interval_sql(parse_one('GREATEST(ABS("c_0"), "c_1")', read="duckdb"), NOISY)
    assert isinstance(lo, exp.Null) and isinstance(hi, exp.Null)


def test_nested_products_stop_at_the_size_limit():
    """The sample variance's shape nests products: each copies its operands eight times, so
    the ends would grow geometrically; past MAX_NODES nothing is claimed."""
    sql = '"c_0"'
    for _ in range(6):
        sql = f'({sql}) * ("c_1" - "c_2")'
    lo, hi = interval_sql(parse_one(sql, read="duckdb"), NOISY)
    assert isinstance(lo, exp.Null) and isinstance(hi, exp.Null)
    shallow_lo, shallow_hi = interval_sql(parse_one('"c_0" * "c_1"', read="duckdb"), NOISY)
    assert 0 < sum(1 for _ in shallow_lo.walk()) + sum(1 for _ in shallow_hi.walk()) <= MAX_NODES
