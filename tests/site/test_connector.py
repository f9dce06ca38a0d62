"""Site connector files: schema, loading, error messages, opening real DuckDB/Parquet/CSV data."""

from __future__ import annotations

import copy
import json
import shutil
from importlib import resources
from pathlib import Path

import duckdb
import jsonschema
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml

from fedquery.demo.generate import generate_site_tables, write_federation
from fedquery.errors import ConfigError
from fedquery.site.connector import Connector, load_connector, open_adapter, privacy_units

REPO = Path(__file__).resolve().parents[2]
DEMO_TABLES = ("patients", "diagnoses", "labs", "treatments", "outcomes")
N_PATIENTS = 50


@pytest.fixture(scope="module")
def federation(tmp_path_factory) -> dict[str, Path]:
    """Two demo sites of 50 patients in ``<tmp>/data/<site>.duckdb``."""
    return write_federation(tmp_path_factory.mktemp("fed"), 2, N_PATIENTS)


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def duckdb_config(database: str | Path = "db.duckdb") -> dict:
    return {"version": 1, "site": "hospital_a", "source": {"duckdb": {"path": str(database)}},
            "tables": {t: {"privacy_unit": "patient_id"} for t in DEMO_TABLES}}


def files_config(fmt: str, globs: dict[str, str]) -> dict:
    return {"version": 1, "site": "hospital_a",
            "source": {"files": {"format": fmt, "tables": globs}},
            "tables": {t: {"privacy_unit": "patient_id"} for t in globs}}


def postgres_config() -> dict:
    return {"version": 1, "site": "hospital_a",
            "source": {"postgres": {"dsn": {"$env": "PG_DSN"}, "schema": "public"}},
            "tables": {"patients": {"privacy_unit": "patient_id"}}}


def load_error(tmp_path: Path, data, name: str = "site.yaml") -> tuple[ConfigError, Path]:
    path = write_yaml(tmp_path / name, data)
    with pytest.raises(ConfigError) as info:
        load_connector(path)
    return info.value, path


# -- the shipped files ---------------------------------------------------------------------------

