"""Fixtures for the TPC-H equivalence tests: generated data, the federation, the pooled baseline.

The data is generated on first use with ``tpchgen-cli`` into ``tests/.data/`` (git-ignored) and
reused by later runs; see ``tpch_data.py`` for the layout and why it is co-partitioned.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

HERE = Path(__file__).resolve().parent
DATA_ROOT = HERE.parent / ".data"


def _load_helper():
    # pytest runs with --import-mode=importlib and tests/ has no __init__.py: load by path.
    name = "_fedquery_tests_tpch_data"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "tpch_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tpch_data():
    """The ``tpch_data`` helper module."""
    return _load_helper()


@pytest.fixture(scope="session")
def tpch_dir(tpch_data) -> Path:
    """Cache directory holding ``pooled/``, ``site1..3/`` and ``layout.json``."""
    return tpch_data.ensure_tpch(DATA_ROOT)


@pytest.fixture(scope="session")
def tpch_layout(tpch_data, tpch_dir) -> dict:
    return tpch_data.load_layout(tpch_dir)


@pytest.fixture(scope="session")
def tpch_site_tables(tpch_data, tpch_dir, tpch_layout) -> dict:
    """``{site: {table: pyarrow.Table}}`` as the sites hold them."""
    return {
        site: {t: pq.read_table(tpch_dir / site / f"{t}.parquet") for t in tpch_data.TABLES}
        for site in tpch_layout["sites"]
    }


@pytest.fixture(scope="session")
def tpch_federation(tpch_site_tables):
    """A DB-API connection over the in-process sites (policy "open": no noise, min cell 1)."""
    from fedquery.testing import local_federation

    conn = local_federation(tpch_site_tables)
    yield conn
    close = getattr(conn, "close", None)
    if close is not None:
        close()


@pytest.fixture(scope="session")
def tpch_pooled(tpch_data, tpch_dir) -> duckdb.DuckDBPyConnection:
    """DuckDB with one view per TPC-H table over the pooled (unpartitioned) parquet files."""
    con = duckdb.connect()
    for t in tpch_data.TABLES:
        path = str(tpch_dir / "pooled" / f"{t}.parquet").replace("'", "''")
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{path}')")
    yield con
    con.close()
