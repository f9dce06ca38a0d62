"""Contribution bounding in the site's SQL, checked on the exact bounded partials (before noise).

The planned fragment runs directly on a DuckDB connection (``DuckDBAdapter.from_arrow``), so
these tests see exactly what a site would noise: how far one privacy unit can move a partial,
whatever its data, must stay within the sensitivity the noise is calibrated to.
"""

from __future__ import annotations

import math

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedquery.errors import NotSupportedError
from fedquery.protect.noise import plan_noise

CAP = 3


def l1(before: list[dict], after: list[dict], names) -> int:
    """L1 distance between two partial tables (rows matched by their group columns)."""
    def index(rows):
        return {tuple(v for k, v in r.items() if k.startswith("g_")): r for r in rows}
    a, b = index(before), index(after)
    assert a.keys() == b.keys()  # public keys: the same groups whatever the data
    return sum(abs(a[k][n] - b[k][n]) for k in a for n in names)


@pytest.fixture
def background(make_table):
    """Nine ordinary units, one row each, in both groups."""
    return make_table(pid=list(range(1, 10)), g=["a", "b", "a", "b", "a", "b", "a", "b", "a"],
                      x=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])


@pytest.fixture
def with_unit(make_table, background):
    """``with_unit(g, x)``: the background plus unit 1000 with one row per element of x."""
    def add(g, x) -> pa.Table:
        n = len(x)
        g = [g] * n if isinstance(g, str) or g is None else g
        extra = make_table(pid=[1000] * n, g=g, x=x, y=list(range(100, 100 + n)))
        return pa.concat_tables([background, extra])
    return add


# --- one unit's reach --------------------------------------------------------------------------

@pytest.mark.parametrize("sql", [
    "SELECT COUNT(*) FROM t",
    "SELECT g, COUNT(*) FROM t GROUP BY g",
    "SELECT COUNT(x) FROM t",
    "SELECT COUNT(*) FILTER (WHERE x > 0) FROM t",
])
def test_a_unit_with_1000_rows_moves_a_count_by_at_most_the_cap(
        sql, make_bounding, dp_plan, run_fragment, background, with_unit):
    plan = dp_plan(sql, make_bounding(cap=CAP))
    assert plan.fragment.row_cap == CAP
    names = [p.name for p in plan.fragment.partials]
    base = run_fragment(plan, background)
    heavy = run_fragment(plan, with_unit("a", [5.0] * 1000))
    assert l1(base, heavy, names) == CAP  # exactly the cap: the bound is tight, not loose
    [p] = plan.fragment.partials
    assert l1(base, heavy, names) <= p.sensitivity


def test_a_unit_across_groups_totals_at_most_the_cap(make_bounding, dp_plan, run_fragment,
                                                      background, with_unit):
    """Per unit, not per unit and group: 500 rows in a, 500 in b, 10 NULL — ≤ cap in total."""
    plan = dp_plan("SELECT g, COUNT(*), SUM(x) FROM t GROUP BY g", make_bounding(cap=CAP))
    groups = ["a"] * 500 + ["b"] * 500 + [None] * 10
    base = run_fragment(plan, background)
    heavy = run_fragment(plan, with_unit(groups, [10.0] * len(groups)))
    count, total = plan.fragment.partials
    assert l1(base, heavy, [count.name]) == CAP
    assert l1(base, heavy, [total.name]) == CAP * 10 * 100 <= total.sensitivity
    # the groups the unit reached share the cap: it is in at most `cap` groups' counts
    reached = sum(1 for b, h in zip(base, heavy) if h[count.name] != b[count.name])
    assert 1 <= reached <= CAP


def test_count_distinct_unit_moves_each_group_by_at_most_one(make_bounding, dp_plan,
                                                             run_fragment, background,
                                                             with_unit):
    plan = dp_plan("SELECT g, COUNT(DISTINCT pid) FROM t GROUP BY g", make_bounding(cap=CAP))
    [p] = plan.fragment.partials
    groups = ["a"] * 500 + ["b"] * 500 + [None] * 10
    base = run_fragment(plan, background)
    heavy = run_fragment(plan, with_unit(groups, [1.0] * len(groups)))
    diffs = [h[p.name] - b[p.name] for b, h in zip(base, heavy)]
    assert all(d in (0, 1) for d in diffs)
    assert sum(diffs) <= p.sensitivity == min(CAP, 3)


