"""The PostgreSQL engine adapter: fragments pushed down, partials streamed back as Arrow.

A site whose data lives in PostgreSQL (an OMOP CDM warehouse, say) answers without copying it:
the planner's fragment — contribution bounding, clamping, fixed-point encoding and grouping
included — is rendered for PostgreSQL (:mod:`fedquery.site.engines.pg_render`), run inside
the database in a read-only transaction, and only the per-group partials come back, as Arrow,
through ADBC's PostgreSQL driver (libpq and binary COPY; see ``benchmarks/pushdown.py`` for why
this driver).  Noise and encryption still happen in the site process.

Read-only by construction, three times over:

1. only a fragment that parses as one SELECT, calls only allow-listed functions and reads only
   the connector's tables is ever sent (checked before and after rendering);
2. every session starts with ``default_transaction_read_only=on`` and every fragment runs in
   ``BEGIN READ ONLY`` ... ``ROLLBACK``, so even a role that could write cannot;
3. the operator's guide (``connectors/README.md``) gives a role with SELECT grants only.

Each fragment runs under ``statement_timeout`` (the connector's ``statement_timeout_s``), and
a client-side watchdog cancels it shortly after in case the server cannot be heard.

Types: the catalog comes from ``information_schema.columns`` and is mapped to the federation's
(DuckDB's) type names; a column whose type has no counterpart (``jsonb``, arrays, ...) is not
offered and is reported by name.  Results are cast to exactly the Arrow schema DuckDB gives the
same fragment (found by binding it on an empty in-memory DuckDB copy of the catalog), so a
PostgreSQL site's reply combines exactly like a DuckDB site's.
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from fedquery.errors import ConfigError, OperationalError, ProgrammingError
from fedquery.ir import ColumnInfo, TableInfo
from fedquery.site.engines import pg_render
from fedquery.site.engines.base import PLANNER_DIALECT

log = logging.getLogger(__name__)

DIALECT = "postgres"
DEFAULT_STATEMENT_TIMEOUT_S = 60.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0
_BYTE_ORDERED = {"c", "posix", "c.utf8", "c.utf-8", "ucs_basic", "pg_c_utf8"}


# -- types ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ColumnType:
    """How one PostgreSQL column appears to the federation."""

    federation: str | None  # the DuckDB type name, None when the type cannot be mapped
    read: str | None = None  # a PostgreSQL expression to read it with, when not the column
    pg_type: str = ""


_SIMPLE = {"smallint": "SMALLINT", "integer": "INTEGER", "bigint": "BIGINT",
           "real": "FLOAT", "double precision": "DOUBLE", "boolean": "BOOLEAN",
           "date": "DATE", "timestamp without time zone": "TIMESTAMP",
           "timestamp with time zone": "TIMESTAMP WITH TIME ZONE",
           "time without time zone": "TIME", "interval": "INTERVAL", "bytea": "BLOB",
           "text": "VARCHAR", "character varying": "VARCHAR"}


def map_column_type(name: str, data_type: str, precision: int | None, scale: int | None,
                    collation: str | None, default_collation: str) -> ColumnType:
    """The federation type of a column described by ``information_schema.columns``.

    >>> map_column_type("x", "numeric", 15, 2, None, "C").federation
    'DECIMAL(15,2)'
    >>> map_column_type("x", "numeric", None, None, None, "C")
    ColumnType(federation='DOUBLE', read='CAST("x" AS DOUBLE PRECISION)', pg_type='numeric')
    >>> map_column_type("x", "jsonb", None, None, None, "C").federation is None
    True
    """
    quoted = pg_render._quote(name)
    data_type = data_type.lower()
    if data_type == "numeric":
        if precision is not None and 1 <= precision <= 38 and scale is not None and (
                0 <= scale <= precision):
            return ColumnType(f"DECIMAL({precision},{scale})", None, data_type)
        # Unconstrained (or beyond DECIMAL(38)): the federation sees a DOUBLE, and so does
        # every fragment, which reads it as one.
        return ColumnType("DOUBLE", f"CAST({quoted} AS DOUBLE PRECISION)", data_type)
    if data_type in ("character", "uuid", "citext"):
        return ColumnType("VARCHAR", f"CAST({quoted} AS TEXT)", data_type)
    simple = _SIMPLE.get(data_type)
    if simple is None:
        return ColumnType(None, None, data_type)
    if simple == "VARCHAR" and (collation or default_collation).lower() not in _BYTE_ORDERED:
        # DuckDB compares text byte by byte; a locale collation would order (and MIN/MAX)
        # differently.
        return ColumnType(simple, f'{quoted} COLLATE "C"', data_type)
    return ColumnType(simple, None, data_type)


_ARROW_DDL = [
    (pa.types.is_boolean, "BOOLEAN"), (pa.types.is_int8, "SMALLINT"),
    (pa.types.is_int16, "SMALLINT"), (pa.types.is_int32, "INTEGER"),
    (pa.types.is_int64, "BIGINT"), (pa.types.is_uint8, "SMALLINT"),
    (pa.types.is_uint16, "INTEGER"), (pa.types.is_uint32, "BIGINT"),
    (pa.types.is_float32, "REAL"), (pa.types.is_float64, "DOUBLE PRECISION"),
    (pa.types.is_date, "DATE"), (pa.types.is_string, "TEXT"),
    (pa.types.is_large_string, "TEXT"), (pa.types.is_string_view, "TEXT"),
    (pa.types.is_binary, "BYTEA"), (pa.types.is_large_binary, "BYTEA"),
    (pa.types.is_time, "TIME"), (pa.types.is_interval, "INTERVAL"),
]


def _ddl_type(typ: pa.DataType) -> str:
    if pa.types.is_decimal(typ):
        return f"NUMERIC({typ.precision},{typ.scale})"
    if pa.types.is_timestamp(typ):
        return "TIMESTAMPTZ" if typ.tz else "TIMESTAMP"
    for test, ddl in _ARROW_DDL:
        if test(typ):
            return ddl
    raise ConfigError(f"Arrow type {typ} has no PostgreSQL column type here")


# -- connection strings ---------------------------------------------------------------------------

@dataclass(frozen=True)
class PgSource:
    """Where a PostgreSQL site's data is (from its connector)."""

    conninfo: str  # a libpq connection string or URI, secret included: never shown
    schema: str = "public"
    origin: str = "the connector"  # how an operator recognises it, e.g. "$PG_DSN"
    statement_timeout_s: float = DEFAULT_STATEMENT_TIMEOUT_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S

    def __repr__(self) -> str:  # never print the password
        return f"PgSource(origin={self.origin!r}, schema={self.schema!r})"


