"""Shared fixtures for the equivalence suite: federated answers must equal DuckDB on pooled data.

The federation is built once per test session (per xdist worker) from the synthetic demo
hospital data: three sites of different sizes, no noise, minimum cell count 1 (policy
``"open"``).  ``pooled`` is a plain DuckDB holding the UNION ALL of every site's rows, which is
the ground truth each federated answer is compared with.

Helpers used by several test modules are fixtures too (``run_federated``, ``run_pooled``,
``column_kinds``), because the suite runs with ``--import-mode=importlib`` and has no
``__init__.py`` to import them from.
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import pyarrow as pa
import pytest

from fedquery.testing import pooled_connection

#: Patients per site; deliberately different so that groups have unequal per-site shares.
SITE_SIZES = (520, 340, 430)
SEED = 20240611
TABLES = ("patients", "diagnoses", "labs", "treatments", "outcomes")
PRIVACY_UNITS = {t: "patient_id" for t in TABLES}


# ---------------------------------------------------------------------------------------------
# Data


def _build_sites() -> dict[str, dict[str, pa.Table]]:
    from fedquery.demo.generate import generate_federation_tables

    sites = generate_federation_tables(n_sites=3, patients_per_site=list(SITE_SIZES), seed=SEED)
    return {name: {t: _as_arrow(tables[t]) for t in TABLES} for name, tables in sites.items()}


def _as_arrow(table: Any) -> pa.Table:
    if isinstance(table, pa.Table):
        return table
    return pa.Table.from_pandas(table, preserve_index=False)


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def sites() -> dict[str, dict[str, pa.Table]]:
    return _build_sites()


@pytest.fixture(scope="session")
def fed_conn(sites):
    from fedquery.testing import local_federation

    conn = local_federation(sites, policy="open", privacy_units=PRIVACY_UNITS)
    yield conn
    close = getattr(conn, "close", None)
    if close is not None:
        close()


@pytest.fixture(scope="session")
def pooled(sites):
    con = pooled_connection(sites)
    yield con
    con.close()


# ---------------------------------------------------------------------------------------------
# Helpers


def _run_federated(conn, sql: str) -> tuple[list[str], list[tuple]]:
    """Run ``sql`` on the federation; return (column names, rows)."""
    cur = conn.cursor()
    try:
        cur.execute(sql)
        names = [d[0] for d in (cur.description or ())]
        rows = [tuple(r) for r in cur.fetchall()]
    finally:
        close = getattr(cur, "close", None)
        if close is not None:
            close()
    return names, rows


def _run_pooled(con, sql: str) -> tuple[list[str], list[tuple]]:
    """Run ``sql`` on the pooled DuckDB; return (column names, rows)."""
    res = con.execute(sql)
    names = [d[0] for d in (res.description or ())]
    return names, [tuple(r) for r in res.fetchall()]


def _value_kind(value: Any) -> str | None:
    """A coarse type class for comparing result types: int, float, date, timestamp, str, bool.

    DECIMAL counts as float: an engine may legitimately return DOUBLE where DuckDB computes an
    exact DECIMAL (``100.0 * SUM(x)``), but an integer must stay an integer and a date a date.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float | decimal.Decimal):
        return "float"
    if isinstance(value, dt.datetime):
        return "timestamp"
    if isinstance(value, dt.date):
        return "date"
    if isinstance(value, str):
        return "str"
    return type(value).__name__


def _column_kinds(rows: list[tuple]) -> list[set[str]]:
    """Per column, the set of value kinds over all non-NULL values."""
    if not rows:
        return []
    kinds: list[set[str]] = [set() for _ in rows[0]]
    for row in rows:
        for j, v in enumerate(row):
            k = _value_kind(v)
            if k is not None:
                kinds[j].add(k)
    return kinds


@pytest.fixture(scope="session")
def run_federated():
    return _run_federated


@pytest.fixture(scope="session")
def run_pooled():
    return _run_pooled


@pytest.fixture(scope="session")
def column_kinds():
    return _column_kinds
