"""Site connector files: where a site's data is, which tables it offers, each table's privacy unit.

A connector holds facts, never privacy decisions (those live in the site policy) and never
secrets (a value written ``{$env: NAME}`` is read from the environment).  ``load_connector``
reads and checks the YAML file; ``open_adapter`` opens the data read-only and checks that every
declared table and privacy unit column is really there.  Every problem is a ``ConfigError``
whose message names the file, the key (e.g. ``source.duckdb.path``) and what was expected.
"""

from __future__ import annotations

import difflib
import functools
import glob
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from fedquery.errors import ConfigError
from fedquery.site.adapter import DuckDBAdapter


@dataclass(frozen=True)
class Connector:
    site: str
    source_kind: str                # "duckdb" or "files"
    database: Path | None           # duckdb: the database file (absolute)
    file_format: str | None         # files: "parquet" or "csv"
    file_globs: dict[str, str]      # files: table → absolute glob
    tables: dict[str, str]          # table → privacy unit column
    path: Path                      # the connector file


def load_connector(path: str | os.PathLike[str]) -> Connector:
    """Read, validate and resolve one connector file (paths, globs and ``$env`` values)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the connector file: {err.strerror}",
                          path=str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        context, at = getattr(err, "context", None), getattr(err, "context_mark", None)
        if context and at:
            problem += f" ({context} at line {at.line + 1}, column {at.column + 1})"
        raise ConfigError(f"{path}: {where}YAML syntax error: {problem}", path=str(path)) from None
    problems: dict[str, str] = {}
    for error in _validator().iter_errors(data):
        for key, text in _explain(error):
            problems.setdefault(key, text)
    if problems:
        first = next(iter(problems))
        raise ConfigError("\n".join(f"{path}: {k}: {t}" for k, t in problems.items()),
                          path=str(path), key=None if first == _TOP else first)

    kind, spec = next(iter(data["source"].items()))
    if kind == "postgres":
        raise _error(path, "source.postgres", "the postgres source is not supported yet "
                     "(a later release adds it); use a duckdb or files source")
    base = path.parent.resolve()
    tables = {t: facts["privacy_unit"] for t, facts in data["tables"].items()}
    database, file_format, globs = None, None, {}
    if kind == "duckdb":
        value = _value(spec["path"], path, "source.duckdb.path")
        database = Path(os.path.normpath(base / Path(value).expanduser()))
    else:
        file_format = spec["format"]
        for table, pattern in spec["tables"].items():
            value = _value(pattern, path, f"source.files.tables.{table}")
            globs[table] = os.path.normpath(os.path.join(base, os.path.expanduser(value)))
        if unglobbed := sorted(tables.keys() - globs.keys()):
            raise _error(path, f"source.files.tables.{unglobbed[0]}", f"table {unglobbed[0]!r} "
                         "is declared under tables, so it needs a file glob here")
        if undeclared := sorted(globs.keys() - tables.keys()):
            raise _error(path, f"tables.{undeclared[0]}", f"table {undeclared[0]!r} has a file "
                         "glob under source.files.tables, so declare it here with its privacy_unit")
    return Connector(site=data["site"], source_kind=kind, database=database,
                     file_format=file_format, file_globs=globs, tables=tables, path=path)


def open_adapter(connector: Connector) -> DuckDBAdapter:
    """Open the connector's data read-only; check every declared table and privacy unit."""
    site, path = connector.site, connector.path
    if connector.source_kind == "duckdb":
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
    try:
        for info in adapter.describe():
            unit = connector.tables[info.name]
            columns = [c.name for c in info.columns]
            if unit.lower() not in {c.lower() for c in columns}:
                raise _error(path, f"tables.{info.name}.privacy_unit",
                             f"site {site!r}: table {info.name!r} has no column {unit!r}"
                             f"{_did_you_mean(unit, columns)} (columns: {', '.join(columns)})")
    except BaseException:
        adapter.close()
        raise
    return adapter


def privacy_units(connector: Connector) -> dict[str, str]:
    """``{table: privacy unit column}``, as ``SiteService`` expects."""
    return dict(connector.tables)


# -- helpers -----------------------------------------------------------------------------------

@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(resources.files("fedquery.site").joinpath("connector.schema.json")
                        .read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _error(path: Path, key: str, text: str) -> ConfigError:
    return ConfigError(f"{path}: {key}: {text}", path=str(path), key=key)


def _value(value: str | dict, path: Path, key: str) -> str:
    """A plain string, or the environment variable named by ``{$env: NAME}``."""
    if isinstance(value, str):
        return value
    name = value["$env"]
    if not os.environ.get(name):
        raise _error(path, key, f"environment variable {name} is not set (or empty) "
                     f"(this value is written {{$env: {name}}}); set it before starting the site")
    return os.environ[name]


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _kind(value: object) -> str:
    """The YAML kind of a value, without echoing it (it might be a secret)."""
    kinds = {dict: "a mapping", list: "a list", str: "a string", bool: "true/false",
             int: "a number", float: "a number", type(None): "nothing"}
    return kinds.get(type(value), type(value).__name__)


_TOP = "(top level)"
_WANTED = {"object": "a mapping", "string": "a string", "integer": "a whole number"}


def _explain(error: jsonschema.ValidationError) -> list[tuple[str, str]]:
    """``[(key path, what was expected)]`` for one schema error."""
    parts = [str(p) for p in error.absolute_path]
    key = ".".join(parts) or _TOP
    check, value, schema = error.validator, error.instance, error.schema
    wanted = schema.get("description", "")
    if "propertyNames" in error.relative_schema_path:
        return [(".".join([*parts, str(value)]), f"{value!r} is not a valid name: expected "
                 f"{wanted}")]
    if check == "additionalProperties":
        allowed = list(schema.get("properties", {}))
        return [(".".join([*parts, str(name)]), f"unknown key {name!r}"
                 f"{_did_you_mean(name, allowed)} (allowed here: {', '.join(allowed)})")
                for name in value if name not in allowed]
    if check == "required":
        return [(".".join([*parts, name]), "missing required key: expected "
                 + schema["properties"][name]["description"])
                for name in error.validator_value if name not in value]
    if check == "oneOf" and isinstance(value, dict):  # a malformed {$env: NAME}
        return [p for sub in error.context if sub.validator != "type" for p in _explain(sub)]
    if check == "oneOf":
        return [(key, f"expected a string or {{$env: NAME}}, got {_kind(value)} ({wanted})")]
    if check == "type":
        return [(key, f"expected {_WANTED.get(schema['type'], schema['type'])}, "
                 f"got {_kind(value)} ({wanted})")]
    if check in ("const", "enum"):
        expected = ([error.validator_value] if check == "const" else error.validator_value)
        return [(key, f"expected {' or '.join(map(repr, expected))}, got {value!r} ({wanted})")]
    if check == "pattern":
        return [(key, f"{value!r} is not valid: expected {wanted}")]
    if check in ("minProperties", "maxProperties"):
        got = ", ".join(map(str, value)) if value else "none"
        return [(key, f"expected {wanted}; got {got}")]
    if check == "minLength":
        return [(key, f"must not be empty: expected {wanted}")]
    return [(key, f"{error.message}: expected {wanted}")]
