"""The noise cache: a semantically equal query — however written — gets the same noisy answer
at no cost (averaging attacks gain nothing); a different ε or a different data version gets
fresh noise at a fresh cost; the cache lives in the ledger database and survives a restart."""

from __future__ import annotations

import pyarrow as pa
import pytest

from fedquery.demo.generate import write_site_duckdb

SITES = ("s1", "s2")
BASE = "SELECT g, COUNT(*) AS n, SUM(x) AS s FROM t WHERE x > 0 AND y < 100 GROUP BY g"

EQUAL = {
    "whitespace and case": "select   G ,COUNT( * ),\n\tsum(X)\nFROM   T where X>0 And Y<100 "
                           "group by G",
    "table alias": "SELECT tt.g, COUNT(*) AS n, SUM(tt.x) AS s FROM t AS tt "
                   "WHERE tt.x > 0 AND tt.y < 100 GROUP BY tt.g",
    "output aliases": "SELECT g AS grp, COUNT(*) AS cnt, SUM(x) AS total FROM t "
                      "WHERE x > 0 AND y < 100 GROUP BY g",
    "no output aliases": "SELECT g, COUNT(*), SUM(x) FROM t WHERE x > 0 AND y < 100 GROUP BY g",
    "reordered AND": "SELECT g, COUNT(*) AS n, SUM(x) AS s FROM t WHERE y < 100 AND x > 0 "
                     "GROUP BY g",
    "GROUP BY ALL": "SELECT g, COUNT(*) AS n, SUM(x) AS s FROM t WHERE x > 0 AND y < 100 "
                    "GROUP BY ALL",
    "GROUP BY 1": "SELECT g, COUNT(*) AS n, SUM(x) AS s FROM t WHERE x > 0 AND y < 100 "
                  "GROUP BY 1",
    "comments": "/* why */ SELECT g, COUNT(*) AS n, -- the count\n SUM(x) AS s /* the sum */ "
                "FROM t -- the table\n WHERE x > 0 /* positive */ AND y < 100 GROUP BY g;",
    "all at once": "/* again */ select T2.G as k, count(*), sum(T2.X) from T as T2 "
                   "where T2.Y < 100 and T2.X > 0 group by all",
}


@pytest.fixture
def table(make_table):
    return make_table(pid=list(range(1, 21)), g=["a", "b"] * 10,
                      x=[float(i % 10) for i in range(20)])


@pytest.fixture
def conn(federation, make_policy, table):
    return federation({s: table for s in SITES}, make_policy("laplace", budget=1e3))


def by_key(rows):
    return sorted(rows, key=lambda r: str(r[0]))


def intervals_by_key(cur, rows):
    """Each row's 95 % intervals, keyed by its group key (rows come in no fixed order)."""
    return {r[0]: iv for r, iv in zip(rows, cur.fq_report.intervals)}


@pytest.mark.parametrize("variant", sorted(EQUAL))
def test_equal_queries_written_differently_hit_the_cache(conn, variant, ledger_state):
    cur = conn.cursor()
    cur.execute(BASE)
    raw = cur.fetchall()
    first_rows, first = by_key(raw), cur.fq_report
    first_intervals = intervals_by_key(cur, raw)
    assert first.cached_sites == () and all(e > 0 for _, e in first.epsilon_spent)
    spent = ledger_state(conn)

    sql = EQUAL[variant]
    cur.execute(sql)
    raw = cur.fetchall()
    rows = by_key(raw)
    report = cur.fq_report
    assert rows == first_rows  # the identical noisy answer
    assert intervals_by_key(cur, raw) == first_intervals  # and the same intervals
    assert report.cached_sites == SITES
    assert dict(report.epsilon_spent) == {s: 0.0 for s in SITES}
    assert ledger_state(conn) == spent
    assert report.intervals and all(iv[1] is not None for iv in report.intervals)


def test_a_comment_after_a_group_key_is_the_same_query(conn):
    cur = conn.cursor()
    cur.execute(BASE)
    rows = by_key(cur.fetchall())
    cur.execute(BASE + " -- grouped by g")
    assert by_key(cur.fetchall()) == rows and cur.fq_report.cached_sites == SITES


