"""Small cells and dominance: suppressed and flagged, per site and on combined cells."""

from __future__ import annotations

import pyarrow as pa
import pytest

from fedquery.errors import NotSupportedError
from fedquery.policy.model import Disclosure, Policy
from fedquery.testing import local_federation

STRICT = Policy(name="strict-cells", disclosure=Disclosure(
    min_cell_count=10, dominance=(2, 85.0), exact_extremes=True))


def _patients(site: str, groups: dict[str, int], value=lambda i: 1.0):
    ids, group, val = [], [], []
    for g, n in groups.items():
        for i in range(n):
            ids.append(f"{site}:{g}:{i}")
            group.append(g)
            val.append(value(i))
    return pa.table({"patient_id": ids, "g": group, "x": val})


def _fed(sites, policy=STRICT, **kw):
    return local_federation({s: {"t": t} for s, t in sites.items()}, policy=policy,
                            privacy_units={"t": "patient_id"}, **kw)


def _run(conn, sql):
    cur = conn.cursor().execute(sql)
    return cur.fetchall(), cur.fq_report


def test_small_cell_is_suppressed_and_flagged_not_refused():
    conn = _fed({"a": _patients("a", {"big": 30, "small": 4}),
                 "b": _patients("b", {"big": 20})})
    rows, report = _run(conn, "SELECT g, COUNT(*) AS n, SUM(x) AS s FROM t GROUP BY g ORDER BY g")
    assert rows == [("big", 50, 50.0), ("small", None, None)]
    assert report.suppressed_rows == (1,) and report.suppressed_cells == 1


def test_plain_mode_suppresses_per_site_even_if_combined_is_large():
    """4 units at each of 3 sites: 12 ≥ 10 combined, but each site's cell is small."""
    sites = {s: _patients(s, {"grp": 4}) for s in "abc"}
    rows, report = _run(_fed(sites), "SELECT g, COUNT(*) FROM t GROUP BY g")
    assert rows == [("grp", None)] and report.suppressed_cells == 1


def test_rows_are_not_units():
    """12 rows of one patient are one contributor, not twelve."""
    one = pa.table({"patient_id": ["p"] * 12, "g": ["x"] * 12, "x": [1.0] * 12})
    many = _patients("b", {"x": 15})
    rows, _ = _run(_fed({"a": one, "b": many}), "SELECT g, COUNT(*) FROM t GROUP BY g")
    assert rows == [("x", None)]


def test_dominance_suppresses_a_sum_held_by_two_units():
    sites = {"a": _patients("a", {"g": 20}, value=lambda i: 1000.0 if i < 2 else 1.0),
             "b": _patients("b", {"g": 20})}
    rows, report = _run(_fed(sites), "SELECT g, SUM(x), COUNT(*) FROM t GROUP BY g")
    assert rows == [("g", None, None)] and report.suppressed_cells == 1
    flat = {"a": _patients("a", {"g": 20}), "b": _patients("b", {"g": 20})}
    assert _run(_fed(flat), "SELECT g, SUM(x), COUNT(*) FROM t GROUP BY g")[0] == [
        ("g", 40.0, 40)]


def test_count_in_disguise_is_caught_by_dominance():
    """SUM of an indicator reveals a count: 2 deaths among 20 is dominated by 2 units."""
    sites = {"a": _patients("a", {"g": 20}, value=lambda i: 1.0 if i < 2 else 0.0),
             "b": _patients("b", {"g": 20}, value=lambda i: 0.0)}
    rows, _ = _run(_fed(sites), "SELECT g, SUM(CASE WHEN x > 0 THEN 1 ELSE 0 END) FROM t "
                                "GROUP BY g")
    assert rows == [("g", None)]


def test_filtered_count_below_threshold_is_suppressed():
    sites = {"a": _patients("a", {"g": 30}, value=lambda i: float(i))}
    rows, _ = _run(_fed(sites), "SELECT g, COUNT(*) FILTER (WHERE x < 3) FROM t GROUP BY g")
    assert rows == [("g", None)]


def test_zero_cells_disclosive():
    policy = Policy(name="zeros", disclosure=Disclosure(min_cell_count=5, dominance=None,
                                                        zero_cells_disclosive=True))
    sites = {"a": _patients("a", {"g": 30})}
    rows, _ = _run(_fed(sites, policy), "SELECT g, COUNT(*) FILTER (WHERE x > 5) FROM t "
                                        "GROUP BY g")
    assert rows == [("g", None)]
    rows, _ = _run(_fed(sites, STRICT), "SELECT g, COUNT(*) FILTER (WHERE x > 5) FROM t "
                                        "GROUP BY g")
    assert rows == [("g", 0)]


def test_min_sites_on_combined_cells():
    policy = Policy(name="two-sites", disclosure=Disclosure(min_cell_count=10, dominance=None,
                                                            min_sites=2))
    sites = {"a": _patients("a", {"both": 20, "only_a": 20}), "b": _patients("b", {"both": 20})}
    rows, report = _run(_fed(sites, policy), "SELECT g, COUNT(*) FROM t GROUP BY g ORDER BY g")
    assert rows == [("both", 40), ("only_a", None)] and report.suppressed_rows == (1,)


def test_global_aggregate_small_population_is_suppressed():
    rows, _ = _run(_fed({"a": _patients("a", {"g": 3})}), "SELECT COUNT(*), AVG(x) FROM t")
    assert rows == [(None, None)]


def test_cte_without_the_unit_is_refused_with_advice():
    conn = _fed({"a": _patients("a", {"g": 30})})
    with pytest.raises(NotSupportedError, match="privacy unit"):
        conn.cursor().execute("WITH v AS (SELECT g, x FROM t) SELECT g, COUNT(*) FROM v "
                              "GROUP BY g")
    rows, _ = _run(conn, "WITH v AS (SELECT patient_id, g FROM t) SELECT g, COUNT(*) FROM v "
                         "GROUP BY g")
    assert rows == [("g", 30)]


def test_messages_never_contain_counts():
    conn = _fed({"a": _patients("a", {"tiny": 2, "big": 40})})
    cur = conn.cursor().execute("SELECT g, COUNT(*) FROM t GROUP BY g ORDER BY g")
    report = cur.fq_report
    assert cur.fetchall() == [("big", 40), ("tiny", None)]
    assert report.suppressed_rows == (1,) and report.suppressed_cells == 1
    assert not any(ch.isdigit() for ch in " ".join(report.notes))


def test_combined_cell_is_held_to_the_federations_strictest_minimum():
    """A group held only by the lenient site (min 5) is below the strict site's 12."""
    lenient = Policy(name="lenient", disclosure=Disclosure(min_cell_count=5, dominance=None))
    strict = Policy(name="strict", disclosure=Disclosure(min_cell_count=12, dominance=None))
    sites = {"a": _patients("a", {"both": 20, "only_a": 8}), "b": _patients("b", {"both": 20})}
    conn = local_federation({s: {"t": t} for s, t in sites.items()},
                            policy={"a": lenient, "b": strict}, privacy_units={"t": "patient_id"})
    rows, report = _run(conn, "SELECT g, COUNT(*) FROM t GROUP BY g ORDER BY g")
    assert rows == [("both", 40), ("only_a", None)] and report.suppressed_rows == (1,)
    # the same cell with two lenient sites is released
    conn = local_federation({s: {"t": t} for s, t in sites.items()}, policy=lenient,
                            privacy_units={"t": "patient_id"})
    assert _run(conn, "SELECT g, COUNT(*) FROM t GROUP BY g ORDER BY g")[0] == [
        ("both", 40), ("only_a", 8)]
