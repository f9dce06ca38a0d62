"""DB-API parameters are bound as literals through the syntax tree: they can never be SQL."""

from __future__ import annotations

import pyarrow as pa
import pytest

from fedquery.errors import DataError, ProgrammingError
from fedquery.testing import local_federation


@pytest.fixture
def conn():
    t = pa.table({"name": ["x' OR 1=1 --", "a", "b"], "v": [1, 2, 3]})
    return local_federation({"s1": {"t": t}, "s2": {"t": t}})


def test_qmark_and_named(conn):
    cur = conn.cursor()
    assert cur.execute("SELECT COUNT(*) FROM t WHERE v > ?", (1,)).fetchall() == [(4,)]
    assert cur.execute("SELECT SUM(v) FROM t WHERE name = :n", {"n": "a"}).fetchall() == [(4,)]


def test_an_injection_attempt_is_a_value(conn):
    cur = conn.cursor()
    rows = cur.execute("SELECT COUNT(*) FROM t WHERE name = ?", ("x' OR 1=1 --",)).fetchall()
    assert rows == [(2,)]  # the value matched literally; 'OR 1=1' did not widen the filter
    rows = cur.execute("SELECT COUNT(*) FROM t WHERE name = ?", ("' OR '1'='1",)).fetchall()
    assert rows == [(0,)]


def test_wrong_parameter_counts_and_types(conn):
    cur = conn.cursor()
    with pytest.raises(ProgrammingError, match="2 parameter"):
        cur.execute("SELECT COUNT(*) FROM t WHERE v > ?", (1, 2))
    with pytest.raises(ProgrammingError, match="no value for parameter"):
        cur.execute("SELECT COUNT(*) FROM t WHERE v > :low", {"high": 1})
    with pytest.raises(DataError, match="cannot be bound"):
        cur.execute("SELECT COUNT(*) FROM t WHERE v > ?", (object(),))


def test_executemany_keeps_the_last_result(conn):
    cur = conn.cursor().executemany("SELECT COUNT(*) FROM t WHERE v >= ?", [(1,), (3,)])
    assert cur.fetchall() == [(2,)]
