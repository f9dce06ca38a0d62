"""The row-cap shortcut: where the site's counts show that no unit has more rows than the cap,
the fragment keeps every row without the cap's GROUP BY — and it must keep exactly the rows
the cap would have kept.  Where the counts are missing, stale or cannot bound the query, the
cap runs as before."""

from __future__ import annotations

from dataclasses import replace

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedquery.ir import Requirements
from fedquery.plan.planner import plan_query
from fedquery.site.unit_stats import UnitRowStats
from fedquery.sql import analyze

CAP = 3
SQL = "SELECT g, COUNT(*), SUM(x) FROM t GROUP BY g"


def _capped(plan) -> bool:
    return '"__over"' in plan.fragment.sql


def test_counts_within_the_cap_skip_it_and_counts_over_it_keep_it(make_bounding, dp_plan):
    bounding = make_bounding(cap=CAP)
    assert _capped(dp_plan(SQL, bounding))  # no counts: capped
    assert not _capped(dp_plan(SQL, replace(bounding, observed_rows=(("t", CAP),))))
    assert _capped(dp_plan(SQL, replace(bounding, observed_rows=(("t", CAP + 1),))))


@pytest.mark.parametrize("sql", [
    # a CTE or a derived table could repeat a unit's rows: the table's counts do not bound it
    "WITH d AS (SELECT * FROM t UNION ALL SELECT * FROM t) SELECT COUNT(*) FROM d",
    "SELECT COUNT(*) FROM (SELECT * FROM t UNION ALL SELECT * FROM t) AS d",
    # a self-join on the unit multiplies: 2 x 2 rows > cap 3
    "SELECT COUNT(*) FROM t AS a JOIN t AS b ON a.pid = b.pid",
])
def test_queries_the_counts_cannot_bound_keep_the_cap(sql, make_bounding, dp_plan):
    bounding = replace(make_bounding(cap=CAP), observed_rows=(("t", 2),))
    assert _capped(dp_plan(sql, bounding))


def test_a_join_is_bounded_by_the_product_of_the_counts(make_bounding):
    schema = {"t": {"pid": "BIGINT", "g": "VARCHAR", "x": "DOUBLE", "y": "BIGINT"},
              "u": {"pid": "BIGINT", "z": "BIGINT"}}
    bounding = replace(make_bounding(cap=CAP), row_caps=(("t", CAP), ("u", 1)))
    query = analyze("SELECT COUNT(*) FROM t LEFT JOIN u ON t.pid = u.pid", schema)

    def capped(observed):
        plan = plan_query(query, {"t": "pid", "u": "pid"}, Requirements(noise="laplace"),
                          bounding=replace(bounding, observed_rows=observed))
        return _capped(plan)

    assert not capped((("t", 3), ("u", 1)))
    assert not capped((("t", 3), ("u", 0)))  # an empty side still leaves each row once
    assert capped((("t", 2), ("u", 2)))  # 4 > 3
    assert capped((("t", 3),))  # no count for u: capped


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.integers(0, 6), st.sampled_from(["a", "b", None]),
                               st.integers(0, 10)), max_size=40))
def test_the_shortcut_keeps_the_rows_the_cap_keeps(rows, make_bounding, dp_plan,
                                                     run_fragment, make_table):
    """On data within the cap (the only data the site takes the shortcut on) both fragments
    give the same partials."""
    per_unit: dict[int, int] = {}
    kept = []
    for pid, g, x in rows:
        if per_unit.get(pid, 0) < CAP:
            per_unit[pid] = per_unit.get(pid, 0) + 1
            kept.append((pid, g, float(x)))
    table = make_table([r[0] for r in kept], [r[1] for r in kept], [r[2] for r in kept])
    most = max(per_unit.values(), default=0)
    bounding = make_bounding(cap=CAP)
    shortcut = dp_plan(SQL, replace(bounding, observed_rows=(("t", most),)))
    assert not _capped(shortcut)
    def rows_of(plan):
        return sorted(run_fragment(plan, table), key=repr)
    assert rows_of(shortcut) == rows_of(dp_plan(SQL, bounding))


class _Recording:
    """A DuckDB adapter that records every SQL it runs and can change its data version."""

    exact_data_version = True

    def __init__(self, inner) -> None:
        self.inner, self.sql, self.versions = inner, [], None

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def execute(self, sql):
        self.sql.append(sql)
        return self.inner.execute(sql)

    def data_version(self):
        return next(self.versions) if self.versions is not None else "v1"


