"""Attacks answered by suppression, not refusal: tiny cells, a single patient, dominance.

A refusal would itself reveal a data-dependent fact ("site B has 2 patients"), so these are
answered: the cell's values are withheld (NULL) and the release flags it in
``cursor.fq_report.suppressed_rows``.  Each test first checks its premise on the raw data, so
it cannot pass vacuously when the demo generator changes.
"""

from __future__ import annotations

import pytest

from fedquery.ir import QueryRequest
from fedquery.testing import pooled_connection

# hospital_a:P0000001 in quasi-identifiers only: born 1981, 44, a woman in Groningen, smoker.
ONE_PATIENT = ("birth_year = 1981 AND age = 44 AND region = 'Groningen' AND sex = 'F' "
               "AND smoker = 'current'")
# Two CRP results of hospital_a far above the rest, diluted by many results below 1 mg/L.
DOMINATED = "test_name = 'CRP' AND (value > 150 OR value < 1)"


def _per_site(tables, sql: str) -> dict[str, list[tuple]]:
    """``sql`` on each site's raw data alone (the test's oracle, not the engine)."""
    out = {}
    for site, site_tables in tables.items():
        con = pooled_connection({site: site_tables})
        out[site] = con.execute(sql).fetchall()
        con.close()
    return out


def _release(conn, sql: str):
    cursor = conn.cursor().execute(sql)
    return cursor.fetchall(), cursor.fq_report


def _site_reply(service, sql: str):
    return service.query(QueryRequest(sql, "mallory"))


def _min_cells(policies) -> dict[str, int]:
    return {site: p.disclosure.min_cell_count for site, p in policies.items()}


def test_tiny_cells_are_suppressed_and_flagged(federation, sites, demo_tables, demo_policies):
    sql = ("SELECT region, sex, COUNT(*) FROM patients WHERE region = 'Groningen' AND sex = 'F' "
           "AND age > 85 GROUP BY region, sex")
    truth = _per_site(demo_tables, sql)
    small = _min_cells(demo_policies)
    assert truth["hospital_a"] and all(0 < n < small["hospital_a"] for *_, n in
                                       truth["hospital_a"])  # premise: a tiny cell exists
    rows, report = _release(federation, sql)
    assert rows == [("Groningen", "F", None)]
    assert report.suppressed_rows == (0,) and report.suppressed_cells == 1
    reply = _site_reply(sites["hospital_a"], sql)
    assert reply.suppressed == 1 and reply.partials.column("p_0").to_pylist() == [None]


def test_every_tiny_cell_of_a_grouping_is_suppressed(federation, sites, demo_tables,
                                                     demo_policies):
    sql = "SELECT region, sex, COUNT(*) FROM patients WHERE age > 90 GROUP BY region, sex"
    truth = _per_site(demo_tables, sql)
    small = _min_cells(demo_policies)
    assert any(truth.values()) and all(0 < n < small[s] for s, cells in truth.items()
                                       for *_, n in cells)  # premise: all cells are tiny
    rows, report = _release(federation, sql)
    assert {(r, s) for r, s, _ in rows} == {(r, s) for cells in truth.values()
                                            for r, s, _ in cells}
    assert all(n is None for *_, n in rows)
    assert report.suppressed_rows == tuple(range(len(rows)))
    for site, service in sites.items():
        reply = _site_reply(service, sql)
        assert reply.suppressed == reply.partials.num_rows == len(truth[site])
        assert set(reply.partials.column("p_0").to_pylist()) <= {None}


def test_mixed_grouping_suppresses_exactly_the_small_cells(federation, demo_tables,
                                                           demo_policies):
    """Plain aggregation: a cell is withheld when ANY site's own cell is small."""
    sql = "SELECT region, COUNT(*) FROM patients WHERE age >= 75 GROUP BY region"
    truth = _per_site(demo_tables, sql)
    small = _min_cells(demo_policies)
    totals: dict[str, int] = {}
    withheld: set[str] = set()
    for site, cells in truth.items():
        for region, n in cells:
            totals[region] = totals.get(region, 0) + n
            if 0 < n < small[site]:
                withheld.add(region)
    expected = {r: None if r in withheld else n for r, n in totals.items()}
    assert None in expected.values() and any(expected.values())  # premise: a real mix
    rows, report = _release(federation, sql)
    assert dict(rows) == expected
    assert {rows[i][0] for i in report.suppressed_rows} == {
        r for r, n in expected.items() if n is None}


