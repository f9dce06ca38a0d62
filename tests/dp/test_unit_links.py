"""Under differential privacy one patient may only touch their own rows: joins and predicate
subqueries must go through the privacy unit; error() and database messages leak nothing."""

from __future__ import annotations

import pytest

from fedquery.errors import NotSupportedError
from fedquery.ir import Bounding, Requirements
from fedquery.plan import plan_query
from fedquery.sql import analyze

SCHEMA = {"t": {"pid": "VARCHAR", "s": "VARCHAR", "y": "INTEGER"},
          "u": {"pid": "VARCHAR", "s": "VARCHAR", "y": "INTEGER"}}
UNITS = {"t": "pid", "u": "pid"}
BOUNDING = Bounding(row_caps=(("t", 1), ("u", 1)), hash_key="k")


def _plan(sql: str):
    return plan_query(analyze(sql, SCHEMA), UNITS, Requirements(noise="laplace"), BOUNDING)


@pytest.mark.parametrize("sql", [
    "SELECT COUNT(*) FROM t JOIN u ON t.s = u.s WHERE u.y = 5",
    "SELECT COUNT(*) FROM t, u WHERE u.y = 5",
    "SELECT COUNT(*) FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.y = 5)",
    "SELECT COUNT(*) FROM t WHERE s IN (SELECT s FROM u WHERE y = 5)",
])
def test_links_that_let_one_patient_reach_every_row_are_refused(sql):
    with pytest.raises(NotSupportedError, match="linked to the privacy unit"):
        _plan(sql)


@pytest.mark.parametrize("sql", [
    "SELECT COUNT(*) FROM t JOIN u ON t.pid = u.pid WHERE u.y = 5",
    "SELECT COUNT(*) FROM t JOIN u USING (pid) WHERE u.y = 5",
    "SELECT COUNT(*) FROM t WHERE pid IN (SELECT pid FROM u WHERE y = 5)",
    "SELECT COUNT(*) FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.pid = t.pid AND u.y = 5)",
])
def test_links_through_the_unit_are_allowed(sql):
    assert _plan(sql).fragment.row_cap == 1


def test_error_function_is_refused_everywhere():
    with pytest.raises(NotSupportedError, match="error"):
        analyze("SELECT COUNT(*) FROM t WHERE CASE WHEN y = 7 THEN error('x') ELSE TRUE END",
                SCHEMA)