def _service(tmp_path, make_policy, table):
    from fedquery.site.adapter import DuckDBAdapter
    from fedquery.site.service import SiteService

    adapter = _Recording(DuckDBAdapter.from_arrow({"t": table}))
    service = SiteService("s1", adapter, policy=make_policy(cap=CAP),
                          privacy_units={"t": "pid"}, state_dir=tmp_path / "s1")
    return service, adapter


def _request(sql: str, delta: float):
    from fedquery.ir import QueryRequest, Settings

    # a fresh delta per query: a new noise-cache key, so the fragment runs every time
    return QueryRequest(sql=sql, analyst="analyst", settings=Settings((("delta", delta),)))


def test_a_site_counts_once_per_data_version_and_skips_the_cap(tmp_path, make_policy,
                                                               make_table):
    table = make_table(pid=[1, 1, 2, 3], g=["a", "b", "a", "b"], x=[1.0, 2.0, 3.0, 4.0])
    service, adapter = _service(tmp_path, make_policy, table)
    try:
        for delta in (1e-8, 2e-8):
            service.query(_request(SQL, delta))
        counts = [s for s in adapter.sql if s.startswith("SELECT COALESCE(MAX(n)")]
        fragments = [s for s in adapter.sql if "__rows" in s]
        assert len(counts) == 1 and len(fragments) == 2
        assert not any('"__over"' in s for s in fragments)
        assert service._unit_stats.current() == ("v1", (("t", 2),))
    finally:
        service.close()


def test_data_that_changes_while_the_fragment_runs_is_read_again_with_the_cap(
        tmp_path, make_policy, make_table):
    table = make_table(pid=[1, 2, 3], g=["a", "b", "a"], x=[1.0, 2.0, 3.0])
    service, adapter = _service(tmp_path, make_policy, table)
    try:
        # counted at v1 (before and after counting), then v2 after the fragment ran
        adapter.versions = iter(["v1", "v1", "v1", "v2", "v2", "v2", "v2"])
        service.query(_request(SQL, 1e-8))
        fragments = [s for s in adapter.sql if "__rows" in s]
        assert len(fragments) == 2
        assert '"__over"' not in fragments[0] and '"__over"' in fragments[1]
    finally:
        service.close()


def test_counts_taken_while_the_data_changed_are_not_used(make_table):
    from fedquery.site.adapter import DuckDBAdapter

    adapter = _Recording(DuckDBAdapter.from_arrow({"t": make_table([1, 1], ["a", "a"],
                                                                    [1.0, 2.0])}))
    try:
        adapter.versions = iter(["v1", "v2", "v2", "v2"])
        stats = UnitRowStats(adapter, {"t": "pid"}, ["t"])
        assert stats.current() is None  # v1 before counting, v2 after
        assert stats.current() == ("v2", (("t", 2),))
    finally:
        adapter.inner.close()


def test_an_engine_without_exact_versions_always_caps(tmp_path, make_policy, make_table):
    from fedquery.site.adapter import DuckDBAdapter
    from fedquery.site.service import SiteService

    adapter = DuckDBAdapter.from_arrow({"t": make_table([1], ["a"], [1.0])})
    adapter.exact_data_version = False  # as PostgreSQL's adapter declares
    service = SiteService("s1", adapter, policy=make_policy(cap=CAP),
                          privacy_units={"t": "pid"}, state_dir=tmp_path / "s1")
    try:
        assert service._unit_stats is None
    finally:
        service.close()


def test_data_over_the_cap_gets_the_cap_at_the_site(tmp_path, make_policy, make_table):
    n = 50
    table = make_table(pid=[7] * n, g=["a"] * n, x=[1.0] * n)
    service, adapter = _service(tmp_path, make_policy, table)
    try:
        service.query(_request(SQL, 1e-8))
        assert service._unit_stats.current() == ("v1", (("t", n),))
        assert any('"__over"' in s for s in adapter.sql)
    finally:
        service.close()


def test_a_table_without_rows_counts_zero(make_table):
    from fedquery.site.adapter import DuckDBAdapter

    empty = pa.table({"pid": pa.array([], pa.int64()), "g": pa.array([], pa.string()),
                      "x": pa.array([], pa.float64()), "y": pa.array([], pa.int64())})
    adapter = DuckDBAdapter.from_arrow({"t": empty})
    try:
        _, observed = UnitRowStats(adapter, {"t": "pid"}, ["t"]).current()
        assert observed == (("t", 0),)
    finally:
        adapter.close()
