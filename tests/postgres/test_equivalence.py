"""A PostgreSQL site answers exactly like a DuckDB site holding the same data.

* The equivalence corpus (``tests/equivalence/corpus.sql``) over a mixed federation — the first
  synthetic hospital in PostgreSQL, the other two in DuckDB — equals DuckDB on the pooled data
  (values, column names, value types), and every fragment returns, from PostgreSQL, the same
  Arrow (same schema, same values) as from DuckDB.
* The same for the TPC-H subset (site1 in PostgreSQL, site2 and site3 in DuckDB).
* Under differential privacy and under small-cell control the bounded fragment — keyed-hash
  row cap, clamping, fixed-point encoding, public-domain grouping, per-unit checks — returns
  the very same integers from PostgreSQL as from DuckDB (same rows kept, same rounding).

NULLs (bmi, smoker, lab values), dates, decimals (TPC-H) and text are all in there.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedquery.demo.generate import generate_federation_tables
from fedquery.demo.showcase import SHOWCASE, demo_policy_path
from fedquery.plan.prepare import Preparer
from fedquery.policy.contributions import bounding_of
from fedquery.policy.load import load_policy
from fedquery.site.engines.duckdb import DuckDBAdapter
from fedquery.testing import assert_results_equal, pooled_connection

TESTS = Path(__file__).resolve().parents[1]
SITE_SIZES = (520, 340, 430)  # as tests/equivalence/conftest.py
SEED = 20240611
TABLES = ("patients", "diagnoses", "labs", "treatments", "outcomes")
UNITS = {t: "patient_id" for t in TABLES}


def _load(name: str, path: Path):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


CORPUS = _load("_fedquery_pg_corpus", TESTS / "equivalence" / "test_corpus.py").CORPUS
TPCH = _load("_fedquery_tests_tpch_data", TESTS / "tpch" / "tpch_data.py")
TPCH_QUERIES = sorted((TESTS / "tpch" / "queries").glob("q*.sql"))
TPCH_ORDERED = {"q05": False}


def _arrow(table) -> pa.Table:
    return table if isinstance(table, pa.Table) else pa.Table.from_pandas(
        table, preserve_index=False)


def _kinds(rows):
    def kind(v):
        return None if v is None else ("float" if isinstance(v, float) or type(
            v).__name__ == "Decimal" else type(v).__name__)
    return [{kind(r[j]) for r in rows} - {None} for j in range(len(rows[0]))] if rows else []


def assert_same_arrow(got: pa.Table, expected: pa.Table, context: str, exact: bool = False):
    """Same schema; same rows (as sets: a fragment's group order is unspecified)."""
    assert got.schema == expected.schema, f"{context}: schema\n{got.schema}\nvs\n{expected.schema}"

    def key(row):
        return tuple((v is None, str(type(v)), round(v, 6) if isinstance(v, float) and
                      math.isfinite(v) else str(v)) for v in row)
    rows_g = sorted((tuple(r.values()) for r in got.to_pylist()), key=key)
    rows_e = sorted((tuple(r.values()) for r in expected.to_pylist()), key=key)
    if exact:
        assert rows_g == rows_e, f"{context}\nPostgreSQL: {rows_g[:5]}\nDuckDB:     {rows_e[:5]}"
    else:
        assert_results_equal(rows_g, rows_e, ordered=True, context=context)


# -- the synthetic hospitals ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def hospitals():
    sites = generate_federation_tables(n_sites=3, patients_per_site=list(SITE_SIZES), seed=SEED)
    return {name: {t: _arrow(tables[t]) for t in TABLES} for name, tables in sites.items()}


@pytest.fixture(scope="module")
def first(hospitals):
    return next(iter(hospitals))


@pytest.fixture(scope="module")
def pg_hospital(hospitals, first, pg_schema, pg_load, pg_adapter):
    pg_load(pg_schema, hospitals[first])
    adapter = pg_adapter(pg_schema, TABLES, site=first)
    yield adapter
    adapter.close()


@pytest.fixture(scope="module")
def duck_hospital(hospitals, first):
    adapter = DuckDBAdapter.from_arrow(hospitals[first])
    yield adapter
    adapter.close()


@pytest.fixture(scope="module")
def mixed(hospitals, first, pg_schema, pg_load, pg_adapter, federation_of, pg_hospital):
    adapters = {name: (pg_adapter(pg_schema, TABLES, site=name) if name == first
                       else DuckDBAdapter.from_arrow(tables))
                for name, tables in hospitals.items()}
    conn = federation_of(adapters, privacy_units=UNITS)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def pooled(hospitals):
    con = pooled_connection(hospitals)
    yield con
    con.close()


def test_the_postgresql_site_describes_the_same_catalog(pg_hospital, duck_hospital):
    assert pg_hospital.describe() == duck_hospital.describe()
    assert pg_hospital.unmapped == ()


@pytest.mark.parametrize("query", CORPUS, ids=[q.name for q in CORPUS])
def test_corpus_on_a_mixed_federation_equals_pooled_duckdb(query, mixed, pooled):
    cur = mixed.cursor()
    cur.execute(query.sql)
    got, names = cur.fetchall(), [d[0] for d in cur.description]
    res = pooled.execute(query.sql)
    expected, expected_names = res.fetchall(), [d[0] for d in res.description]
    assert names == expected_names
    assert_results_equal(got, expected, ordered=query.ordered, context=query.name)
    assert _kinds(got) == _kinds(expected), query.name


@pytest.mark.parametrize("query", CORPUS, ids=[q.name for q in CORPUS])
def test_corpus_fragment_returns_the_same_arrow_from_postgresql(query, pg_hospital,
                                                                 duck_hospital):
    schema = {t.name: {c.name: c.type for c in t.columns} for t in duck_hospital.describe()}
    fragment = Preparer(schema, UNITS).prepare(query.sql).plan.fragment.sql
    assert_same_arrow(pg_hospital.execute(fragment), duck_hospital.execute(fragment),
                      query.name)


# -- bounded fragments: differential privacy and small-cell control -------------------------------

BOUNDED = [showcase[1] for showcase in SHOWCASE] + [
    "SELECT region, COUNT(*), AVG(bmi), SUM(age) FROM patients GROUP BY region",
    "SELECT test_name, COUNT(*), AVG(value), STDDEV(value) FROM labs GROUP BY test_name",
    ("SELECT sex, COUNT(DISTINCT p.patient_id) FROM patients p JOIN labs l USING (patient_id) "
     "WHERE l.value > 5.5 GROUP BY sex"),
    "SELECT COUNT(*), SUM(followup_days), AVG(death) FROM outcomes",
]


@pytest.mark.parametrize("mode", ["differential_privacy", "small_cells"])
@pytest.mark.parametrize("index", range(len(BOUNDED)))
def test_bounded_fragment_returns_the_same_integers_from_postgresql(
        mode, index, pg_hospital, duck_hospital):
    sql = BOUNDED[index]
    policy = load_policy(demo_policy_path(0))
    schema = {t.name: {c.name: c.type for c in t.columns} for t in duck_hospital.describe()}
    bounding = bounding_of(policy, "a site's secret key, with a quote ' in it")
    preparer = (Preparer(schema, UNITS, policy.requirements(), bounding)
                if mode == "differential_privacy" else Preparer(schema, UNITS,
                                                                policy.requirements()))
    fragment = preparer.prepare(sql).plan.fragment.sql
    got, expected = pg_hospital.execute(fragment), duck_hospital.execute(fragment)
    # Under DP every partial is an integer (counts, fixed-point sums): equal to the unit.
    assert_same_arrow(got, expected, f"{mode}: {sql}", exact=mode == "differential_privacy")


# -- TPC-H ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tpch_dir():
    return TPCH.ensure_tpch(TESTS / ".data")


@pytest.fixture(scope="module")
def tpch_sites(tpch_dir):
    layout = TPCH.load_layout(tpch_dir)
    return {site: {t: pq.read_table(tpch_dir / site / f"{t}.parquet") for t in TPCH.TABLES}
            for site in layout["sites"]}


@pytest.fixture(scope="module")
def tpch_pg(tpch_sites, pg_schema, pg_load, pg_adapter):
    schema = pg_schema + "_tpch"
    pg_load(schema, tpch_sites["site1"])
    adapter = pg_adapter(schema, TPCH.TABLES, site="site1")
    yield adapter
    adapter.close()
    from fedquery.site.engines.postgres import _driver
    with _driver().connect(adapter.source.conninfo, autocommit=True) as conn, \
            conn.cursor() as cur:
        cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(scope="module")
def tpch_mixed(tpch_sites, tpch_pg, federation_of, pg_adapter):
    adapters = {site: (pg_adapter(tpch_pg.source.schema, TPCH.TABLES, site=site)
                       if site == "site1" else DuckDBAdapter.from_arrow(tables))
                for site, tables in tpch_sites.items()}
    conn = federation_of(adapters)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def tpch_pooled(tpch_dir):
    """The unpartitioned data (dimensions once, not once per site)."""
    con = pooled_connection({"pooled": {t: pq.read_table(tpch_dir / "pooled" / f"{t}.parquet")
                                        for t in TPCH.TABLES}})
    yield con
    con.close()


@pytest.mark.parametrize("path", TPCH_QUERIES, ids=[p.stem for p in TPCH_QUERIES])
def test_tpch_on_a_mixed_federation_equals_pooled_duckdb(path, tpch_mixed, tpch_pooled):
    sql = path.read_text()
    cur = tpch_mixed.cursor()
    cur.execute(sql)
    assert cur.fq_report.sites_answered == ("site1", "site2", "site3")
    res = tpch_pooled.execute(sql)
    expected = res.fetchall()
    assert expected
    assert [d[0] for d in cur.description] == [d[0] for d in res.description]
    assert_results_equal(cur.fetchall(), expected, ordered=TPCH_ORDERED.get(path.stem, True),
                         context=path.stem)


@pytest.mark.parametrize("path", TPCH_QUERIES, ids=[p.stem for p in TPCH_QUERIES])
def test_tpch_fragment_returns_the_same_arrow_from_postgresql(path, tpch_pg, tpch_sites):
    duck = DuckDBAdapter.from_arrow(tpch_sites["site1"])
    try:
        schema = {t.name: {c.name: c.type for c in t.columns} for t in duck.describe()}
        fragment = Preparer(schema).prepare(path.read_text()).plan.fragment.sql
        assert_same_arrow(tpch_pg.execute(fragment), duck.execute(fragment), path.stem)
    finally:
        duck.close()