@pytest.mark.parametrize("select", [
    "COUNT(*), AVG(bmi)",
    "COUNT(*), SUM(age)",
], ids=["count_avg", "count_sum"])
def test_single_patient_where_is_suppressed_not_refused(federation, sites, demo_tables,
                                                        select):
    truth = _per_site(demo_tables, f"SELECT COUNT(*) FROM patients WHERE {ONE_PATIENT}")
    assert truth["hospital_a"] == [(1,)]  # premise: the filters single out one patient
    sql = f"SELECT {select} FROM patients WHERE {ONE_PATIENT}"
    rows, report = _release(federation, sql)
    assert rows == [(None, None)] and report.suppressed_rows == (0,)
    reply = _site_reply(sites["hospital_a"], sql)
    assert reply.suppressed == 1
    assert all(v is None for name in reply.partials.column_names if name.startswith("p_")
               for v in reply.partials.column(name).to_pylist())


@pytest.mark.parametrize("aggregate", [
    f"SUM(CASE WHEN {ONE_PATIENT} THEN 1 ELSE 0 END)",
    f"COUNT(CASE WHEN {ONE_PATIENT} THEN 1 END)",
    f"COUNT(*) FILTER (WHERE {ONE_PATIENT})",
    f"AVG(bmi) FILTER (WHERE {ONE_PATIENT} OR (birth_year = 1971 AND age = 54 "
    "AND region = 'Groningen' AND sex = 'F' AND smoker = 'never'))",
], ids=["sum_indicator", "count_case", "count_filter", "avg_filter_two_patients"])
def test_single_patient_inside_an_aggregate_is_suppressed(federation, sites, aggregate):
    """A large population (COUNT(*) over every patient) does not shelter a conditional
    aggregate that one patient feeds: its own contributors are counted (or dominance fires)."""
    sql = f"SELECT COUNT(*), {aggregate} FROM patients"
    rows, report = _release(federation, sql)
    assert rows == [(None, None)] and report.suppressed_rows == (0,)
    assert _site_reply(sites["hospital_a"], sql).suppressed == 1


def test_check_columns_never_leave_the_site(sites):
    reply = _site_reply(sites["hospital_a"], f"SELECT COUNT(*), SUM(value) FROM labs "
                                             f"WHERE {DOMINATED}")
    # Only the suppression flag and the thresholded unit count (withheld with the cell) leave.
    assert [c for c in reply.partials.column_names if c.startswith("__")] == [
        "__units", "__suppressed"]
    assert reply.partials["__units"].to_pylist() == [None]


def _dominance_premise(demo_tables, policy) -> None:
    """At hospital_a the filtered CRP sum has enough patients to pass the small-cell rule,
    but its two largest patients hold more than k % of it."""
    n, k = policy.disclosure.dominance
    per_unit = _per_site({"hospital_a": demo_tables["hospital_a"]},
                         f"SELECT patient_id, SUM(value) AS v FROM labs WHERE {DOMINATED} "
                         "GROUP BY patient_id ORDER BY v DESC")["hospital_a"]
    values = [v for _, v in per_unit]
    assert len(values) >= policy.disclosure.min_cell_count
    assert sum(values[:n]) > sum(values) * k / 100


@pytest.mark.parametrize("aggregate", ["SUM(value)", "AVG(value)"])
def test_sum_dominated_by_two_patients_is_suppressed(federation, sites, demo_tables,
                                                     demo_policies, aggregate):
    _dominance_premise(demo_tables, demo_policies["hospital_a"])
    sql = f"SELECT {aggregate} FROM labs WHERE {DOMINATED}"
    rows, report = _release(federation, sql)
    assert rows == [(None,)] and report.suppressed_rows == (0,)
    reply = _site_reply(sites["hospital_a"], sql)
    assert reply.suppressed == 1


def test_undominated_sum_is_released_exactly(federation, demo_tables):
    """Control for the dominance cases: the same test without the extreme filter is fine."""
    sql = "SELECT SUM(value) FROM labs WHERE test_name = 'CRP'"
    truth = sum(v for cells in _per_site(demo_tables, sql).values() for (v,) in cells)
    rows, report = _release(federation, sql)
    assert rows[0][0] == pytest.approx(truth, rel=1e-9) and report.suppressed_rows == ()