def test_schema_is_valid_2020_12_and_strict_everywhere():
    schema = json.loads(resources.files("fedquery.site").joinpath("connector.schema.json")
                        .read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"

    def walk(node, where):
        if node.get("type") == "object":
            assert "additionalProperties" in node, where
            is_map = isinstance(node["additionalProperties"], dict)
            assert is_map or node["additionalProperties"] is False, where
        for name, sub in node.get("properties", {}).items():
            assert sub.get("description"), f"{where}.{name} has no description"
            walk(sub, f"{where}.{name}")
        if isinstance(node.get("additionalProperties"), dict):
            assert node["additionalProperties"].get("description"), where
            walk(node["additionalProperties"], f"{where}.*")
        for i, sub in enumerate(node.get("oneOf", [])):
            walk(sub, f"{where}.oneOf{i}")
        for name, sub in node.get("$defs", {}).items():
            walk(sub, f"$defs.{name}")

    walk(schema, "(top)")


@pytest.mark.parametrize("site", ["hospital_a", "hospital_b", "hospital_c"])
def test_demo_connector_files_load(site):
    connector = load_connector(REPO / "connectors" / f"{site}.yaml")
    assert connector.site == site
    assert connector.source_kind == "duckdb"
    assert connector.database == REPO / "demo" / "data" / f"{site}.duckdb"
    assert privacy_units(connector) == {t: "patient_id" for t in DEMO_TABLES}


def test_demo_connector_files_open_the_demo_layout(tmp_path, federation):
    """The shipped files, copied next to a demo/data directory, open the generated data."""
    shutil.copytree(next(iter(federation.values())).parent, tmp_path / "demo" / "data")
    (tmp_path / "connectors").mkdir()
    for site in federation:
        shutil.copy(REPO / "connectors" / f"{site}.yaml", tmp_path / "connectors")
        adapter = open_adapter(load_connector(tmp_path / "connectors" / f"{site}.yaml"))
        try:
            assert [t.name for t in adapter.describe()] == list(DEMO_TABLES)
        finally:
            adapter.close()


# -- opening real data ---------------------------------------------------------------------------

def test_duckdb_file_connector_opens_and_describes(tmp_path, federation):
    path = write_yaml(tmp_path / "a.yaml", duckdb_config(federation["hospital_a"]))
    connector = load_connector(path)
    assert isinstance(connector, Connector) and connector.path == path
    adapter = open_adapter(connector)
    try:
        described = {t.name: [c.name for c in t.columns] for t in adapter.describe()}
        assert list(described) == list(DEMO_TABLES)
        assert all("patient_id" in cols for cols in described.values())
        assert "birth_year" in described["patients"]
        count = adapter.execute("SELECT count(*) AS n FROM patients").column("n")[0].as_py()
        assert count == N_PATIENTS
    finally:
        adapter.close()


def test_duckdb_file_connection_is_read_only(tmp_path, federation):
    adapter = open_adapter(load_connector(
        write_yaml(tmp_path / "a.yaml", duckdb_config(federation["hospital_a"]))))
    try:
        with pytest.raises(duckdb.Error):
            adapter._con.execute("CREATE TABLE x(a INT)")
        with pytest.raises(duckdb.Error):
            adapter._con.execute("DELETE FROM patients")
    finally:
        adapter.close()


def test_relative_paths_are_relative_to_the_connector_file(tmp_path, federation, monkeypatch):
    (tmp_path / "conf").mkdir()
    shutil.copy(federation["hospital_a"], tmp_path / "site.duckdb")
    path = write_yaml(tmp_path / "conf" / "a.yaml", duckdb_config("../site.duckdb"))
    monkeypatch.chdir(tmp_path / "conf")
    connector = load_connector("a.yaml")
    assert connector.database == tmp_path / "site.duckdb"
    monkeypatch.chdir(REPO)
    open_adapter(connector).close()
    assert load_connector(path).database == tmp_path / "site.duckdb"


def write_split(tables, directory: Path, fmt: str) -> dict[str, str]:
    """Each table as two files ``<dir>/<table>/part-<i>.<fmt>``; returns relative globs."""
    globs = {}
    for name in ("patients", "diagnoses"):
        (directory / name).mkdir(parents=True)
        table, half = tables[name], tables[name].num_rows // 2
        for i, part in enumerate((table.slice(0, half), table.slice(half))):
            target = directory / name / f"part-{i}.{fmt}"
            if fmt == "parquet":
                pq.write_table(part, target)
            else:
                pacsv.write_csv(part, target)
        globs[name] = f"{directory.name}/{name}/*.{fmt}"
    return globs


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_file_glob_connector_opens_and_describes(tmp_path, fmt):
    tables = generate_site_tables("hospital_a", N_PATIENTS, seed=7)
    globs = write_split(tables, tmp_path / "data", fmt)
    connector = load_connector(write_yaml(tmp_path / "a.yaml", files_config(fmt, globs)))
    assert connector.source_kind == "files" and connector.file_format == fmt
    assert connector.file_globs["patients"] == str(tmp_path / "data" / "patients" / f"*.{fmt}")
    adapter = open_adapter(connector)
    try:
        described = {t.name: [c.name for c in t.columns] for t in adapter.describe()}
        assert described["patients"] == tables["patients"].column_names
        assert described["diagnoses"] == tables["diagnoses"].column_names
        n = adapter.execute("SELECT count(*) AS n FROM diagnoses").column("n")[0].as_py()
        assert n == tables["diagnoses"].num_rows
    finally:
        adapter.close()


# -- schema errors: every field --------------------------------------------------------------------

def _set(data: dict, dotted: str, value) -> dict:
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[last] = value
    return data


def _rename(data: dict, dotted: str, new: str) -> dict:
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[new] = node.pop(last)
    return data


def _drop(data: dict, dotted: str) -> dict:
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node[part]
    del node[last]
    return data


BASES = {"duckdb": duckdb_config(), "files": files_config("parquet", {"patients": "p/*.parquet"}),
         "postgres": postgres_config()}

MISSPELLINGS = [  # (base, key, misspelling)
    ("duckdb", "version", "verison"),
    ("duckdb", "site", "sitte"),
    ("duckdb", "source", "sources"),
    ("duckdb", "tables", "tabels"),
    ("duckdb", "source.duckdb", "duckbd"),
    ("files", "source.files", "file"),
    ("postgres", "source.postgres", "postgress"),
    ("duckdb", "source.duckdb.path", "pth"),
    ("files", "source.files.format", "fromat"),
    ("files", "source.files.tables", "table"),
    ("postgres", "source.postgres.dsn", "dns"),
    ("postgres", "source.postgres.schema", "schemas"),
    ("postgres", "source.postgres.dsn.$env", "$evn"),
    ("duckdb", "tables.patients.privacy_unit", "privacy_uint"),
]


@pytest.mark.parametrize(("base", "key", "wrong"), MISSPELLINGS,
                         ids=[m[2] for m in MISSPELLINGS])
def test_misspelled_key_is_rejected_with_a_suggestion(tmp_path, base, key, wrong):
    err, path = load_error(tmp_path, _rename(copy.deepcopy(BASES[base]), key, wrong))
    right = key.rsplit(".", 1)[-1]
    wrong_key = key.rsplit(".", 1)[0] + "." + wrong if "." in key else wrong
    assert str(path) in str(err) and err.path == str(path)
    assert f"{wrong_key}: unknown key {wrong!r}; did you mean {right!r}?" in str(err)


WRONG_VALUES = [  # (base, key, value, expected text)
    ("duckdb", "version", 2, "expected 1, got 2"),
    ("duckdb", "version", "1", "expected 1, got '1'"),
    ("duckdb", "site", 5, "expected a string, got a number"),
    ("duckdb", "site", "1st-site", "'1st-site' is not valid"),
    ("duckdb", "source", "db.duckdb", "expected a mapping, got a string"),
    ("duckdb", "source", {}, "exactly one of duckdb, files or postgres; got none"),
    ("duckdb", "source.files", {"format": "csv", "tables": {"patients": "x.csv"}},
     "exactly one of duckdb, files or postgres; got duckdb, files"),
    ("duckdb", "source.duckdb", "db.duckdb", "expected a mapping, got a string"),
    ("duckdb", "source.duckdb.path", 5, "expected a string or {$env: NAME}, got a number"),
    ("duckdb", "source.duckdb.path", "", "expected a string or {$env: NAME}"),
    ("files", "source.files", ["p.parquet"], "expected a mapping, got a list"),
    ("files", "source.files.format", "xlsx", "expected 'parquet' or 'csv', got 'xlsx'"),
    ("files", "source.files.tables", "p/*.parquet", "expected a mapping, got a string"),
    ("files", "source.files.tables.patients", ["a"], "expected a string or {$env: NAME}"),
    ("postgres", "source.postgres.dsn", "postgresql://u:hunter2@db/x",
     "expected a mapping, got a string"),
    ("postgres", "source.postgres.dsn.$env", "1BAD", "'1BAD' is not valid"),
    ("postgres", "source.postgres.schema", 3, "expected a string, got a number"),
    ("duckdb", "tables", ["patients"], "expected a mapping, got a list"),
    ("duckdb", "tables", {}, "expected the tables this site offers"),
    ("duckdb", "tables.patients", "patient_id", "expected a mapping, got a string"),
    ("duckdb", "tables.patients.privacy_unit", 5, "expected a string, got a number"),
    ("duckdb", "tables.patients.privacy_unit", None, "expected a string, got nothing"),
    ("duckdb", "tables.patients.privacy_unit", "", "must not be empty"),
]


@pytest.mark.parametrize(("base", "key", "value", "expected"), WRONG_VALUES,
                         ids=[f"{w[1]}={w[2]!r}" for w in WRONG_VALUES])
def test_wrong_value_is_rejected_naming_file_and_key(tmp_path, base, key, value, expected):
    err, path = load_error(tmp_path, _set(copy.deepcopy(BASES[base]), key, value))
    shown_key = "source" if key == "source.files" and base == "duckdb" else key
    assert f"{path}: {shown_key}: " in str(err)
    assert expected in str(err)
    assert "hunter2" not in str(err)  # an inline secret is never echoed


def test_bad_table_name_is_rejected(tmp_path):
    data = duckdb_config()
    data["tables"]["bad-name"] = {"privacy_unit": "patient_id"}
    err, path = load_error(tmp_path, data)
    assert f"{path}: tables.bad-name: 'bad-name' is not a valid name" in str(err)


REQUIRED = [("duckdb", "version"), ("duckdb", "site"), ("duckdb", "source"),
            ("duckdb", "tables"), ("duckdb", "source.duckdb.path"),
            ("files", "source.files.format"), ("files", "source.files.tables"),
            ("postgres", "source.postgres.dsn"), ("duckdb", "tables.patients.privacy_unit")]


@pytest.mark.parametrize(("base", "key"), REQUIRED, ids=[r[1] for r in REQUIRED])
def test_missing_required_key_is_rejected_naming_file_and_key(tmp_path, base, key):
    err, path = load_error(tmp_path, _drop(copy.deepcopy(BASES[base]), key))
    assert f"{path}: {key}: missing required key: expected " in str(err)
    assert err.key == key


def test_every_problem_is_reported_at_once(tmp_path):
    data = duckdb_config()
    data["version"] = 3
    _rename(data, "tables.labs.privacy_unit", "privacy")
    err, path = load_error(tmp_path, data)
    lines = str(err).splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines)
    assert any("version: expected 1, got 3" in line for line in lines)
    assert any("tables.labs.privacy: unknown key 'privacy'; did you mean 'privacy_unit'?"
               in line for line in lines)
    assert err.key == "version"


