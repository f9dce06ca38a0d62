"""Stuart Bishop's DB-API 2.0 compliance suite (``dbapi20.py``, vendored verbatim) for fedquery.

``driver = fedquery`` and every connection is made by ``fedquery.connect(federation.yaml)``:
two sites served by in-process ``SiteFlightServer``s over TLS on 127.0.0.1, reached with the
federation CA and a bearer token, under the open policy (exact answers, minimum cell 1).

The suite's tables exist at both sites under its own names (``dbapi20test_booze`` holds its six
``samples``, three per site; ``dbapi20test_barflys`` is empty; ``dbapi20test_cellar`` holds the
beers the suite inserts with parameters), so its DDL and DML aim at real tables.  fedquery is
read-only: every test of the suite that creates, fills or drops tables is overridden to assert
that each such statement raises ``NotSupportedError`` saying so (and leaves the cursor without
a result), and then checks what the original test checked — fetchone/fetchmany/fetchall,
arraysize, description, rowcount, parameters, NULL — with aggregate queries over the tables
(fedquery releases aggregates only).  ``tearDown`` checks that nothing was changed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import os
import secrets
import sys
import time
import unittest
from pathlib import Path

import pyarrow as pa
import pytest
from pyarrow import flight

import fedquery
from fedquery.policy.model import OPEN, Analyst
from fedquery.site.adapter import DuckDBAdapter
from fedquery.site.service import SiteService
from fedquery.transport import certs
from fedquery.transport.flight_server import SiteFlightServer


def _load_dbapi20():
    """tests/core/dbapi20.py under a private name (--import-mode=importlib, no __init__.py).

    Only the module is bound here, never its class: pytest would collect the unadapted suite.
    """
    name = "_fedquery_tests_dbapi20"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(
            "dbapi20.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


dbapi20 = _load_dbapi20()

ANALYST = "analyst"
PREFIX = dbapi20.DatabaseAPI20Test.table_prefix
BOOZE, BARFLYS, CELLAR = f"{PREFIX}booze", f"{PREFIX}barflys", f"{PREFIX}cellar"
SAMPLES = dbapi20.DatabaseAPI20Test.samples


def _names(values: list[str | None]) -> pa.Table:
    return pa.table({"name": pa.array(values, pa.string())})


INJECTION = "x' OR 1=1 --"

#: {site: {table: rows}}: the samples split across the sites; the beers the suite inserts with
#: parameters ("Cooper's" at both sites) and a name that is an SQL injection in a table of
#: their own.
SITES = {
    "site_a": {BOOZE: _names(SAMPLES[:3]), BARFLYS: _names([]),
               CELLAR: _names(["Cooper's", "Boag's", "Victoria Bitter", INJECTION])},
    "site_b": {BOOZE: _names(SAMPLES[3:]), BARFLYS: _names([]), CELLAR: _names(["Cooper's"])},
}
ROWS = {BOOZE: 6, BARFLYS: 0, CELLAR: 5}

#: The aggregate counterpart of the suite's ``select name from booze``: one row per name.
SELECT_NAMES = f"SELECT name, COUNT(*) AS n FROM {BOOZE} GROUP BY name"


@pytest.fixture(scope="class")
def tls_federation(request, tmp_path_factory):
    """Serve ``SITES`` over grpc+tls on loopback; point the suite's ``connect_args`` at a
    federation file naming them, with the federation CA and the analyst's token file."""
    root = tmp_path_factory.mktemp("dbapi20")
    ca = certs.init_ca(root / "pki")
    token = secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).hexdigest()
    policy = dataclasses.replace(OPEN, analysts={ANALYST: Analyst(ANALYST, digest)})
    with contextlib.ExitStack() as stack:
        ports = {}
        for name, tables in SITES.items():
            service = SiteService(name, DuckDBAdapter.from_arrow(tables), policy=policy)
            stack.callback(service.close)
            files = certs.issue(root / "pki", name)
            pair = flight.CertKeyPair(cert=files.cert.read_bytes(), key=files.key.read_bytes())
            server = SiteFlightServer(service, "grpc+tls://127.0.0.1:0", tls_certificates=[pair])
            stack.callback(server.wait)
            stack.callback(server.shutdown)  # runs first: shutdown, wait, close the service
            ports[name] = server.port
        token_file = root / "token"
        token_file.write_text(token + "\n")
        os.chmod(token_file, 0o600)
        sites = "\n".join(f"  {name}: {{endpoint: 'grpc+tls://127.0.0.1:{port}'}}"
                          for name, port in ports.items())
        federation = root / "federation.yaml"
        federation.write_text(f"version: 1\nca: '{ca.cert}'\nsites:\n{sites}\n"
                              "defaults: {timeout_s: 30, min_sites: 1, on_site_failure: fail}\n"
                              f"credentials: {{user: {ANALYST}, token_file: token}}\n")
        request.cls.connect_args = (str(federation),)
        yield


