"""Site connector files: where a site's data is, which tables it offers, each table's privacy unit.

A connector holds facts, never privacy decisions (those live in the site policy) and never
secrets (a value written ``{$env: NAME}`` is read from the environment).  ``load_connector``
reads and checks the YAML file; ``open_adapter`` opens the data read-only — a DuckDB file,
Parquet/CSV files, or a PostgreSQL database that fragments are pushed down to — and checks that
every declared table and privacy unit column is really there.  Every problem is a ``ConfigError``
whose message names the file, the key (e.g. ``source.duckdb.path``) and what was expected;
reading, schema and ``$env`` machinery is :mod:`fedquery.configfile`'s.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

import jsonschema

from fedquery.configfile import Problem, Schema, config_error, did_you_mean, env_value, read_yaml
from fedquery.errors import ConfigError
from fedquery.site.engines.base import EngineAdapter
from fedquery.site.engines.duckdb import DuckDBAdapter
from fedquery.site.engines.postgres import (DEFAULT_CONNECT_TIMEOUT_S,
                                            DEFAULT_STATEMENT_TIMEOUT_S, PgSource,
                                            conninfo_from_fields)


@dataclass(frozen=True)
class Connector:
    site: str
    source_kind: str                # "duckdb", "files" or "postgres"
    database: Path | None           # duckdb: the database file (absolute)
    file_format: str | None         # files: "parquet" or "csv"
    file_globs: dict[str, str]      # files: table → absolute glob
    tables: dict[str, str]          # table → privacy unit column
    path: Path                      # the connector file
    postgres: PgSource | None = None  # postgres: where and how to connect (holds the secret)


def load_connector(path: str | os.PathLike[str]) -> Connector:
    """Read, validate and resolve one connector file (paths, globs and ``$env`` values).

    Raises ConfigError listing every problem, one per line, as ``FILE: KEY.PATH: message``.
    """
    path = Path(path)
    data, root = read_yaml(path, "connector", located=False)
    problems = _SCHEMA.problems(data)
    postgres = None
    if not problems:
        kind, spec = next(iter(data["source"].items()))
        tables = {t: facts["privacy_unit"] for t, facts in data["tables"].items()}
        if kind == "postgres":
            (database, globs), (postgres, problems) = (None, {}), _resolve_postgres(spec)
        else:
            database, globs, problems = _resolve(kind, spec, tables, path.parent.resolve())
    if problems:
        raise config_error(path, root, problems, located=False)
    return Connector(site=data["site"], source_kind=kind, database=database,
                     file_format=spec.get("format"), file_globs=globs, tables=tables, path=path,
                     postgres=postgres)


def _resolve_postgres(spec: dict) -> tuple[PgSource | None, list[Problem]]:
    """The connection (``dsn``, or ``host``/``port``/``database``/``user``/``password``) with
    its ``$env`` values read, and any problems.  Where the secret came from is remembered
    (``origin``) so that errors can name it without showing it."""
    at = ("source", "postgres")
    fields = ("host", "port", "database", "user", "password")
    given = [f for f in fields if f in spec]
    if "dsn" in spec and given:
        return None, [((*at, given[0]), (f"give either dsn or host/port/database/user/"
                                         f"password, not both (found dsn and {given[0]})"))]
    if "dsn" not in spec and "host" not in spec:
        return None, [((*at, "dsn"), ("missing required key: expected the connection string, "
                                      "never inline: {$env: NAME} (or give host, database "
                                      "and user instead)"))]
    values, problems = {}, []
    for key in ("dsn", *fields):
        if key in spec:
            value = spec[key]
            value = env_value(value, (*at, key)) if isinstance(value, str | dict) else value
            if isinstance(value, tuple):
                problems.append(value)
            else:
                values[key] = value
    if problems:
        return None, problems
    if "dsn" in values:
        conninfo = values["dsn"]
        origin = f"environment variable {spec['dsn']['$env']} (source.postgres.dsn)"
    else:
        conninfo = conninfo_from_fields(values.get("host"), values.get("port"),
                                        values.get("database"), values.get("user"),
                                        values.get("password"))
        origin = "source.postgres.host/port/database/user" + (
            f" with the password from environment variable {spec['password']['$env']}"
            if "password" in spec else "")
    return PgSource(conninfo=conninfo, schema=spec.get("schema", "public"), origin=origin,
                    statement_timeout_s=float(spec.get("statement_timeout_s",
                                                       DEFAULT_STATEMENT_TIMEOUT_S)),
                    connect_timeout_s=float(spec.get("connect_timeout_s",
                                                     DEFAULT_CONNECT_TIMEOUT_S))), []


def _resolve(kind: str, spec: dict, tables: dict[str, str],
             base: Path) -> tuple[Path | None, dict[str, str], list[Problem]]:
    """The absolute database file or file globs (relative to ``base``), and any problems."""
    if kind == "duckdb":
        value = env_value(spec["path"], ("source", "duckdb", "path"))
        if isinstance(value, tuple):
            return None, {}, [value]
        return Path(os.path.normpath(base / Path(value).expanduser())), {}, []
    values = {table: env_value(pattern, ("source", "files", "tables", table))
              for table, pattern in spec["tables"].items()}
    problems = [value for value in values.values() if isinstance(value, tuple)]
    problems += [(("source", "files", "tables", table), f"table {table!r} is declared under "
                  "tables, so it needs a file glob here")
                 for table in sorted(tables.keys() - values.keys())]
    problems += [(("tables", table), f"table {table!r} has a file glob under "
                  "source.files.tables, so declare it here with its privacy_unit")
                 for table in sorted(values.keys() - tables)]
    globs = {table: os.path.normpath(os.path.join(base, os.path.expanduser(value)))
             for table, value in values.items() if isinstance(value, str)}
    return None, globs, problems


def open_adapter(connector: Connector) -> EngineAdapter:
    """Open the connector's data read-only; check every declared table and privacy unit."""
    site, path = connector.site, connector.path
    if connector.source_kind == "postgres":
        adapter = _open_postgres(connector)
    elif connector.source_kind == "duckdb":
        key = "source.duckdb.path"
        if not connector.database.is_file():
            raise _error(path, key, f"site {site!r}: the DuckDB file {connector.database} "
                         "does not exist")
        try:
            adapter = DuckDBAdapter.from_duckdb_file(connector.database, tuple(connector.tables))
        except ConfigError as err:
            # Drop the traceback: its frames hold the connection the adapter opened, and DuckDB
            # refuses to reopen a file while a locked-down connection to it is still alive.
            err.__traceback__ = None
            failure = _error(path, f"tables.{err.key}" if err.key else key, f"site {site!r}: {err}")
        else:
            failure = None
        if failure:
            raise failure
    else:
        fmt = connector.file_format
        for table, pattern in connector.file_globs.items():
            if not glob.glob(pattern, recursive=True):
                raise _error(path, f"source.files.tables.{table}",
                             f"site {site!r}: no {fmt} files match {pattern}")
        try:
            adapter = DuckDBAdapter.from_files(
                {t: (fmt, g) for t, g in connector.file_globs.items()})
        except ConfigError as err:
            raise _error(path, f"source.files.tables.{err.key}", f"site {site!r}: {err}") from None
    unmapped = {(t, c.lower()): typ for t, c, typ in getattr(adapter, "unmapped", ())}
    try:
        for info in adapter.describe():
            unit = connector.tables[info.name]
            columns = [c.name for c in info.columns]
            if (info.name, unit.lower()) in unmapped:
                raise _error(path, f"tables.{info.name}.privacy_unit",
                             f"site {site!r}: column {info.name}.{unit} has PostgreSQL type "
                             f"{unmapped[info.name, unit.lower()]}, which has no federation "
                             "type; use a text or integer column")
            if unit.lower() not in {c.lower() for c in columns}:
                raise _error(path, f"tables.{info.name}.privacy_unit",
                             f"site {site!r}: table {info.name!r} has no column {unit!r}"
                             f"{did_you_mean(unit, columns)} (columns: {', '.join(columns)})")
    except BaseException:
        adapter.close()
        raise
    return adapter


