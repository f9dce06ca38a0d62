"""Catalog compatibility across sites, and sites that plan for themselves."""

from __future__ import annotations

import pyarrow as pa
import pytest

from fedquery.errors import CatalogError, InternalError
from fedquery.ir import QueryRequest
from fedquery.site.adapter import DuckDBAdapter
from fedquery.site.service import SiteService
from fedquery.testing import local_federation


def _t(**cols):
    return pa.table(cols)


def test_integer_widths_unify():
    conn = local_federation({"a": {"t": _t(x=pa.array([1, 2], pa.int32()))},
                             "b": {"t": _t(x=pa.array([3], pa.int64()))}})
    assert conn.cursor().execute("SELECT SUM(x) FROM t").fetchall() == [(6,)]


def test_table_missing_at_a_site_names_the_site():
    conn = local_federation({"a": {"t": _t(x=[1]), "u": _t(y=[1])}, "b": {"t": _t(x=[2])}})
    with pytest.raises(CatalogError, match=r"table 'u' is not available at site 'b'"):
        conn.cursor().execute("SELECT COUNT(*) FROM u")
    assert conn.cursor().execute("SELECT COUNT(*) FROM t").fetchall() == [(2,)]


def test_incompatible_column_types_name_site_and_column():
    conn = local_federation({"a": {"t": _t(x=[1], y=["s"])}, "b": {"t": _t(x=[2], y=[1.5])}})
    with pytest.raises(CatalogError, match=r"t\.y has incompatible types: VARCHAR at 'a', "
                                           r"DOUBLE at 'b'"):
        conn.cursor().execute("SELECT AVG(y) FROM t")
    assert conn.cursor().execute("SELECT COUNT(x) FROM t").fetchall() == [(2,)]


def test_column_missing_at_a_site_names_the_site():
    conn = local_federation({"a": {"t": _t(x=[1], z=[1])}, "b": {"t": _t(x=[2])}})
    with pytest.raises(CatalogError, match=r"column t\.z is missing at site 'b'"):
        conn.cursor().execute("SELECT SUM(z) FROM t")


def test_site_refuses_when_its_plan_differs_from_the_coordinators():
    service = SiteService("a", DuckDBAdapter.from_arrow({"t": _t(x=[1, 2])}))
    request = QueryRequest("SELECT SUM(x) FROM t", "alice", fingerprint="0" * 64)
    with pytest.raises(InternalError, match="derived a different plan"):
        service.query(request)
    reply = service.query(QueryRequest("SELECT SUM(x) FROM t", "alice"))
    assert reply.partials.to_pylist() == [{"p_0": 3, "__units": None, "__suppressed": False}]


def test_site_derives_its_own_fragment_from_the_analysts_sql():
    """A site receives SQL text, never a fragment: a fragment-looking request is just SQL
    that the site re-plans (and here refuses, since it has no aggregate)."""
    from fedquery.errors import NotSupportedError
    service = SiteService("a", DuckDBAdapter.from_arrow({"t": _t(x=[1, 2])}))
    with pytest.raises(NotSupportedError, match="must aggregate"):
        service.query(QueryRequest('SELECT "t"."x" AS "g_0" FROM "t"', "alice"))


def test_empty_input_global_and_grouped():
    empty = _t(x=pa.array([], pa.int64()), g=pa.array([], pa.string()))
    conn = local_federation({"a": {"t": empty}, "b": {"t": empty}})
    cur = conn.cursor()
    assert cur.execute("SELECT COUNT(*), SUM(x), AVG(x) FROM t").fetchall() == [(0, None, None)]
    assert cur.execute("SELECT g, COUNT(*) FROM t GROUP BY g").fetchall() == []