def _kv_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def conninfo_from_fields(host: str | None = None, port: int | str | None = None,
                         database: str | None = None, user: str | None = None,
                         password: str | None = None) -> str:
    """A libpq ``key=value`` connection string from separate fields.

    >>> conninfo_from_fields("db", 5432, "omop", "reader", "it's")
    "host='db' port='5432' dbname='omop' user='reader' password='it\\\\'s'"
    """
    parts = [("host", host), ("port", port), ("dbname", database), ("user", user),
             ("password", password)]
    return " ".join(f"{k}={_kv_quote(str(v))}" for k, v in parts if v not in (None, ""))


def with_session(conninfo: str, params: Mapping[str, str]) -> str:
    """``conninfo`` (URI or ``key=value``) with ``params`` added.  A setting the operator gave
    is kept, except ``options``, to which ours are appended (a later ``-c`` wins).

    >>> with_session("postgresql://u@db/x?options=-c%20work_mem%3D64MB", {"options": "-c a=b"})
    'postgresql://u@db/x?options=-c%20work_mem%3D64MB%20-c%20a%3Db'
    >>> with_session("host=db connect_timeout=5", {"connect_timeout": "9", "options": "-c a=b"})
    "host=db connect_timeout=5 options='-c a=b'"
    """
    uri = re.match(r"^postgres(ql)?://", conninfo) is not None
    given = (dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(conninfo).query,
                                         keep_blank_values=True)) if uri
             else _kv_parse(conninfo))
    added = []
    for key, value in params.items():
        if key == "options" and given.get("options"):
            added.append((key, given["options"] + " " + value))
        elif key not in given:
            added.append((key, value))
    if uri:
        split = urllib.parse.urlsplit(conninfo)
        kept = [(k, v) for k, v in urllib.parse.parse_qsl(split.query, keep_blank_values=True)
                if not (k == "options" and "options" in params)]
        return urllib.parse.urlunsplit(split._replace(query=urllib.parse.urlencode(
            kept + added, quote_via=urllib.parse.quote)))
    text = conninfo
    if "options" in given and "options" in params:
        text = re.sub(r"\boptions\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", "", text)
    return " ".join([text.strip(), *(f"{k}={_kv_quote(v)}" for k, v in added)]).strip()


