"""The site's database user cannot be made to write, the catalog is introspected with type
mapping, and the data version follows writes.

* A fragment can never hold DML or DDL (``test_render.py`` checks the parser's gate); here: a
  connection whose role COULD write (the test server's superuser) is still used read-only —
  the session default, and the transaction every statement runs in.
* The read-only role recipe of ``connectors/README.md`` is run as written: that role reads and
  cannot write, even in a read-write transaction.
* ``information_schema`` types map to the federation's; an unmappable type is reported by name.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from fedquery.errors import ConfigError, ProgrammingError
from fedquery.site.connector import load_connector, open_adapter
from fedquery.site.engines.postgres import with_session

README = Path(__file__).resolve().parents[2] / "connectors" / "README.md"


@pytest.fixture(scope="module")
def people(pg_schema, pg_load):
    pg_load(pg_schema, {"people": pa.table({
        "pid": pa.array([1, 2, 3], pa.int64()), "name": ["a", "B", None],
        "score": pa.array([1.5, None, 2.5])})})
    return "people"


def _count(pg_admin, schema: str, table: str) -> int:
    return pg_admin(f'SELECT COUNT(*) FROM "{schema}"."{table}"')[0][0]


def test_a_role_that_could_write_is_still_used_read_only(pg_schema, people, pg_adapter,
                                                         pg_admin):
    adapter = pg_adapter(pg_schema, ("people",))
    try:
        assert adapter.can_write == ("people",)  # the test role could write ...
        before = _count(pg_admin, pg_schema, "people")
        table = f'"{pg_schema}"."people"'
        for sql in (f"INSERT INTO {table} (pid) VALUES (99)",
                    f"DELETE FROM {table}",
                    f"UPDATE {table} SET name = 'x'",
                    f"WITH d AS (DELETE FROM {table} RETURNING pid) SELECT COUNT(*) FROM d",
                    f"CREATE TABLE \"{pg_schema}\".w (a int)",
                    f"DROP TABLE {table}",
                    "SELECT set_config('transaction_read_only', 'off', true)"):
            # ... but even SQL that slips past every check (here sent straight to the
            # connection, bypassing the renderer) runs in a read-only transaction.
            with pytest.raises(ProgrammingError, match="refused a write|read-only"):
                adapter._fetch(sql)
        # Turning the session default off from inside a fragment does not stick: every
        # fragment's transaction is rolled back, the setting with it.
        assert adapter._fetch("SELECT set_config('default_transaction_read_only', 'off', "
                              "false) AS r").column(0).to_pylist() == ["off"]
        with pytest.raises(ProgrammingError, match="refused a write"):
            adapter._fetch(f"INSERT INTO {table} (pid) VALUES (99)")
        assert _count(pg_admin, pg_schema, "people") == before
        conn, _ = adapter._acquire()
        try:  # outside any transaction of ours, the session default is read-only too
            cur = conn.cursor()
            cur.execute("SELECT current_setting('default_transaction_read_only') AS r, "
                        "current_setting('transaction_read_only') AS t, "
                        "current_setting('statement_timeout') AS s")
            assert cur.fetchall() == [("on", "on", "30s")]
            with pytest.raises(Exception, match="read-only transaction"):
                cur.execute(f"INSERT INTO {table} (pid) VALUES (98)")
            cur.close()
        finally:
            conn.close()
        assert _count(pg_admin, pg_schema, "people") == before
    finally:
        adapter.close()


def _recipe() -> str:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- read-only-role[^>]*-->\s*```sql\n(.*?)```", text, re.DOTALL)
    assert block, "connectors/README.md lost its read-only role recipe"
    return block.group(1)


def test_the_read_only_role_recipe_of_the_operator_guide(pg_schema, people, pg_dsn,
                                                         pg_admin, pg_adapter):
    role = f"fq_reader_{uuid.uuid4().hex[:8]}"
    database = pg_admin("SELECT current_database()")[0][0]
    sql = (_recipe().replace("fedquery_reader", role).replace("cdm", f'"{pg_schema}"')
           .replace("omop", f'"{database}"'))
    statements = [s.strip() for s in sql.split(";") if s.strip()]
    pg_admin(*statements)
    try:
        dsn = _as_role(pg_dsn, role)
        adapter = pg_adapter(pg_schema, ("people",), dsn=dsn)
        try:
            assert adapter.can_write == ()
            assert adapter.execute("SELECT COUNT(*) AS n FROM people").column("n").to_pylist() \
                == [3]
        finally:
            adapter.close()
        # The role cannot write even when it asks for a read-write transaction.
        from adbc_driver_postgresql import dbapi
        with dbapi.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("BEGIN READ WRITE")
            with pytest.raises(Exception, match="permission denied"):
                cur.execute(f'INSERT INTO "{pg_schema}".people (pid) VALUES (7)')
            cur.execute("ROLLBACK")
            with pytest.raises(Exception, match="permission denied|read-only"):
                cur.execute(f'CREATE TABLE "{pg_schema}".mine (a int)')
    finally:
        pg_admin(f'DROP OWNED BY "{role}"', f'DROP ROLE "{role}"')


def _as_role(dsn: str, role: str) -> str:
    if dsn.startswith(("postgresql://", "postgres://")):
        return re.sub(r"^(postgres(?:ql)?://)([^@/]*@)?", rf"\g<1>{role}:change%20me@", dsn)
    return f"{dsn} user={role} password='change me'"


TYPES = {  # PostgreSQL column → expected federation type (None: not offered)
    "c_smallint": ("smallint", "SMALLINT"), "c_int": ("integer", "INTEGER"),
    "c_bigint": ("bigint", "BIGINT"), "c_real": ("real", "FLOAT"),
    "c_double": ("double precision", "DOUBLE"), "c_dec": ("numeric(12,3)", "DECIMAL(12,3)"),
    "c_num": ("numeric", "DOUBLE"), "c_bignum": ("numeric(50,2)", "DOUBLE"),
    "c_text": ("text", "VARCHAR"), "c_varchar": ("varchar(10)", "VARCHAR"),
    "c_char": ("char(3)", "VARCHAR"), "c_uuid": ("uuid", "VARCHAR"),
    "c_bool": ("boolean", "BOOLEAN"), "c_date": ("date", "DATE"),
    "c_ts": ("timestamp", "TIMESTAMP"), "c_tstz": ("timestamptz", "TIMESTAMP WITH TIME ZONE"),
    "c_time": ("time", "TIME"), "c_interval": ("interval", "INTERVAL"),
    "c_bytea": ("bytea", "BLOB"), "c_icu": ('text COLLATE "und-x-icu"', "VARCHAR"),
    "c_jsonb": ("jsonb", None), "c_array": ("integer[]", None), "c_money": ("money", None),
    "c_point": ("point", None), "MixedCase": ("integer", "INTEGER"),
}


@pytest.fixture(scope="module")
def typed(pg_schema, pg_admin):
    columns = ", ".join(f'"{name}" {pg}' for name, (pg, _) in TYPES.items())
    pg_admin(f'CREATE TABLE "{pg_schema}".typed ({columns})',
             f"""INSERT INTO "{pg_schema}".typed (c_int, c_num, c_char, c_icu, c_dec, "MixedCase",
                 c_uuid, c_tstz, c_jsonb) VALUES
                 (1, 2.25, 'ab', 'B', 1.125, 7, '00000000-0000-0000-0000-00000000000a',
                  '2020-01-01 12:00+02', '{{}}'),
                 (2, 1e-3, 'c', 'a', 2.5, 8, NULL, NULL, NULL),
                 (3, NULL, NULL, 'Z', NULL, 9, NULL, NULL, NULL)""")
    return "typed"


def test_catalog_types_map_and_unmappable_types_are_reported_by_name(pg_schema, typed,
                                                                     pg_adapter, caplog):
    with caplog.at_level("WARNING"):
        adapter = pg_adapter(pg_schema, ("typed",))
    try:
        (info,) = adapter.describe()
        got = {c.name: c.type for c in info.columns}
        assert got == {name: fed for name, (_, fed) in TYPES.items() if fed is not None}
        assert sorted(adapter.unmapped) == sorted(
            ("typed", name, pg) for name, pg in (("c_jsonb", "jsonb"), ("c_array", "ARRAY"),
                                                 ("c_money", "money"), ("c_point", "point")))
        logged = caplog.text
        assert "column=c_jsonb pg_type=jsonb" in logged and "column=c_array" in logged
    finally:
        adapter.close()


def test_mapped_columns_read_as_their_federation_type(pg_schema, typed, pg_adapter):
    adapter = pg_adapter(pg_schema, ("typed",))
    try:
        out = adapter.execute(
            "SELECT SUM(c_num) AS num, MIN(c_icu) AS lo, MAX(c_icu) AS hi, "
            "MIN(c_char) AS ch, SUM(c_dec) AS dec, SUM(mixedcase) AS mixed, "
            "MIN(c_uuid) AS u, MIN(c_tstz) AS ts FROM typed")
        row = out.to_pylist()[0]
        assert out.schema.field("num").type == pa.float64()
        assert row["num"] == pytest.approx(2.251)
        # byte order, as DuckDB compares text: 'B' < 'Z' < 'a' (ICU would say 'a' < 'B')
        assert (row["lo"], row["hi"]) == ("B", "a")
        assert row["ch"] == "ab"  # char(n) read as text: no trailing blanks
        assert str(row["dec"]) == "3.625" and out.schema.field("dec").type == pa.decimal128(38, 3)
        assert row["mixed"] == 24
        assert row["u"] == "00000000-0000-0000-0000-00000000000a"
        assert row["ts"].isoformat() == "2020-01-01T10:00:00+00:00"
    finally:
        adapter.close()


def test_a_privacy_unit_of_an_unmappable_type_stops_the_site(pg_schema, typed, tmp_path,
                                                             monkeypatch, pg_dsn):
    monkeypatch.setenv("FQ_TEST_PG_DSN", pg_dsn)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({
        "version": 1, "site": "hospital_p",
        "source": {"postgres": {"dsn": {"$env": "FQ_TEST_PG_DSN"}, "schema": pg_schema}},
        "tables": {"typed": {"privacy_unit": "c_jsonb"}}}))
    with pytest.raises(ConfigError) as info:
        open_adapter(load_connector(path))
    assert info.value.key == "tables.typed.privacy_unit"
    assert "column typed.c_jsonb has PostgreSQL type jsonb" in str(info.value)


def test_a_declared_table_missing_from_the_schema_is_named(pg_schema, people, tmp_path,
                                                          monkeypatch, pg_dsn):
    monkeypatch.setenv("FQ_TEST_PG_DSN", pg_dsn)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({
        "version": 1, "site": "hospital_p",
        "source": {"postgres": {"dsn": {"$env": "FQ_TEST_PG_DSN"}, "schema": pg_schema}},
        "tables": {"people": {"privacy_unit": "pid"}, "visits": {"privacy_unit": "pid"}}}))
    with pytest.raises(ConfigError) as info:
        open_adapter(load_connector(path))
    assert info.value.key == "tables.visits"
    assert f"table 'visits' is not in PostgreSQL schema '{pg_schema}'" in str(info.value)
    assert "people" in str(info.value)


def test_data_version_follows_committed_writes(pg_schema, people, pg_adapter, pg_admin):
    adapter = pg_adapter(pg_schema, ("people",))
    try:
        first = adapter.data_version()
        assert adapter.data_version() == first  # reading changes nothing
        adapter.execute("SELECT COUNT(*) AS n FROM people")
        assert adapter.data_version() == first
        # a write from another session (which ends, so its counters are published)
        pg_admin(f'INSERT INTO "{pg_schema}".people (pid) VALUES (4)')
        second = adapter.data_version()
        assert second != first
        pg_admin(f'TRUNCATE "{pg_schema}".people',
                 f'INSERT INTO "{pg_schema}".people SELECT * FROM (VALUES (1::bigint, '
                 "'a', 1.5::float8)) AS t")
        assert adapter.data_version() not in (first, second)
    finally:
        adapter.close()


def test_session_settings_are_added_to_any_connection_string():
    uri = with_session("postgresql://u:p%40ss@db:5433/x?sslmode=require&options=-c%20a%3Db",
                       {"options": "-c default_transaction_read_only=on",
                        "connect_timeout": "3", "sslmode": "disable"})
    assert uri.startswith("postgresql://u:p%40ss@db:5433/x?")
    assert "sslmode=require" in uri and "sslmode=disable" not in uri  # operator's choice
    assert "options=-c%20a%3Db%20-c%20default_transaction_read_only%3Don" in uri
    kv = with_session("host=db options='-c a=b' password='it''s'",
                      {"options": "-c x=y", "connect_timeout": "3"})
    assert "options='-c a=b -c x=y'" in kv and "connect_timeout='3'" in kv
    assert kv.count("options") == 1