@pytest.mark.parametrize("extreme", [1e12, -1e12, math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("bounds", [(0.0, 10.0), (-2.5, 10.0), (-50.0, -10.0)])
def test_an_extreme_value_moves_a_sum_by_at_most_the_bound(
        extreme, bounds, make_bounding, dp_plan, run_fragment, background, with_unit):
    lo, hi = bounds
    plan = dp_plan("SELECT SUM(x), VAR_SAMP(x) FROM t", make_bounding(cap=CAP, bounds=bounds))
    total, _count, squares = plan.fragment.partials
    assert total.kind == "sum" and squares.kind == "sumsq"
    base = run_fragment(plan, background)
    one = run_fragment(plan, with_unit("a", [extreme]))
    many = run_fragment(plan, with_unit("a", [extreme] * 1000))
    per_row = max(abs(lo), abs(hi)) * 100  # the bound, in fixed point (1/100)
    assert l1(base, one, [total.name]) <= per_row == total.per_row
    assert l1(base, many, [total.name]) <= CAP * per_row == total.sensitivity
    assert l1(base, many, [squares.name]) <= CAP * max(lo * lo, hi * hi) * 100
    assert l1(base, many, [squares.name]) <= squares.sensitivity
    # and the noise is calibrated to exactly that (an integer sensitivity, rounded up)
    noise = plan_noise(plan.fragment.partials, plan.fragment.row_cap, "laplace", 1.0, None)
    assert noise.partials[0].sensitivity >= l1(base, many, [total.name])


def test_sum_of_an_expression_is_bounded_by_interval_arithmetic(make_bounding, dp_plan,
                                                                run_fragment, background,
                                                                with_unit):
    plan = dp_plan("SELECT SUM(2 * x + 1) FROM t", make_bounding(cap=CAP))
    [p] = plan.fragment.partials
    assert p.arg_bounds == (1.0, 21.0) and p.sensitivity == CAP * 21 * 100
    moved = l1(run_fragment(plan, background), run_fragment(plan, with_unit("a", [1e12] * 50)),
               [p.name])
    assert moved == CAP * 21 * 100


def test_fixed_point_rounding_never_exceeds_the_sensitivity(make_bounding, dp_plan,
                                                            run_fragment, background,
                                                            with_unit):
    plan = dp_plan("SELECT SUM(x) FROM t", make_bounding(cap=2, bounds=(0.0, 10.125)))
    noise = plan_noise(plan.fragment.partials, plan.fragment.row_cap, "laplace", 1.0, None)
    moved = l1(run_fragment(plan, background),
               run_fragment(plan, with_unit("a", [10.125] * 10)), ["p_0"])
    assert moved <= noise.partials[0].sensitivity


# --- which rows: a keyed hash, not random() -----------------------------------------------------

@pytest.fixture
def one_big_unit(make_table):
    """Unit 1 with 1000 rows, all distinct values; the cap keeps 3 of them."""
    n = 1000
    return make_table(pid=[1] * n, g=["a"] * n, x=[i / 100 for i in range(n)],
                      y=list(range(n)))


def test_row_choice_is_deterministic_for_a_key_and_changes_with_another_key(
        make_bounding, dp_plan, run_fragment, one_big_unit):
    sql = "SELECT SUM(x), COUNT(*) FROM t"
    plan = dp_plan(sql, make_bounding(cap=CAP, key="site-secret-1"))
    assert "random()" not in plan.fragment.sql.lower()
    first = run_fragment(plan, one_big_unit)
    assert first[0]["p_1"] == CAP
    shuffled = one_big_unit.take(pa.array(list(range(999, -1, -1))))
    for table in (one_big_unit, shuffled, one_big_unit.take(pa.array(
            list(range(0, 1000, 2)) + list(range(1, 1000, 2))))):
        assert run_fragment(plan, table) == first  # the data, not its storage order, decides
    others = {run_fragment(dp_plan(sql, make_bounding(cap=CAP, key=f"other-{i}")),
                           one_big_unit)[0]["p_0"] for i in range(5)}
    assert others - {first[0]["p_0"]}, "another key must choose other rows"
    # and the choice is not simply the first or the last rows
    assert first[0]["p_0"] not in (0 + 1 + 2, 997 + 998 + 999)  # x in cents


def test_row_choice_with_a_filter_does_not_depend_on_storage_order(make_bounding, dp_plan,
                                                                   run_fragment, make_table):
    n = 1000
    table = make_table(pid=[1] * n, g=["a"] * n, x=[1.0] * n, y=list(range(n)))
    plan = dp_plan("SELECT COUNT(*) FILTER (WHERE y >= 500) FROM t", make_bounding(cap=CAP))
    results = {run_fragment(plan, table.take(pa.array(order)))[0]["p_0"]
               for order in (list(range(n)), list(range(n - 1, -1, -1)))}
    assert len(results) == 1


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(units=st.lists(st.tuples(st.integers(0, 2 * CAP + 1), st.sampled_from(["a", "b", None]),
                                st.integers(0, 10)), min_size=0, max_size=12),
       null_rows=st.integers(0, 2 * CAP + 1))
def test_each_unit_keeps_min_of_its_rows_and_the_cap(units, null_rows, make_bounding, dp_plan,
                                                      run_fragment, make_table):
    """Every unit — the NULL unit's rows count as one — keeps min(rows, cap) of its rows,
    whether it is within the cap (no window) or over it (the keyed choice)."""
    plan = dp_plan("SELECT g, COUNT(*), SUM(x) FROM t GROUP BY g", make_bounding(cap=CAP))
    pid, g, x = [], [], []
    expected = {"a": [0, 0], "b": [0, 0], None: [0, 0]}
    for unit, (rows, group, value) in enumerate(units):
        pid += [unit] * rows
        g += [group] * rows
        x += [float(value)] * rows
        expected[group][0] += min(rows, CAP)
        expected[group][1] += min(rows, CAP) * value * 100  # SUM in cents (fixed point)
    pid += [None] * null_rows
    g += ["a"] * null_rows
    x += [1.0] * null_rows
    expected["a"][0] += min(null_rows, CAP)
    expected["a"][1] += min(null_rows, CAP) * 100
    count, total = (p.name for p in plan.fragment.partials)
    got = {r["g_0"]: [r[count], r[total]] for r in run_fragment(plan, make_table(pid, g, x))}
    assert got == expected


# --- public-domain keys -------------------------------------------------------------------------

def test_every_public_key_and_null_appears_with_zeros(make_bounding, dp_plan, run_fragment,
                                                     make_table):
    table = make_table(pid=[1, 2, 3], g=["a", "a", "a"], x=[1.0, 2.0, 3.0])  # no b, no NULL
    plan = dp_plan("SELECT g, COUNT(*), SUM(x), COUNT(DISTINCT pid) FROM t GROUP BY g",
                   make_bounding(cap=CAP, domain=("a", "b", "c")))
    rows = {r["g_0"]: r for r in run_fragment(plan, table)}
    assert set(rows) == {"a", "b", "c", None}
    assert rows["a"]["p_0"] == 3 and rows["a"]["p_1"] == 600 and rows["a"]["p_2"] == 3
    for key in ("b", "c", None):
        assert (rows[key]["p_0"], rows[key]["p_1"], rows[key]["p_2"]) == (0, 0, 0)
    # even with no data at all
    empty = run_fragment(plan, make_table(pid=[], g=[], x=[]))
    assert {r["g_0"] for r in empty} == {"a", "b", "c", None}
    assert all(r["p_0"] == r["p_1"] == r["p_2"] == 0 for r in empty)


def test_public_keys_reach_the_analyst(federation, make_policy, make_table):
    """Through the engine: every key of the domain (and NULL) is released, noised."""
    conn = federation({"s1": make_table(pid=[1, 2], g=["a", "a"], x=[1.0, 1.0])},
                      make_policy(domain=("a", "b", "c")))
    cur = conn.cursor()
    cur.execute("SELECT g, COUNT(*) AS n FROM t GROUP BY g")
    assert sorted((r[0] for r in cur.fetchall()), key=str) == [None, "a", "b", "c"]
    assert all(iv[1] is not None for iv in cur.fq_report.intervals)


def test_a_case_band_with_literal_labels_is_a_public_domain(make_bounding, dp_plan,
                                                             run_fragment, make_table):
    plan = dp_plan("SELECT CASE WHEN x < 5 THEN 'low' ELSE 'high' END AS band, COUNT(*) "
                   "FROM t GROUP BY 1", make_bounding(cap=CAP))
    rows = {r["g_0"]: r["p_0"] for r in run_fragment(plan, make_table(pid=[1], g=["a"],
                                                                       x=[1.0]))}
    assert rows == {"low": 1, "high": 0}  # with an ELSE the band is never NULL


def test_a_group_key_without_a_public_domain_goes_through_the_threshold(make_bounding,
                                                                        dp_plan):
    plan = dp_plan("SELECT y, COUNT(*) FROM t GROUP BY y", make_bounding())
    assert plan.fragment.threshold and '"__key_units"' in plan.fragment.sql
    assert "VALUES" not in plan.fragment.sql  # no public key list: the data decides


@pytest.mark.parametrize("sql", ["SELECT MIN(x) FROM t", "SELECT g, MAX(x) FROM t GROUP BY g",
                                 "SELECT COUNT(*), MAX(x) - MIN(x) FROM t"])
def test_min_and_max_are_refused_under_noise(sql, make_bounding, dp_plan, federation,
                                             make_policy, make_table):
    with pytest.raises(NotSupportedError, match="MIN|MAX"):
        dp_plan(sql, make_bounding())
    conn = federation({"s1": make_table(pid=[1], g=["a"], x=[1.0])}, make_policy())
    with pytest.raises(NotSupportedError):
        conn.cursor().execute(sql)


def test_a_column_without_bounds_cannot_be_summed(make_bounding, dp_plan):
    with pytest.raises(NotSupportedError, match="bound"):
        dp_plan("SELECT SUM(y) FROM t", make_bounding())
    with pytest.raises(NotSupportedError, match="bound"):
        dp_plan("SELECT SUM(x / y) FROM t", make_bounding())


# --- WHERE tightens the bounds ------------------------------------------------------------------

@pytest.mark.parametrize("where,tight", [
    ("x BETWEEN 2 AND 5", (2.0, 5.0)),
    ("x >= 2 AND x < 5", (2.0, 5.0)),
    ("x <= 4 AND y > 0", (0.0, 4.0)),
    ("x BETWEEN -100 AND 4", (0.0, 4.0)),  # never wider than the policy's bounds
])
def test_where_between_tightens_the_sum_bound(where, tight, make_bounding, dp_plan,
                                              run_fragment, background, with_unit):
    loose = dp_plan("SELECT SUM(x) FROM t", make_bounding(cap=CAP))
    plan = dp_plan(f"SELECT SUM(x) FROM t WHERE {where}", make_bounding(cap=CAP))
    [p], [q] = plan.fragment.partials, loose.fragment.partials
    assert p.arg_bounds == tight
    assert p.sensitivity == CAP * max(abs(tight[0]), abs(tight[1])) * 100 < q.sensitivity
    mechanism_scale = plan_noise(plan.fragment.partials, CAP, "laplace", 1.0, None)
    loose_scale = plan_noise(loose.fragment.partials, CAP, "laplace", 1.0, None)
    assert mechanism_scale.partials[0].scale < loose_scale.partials[0].scale
    moved = l1(run_fragment(plan, background),
               run_fragment(plan, with_unit("a", [tight[1]] * 100)), [p.name])
    assert moved <= p.sensitivity


def test_an_or_does_not_tighten(make_bounding, dp_plan):
    plan = dp_plan("SELECT SUM(x) FROM t WHERE x BETWEEN 2 AND 5 OR y = 1",
                   make_bounding(cap=CAP))
    assert plan.fragment.partials[0].arg_bounds == (0.0, 10.0)


# --- derived columns ---------------------------------------------------------------------------

def test_a_derived_cte_column_is_bounded_by_its_expression(make_bounding, dp_plan,
                                                           run_fragment, make_table):
    plan = dp_plan("WITH c AS (SELECT pid, x + 100 AS x2 FROM t) SELECT SUM(x2) FROM c",
                   make_bounding(cap=CAP))
    rows = run_fragment(plan, make_table(pid=[1, 2], g=["a", "a"], x=[5.0, 5.0]))
    assert rows[0]["p_0"] == 21000


def test_a_derived_cte_key_does_not_inherit_the_base_domain(make_bounding, dp_plan,
                                                            run_fragment, make_table):
    sql = "WITH c AS (SELECT pid, g || 'z' AS g2 FROM t) SELECT g2, COUNT(*) FROM c GROUP BY g2"
    try:
        plan = dp_plan(sql, make_bounding(cap=CAP))
    except NotSupportedError:
        return  # refusing is a correct answer
    rows = run_fragment(plan, make_table(pid=[1, 2, 3], g=["a", "a", "b"], x=[1.0] * 3))
    assert sum(r["p_0"] for r in rows) == 3  # no row may be dropped silently