def _kv_parse(conninfo: str) -> dict[str, str]:
    out = {}
    for m in re.finditer(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", conninfo):
        value = m.group(2)
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out[m.group(1)] = value
    return out


def _secrets(conninfo: str) -> list[str]:
    """Substrings an error message must never show."""
    found = [conninfo]
    if re.match(r"^postgres(ql)?://", conninfo):
        split = urllib.parse.urlsplit(conninfo)
        if split.password:
            found += [split.password, urllib.parse.unquote(split.password)]
        found += [v for k, v in urllib.parse.parse_qsl(split.query) if k == "password"]
    else:
        if "password" in _kv_parse(conninfo):
            found.append(_kv_parse(conninfo)["password"])
    return [s for s in found if s]


# -- the adapter ----------------------------------------------------------------------------------

def _driver():
    from adbc_driver_postgresql import dbapi  # the driver is confined to this module
    return dbapi


@dataclass(frozen=True)
class _Prepared:
    rendered: str
    schema: pa.Schema


class PostgresAdapter:
    """A site's tables in one PostgreSQL schema; see the module docstring."""

    dialect = DIALECT
    #: PostgreSQL publishes its write counters up to a second after a commit: the data
    #: version may lag the data, so the row-cap shortcut of ``site.unit_stats`` is off.
    exact_data_version = False

    def __init__(self, source: PgSource, tables: Sequence[str], *, site: str = "site",
                 pool_size: int = 4) -> None:
        self.site = site
        self.source = source
        self._requested = tuple(tables)
        self._timeout_ms = max(int(source.statement_timeout_s * 1000), 1)
        self._conninfo = with_session(source.conninfo, {
            "options": (f"-c default_transaction_read_only=on -c statement_timeout="
                        f"{self._timeout_ms} -c TimeZone=UTC -c DateStyle=ISO,MDY "
                        "-c IntervalStyle=postgres -c extra_float_digits=1 "
                        "-c standard_conforming_strings=on -c search_path=pg_catalog "
                        "-c client_encoding=UTF8"),
            "connect_timeout": str(max(round(source.connect_timeout_s), 2)),
            "application_name": f"fedquery-site-{site}"[:63],
            "keepalives": "1", "keepalives_idle": "10", "keepalives_interval": "5",
            "keepalives_count": "3",
            # A dead connection fails instead of hanging: unacknowledged data is given up on.
            "tcp_user_timeout": str(int(source.statement_timeout_s * 1000) + 10_000)})
        self._secrets = _secrets(source.conninfo) + _secrets(self._conninfo)
        self._idle: list = []
        self._pool_size = pool_size
        self._lock = threading.Lock()
        self._prepared: OrderedDict[str, _Prepared] = OrderedDict()
        self._closed = False
        self.unmapped: tuple[tuple[str, str, str], ...] = ()  # (table, column, PG type)
        self.can_write: tuple[str, ...] = ()  # tables the role could write to
        self.server_encoding = ""
        self._tables: tuple[TableInfo, ...] = ()
        self._pg_tables: dict[str, pg_render.PgTable] = {}
        self._relkinds: dict[str, str] = {}
        self._shadow = None

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def connect(cls, source: PgSource, tables: Sequence[str], *, site: str = "site",
                pool_size: int = 4) -> PostgresAdapter:
        """Connect, check the schema and tables, and read the catalog.  A problem is a
        ``ConfigError`` naming the site and where the connection string came from (never
        the password)."""
        adapter = cls(source, tables, site=site, pool_size=pool_size)
        try:
            adapter._introspect()
        except OperationalError as err:
            adapter.close()
            raise ConfigError(f"site {site!r}: {err}", key="source.postgres") from None
        except BaseException:
            adapter.close()
            raise
        return adapter

    def _introspect(self) -> None:
        schema = self.source.schema
        rows = self._query_rows(
            "SELECT n.nspname, c.relname, c.relkind, "
            "  has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE'), "
            "  (SELECT datcollate FROM pg_database WHERE datname = current_database()), "
            "  current_setting('server_encoding') "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE n.nspname = {_literal(schema)} AND c.relkind IN ('r', 'p', 'v', 'm', 'f')")
        schemas = self._query_rows(
            f"SELECT 1 FROM pg_namespace WHERE nspname = {_literal(schema)}")
        if not schemas:
            raise ConfigError(f"site {self.site!r}: the PostgreSQL database has no schema "
                              f"{schema!r} (source.postgres.schema)", key="source.postgres.schema")
        present = {r[1]: r for r in rows}
        folded = {name.lower(): name for name in present}
        actual = {}
        for table in self._requested:
            name = table if table in present else folded.get(table.lower())
            if name is None:
                raise ConfigError(f"site {self.site!r}: table {table!r} is not in PostgreSQL "
                                  f"schema {schema!r} (it has: "
                                  f"{', '.join(sorted(present)) or 'no tables'})", key=table)
            actual[table] = name
        default_collation = rows[0][4] if rows else "C"
        self.server_encoding = rows[0][5] if rows else ""
        self._relkinds = {t: present[n][2] for t, n in actual.items()}
        self.can_write = tuple(t for t, n in actual.items() if present[n][3])
        names = ", ".join(_literal(n) for n in actual.values())
        columns = self._query_rows(
            "SELECT table_name, column_name, data_type, numeric_precision, numeric_scale, "
            "collation_name FROM information_schema.columns "
            f"WHERE table_schema = {_literal(schema)} AND table_name IN ({names}) "
            "ORDER BY table_name, ordinal_position")
        by_table: dict[str, list] = {}
        for row in columns:
            by_table.setdefault(row[0], []).append(row)
        infos, pg_tables, unmapped = [], {}, []
        for table, name in actual.items():
            cols, types, reads, pg_names = [], {}, {}, {}
            for _, column, data_type, precision, scale, collation in by_table.get(name, []):
                mapped = map_column_type(column, data_type, precision, scale, collation,
                                         default_collation)
                if mapped.federation is None:
                    unmapped.append((table, column, data_type))
                    continue
                lower = column.lower()
                cols.append(ColumnInfo(column, mapped.federation))
                types[lower] = mapped.federation
                pg_names[lower] = column
                if mapped.read or column != lower:
                    reads[lower] = mapped.read or pg_render._quote(column)
            infos.append(TableInfo(table, tuple(cols)))
            pg_tables[table.lower()] = pg_render.PgTable(name, types, reads, pg_names)
        self._tables = tuple(infos)
        self._pg_tables = pg_tables
        self.unmapped = tuple(unmapped)
        for table, column, data_type in unmapped:
            log.warning("site=%s event=column_not_offered table=%s column=%s pg_type=%s "
                        "reason=no federation type", self.site, table, column, data_type)
        if self.can_write:
            log.warning("site=%s event=role_can_write tables=%s: the site still runs every "
                        "fragment read-only; give it a role with SELECT only "
                        "(connectors/README.md)", self.site, ",".join(self.can_write))
        if self.server_encoding.upper() not in ("UTF8", "SQL_ASCII"):
            log.warning("site=%s event=server_encoding encoding=%s: text is hashed in this "
                        "encoding, so the rows a contribution cap keeps can differ from a "
                        "DuckDB copy of the data", self.site, self.server_encoding)
        self._shadow = _shadow_catalog(self._tables)

    # -- the interface ---------------------------------------------------------------------

    def describe(self) -> tuple[TableInfo, ...]:
        return self._tables

    def render(self, fragment: str | exp.Expression) -> str:
        """The fragment as PostgreSQL SQL (cached per fragment text)."""
        sql = fragment if isinstance(fragment, str) else fragment.sql(PLANNER_DIALECT)
        return self._prepare(sql).rendered

    def execute(self, fragment: str) -> pa.Table:
        """Render and run a fragment inside PostgreSQL; Arrow with its DuckDB schema."""
        prepared = self._prepare(fragment)
        table = self._fetch(prepared.rendered)
        return _conform(table, prepared.schema)

    def data_version(self) -> str:
        """A fingerprint of the tables' write counters (see ``connectors/README.md``).

        Per table: its storage file (changes on TRUNCATE, VACUUM FULL, CLUSTER, REFRESH) and
        the rows inserted, updated and deleted since statistics were last reset; for a view
        or foreign table, whose base data cannot be told apart, the whole database's
        counters.  PostgreSQL publishes these within about a second of a commit (when the
        writer's session ends, at once); a reset of the statistics also starts a new
        version, which only costs a cache miss."""
        names = ", ".join(_literal(t.name) for t in self._pg_tables.values())
        rows = self._query_rows(
            "SELECT c.relname, c.relkind, c.relfilenode, "
            "COALESCE(s.n_tup_ins, 0), COALESCE(s.n_tup_upd, 0), COALESCE(s.n_tup_del, 0) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid "
            f"WHERE n.nspname = {_literal(self.source.schema)} AND c.relname IN ({names}) "
            "ORDER BY c.relname")
        parts = [":".join(str(v) for v in row) for row in rows]
        if any(row[1] not in ("r", "m") for row in rows):
            (db,) = self._query_rows(
                "SELECT concat_ws(':', tup_inserted, tup_updated, tup_deleted, stats_reset) "
                "FROM pg_stat_database WHERE datname = current_database()")
            parts.append("db:" + str(db[0]))
        return ";".join(parts)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            _close_quietly(conn)
        if self._shadow is not None:
            self._shadow.close()
            self._shadow = None

    # -- rendering -------------------------------------------------------------------------

    def _prepare(self, sql: str) -> _Prepared:
        with self._lock:
            hit = self._prepared.get(sql)
            if hit is not None:
                self._prepared.move_to_end(sql)
                return hit
        schema, types = self._duckdb_shape(sql)
        rendered = pg_render.render(sql, self._pg_tables, self.source.schema,
                                    list(zip(schema.names, types)))
        prepared = _Prepared(rendered, schema)
        with self._lock:
            self._prepared[sql] = prepared
            while len(self._prepared) > 512:
                self._prepared.popitem(last=False)
        return prepared

    def _duckdb_shape(self, sql: str) -> tuple[pa.Schema, list[str]]:
        """The Arrow schema and DuckDB types the fragment has on DuckDB, from binding it on
        an empty copy of the catalog (locked down: no files, no network)."""
        pg_render.parse_single_select(sql, PLANNER_DIALECT)
        if self._shadow is None:
            raise OperationalError("the site's PostgreSQL adapter is closed")
        cur = self._shadow.cursor()
        try:
            relation = cur.sql(sql)
            types = [str(t) for t in relation.types]
            schema = relation.limit(0).to_arrow_table().schema
        except duckdb.BinderException as err:
            raise ProgrammingError(f"the site could not bind the fragment: {err}") from None
        except duckdb.Error as err:
            raise ProgrammingError("the site could not type the fragment "
                                   f"({type(err).__name__}: {str(err).splitlines()[0]})") from None
        finally:
            cur.close()
        return schema, types

    # -- talking to PostgreSQL ---------------------------------------------------------------

    def _connect(self):
        try:
            return _driver().connect(self._conninfo, autocommit=True)
        except Exception as err:  # noqa: BLE001 - the driver's classes vary
            raise OperationalError(
                f"cannot connect to the PostgreSQL database (connection string from "
                f"{self.source.origin}): {self._scrub(err)}") from None

    def _acquire(self) -> tuple[object, bool]:
        """A connection, and whether it was idle in the pool (it may have died since)."""
        with self._lock:
            if self._closed:
                raise OperationalError("the site's PostgreSQL adapter is closed")
            if self._idle:
                return self._idle.pop(), True
        return self._connect(), False

    def _release(self, conn, healthy: bool) -> None:
        with self._lock:
            if healthy and not self._closed and len(self._idle) < self._pool_size:
                self._idle.append(conn)
                return
        _close_quietly(conn)

    def _query_rows(self, sql: str) -> list[tuple]:
        """A catalog query (the adapter's own SQL, not a fragment), read-only like all."""
        columns = [c.to_pylist() for c in _storage_columns(self._fetch(sql, catalog=True))]
        return list(zip(*columns)) if columns else []

    def _fetch(self, sql: str, catalog: bool = False) -> pa.Table:
        """Run ``sql`` in a read-only transaction; a pooled connection found dead (the
        server restarted, the network dropped it) is replaced once."""
        conn, pooled = self._acquire()
        try:
            return self._fetch_on(conn, sql)
        except _Failed as failed:
            if pooled and failed.lost:
                conn, _ = self._acquire_new()
                try:
                    return self._fetch_on(conn, sql)
                except _Failed as again:
                    failed = again
            raise self._failure(failed.error, catalog) from None

    def _acquire_new(self):
        with self._lock:
            idle, self._idle = self._idle, []  # its siblings are probably dead too
        for old in idle:
            _close_quietly(old)
        return self._connect(), False

    def _fetch_on(self, conn, sql: str) -> pa.Table:
        healthy = False
        cur = conn.cursor()
        watchdog = threading.Timer(self.source.statement_timeout_s + 5.0, _cancel, (cur,))
        watchdog.daemon = True
        watchdog.start()
        try:
            cur.execute("BEGIN READ ONLY")
            cur.execute(sql)
            table = cur.fetch_arrow_table()
            cur.execute("ROLLBACK")
            healthy = True
            return table
        except Exception as err:  # noqa: BLE001 - mapped to fedquery errors by the caller
            raise _Failed(err, _lost_connection(self._scrub(err))) from None
        finally:
            watchdog.cancel()
            _close_quietly(cur)
            self._release(conn, healthy)

    def _failure(self, err: Exception, catalog: bool) -> Exception:
        text = self._scrub(err)
        state = _sqlstate(err)
        if state == "57014":
            if "statement timeout" in text:
                return OperationalError(
                    "the PostgreSQL database did not finish the query within the site's "
                    f"statement timeout of {self.source.statement_timeout_s:g} s "
                    "(source.postgres.statement_timeout_s)")
            return OperationalError("the PostgreSQL query was cancelled (no answer from the "
                                    "database in time)")
        if state in ("25006", "25001"):
            return ProgrammingError("the PostgreSQL database refused a write (or leaving "
                                    "read-only mode): the site runs fragments read-only")
        if state == "42501":
            return OperationalError(f"the site's PostgreSQL role may not read a table it "
                                    f"offers ({text.splitlines()[0]}); GRANT SELECT on it")
        if (state or "").startswith("08") or _lost_connection(text):
            return OperationalError(f"cannot reach the PostgreSQL database (connection string "
                                    f"from {self.source.origin}): {text.splitlines()[0]}")
        if catalog:
            return OperationalError(f"reading the PostgreSQL catalog failed: "
                                    f"{text.splitlines()[0]}")
        # The database's message can quote row values (a failed cast names the string): it
        # goes to the site's log, never to the analyst.
        log.warning("site=%s event=fragment_failed sqlstate=%s", self.site, state)
        log.debug("fragment failure detail: %s", text)
        return OperationalError("the site's PostgreSQL database could not evaluate the query "
                                f"on its data (SQLSTATE {state}; details are in the site's "
                                "log)")

    def _scrub(self, err: Exception) -> str:
        text = str(err)
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return re.sub(r"^[A-Z_]+: \[libpq\] ", "", text).strip()


class _Failed(Exception):
    def __init__(self, error: Exception, lost: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.lost = lost


def _storage_columns(table: pa.Table) -> list[pa.ChunkedArray]:
    out = []
    for column in table.columns:
        if isinstance(column.type, pa.ExtensionType):
            column = pa.chunked_array([c.storage for c in column.chunks],
                                      type=column.type.storage_type)
        out.append(column)
    return out


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The database's Arrow as the fragment's DuckDB Arrow schema: NUMERIC arrives as text
    (ADBC's opaque ``numeric``) and becomes the DECIMAL DuckDB computes; the rest is already
    the right type or a lossless cast away."""
    if table.num_columns != len(schema):
        raise OperationalError("the PostgreSQL database returned "
                               f"{table.num_columns} columns, the fragment has {len(schema)}")
    arrays = []
    for column, target in zip(_storage_columns(table), schema):
        if column.type != target.type:
            column = pc.cast(column, target.type)
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=schema)


def _shadow_catalog(tables: Sequence[TableInfo]):
    con = duckdb.connect()
    for table in tables:
        cols = ", ".join(f"{pg_render._quote(c.name.lower())} {c.type}" for c in table.columns)
        con.execute(f"CREATE TABLE {pg_render._quote(table.name.lower())} ({cols})")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sqlstate(err: Exception) -> str | None:
    state = getattr(err, "sqlstate", None)
    if state:
        return str(state)
    m = re.search(r"SQLSTATE: ([0-9A-Z]{5})", str(err))
    return m.group(1) if m else None


def _lost_connection(text: str) -> bool:
    text = text.lower()
    return any(s in text for s in ("server closed the connection", "connection refused",
                                   "could not connect", "failed to connect", "no connection",
                                   "connection to server", "terminating connection",
                                   "could not receive data", "could not send data",
                                   "connection timed out", "ssl syscall"))


def _cancel(cursor) -> None:
    log.warning("event=fragment_cancelled reason=no answer from PostgreSQL in time")
    try:
        cursor.adbc_cancel()
    except Exception as err:  # noqa: BLE001 - best effort: the query may just have finished
        log.debug("cancel failed: %s", type(err).__name__)


def _close_quietly(obj) -> None:
    try:
        obj.close()
    except Exception as err:  # noqa: BLE001 - closing a broken connection may fail; it is gone
        log.debug("close failed: %s", type(err).__name__)


# -- loading data (demo, tests, benchmarks) -------------------------------------------------------

def load_tables(conninfo: str, schema: str, tables: Mapping[str, pa.Table], *,
                replace: bool = True) -> None:
    """Write Arrow tables into ``schema`` (created if needed) through ADBC's bulk COPY.

    This is the only write fedquery ever makes to PostgreSQL, for demo and test data; it
    needs a role that may create tables, never the site's own read-only role."""
    quoted_schema = pg_render._quote(schema)
    try:
        with _driver().connect(conninfo, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted_schema}")
            for name, table in tables.items():
                qualified = f"{quoted_schema}.{pg_render._quote(name)}"
                if replace:
                    cur.execute(f"DROP TABLE IF EXISTS {qualified}")
                columns = ", ".join(f"{pg_render._quote(f.name)} {_ddl_type(f.type)}"
                                    for f in table.schema)
                cur.execute(f"CREATE TABLE {qualified} ({columns})")
                if table.num_rows:
                    cur.adbc_ingest(name, table, mode="append", db_schema_name=schema)
                cur.execute(f"ANALYZE {qualified}")
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - the driver's classes vary
        text = str(err)
        for secret in sorted(_secrets(conninfo), key=len, reverse=True):
            text = text.replace(secret, "***")
        raise OperationalError(f"cannot load tables into PostgreSQL schema {schema!r}: "
                               f"{text.strip()}") from None


def driver_version() -> str:
    import adbc_driver_postgresql
    return getattr(adbc_driver_postgresql, "__version__", "unknown")
