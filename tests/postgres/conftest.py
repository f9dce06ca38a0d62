"""Fixtures for the PostgreSQL site tests: a real PostgreSQL server, one schema per module.

The server is ``$FEDQUERY_TEST_PG_DSN`` (default ``postgresql://postgres@127.0.0.1:5432/test``,
a role that may create schemas and roles).  CI runs it, so an unreachable server FAILS these
tests with a message saying so — nothing is skipped.

Each module gets its own schema (``pg_schema``), named after the module plus a random suffix so
that xdist workers and concurrent runs never meet, dropped with everything in it at the end.
Helpers are fixtures (``--import-mode=importlib``, no ``__init__.py``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping

import pyarrow as pa
import pytest

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def _admin(dsn: str, *statements: str) -> list:
    """Run statements as the test's admin role (autocommit); rows of the last one."""
    from adbc_driver_postgresql import dbapi

    rows: list = []
    with dbapi.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        for sql in statements:
            cur.execute(sql)
            try:
                rows = cur.fetchall()
            except Exception:  # noqa: BLE001 - a statement without a result set
                rows = []
    return rows


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    dsn = os.environ.get("FEDQUERY_TEST_PG_DSN", DEFAULT_DSN)
    try:
        _admin(dsn, "SELECT 1")
    except Exception as err:  # noqa: BLE001 - any failure means: no server to test against
        pytest.fail(f"PostgreSQL is not reachable at {dsn} ({err}). These tests need a real "
                    "PostgreSQL server: start one on 127.0.0.1:5432 with trust authentication "
                    "and a database 'test', or set FEDQUERY_TEST_PG_DSN.", pytrace=False)
    return dsn


@pytest.fixture(scope="session")
def pg_admin(pg_dsn) -> Callable[..., list]:
    """``pg_admin(sql, ...)``: run SQL as the admin role; returns the last statement's rows."""
    return lambda *statements: _admin(pg_dsn, *statements)


@pytest.fixture(scope="module")
def pg_schema(request, pg_dsn) -> str:
    """A fresh schema for this module, dropped (with its tables) at the end."""
    module = request.module.__name__.rsplit(".", 1)[-1].replace("test_", "")[:20]
    name = f"fq_{module}_{uuid.uuid4().hex[:8]}".lower()
    _admin(pg_dsn, f'CREATE SCHEMA "{name}"')
    yield name
    _admin(pg_dsn, f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture(scope="session")
def pg_load(pg_dsn) -> Callable[[str, Mapping[str, pa.Table]], None]:
    """``pg_load(schema, {table: arrow})``: create and fill tables through ADBC's COPY."""
    from fedquery.site.engines.postgres import load_tables

    return lambda schema, tables: load_tables(pg_dsn, schema, tables)


@pytest.fixture(scope="session")
def pg_adapter(pg_dsn) -> Callable[..., object]:
    """``pg_adapter(schema, tables, site=, statement_timeout_s=, dsn=)``: a PostgresAdapter
    (close it yourself, or use it as the site of a federation that closes it)."""
    from fedquery.site.engines.postgres import PgSource, PostgresAdapter

    def make(schema: str, tables, *, site: str = "pg_site", statement_timeout_s: float = 30.0,
             dsn: str | None = None, origin: str = "FEDQUERY_TEST_PG_DSN"):
        source = PgSource(dsn or pg_dsn, schema, origin, statement_timeout_s=statement_timeout_s,
                          connect_timeout_s=3)
        return PostgresAdapter.connect(source, tuple(tables), site=site)
    return make


@pytest.fixture(scope="session")
def federation_of() -> Callable[..., object]:
    """``federation_of({site: adapter}, policy="open", privacy_units=..., timeout=...)``: a
    DB-API connection over in-process sites built on the given adapters."""
    from fedquery.dbapi import Connection
    from fedquery.engine import Engine
    from fedquery.site.service import SiteService
    from fedquery.transport.inprocess import InProcessClient

    def make(adapters: Mapping[str, object], policy="open", *,
             privacy_units: Mapping[str, str] | None = None, state_dir=None, **options):
        clients = []
        for name, adapter in adapters.items():
            site_policy = policy.get(name, "open") if isinstance(policy, Mapping) else policy
            service = SiteService(name, adapter, policy=site_policy,
                                  privacy_units=dict(privacy_units or {}),
                                  state_dir=None if state_dir is None else state_dir / name)
            clients.append(InProcessClient(service))
        return Connection(Engine(clients, **options), user="analyst")
    return make
