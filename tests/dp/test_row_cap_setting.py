"""``SET max_rows_per_unit``: the analyst counts fewer rows per unit than the policy's cap —
less noise, rows beyond it left out — never more than the policy allows."""

from __future__ import annotations

import pytest

from fedquery.errors import ProgrammingError

QUERY = "SELECT g, COUNT(*) AS n FROM t GROUP BY g"


def _rows(make_table, per_unit: int, units: int = 30):
    pid = [u for u in range(units) for _ in range(per_unit)]
    return make_table(pid=pid, g=["a"] * len(pid), x=[1.0] * len(pid))


def test_a_lower_cap_lowers_the_site_row_cap_and_the_noise(federation, make_policy,
                                                          make_table, service):
    conn = federation({"s1": _rows(make_table, 3)}, make_policy(cap=3))
    cur = conn.cursor()
    wide = cur.fq_explain(QUERY)["sites"][0]
    cur.execute("SET max_rows_per_unit = 1")
    narrow = cur.fq_explain(QUERY)["sites"][0]
    assert (wide["row_cap"], narrow["row_cap"]) == (3, 1)
    [(_, wide_scale, *_)] = wide["noise"]
    [(_, narrow_scale, *_)] = narrow["noise"]
    assert narrow_scale == pytest.approx(wide_scale / 3)


def test_rows_beyond_the_analysts_cap_are_left_out(federation, make_policy, make_table):
    policy = make_policy("laplace", cap=3, max_epsilon=None, budget=None)
    conn = federation({"s1": _rows(make_table, 3)}, policy)
    cur = conn.cursor()
    cur.execute("SET epsilon = 200")  # noise ≪ 1: the counts show which rows were counted
    cur.execute(QUERY)
    full = dict(cur.fetchall())["a"]
    cur.execute("SET max_rows_per_unit = 1")
    cur.execute(QUERY)
    capped = dict(cur.fetchall())["a"]
    assert round(full) == 90 and round(capped) == 30


def test_a_cap_above_the_policys_is_the_policys(federation, make_policy, make_table):
    conn = federation({"s1": _rows(make_table, 3)}, make_policy(cap=2))
    cur = conn.cursor()
    cur.execute("SET max_rows_per_unit = 50")
    assert cur.fq_explain(QUERY)["sites"][0]["row_cap"] == 2


def test_answers_under_different_caps_are_cached_apart(federation, make_policy, make_table):
    conn = federation({"s1": _rows(make_table, 3)}, make_policy(cap=3))
    cur = conn.cursor()
    cur.execute(QUERY)
    cur.execute("SET max_rows_per_unit = 1")
    cur.execute(QUERY)
    assert cur.fq_report.cached_sites == ()  # a new question, not the cached one
    assert dict(cur.fq_report.epsilon_spent)["s1"] > 0
    cur.execute(QUERY)
    assert cur.fq_report.cached_sites == ("s1",)


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "'many'"])
def test_a_cap_must_be_a_whole_number_of_at_least_one(federation, make_policy, make_table,
                                                      value):
    conn = federation({"s1": _rows(make_table, 1)}, make_policy())
    with pytest.raises(ProgrammingError, match="SET max_rows_per_unit: .* whole number ≥ 1"):
        conn.cursor().execute(f"SET max_rows_per_unit = {value}")