def _open_postgres(connector: Connector):
    from fedquery.site.engines.postgres import PostgresAdapter

    try:
        return PostgresAdapter.connect(connector.postgres, tuple(connector.tables),
                                       site=connector.site)
    except ConfigError as err:
        key = (f"tables.{err.key}" if err.key in connector.tables
               else err.key or "source.postgres")
        raise _error(connector.path, key, str(err)) from None


def privacy_units(connector: Connector) -> dict[str, str]:
    """``{table: privacy unit column}``, as ``SiteService`` expects."""
    return dict(connector.tables)


# -- helpers -----------------------------------------------------------------------------------

def _error(path: Path, key: str, text: str) -> ConfigError:
    return ConfigError(f"{path}: {key}: {text}", path=str(path), key=key)


_GOT = {dict: "a mapping", list: "a list", str: "a string", bool: "true/false", int: "a number",
        float: "a number", type(None): "nothing"}
_WANTED = {"object": "a mapping", "string": "a string", "integer": "a whole number"}


class _ConnectorSchema(Schema):
    """The shared explanations, but four checks keep the connector's own wording (which
    tests/site/test_connector.py pins): required, type, enum, and a oneOf given a non-mapping."""

    def explain(self, error: jsonschema.ValidationError) -> list[Problem]:
        at, check, value, schema = (tuple(error.absolute_path), error.validator, error.instance,
                                    error.schema)
        wanted, got = schema.get("description", ""), _GOT.get(type(value), type(value).__name__)
        if check == "required":
            return [((*at, name), "missing required key: expected "
                     + schema["properties"][name]["description"])
                    for name in error.validator_value if name not in value]
        if check == "type":
            return [(at, f"expected {_WANTED.get(schema['type'], schema['type'])}, "
                     f"got {got} ({wanted})")]
        if check == "enum":
            return [(at, f"expected {' or '.join(map(repr, error.validator_value))}, "
                     f"got {value!r} ({wanted})")]
        if check == "oneOf" and not isinstance(value, dict):
            return [(at, f"expected a string or {{$env: NAME}}, got {got} ({wanted})")]
        return super().explain(error)


_SCHEMA = _ConnectorSchema("fedquery.site", "connector.schema.json")
