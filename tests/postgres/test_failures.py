"""PostgreSQL down or slow → an error naming the site, within the deadline; and the connector's
``postgres`` source (connection string or fields, secrets from the environment, never shown).

"Down" is a loopback TCP relay in front of the real server that the test stops; "slow" is a
table locked by another session, so the fragment waits until the statement timeout (or the
coordinator's deadline) gives up on it.
"""

from __future__ import annotations

import re
import socket
import threading
import time
import urllib.parse

import pyarrow as pa
import pytest
import yaml
from adbc_driver_postgresql import dbapi

from fedquery.errors import ConfigError, SiteError, SiteUnavailable
from fedquery.site.connector import load_connector, open_adapter
from fedquery.site.engines.duckdb import DuckDBAdapter

SITE = "hospital_pg"
SQL = "SELECT COUNT(*) AS n, SUM(x) AS s FROM t"


class Relay:
    """Forwards 127.0.0.1:<port> to the PostgreSQL server until stopped (loopback only)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.stopped = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, upstream]
                if self.stopped:
                    break
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()
        self._close_all()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _close_all(self) -> None:
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        except OSError:
            pass
        self.listener.close()
        self.thread.join(5)
        self._close_all()


def _via(dsn: str, port: int) -> str:
    """``dsn`` pointed at 127.0.0.1:``port``."""
    if dsn.startswith(("postgresql://", "postgres://")):
        split = urllib.parse.urlsplit(dsn)
        auth = split.netloc.rsplit("@", 1)[0] + "@" if "@" in split.netloc else ""
        return urllib.parse.urlunsplit(split._replace(netloc=f"{auth}127.0.0.1:{port}"))
    return f"{dsn} host=127.0.0.1 port={port}"


def _target(dsn: str) -> tuple[str, int]:
    if dsn.startswith(("postgresql://", "postgres://")):
        split = urllib.parse.urlsplit(dsn)
        return split.hostname or "127.0.0.1", split.port or 5432
    host = re.search(r"host=(\S+)", dsn)
    port = re.search(r"port=(\d+)", dsn)
    return (host.group(1) if host else "127.0.0.1", int(port.group(1)) if port else 5432)


@pytest.fixture(scope="module")
def table_t(pg_schema, pg_load):
    pg_load(pg_schema, {"t": pa.table({"x": pa.array(range(100), pa.int64())})})
    return pg_schema


def _federation(federation_of, adapter, **options):
    other = DuckDBAdapter.from_arrow({"t": pa.table({"x": pa.array([1, 2], pa.int64())})})
    return federation_of({SITE: adapter, "hospital_duck": other}, **options)


def _run(conn, sql: str = SQL):
    cur = conn.cursor()
    cur.execute(sql)
    return cur.fetchall()


@pytest.fixture
def locked(table_t, pg_dsn):
    """Table t locked by another session for the duration of the test."""
    conn = dbapi.connect(pg_dsn, autocommit=True)
    cur = conn.cursor()
    cur.execute("BEGIN")
    cur.execute(f'LOCK TABLE "{table_t}".t IN ACCESS EXCLUSIVE MODE')
    yield
    cur.execute("ROLLBACK")
    cur.close()
    conn.close()


def test_the_federation_answers_through_the_relay(table_t, pg_dsn, pg_adapter, federation_of):
    relay = Relay(_target(pg_dsn))
    try:
        conn = _federation(federation_of, pg_adapter(table_t, ("t",), site=SITE,
                                                     dsn=_via(pg_dsn, relay.port)))
        assert _run(conn) == [(102, 4953)]
        conn.close()
    finally:
        relay.stop()


def test_a_slow_database_is_cut_off_by_the_statement_timeout(table_t, pg_adapter,
                                                             federation_of, locked):
    conn = _federation(federation_of, pg_adapter(table_t, ("t",), site=SITE,
                                                 statement_timeout_s=1.0), timeout=30)
    started = time.monotonic()
    with pytest.raises(SiteError) as info:
        _run(conn)
    elapsed = time.monotonic() - started
    assert info.value.site == SITE
    assert "statement timeout of 1 s" in str(info.value)
    assert elapsed < 4.0, elapsed
    conn.close()


def test_a_slow_database_cannot_hold_the_coordinator_past_its_deadline(
        table_t, pg_adapter, federation_of, locked):
    conn = _federation(federation_of, pg_adapter(table_t, ("t",), site=SITE,
                                                 statement_timeout_s=5.0), timeout=1.0)
    started = time.monotonic()
    with pytest.raises(SiteUnavailable) as info:
        _run(conn)
    assert time.monotonic() - started < 3.0
    assert info.value.site == SITE and "deadline" in str(info.value)
    conn.close()


def test_a_database_that_goes_down_is_an_error_naming_the_site(table_t, pg_dsn, pg_adapter,
                                                               federation_of):
    relay = Relay(_target(pg_dsn))
    adapter = pg_adapter(table_t, ("t",), site=SITE, dsn=_via(pg_dsn, relay.port),
                         origin="environment variable HOSPITAL_PG_DSN")
    conn = _federation(federation_of, adapter, timeout=30)
    assert _run(conn) == [(102, 4953)]
    relay.stop()  # the server is gone; the site's pooled connection is dead
    started = time.monotonic()
    with pytest.raises(SiteError) as info:
        _run(conn)
    assert time.monotonic() - started < 10.0
    assert info.value.site == SITE
    message = str(info.value)
    assert "PostgreSQL database" in message and "HOSPITAL_PG_DSN" in message
    conn.close()


# -- the connector's postgres source ---------------------------------------------------------------

def _connector(tmp_path, source: dict, tables=None):
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "site": SITE, "source": {"postgres": source},
                                    "tables": tables or {"t": {"privacy_unit": "x"}}}))
    return path


def test_a_connector_with_a_dsn_from_the_environment_opens_the_database(
        tmp_path, table_t, pg_dsn, monkeypatch):
    monkeypatch.setenv("HOSPITAL_PG_DSN", pg_dsn)
    path = _connector(tmp_path, {"dsn": {"$env": "HOSPITAL_PG_DSN"}, "schema": table_t,
                                 "statement_timeout_s": 7, "connect_timeout_s": 3})
    connector = load_connector(path)
    assert connector.source_kind == "postgres"
    assert connector.postgres.schema == table_t
    assert connector.postgres.statement_timeout_s == 7.0
    assert pg_dsn not in repr(connector)
    adapter = open_adapter(connector)
    try:
        assert adapter.execute("SELECT COUNT(*) AS n FROM t").column("n").to_pylist() == [100]
    finally:
        adapter.close()


def test_a_connector_with_separate_fields_and_a_password_from_the_environment(
        tmp_path, table_t, pg_dsn, monkeypatch):
    host, port = _target(pg_dsn)
    database = urllib.parse.urlsplit(pg_dsn).path.lstrip("/") or "test"
    user = urllib.parse.urlsplit(pg_dsn).username or "postgres"
    monkeypatch.setenv("HOSPITAL_PG_PASSWORD", "not used with trust authentication")
    path = _connector(tmp_path, {"host": host, "port": port, "database": database,
                                 "user": user, "password": {"$env": "HOSPITAL_PG_PASSWORD"},
                                 "schema": table_t})
    adapter = open_adapter(load_connector(path))
    try:
        assert [t.name for t in adapter.describe()] == ["t"]
    finally:
        adapter.close()


def test_an_unreachable_database_at_start_names_the_site_and_the_variable_not_the_secret(
        tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HOSPITAL_PG_DSN", f"postgresql://reader:hunter2@127.0.0.1:{port}/omop")
    path = _connector(tmp_path, {"dsn": {"$env": "HOSPITAL_PG_DSN"}})
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        open_adapter(load_connector(path))
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert message.startswith(f"{path}: source.postgres: site '{SITE}': cannot connect")
    assert "environment variable HOSPITAL_PG_DSN" in message
    assert "hunter2" not in message and "reader:" not in message


@pytest.mark.parametrize(("source", "key", "text"), [
    ({"schema": "x"}, "source.postgres.dsn", "missing required key: expected the connection"),
    ({"dsn": {"$env": "HOSPITAL_PG_DSN"}, "host": "db"}, "source.postgres.host",
     "give either dsn or host"),
    ({"host": "db", "password": "hunter2"}, "source.postgres.password",
     "expected a mapping, got a string"),
    ({"dsn": {"$env": "HOSPITAL_PG_UNSET"}}, "source.postgres.dsn",
     "environment variable HOSPITAL_PG_UNSET is not set"),
    ({"dsn": {"$env": "HOSPITAL_PG_DSN"}, "statement_timeout_s": 0},
     "source.postgres.statement_timeout_s", ""),
    ({"host": "db", "port": 70000}, "source.postgres.port", ""),
    ({"dsn": {"$env": "HOSPITAL_PG_DSN"}, "sslmode": "require"}, "source.postgres.sslmode",
     "unknown key"),
])
def test_connector_postgres_source_problems_name_file_and_key(tmp_path, monkeypatch, source,
                                                             key, text):
    monkeypatch.setenv("HOSPITAL_PG_DSN", "postgresql://u:hunter2@db/x")
    monkeypatch.delenv("HOSPITAL_PG_UNSET", raising=False)
    path = _connector(tmp_path, source)
    with pytest.raises(ConfigError) as info:
        load_connector(path)
    assert f"{path}: {key}: " in str(info.value) and text in str(info.value)
    assert "hunter2" not in str(info.value)