@pytest.mark.usefixtures("tls_federation")
class TestFedqueryDBAPI20(dbapi20.DatabaseAPI20Test):
    driver = fedquery
    connect_args = ()  # set by the tls_federation fixture: (path of federation.yaml,)

    # The suite asserts with failUnless, deprecated since Python 3.2 (a DeprecationWarning is an
    # error under this project's filterwarnings) and removed in 3.12.
    failUnless = unittest.TestCase.assertTrue

    # -- helpers ---------------------------------------------------------------------------------

    def _assert_read_only(self, cur, sql, parameters=None, *, many=False):
        """``sql`` is refused as a write, and leaves ``cur`` without a result set."""
        with self.assertRaisesRegex(self.driver.NotSupportedError, "fedquery is read-only"):
            if many:
                cur.executemany(sql, parameters)
            else:
                cur.execute(sql, parameters)
        self.assertIsNone(cur.description)
        self.assertEqual(cur.rowcount, -1)
        self.assertRaises(self.driver.Error, cur.fetchone)

    def executeDDL1(self, cursor):
        """Refused, then the suite's checks go on against the existing table."""
        self._assert_read_only(cursor, self.ddl1)

    def executeDDL2(self, cursor):
        self._assert_read_only(cursor, self.ddl2)

    def _populate_refused(self, cur):
        for sql in self._populate():
            self._assert_read_only(cur, sql)

    def tearDown(self):
        super().tearDown()  # DROPs both tables, swallowing any driver.Error ...
        con = self._connect()  # ... and fedquery refused every write: the data is intact
        try:
            cur = con.cursor()
            for sql in (self.xddl1, self.xddl2):
                self._assert_read_only(cur, sql)
            for table, rows in ROWS.items():
                cur.execute(f"SELECT COUNT(*) AS n FROM {table}")
                self.assertEqual(cur.fetchall(), [(rows,)], table)
        finally:
            con.close()

    # -- the suite's tests, adapted: writes refused, then the same checks read-only ------------

    def test_rollback(self):
        # the suite lets rollback() succeed or raise NotSupportedError; fedquery always raises
        con = self._connect()
        try:
            with self.assertRaisesRegex(self.driver.NotSupportedError, "read-only"):
                con.rollback()
        finally:
            con.close()

    def test_cursor_isolation(self):
        con = self._connect()
        try:
            cur1, cur2 = con.cursor(), con.cursor()
            self.executeDDL1(cur1)
            self._assert_read_only(cur1, f"insert into {BOOZE} values ('Victoria Bitter')")
            # both cursors of a connection see the same federation, each keeps its own result
            cur1.execute(SELECT_NAMES + " ORDER BY name")
            cur2.execute(f"SELECT name, COUNT(*) AS n FROM {BOOZE} WHERE name = 'Victoria "
                         "Bitter' GROUP BY name")
            self.assertEqual(cur1.fetchone(), (SAMPLES[0], 1))
            booze = cur2.fetchall()
            self.assertEqual(len(booze), 1)
            self.assertEqual(len(booze[0]), 2)
            self.assertEqual(booze[0][0], "Victoria Bitter")
            self.assertEqual([r[0] for r in cur1.fetchall()], SAMPLES[1:])
            cur2.execute(SELECT_NAMES + " ORDER BY name")
            self.assertEqual([r[0] for r in cur2.fetchall()], SAMPLES)
        finally:
            con.close()

    def test_description(self):
        con = self._connect()
        try:
            cur = con.cursor()
            self.assertIsNone(cur.description, "no statement executed yet")
            self.executeDDL1(cur)  # asserts description is None
            cur.execute(SELECT_NAMES)
            self.assertEqual(len(cur.description), 2,
                             "cursor.description describes the wrong number of columns")
            for column in cur.description:
                self.assertEqual(len(column), 7,
                                 "cursor.description[x] tuples must have 7 elements")
            self.assertEqual(cur.description[0][0].lower(), "name",
                             "cursor.description[x][0] must return column name")
            self.assertEqual(cur.description[0][1], self.driver.STRING,
                             f"cursor.description[x][1] must return column type. Got "
                             f"{cur.description[0][1]!r}")
            self.assertEqual(cur.description[1][0], "n")
            self.assertEqual(cur.description[1][1], self.driver.NUMBER)
            # description is reset by a refused statement and by one that returns no rows
            self.executeDDL2(cur)
            cur.execute(SELECT_NAMES)
            cur.execute("RESET epsilon")
            self.assertIsNone(cur.description, "cursor.description not being set to None "
                              "when executing no-result statements")
        finally:
            con.close()

    def test_rowcount(self):
        con = self._connect()
        try:
            cur = con.cursor()
            self.assertEqual(cur.rowcount, -1, "no statement executed yet")
            self.executeDDL1(cur)  # asserts rowcount is -1
            self._assert_read_only(cur, f"insert into {BOOZE} values ('Victoria Bitter')")
            cur.execute(f"SELECT name, COUNT(*) AS n FROM {BOOZE} WHERE name = 'Victoria "
                        "Bitter' GROUP BY name")
            self.assertEqual(cur.rowcount, 1, "cursor.rowcount should == number of rows "
                             "returned")
            cur.execute(SELECT_NAMES)
            self.assertEqual(cur.rowcount, len(SAMPLES))
            self.executeDDL2(cur)  # a refused statement resets it to -1
            cur.execute(SELECT_NAMES)
            cur.execute("RESET epsilon")
            self.assertEqual(cur.rowcount, -1, "cursor.rowcount not being reset to -1 after "
                             "executing no-result statements")
        finally:
            con.close()

    def test_callproc(self):
        con = self._connect()
        try:
            cur = con.cursor()
            with self.assertRaisesRegex(self.driver.NotSupportedError, "no stored procedures"):
                cur.callproc(self.lower_func, ("FOO",))
            self.assertRaises(self.driver.Error, cur.fetchall)
            # what the procedure computed, as a SELECT with the argument bound as a parameter
            cur.execute(f"SELECT {self.lower_func}(?) AS lowered, COUNT(*) AS n FROM {BOOZE}",
                        ("FOO",))
            r = cur.fetchall()
            self.assertEqual(len(r), 1, "no result set")
            self.assertEqual(r[0], ("foo", len(SAMPLES)), "invalid results")
        finally:
            con.close()

    def test_close(self):
        con = self._connect()
        try:
            cur = con.cursor()
        finally:
            con.close()
        # a valid query, so that only the closed connection can make execute() fail
        self.assertRaises(self.driver.InterfaceError, cur.execute, SELECT_NAMES)
        self.assertRaises(self.driver.InterfaceError, cur.execute, self.ddl1)
        self.assertRaises(self.driver.InterfaceError, con.commit)
        self.assertRaises(self.driver.InterfaceError, con.cursor)
        con.close()  # closing again does not raise

        # a closed cursor drops its result; its connection stays usable
        con = self._connect()
        try:
            cur = con.cursor()
            cur.execute(SELECT_NAMES)
            cur.close()
            for method in (cur.fetchone, cur.fetchall, cur.fetchmany, cur.nextset):
                self.assertRaises(self.driver.InterfaceError, method)
            self.assertRaises(self.driver.InterfaceError, cur.execute, SELECT_NAMES)
            self.assertEqual(len(con.cursor().execute(SELECT_NAMES).fetchall()), len(SAMPLES))
        finally:
            con.close()

    def _paraminsert(self, cur):
        """Used by test_execute, test_setinputsizes and test_setoutputsize_basic."""
        self.executeDDL1(cur)
        self._assert_read_only(cur, f"insert into {BOOZE} values ('Victoria Bitter')")
        self._assert_read_only(cur, f"insert into {BOOZE} values (?)", ("Cooper's",))
        self._assert_read_only(cur, f"insert into {BOOZE} values (:beer)", {"beer": "Cooper's"})
        # the rows the suite inserts are in CELLAR; "Cooper's" (a quote in it) is bound as a
        # value in both paramstyles fedquery accepts, and must match exactly
        cur.execute(f"SELECT name, COUNT(*) AS n FROM {CELLAR} WHERE name IN (?, ?) "
                    "GROUP BY name", ("Cooper's", "Victoria Bitter"))
        self.assertEqual(cur.rowcount, 2)
        res = cur.fetchall()
        self.assertEqual(len(res), 2, "cursor.fetchall returned too few rows")
        self.assertEqual(sorted(res), [("Cooper's", 2), ("Victoria Bitter", 1)],
                         "cursor.fetchall retrieved incorrect data, or a parameter was bound "
                         "incorrectly")
        cur.execute(f"SELECT name, COUNT(*) AS n FROM {CELLAR} WHERE name = :beer "
                    "GROUP BY name", {"beer": "Cooper's"})
        self.assertEqual(cur.fetchall(), [("Cooper's", 2)])

    def test_executemany(self):
        con = self._connect()
        try:
            cur = con.cursor()
            self.executeDDL1(cur)
            largs = [("Cooper's",), ("Boag's",)]
            margs = [{"beer": "Cooper's"}, {"beer": "Boag's"}]
            self._assert_read_only(cur, f"insert into {BOOZE} values (?)", largs, many=True)
            self._assert_read_only(cur, f"insert into {BOOZE} values (:beer)", margs, many=True)
            # a SELECT runs once per parameter set; the last result stays on the cursor
            cur.executemany(f"SELECT name, COUNT(*) AS n FROM {CELLAR} WHERE name = ? "
                            "GROUP BY name", largs)
            self.assertEqual(cur.rowcount, 1)
            self.assertEqual(cur.fetchall(), [("Boag's", 1)], "incorrect data retrieved")
            cur.executemany(f"SELECT name, COUNT(*) AS n FROM {CELLAR} WHERE name = :beer "
                            "GROUP BY name", list(reversed(margs)))
            self.assertEqual(cur.fetchall(), [("Cooper's", 2)], "incorrect data retrieved")
        finally:
            con.close()

    def test_fetchone(self):
        con = self._connect()
        try:
            cur = con.cursor()
            # cursor.fetchone should raise an Error if called before executing a query
            self.assertRaises(self.driver.Error, cur.fetchone)
            # ... and after a statement that cannot return rows (asserted by executeDDL1)
            self.executeDDL1(cur)
            cur.execute(f"SELECT name, COUNT(*) AS n FROM {BARFLYS} GROUP BY name")
            self.assertIsNone(cur.fetchone(),
                              "cursor.fetchone should return None if a query retrieves no rows")
            self.assertEqual(cur.rowcount, 0)
            self._assert_read_only(cur, f"insert into {BOOZE} values ('Victoria Bitter')")
            cur.execute("RESET epsilon")  # runs, but has no result set
            self.assertRaises(self.driver.Error, cur.fetchone)

            cur.execute(f"SELECT name, COUNT(*) AS n FROM {BOOZE} WHERE name = 'Victoria "
                        "Bitter' GROUP BY name")
            r = cur.fetchone()
            self.assertEqual(len(r), 2, "cursor.fetchone should have retrieved a single row")
            self.assertEqual(r[0], "Victoria Bitter", "cursor.fetchone retrieved incorrect data")
            self.assertIsNone(cur.fetchone(),
                              "cursor.fetchone should return None if no more rows available")
            self.assertEqual(cur.rowcount, 1)
        finally:
            con.close()

    def test_fetchmany(self):
        con = self._connect()
        try:
            cur = con.cursor()
            # cursor.fetchmany should raise an Error if called without issuing a query
            self.assertRaises(self.driver.Error, cur.fetchmany, 4)
            self.executeDDL1(cur)
            self._populate_refused(cur)

            cur.execute(SELECT_NAMES)
            r = cur.fetchmany()
            self.assertEqual(len(r), 1, "cursor.fetchmany retrieved incorrect number of rows, "
                             "default of arraysize is one.")
            cur.arraysize = 10
            r = cur.fetchmany(3)  # Should get 3 rows
            self.assertEqual(len(r), 3, "cursor.fetchmany retrieved incorrect number of rows")
            r = cur.fetchmany(4)  # Should get 2 more
            self.assertEqual(len(r), 2, "cursor.fetchmany retrieved incorrect number of rows")
            r = cur.fetchmany(4)  # Should be an empty sequence
            self.assertEqual(len(r), 0, "cursor.fetchmany should return an empty sequence "
                             "after results are exhausted")
            self.assertEqual(cur.rowcount, 6)

            # Same as above, using cursor.arraysize
            cur.arraysize = 4
            cur.execute(SELECT_NAMES)
            r = cur.fetchmany()  # Should get 4 rows
            self.assertEqual(len(r), 4, "cursor.arraysize not being honoured by fetchmany")
            r = cur.fetchmany()  # Should get 2 more
            self.assertEqual(len(r), 2)
            r = cur.fetchmany()  # Should be an empty sequence
            self.assertEqual(len(r), 0)
            self.assertEqual(cur.rowcount, 6)

            cur.arraysize = 6
            cur.execute(SELECT_NAMES)
            rows = cur.fetchmany()  # Should get all rows
            self.assertEqual(cur.rowcount, 6)
            self.assertEqual(len(rows), 6)
            self.assertEqual(sorted(r[0] for r in rows), SAMPLES,
                             "incorrect data retrieved by cursor.fetchmany")
            rows = cur.fetchmany()  # Should return an empty list
            self.assertEqual(len(rows), 0, "cursor.fetchmany should return an empty sequence "
                             "if called after the whole result set has been fetched")
            self.assertEqual(cur.rowcount, 6)

            self.executeDDL2(cur)
            cur.execute(f"SELECT name, COUNT(*) AS n FROM {BARFLYS} GROUP BY name")
            r = cur.fetchmany()  # Should get empty sequence
            self.assertEqual(len(r), 0, "cursor.fetchmany should return an empty sequence if "
                             "query retrieved no rows")
            self.assertEqual(cur.rowcount, 0)
        finally:
            con.close()

    def test_fetchall(self):
        con = self._connect()
        try:
            cur = con.cursor()
            # cursor.fetchall should raise an Error if called without executing a query
            self.assertRaises(self.driver.Error, cur.fetchall)
            self.executeDDL1(cur)
            self._populate_refused(cur)
            # ... and after a statement that cannot return rows
            self.assertRaises(self.driver.Error, cur.fetchall)
            cur.execute("RESET epsilon")
            self.assertRaises(self.driver.Error, cur.fetchall)

            cur.execute(SELECT_NAMES)
            rows = cur.fetchall()
            self.assertEqual(cur.rowcount, len(SAMPLES))
            self.assertEqual(len(rows), len(SAMPLES), "cursor.fetchall did not retrieve all rows")
            self.assertEqual(sorted(r[0] for r in rows), SAMPLES,
                             "cursor.fetchall retrieved incorrect rows")
            self.assertEqual(cur.fetchall(), [], "cursor.fetchall should return an empty list "
                             "if called after the whole result set has been fetched")
            self.assertEqual(cur.rowcount, len(SAMPLES))

            self.executeDDL2(cur)
            cur.execute(f"SELECT name, COUNT(*) AS n FROM {BARFLYS} GROUP BY name")
            rows = cur.fetchall()
            self.assertEqual(cur.rowcount, 0)
            self.assertEqual(rows, [], "cursor.fetchall should return an empty list if a select "
                             "query returns no rows")
        finally:
            con.close()

    def test_mixedfetch(self):
        con = self._connect()
        try:
            cur = con.cursor()
            self.executeDDL1(cur)
            self._populate_refused(cur)
            cur.execute(SELECT_NAMES)
            rows1 = cur.fetchone()
            rows23 = cur.fetchmany(2)
            rows4 = cur.fetchone()
            rows56 = cur.fetchall()
            self.assertEqual(cur.rowcount, 6)
            self.assertEqual(len(rows23), 2, "fetchmany returned incorrect number of rows")
            self.assertEqual(len(rows56), 2, "fetchall returned incorrect number of rows")
            rows = sorted([rows1[0], rows23[0][0], rows23[1][0], rows4[0], rows56[0][0],
                           rows56[1][0]])
            self.assertEqual(rows, SAMPLES, "incorrect data retrieved")
        finally:
            con.close()

    def test_nextset(self):
        con = self._connect()
        try:
            cur = con.cursor()
            self.assertRaises(self.driver.Error, cur.nextset)  # no result set yet
            self.executeDDL1(cur)
            self._populate_refused(cur)
            # the suite's two result sets come from a stored procedure: there are none, and
            # two statements in one execute() are refused
            self.assertRaises(self.driver.NotSupportedError, cur.callproc, "deleteme")
            with self.assertRaisesRegex(self.driver.ProgrammingError, "one at a time"):
                cur.execute(f"SELECT COUNT(*) AS n FROM {BOOZE}; {SELECT_NAMES}")
            self.assertRaises(self.driver.Error, cur.nextset)
            cur.execute(f"SELECT COUNT(*) AS n FROM {BOOZE}")
            self.assertEqual(cur.fetchone(), (len(SAMPLES),))
            self.assertIsNone(cur.nextset(), "No more return sets, should return None")
        finally:
            con.close()

    def test_arraysize(self):
        super().test_arraysize()
        con = self._connect()
        try:
            cur, other = con.cursor(), con.cursor()
            self.assertEqual(cur.arraysize, 1, "cursor.arraysize must default to 1")
            cur.arraysize = 5
            self.assertEqual(other.arraysize, 1, "cursor.arraysize is per cursor")
        finally:
            con.close()

    def test_setoutputsize(self):
        # accepted and ignored: results arrive whole, so no value is ever cut short
        con = self._connect()
        try:
            cur = con.cursor()
            cur.setoutputsize(1, 0)
            cur.execute(SELECT_NAMES + " ORDER BY name")
            self.assertEqual([r[0] for r in cur.fetchall()], SAMPLES)
            cur.setoutputsize(1)
            cur.execute(SELECT_NAMES + " ORDER BY name")
            self.assertEqual([r[0] for r in cur.fetchall()], SAMPLES)
        finally:
            con.close()

    def test_None(self):
        con = self._connect()
        try:
            cur = con.cursor()
            self.executeDDL1(cur)
            self._assert_read_only(cur, f"insert into {BOOZE} values (NULL)")
            cur.execute(f"SELECT MAX(name) AS name FROM {BARFLYS}")  # no rows: NULL
            r = cur.fetchall()
            self.assertEqual(len(r), 1)
            self.assertEqual(len(r[0]), 1)
            self.assertIsNone(r[0][0], "NULL value not returned as None")
            # None as a parameter is bound as NULL (which equals nothing)
            cur.execute(f"SELECT COUNT(*) AS n, MAX(name) AS name FROM {BOOZE} WHERE name = ?",
                        (None,))
            self.assertEqual(cur.fetchall(), [(0, None)])
        finally:
            con.close()

    # -- the suite's commented-out checks of the constructors, enabled -----------------------

    def test_Date(self):
        super().test_Date()
        self.assertEqual(str(self.driver.Date(2002, 12, 25)), str(self.driver.DateFromTicks(
            time.mktime((2002, 12, 25, 0, 0, 0, 0, 0, 0)))))

    def test_Time(self):
        super().test_Time()
        self.assertEqual(str(self.driver.Time(13, 45, 30)), str(self.driver.TimeFromTicks(
            time.mktime((2001, 1, 1, 13, 45, 30, 0, 0, 0)))))

    def test_Timestamp(self):
        super().test_Timestamp()
        self.assertEqual(str(self.driver.Timestamp(2002, 12, 25, 13, 45, 30)),
                         str(self.driver.TimestampFromTicks(
                             time.mktime((2002, 12, 25, 13, 45, 30, 0, 0, 0)))))

    def test_Binary(self):
        super().test_Binary()
        self.assertEqual(self.driver.Binary(dbapi20.str2bytes("Something")), b"Something")
        self.assertEqual(self.driver.Binary(b""), b"")

    # -- beyond the suite --------------------------------------------------------------------

    def test_named_parameters_are_values_never_sql(self):
        """tests/core/test_params.py shows it for qmark; the same for fedquery's named style."""
        con = self._connect()
        try:
            cur = con.cursor()
            sql = f"SELECT COUNT(*) AS n FROM {CELLAR} WHERE name = :beer"
            cur.execute(sql, {"beer": INJECTION})
            self.assertEqual(cur.fetchall(), [(1,)], "the value must match only itself")
            cur.execute(sql, {"beer": "' OR '1'='1"})
            self.assertEqual(cur.fetchall(), [(0,)], "'OR' must not widen the filter")
        finally:
            con.close()