def test_a_repeated_query_is_free_for_another_cursor_and_another_analyst(conn, ledger_state):
    from fedquery.dbapi import Connection

    cur = conn.cursor()
    cur.execute(BASE)
    rows = cur.fetchall()
    for _ in range(3):
        other = conn.cursor()
        other.execute(BASE)
        assert by_key(other.fetchall()) == by_key(rows)
        assert other.fq_report.cached_sites == SITES
    # the cache is per query, not per analyst: another analyst averages nothing away either
    bob = Connection(conn.engine, user="bob").cursor()  # same sites (closed with conn)
    bob.execute(BASE)
    assert by_key(bob.fetchall()) == by_key(rows)
    assert ledger_state(conn, "bob") == {s: (0.0, 0.0) for s in SITES}


def test_the_default_epsilon_written_out_is_the_same_query(conn):
    cur = conn.cursor()
    cur.execute(BASE)  # the policy's max_epsilon_per_query, 1.0
    rows = cur.fetchall()
    cur.execute("SET epsilon = 1.0")
    cur.execute(BASE)
    assert by_key(cur.fetchall()) == by_key(rows) and cur.fq_report.cached_sites == SITES


def test_a_different_epsilon_misses(conn, ledger_state):
    cur = conn.cursor()
    cur.execute(BASE)
    rows = cur.fetchall()
    spent = ledger_state(conn)
    answers = {tuple(by_key(rows))}
    for epsilon in ("0.9", "0.5", "0.9000000001"):
        cur.execute(f"SET epsilon = {epsilon}")
        cur.execute(BASE)
        report = cur.fq_report
        assert report.cached_sites == ()
        assert dict(report.epsilon_spent) == {s: float(epsilon) for s in SITES}
        answers.add(tuple(by_key(cur.fetchall())))
        assert all(ledger_state(conn)[s][0] > spent[s][0] for s in SITES)
        spent = ledger_state(conn)
    assert len(answers) > 1  # fresh noise (all four equal would be a sign of a cache hit)


def test_a_different_query_misses(conn):
    cur = conn.cursor()
    cur.execute(BASE)
    for sql in (BASE.replace("y < 100", "y < 101"), BASE.replace("COUNT(*)", "COUNT(x)"),
                BASE.replace("x > 0 AND", "")):
        cur.execute(sql)
        assert cur.fq_report.cached_sites == (), sql


# --- data version and restart -------------------------------------------------------------------

def test_cache_survives_a_restart_and_misses_on_new_data(file_federation, make_policy, table,
                                                        ledger_state, tmp_path):
    paths = {s: tmp_path / "data" / f"{s}.duckdb" for s in SITES}
    for path in paths.values():
        write_site_duckdb(path, {"t": table})
    state = tmp_path / "state"
    policy = make_policy("laplace", budget=1e3)

    first = file_federation(paths, policy, state)
    cur = first.cursor()
    cur.execute(BASE)
    rows = by_key(cur.fetchall())
    assert cur.fq_report.cached_sites == ()
    spent = ledger_state(first)
    first.close()  # closes the sites' DuckDB connections too

    second = file_federation(paths, policy, state)  # restart on unchanged files: a hit
    cur = second.cursor()
    cur.execute(EQUAL["reordered AND"])
    assert by_key(cur.fetchall()) == rows
    assert cur.fq_report.cached_sites == SITES
    assert ledger_state(second) == spent
    second.close()

    changed = pa.concat_tables([table, table.slice(0, 5)])  # five more rows at s1
    write_site_duckdb(paths["s1"], {"t": changed})
    third = file_federation(paths, policy, state)
    cur = third.cursor()
    cur.execute(BASE)
    report = cur.fq_report
    assert report.cached_sites == ("s2",)  # s1's data version changed: fresh noise there
    assert dict(report.epsilon_spent) == {"s1": 1.0, "s2": 0.0}
    after = ledger_state(third)
    assert after["s1"][0] > spent["s1"][0] and after["s2"] == spent["s2"]
    third.close()


def test_in_memory_data_gets_a_new_version_per_site_start(federation, make_policy, table,
                                                          tmp_path):
    """Arrow tables loaded at start have no file to version: every start is a new version, so
    a cached answer is never served for data that may have changed."""
    state = tmp_path / "state"
    policy = make_policy("laplace", budget=1e3)
    first = federation({"s1": table}, policy, state_dir=state)
    first.cursor().execute(BASE)
    first.close()
    cur = federation({"s1": table}, policy, state_dir=state).cursor()
    cur.execute(BASE)
    assert cur.fq_report.cached_sites == ()
