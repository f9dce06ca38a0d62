"""The PEP 249 module surface, and pandas reading through the DB-API."""

from __future__ import annotations

import datetime as dt
import warnings

import pandas as pd
import pyarrow as pa
import pytest

import fedquery
from fedquery.testing import local_federation


@pytest.fixture
def conn():
    t = pa.table({"g": ["a", "a", "b"], "x": [1.5, 2.5, 4.0], "d": pa.array(
        [dt.date(2020, 1, 1), dt.date(2021, 1, 1), dt.date(2022, 1, 1)])})
    return local_federation({"s1": {"t": t}, "s2": {"t": t}})


def test_module_globals_and_exceptions():
    assert fedquery.apilevel == "2.0" and fedquery.paramstyle == "qmark"
    assert fedquery.threadsafety in (0, 1, 2, 3)
    assert issubclass(fedquery.PolicyViolation, fedquery.ProgrammingError)
    assert issubclass(fedquery.BudgetExhausted, fedquery.OperationalError)
    assert issubclass(fedquery.Error, Exception) and issubclass(fedquery.Warning, Exception)


def test_type_objects_match_description_type_codes(conn):
    cur = conn.cursor().execute("SELECT g, COUNT(*), AVG(x), MIN(d) FROM t GROUP BY g")
    codes = [d[1] for d in cur.description]
    assert codes[0] == fedquery.STRING and codes[1] == fedquery.NUMBER
    assert codes[2] == fedquery.NUMBER and codes[3] == fedquery.DATETIME
    assert codes[0] != fedquery.NUMBER


def test_constructors():
    assert fedquery.Date(2026, 1, 2) == dt.date(2026, 1, 2)
    assert fedquery.Timestamp(2026, 1, 2, 3, 4, 5).hour == 3
    assert fedquery.Binary(b"ab") == b"ab"
    assert isinstance(fedquery.DateFromTicks(0), dt.date)
    assert isinstance(fedquery.TimestampFromTicks(0), dt.datetime)


def test_cursor_surface(conn):
    cur = conn.cursor()
    assert cur.description is None and cur.rowcount == -1
    cur.setinputsizes([None]), cur.setoutputsizes(10)
    cur.arraysize = 2
    cur.execute("SELECT g, COUNT(*) FROM t GROUP BY g ORDER BY g")
    assert cur.fetchmany() == [("a", 4), ("b", 2)] and cur.nextset() is None
    with pytest.raises(fedquery.NotSupportedError):
        cur.callproc("p")
    cur.close()
    with pytest.raises(fedquery.InterfaceError):
        cur.execute("SELECT COUNT(*) FROM t")


def test_pandas_read_sql_equals_fetch_df(conn):
    sql = "SELECT g, COUNT(*) AS n, AVG(x) AS mean_x FROM t GROUP BY g ORDER BY g"
    with warnings.catch_warnings():  # pandas warns that it only tests SQLAlchemy connections
        warnings.simplefilter("ignore", UserWarning)
        frame = pd.read_sql(sql, conn)
    expected = conn.cursor().execute(sql).fetch_df()
    pd.testing.assert_frame_equal(frame, expected, check_dtype=False)


def test_arrow_extras(conn):
    cur = conn.cursor().execute("SELECT g, COUNT(*) AS n FROM t GROUP BY g ORDER BY g")
    table = cur.fetch_arrow_table()
    assert cur.fetch_record_batch().read_all().equals(table)
    assert table.column_names == ["g", "n"]