@pytest.mark.parametrize(("text", "where"), [
    ("version: 1\nsite: [a\n", "line 3, column 1"),
    ("version: 1\n  site: a\n", "line 2, column 7"),
    ("version: 1\nsite: 'a\n", "line 3, column 1"),
])
def test_yaml_syntax_error_gives_line_and_column(tmp_path, text, where):
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="YAML syntax error") as info:
        load_connector(path)
    assert str(info.value).startswith(f"{path}: {where}: ")


@pytest.mark.parametrize(("text", "got"), [("", "nothing"), ("- 1\n", "a list")])
def test_document_that_is_not_a_mapping_is_rejected(tmp_path, text, got):
    path = tmp_path / "empty.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=f"expected a mapping, got {got}") as info:
        load_connector(path)
    assert str(path) in str(info.value)


def test_missing_connector_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the connector file") as info:
        load_connector(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in str(info.value)


# -- after the schema: environment, postgres, files consistency --------------------------------

def test_env_value_resolves_from_the_environment(tmp_path, federation, monkeypatch):
    monkeypatch.setenv("FEDQUERY_TEST_DB", str(federation["hospital_b"]))
    data = duckdb_config()
    data["source"]["duckdb"]["path"] = {"$env": "FEDQUERY_TEST_DB"}
    connector = load_connector(write_yaml(tmp_path / "b.yaml", data))
    assert connector.database == federation["hospital_b"]
    open_adapter(connector).close()


@pytest.mark.parametrize("base", ["duckdb", "files"])
def test_env_unset_is_an_error_naming_the_variable(tmp_path, monkeypatch, base):
    monkeypatch.delenv("FEDQUERY_UNSET_X", raising=False)
    data = copy.deepcopy(BASES[base])
    key = "source.duckdb.path" if base == "duckdb" else "source.files.tables.patients"
    _set(data, key, {"$env": "FEDQUERY_UNSET_X"})
    err, path = load_error(tmp_path, data)
    assert str(err).startswith(f"{path}: {key}: environment variable FEDQUERY_UNSET_X is not set")
    assert err.key == key


def test_postgres_source_loads_without_showing_its_secret(tmp_path, monkeypatch):
    # Opening it needs a server: tests/postgres/ does that against a real PostgreSQL.
    monkeypatch.setenv("PG_DSN", "postgresql://u:secret@db/x")
    connector = load_connector(write_yaml(tmp_path / "pg.yaml", postgres_config()))
    assert connector.source_kind == "postgres" and connector.postgres.schema == "public"
    assert connector.postgres.conninfo == "postgresql://u:secret@db/x"
    assert "secret" not in repr(connector)


def test_files_table_without_a_glob_is_rejected(tmp_path):
    data = files_config("csv", {"patients": "p/*.csv"})
    data["tables"]["labs"] = {"privacy_unit": "patient_id"}
    err, path = load_error(tmp_path, data)
    assert f"{path}: source.files.tables.labs: table 'labs' is declared" in str(err)


def test_files_glob_without_a_table_is_rejected(tmp_path):
    data = files_config("csv", {"patients": "p/*.csv", "labs": "l/*.csv"})
    del data["tables"]["labs"]
    err, path = load_error(tmp_path, data)
    assert f"{path}: tables.labs: table 'labs' has a file glob" in str(err)


# -- open_adapter checks against the data ---------------------------------------------------------

def test_missing_duckdb_file_is_an_error_naming_the_path(tmp_path):
    connector = load_connector(write_yaml(tmp_path / "a.yaml", duckdb_config("data/gone.duckdb")))
    with pytest.raises(ConfigError) as info:
        open_adapter(connector)
    assert str(tmp_path / "data" / "gone.duckdb") in str(info.value)
    assert str(info.value).startswith(f"{tmp_path / 'a.yaml'}: source.duckdb.path: ")
    assert info.value.key == "source.duckdb.path"


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_glob_matching_no_files_is_an_error_naming_the_glob(tmp_path, fmt):
    connector = load_connector(write_yaml(
        tmp_path / "a.yaml", files_config(fmt, {"patients": f"nothing/*.{fmt}"})))
    with pytest.raises(ConfigError) as info:
        open_adapter(connector)
    assert f"no {fmt} files match {tmp_path / 'nothing' / f'*.{fmt}'}" in str(info.value)
    assert info.value.key == "source.files.tables.patients"


def test_declared_table_absent_from_the_database(tmp_path, federation):
    data = duckdb_config(federation["hospital_a"])
    data["tables"]["visits"] = {"privacy_unit": "patient_id"}
    connector = load_connector(write_yaml(tmp_path / "a.yaml", data))
    with pytest.raises(ConfigError) as info:
        open_adapter(connector)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'a.yaml'}: tables.visits: site 'hospital_a': ")
    assert "'visits'" in message and info.value.key == "tables.visits"


def test_privacy_unit_column_absent_from_the_database(tmp_path, federation):
    data = duckdb_config(federation["hospital_a"])
    data["tables"]["labs"]["privacy_unit"] = "patientid"
    connector = load_connector(write_yaml(tmp_path / "a.yaml", data))
    with pytest.raises(ConfigError) as info:
        open_adapter(connector)
    assert str(info.value).startswith(
        f"{tmp_path / 'a.yaml'}: tables.labs.privacy_unit: site 'hospital_a': table 'labs' "
        "has no column 'patientid'; did you mean 'patient_id'? (columns: patient_id, ")
    assert info.value.key == "tables.labs.privacy_unit"


def test_privacy_unit_column_absent_from_files(tmp_path):
    tables = generate_site_tables("hospital_a", N_PATIENTS, seed=7)
    data = files_config("parquet", write_split(tables, tmp_path / "data", "parquet"))
    data["tables"]["diagnoses"]["privacy_unit"] = "person_id"
    connector = load_connector(write_yaml(tmp_path / "a.yaml", data))
    with pytest.raises(ConfigError, match="table 'diagnoses' has no column 'person_id'"):
        open_adapter(connector)
