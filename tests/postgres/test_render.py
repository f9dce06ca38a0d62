"""Rendering fragments for PostgreSQL: where the semantics differ from DuckDB's, the renderer
corrects them — each difference is checked by running the same DuckDB expression on a DuckDB
table and, rendered, on a PostgreSQL table holding the same rows, and comparing the Arrow
results value for value (type for type).  Constructs that cannot be rendered faithfully are
refused by name; nothing but one read-only SELECT over the connector's tables is ever sent.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math

import pyarrow as pa
import pytest

from fedquery.errors import NotSupportedError, ProgrammingError
from fedquery.site.engines.base import parse_single_select
from fedquery.site.engines.duckdb import DuckDBAdapter

D = decimal.Decimal
NAN, INF = float("nan"), float("inf")

# Edge values: halves (rounding), zeros (division), NULLs, whole and huge doubles (their text),
# negative numbers (integer division, modulo), month and year boundaries (date_diff), a
# backslash and an underscore (LIKE's escape character), upper and lower case (byte order).
ROWS = [
    # id, i, j, big, x, y, d, s, t, day, day2, b
    (1, 7, 2, 3, 2.5, 0.0, D("1.50"),
     "a\\_b", "x", dt.date(2020, 1, 31), dt.date(2020, 2, 1), True),
    (2, -7, -2, 0, -2.5, 2.0, D("-2.55"),
     "a_b", None, dt.date(2019, 12, 31), dt.date(2021, 1, 1), False),
    (3, 0, 3, -5, 0.5, -4.0, D("0.00"), "B", "b", dt.date(2024, 2, 29), dt.date(2024, 3, 1), True),
    (4, None, None, None, None, None, None, None, None, None, None, None),
    (5, 5, -3, 1, 25.0, 3.0, D("12345.68"),
     "a", "A", dt.date(2021, 1, 3), dt.date(2021, 1, 4), False),
    (6, 1, 1, 2, 1e16, 0.1, D("-0.05"), "é", "z", dt.date(2000, 6, 1), dt.date(1999, 6, 1), True),
    (7, 2, 5, 7, 1.5e-7, 7.0, D("99.99"),
     "Ab", "ab", dt.date(1998, 12, 1), dt.date(1998, 9, 2), None),
    (8, 3, 4, 9, 123456789.125, -1.0, D("0.01"),
     "%", "_", dt.date(2023, 12, 31), dt.date(2024, 1, 1), True),
    (9, 4, 7, 11, 1e20, 5.5, D("1.00"), "", "", dt.date(2022, 7, 15), dt.date(2022, 7, 15), False),
    (10, 6, 8, 4, -0.0, 0.0, D("2.50"), "Z", "a", dt.date(2016, 1, 1), dt.date(2017, 12, 31), True),
    (11, 9, 9, 8, 0.1, 3.0, D("3.35"),
     "zz", "zz", dt.date(2010, 10, 10), dt.date(2010, 10, 9), False),
    (12, 10, 6, 6, 2.675, 1.0, D("-7.45"),
     "a\\b", "c", dt.date(2001, 1, 1), dt.date(2000, 12, 31), True),
]
NAMES = ("id", "i", "j", "big", "x", "y", "d", "s", "t", "day", "day2", "b")
TYPES = (pa.int32(), pa.int32(), pa.int32(), pa.int64(), pa.float64(), pa.float64(),
         pa.decimal128(15, 2), pa.string(), pa.string(), pa.date32(), pa.date32(), pa.bool_())


def _table() -> pa.Table:
    columns = list(zip(*ROWS))
    return pa.table({n: pa.array(c, t) for n, c, t in zip(NAMES, columns, TYPES)})


@pytest.fixture(scope="module")
def engines(pg_schema, pg_load, pg_adapter):
    table = _table()
    pg_load(pg_schema, {"v": table})
    duck = DuckDBAdapter.from_arrow({"v": table})
    pg = pg_adapter(pg_schema, ("v",))
    yield duck, pg
    duck.close()
    pg.close()


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b) or math.isclose(
            a, b, rel_tol=1e-13)
    return a == b and type(a) is type(b)


def _compare(engines, sql: str) -> tuple[pa.Table, pa.Table]:
    duck, pg = engines
    expected = duck.execute(sql)
    got = pg.execute(sql)
    assert got.schema == expected.schema, f"{sql}\nrendered: {pg.render(sql)}"
    rows_e, rows_g = expected.to_pylist(), got.to_pylist()
    assert len(rows_e) == len(rows_g), sql
    for e, g in zip(rows_e, rows_g):
        assert all(_same(e[k], g[k]) for k in e), (
            f"{sql}\n  DuckDB:     {e}\n  PostgreSQL: {g}\n  rendered: {pg.render(sql)}")
    return expected, got


# One row per edge value: (DuckDB expression, why it needs care).
EXPRESSIONS = {
    # integer and decimal division is DOUBLE division in DuckDB, and x / 0 is ±inf or NaN
    "int_division": "i / j",
    "int_division_by_zero": "i / (j - j)",
    "double_division_by_zero": "x / y",
    "decimal_division": "d / 4",
    "integer_division_operator": "i // NULLIF(j, 0)",
    "modulo_of_integers": "i % NULLIF(j, 0)",
    # ROUND of a double: half away from zero (PostgreSQL's round(float8) is half to even)
    "round_double": "ROUND(x)",
    "round_fixed_point": ("CAST(ROUND(LEAST(GREATEST(CAST(x AS DOUBLE), -3.0), 3.0) * 100) "
                          "AS BIGINT)"),
    "round_double_to_zero_digits": "ROUND(x, 0)",
    "round_decimal": "ROUND(d, 1)",
    "round_integer": "ROUND(i)",
    # casts: DuckDB's text of doubles (hashed by the row cap), decimals, booleans, dates
    "double_text": "CAST(x AS VARCHAR)",
    "double_text_of_y": "CAST(y AS VARCHAR)",
    "real_text": "CAST(CAST(y AS FLOAT) AS VARCHAR)",
    "decimal_text": "CAST(d AS VARCHAR)",
    "decimal_arithmetic_text": "CAST(d * d AS VARCHAR)",
    "boolean_text": "CAST(b AS VARCHAR)",
    "comparison_text": "CAST((x > 1) AS VARCHAR)",
    "date_text": "CAST(day AS VARCHAR)",
    "integer_text": "CAST(big AS VARCHAR)",
    "int_to_boolean": "CAST(i AS BOOLEAN)",
    "bigint_to_boolean": "CAST(big AS BOOLEAN)",
    "boolean_to_bigint": "CAST(b AS BIGINT)",
    "boolean_to_integer": "CAST(b AS INTEGER)",
    "double_to_integer_half_even": "CAST(y * 2.5 AS INTEGER)",
    "decimal_to_integer": "CAST(d AS INTEGER)",
    "to_hugeint": "CAST(big AS HUGEINT)",
    "to_varchar_n": "CAST(s AS VARCHAR(1))",
    "to_decimal": "CAST(y / 3 AS DECIMAL(10, 2))",
    # the keyed hash of the contribution cap: md5 over concat_ws of the row's values as text
    "row_cap_hash": ("md5(concat_ws('|', 'k''ey', CAST(id AS VARCHAR), CAST(x AS VARCHAR), "
                     "CAST(d AS VARCHAR), CAST(s AS VARCHAR), CAST(day AS VARCHAR), "
                     "CAST((y > 0) AS VARCHAR)))"),
    # string concatenation and NULLs
    "concat_operator": "s || t",
    "concat_function": "concat(s, t)",
    "concat_ws_skips_nulls": "concat_ws('-', s, t, CAST(i AS VARCHAR))",
    # LIKE has no escape character in DuckDB (PostgreSQL's default is backslash)
    "like_backslash": "s LIKE 'a\\_b'",
    "like_underscore": "s LIKE 'a_b'",
    "ilike": "s ILIKE 'a%'",
    "not_like": "NOT (s LIKE '%b')",
    # clamping: LEAST/GREATEST skip NULLs in both
    "clamp": "LEAST(GREATEST(x, -1.0), 1.0)",
    "greatest_with_null": "GREATEST(i, j, NULL)",
    # dates: EXTRACT gives BIGINT in DuckDB (NUMERIC in PostgreSQL)
    "year": "year(day)",
    "extract_month": "EXTRACT(month FROM day)",
    "day_of_week": "dayofweek(day)",
    "iso_day_of_week": "EXTRACT(isodow FROM day)",
    "date_part_doy": "date_part('doy', day)",
    "quarter": "quarter(day)",
    "iso_week": "week(day)",
    "epoch": "EXTRACT(epoch FROM day)",
    "date_trunc_month": "date_trunc('month', day)",
    "date_trunc_year_of_date": "date_trunc('year', day)",
    "date_diff_month": "date_diff('month', day, day2)",
    "date_diff_year": "date_diff('year', day, day2)",
    "date_diff_day": "date_diff('day', day, day2)",
    "date_minus_date": "day2 - day",
    "date_plus_int": "day + 1",
    "date_minus_interval": "day - INTERVAL '90' DAY",
    "date_literal_comparison": "day <= DATE '2020-01-31'",
    # CASE, COALESCE, NULLIF, IS NOT DISTINCT FROM, IN
    "case": "CASE WHEN x > 0 THEN 'p' WHEN x < 0 THEN 'n' END",
    "coalesce": "COALESCE(x, -1)",
    "nullif": "NULLIF(i, 0)",
    "not_distinct": "i IS NOT DISTINCT FROM j",
    "in_list_with_null": "i IN (1, 7, NULL)",
    "between_decimal": "d BETWEEN 0.05 - 0.01 AND 1.5",
    # functions whose DuckDB result is DOUBLE
    "power": "POWER(i, 2)",
    "sqrt": "SQRT(ABS(x))",
    "floor_of_division": "FLOOR(i / 10) * 10",
    "abs_sign": "ABS(i) * SIGN(x)",
    "substring": "substring(s, 1, 2)",
    "length": "length(s)",
    # NULLs sort last in DuckDB, ascending or descending
    "row_number_desc": "ROW_NUMBER() OVER (ORDER BY x DESC)",
    "row_number_asc": "ROW_NUMBER() OVER (PARTITION BY b ORDER BY i)",
}


@pytest.mark.parametrize("name", list(EXPRESSIONS))
def test_expression_gives_what_duckdb_gives(engines, name):
    _compare(engines, f"SELECT id, {EXPRESSIONS[name]} AS r FROM v ORDER BY id")


AGGREGATES = {
    "sum_of_integers_is_hugeint": "SELECT SUM(i) AS s, SUM(big) AS t FROM v",
    "sum_of_decimals": "SELECT SUM(d) AS s, SUM(d * d) AS q FROM v",
    "sum_of_booleans": "SELECT SUM(b) AS s FROM v",
    "min_max_of_booleans": "SELECT MIN(b) AS lo, MAX(b) AS hi FROM v",
    "count_if_on_no_rows": "SELECT COUNT_IF(x > 0) AS n FROM v WHERE 1 = 0",
    "count_if": "SELECT COUNT_IF(x > 0) AS n FROM v",
    "sum_on_no_rows_is_null": "SELECT SUM(x) AS s, COUNT(*) AS n FROM v WHERE 1 = 0",
    "filter_and_count_distinct": ("SELECT b, COUNT(*) FILTER (WHERE x > 0) AS n, "
                                  "COUNT(DISTINCT s) AS k FROM v GROUP BY b ORDER BY b"),
    "min_max_text_byte_order": "SELECT MIN(s) AS lo, MAX(s) AS hi FROM v",
    "group_by_year": "SELECT year(day) AS y, COUNT(*) AS n FROM v GROUP BY 1 ORDER BY 1",
    "group_by_integer_division": ("SELECT (big // 4) * 4 AS g, COUNT(*) AS n FROM v "
                                  "GROUP BY 1 ORDER BY 1"),
    "qualify_row_cap": ("SELECT b, SUM(i) AS s FROM (SELECT * FROM v QUALIFY ROW_NUMBER() "
                        "OVER (PARTITION BY b ORDER BY md5(CAST(id AS VARCHAR))) <= 2) "
                        "GROUP BY b ORDER BY b"),
    "values_domain_join": ("SELECT k.g, COALESCE(f.n, 0) AS n FROM (SELECT * FROM (VALUES "
                           "('a'), ('B'), (NULL)) AS k(g)) AS k LEFT JOIN (SELECT s AS g, "
                           "COUNT(*) AS n FROM v GROUP BY s) AS f ON k.g IS NOT DISTINCT "
                           "FROM f.g ORDER BY k.g"),
}


@pytest.mark.parametrize("name", list(AGGREGATES))
def test_aggregate_gives_what_duckdb_gives(engines, name):
    _compare(engines, AGGREGATES[name])


def test_both_adapters_implement_the_engine_adapter_interface(engines):
    from fedquery.site.engines import EngineAdapter, PostgresAdapter

    duck, pg = engines
    assert isinstance(duck, EngineAdapter) and isinstance(pg, EngineAdapter)
    assert isinstance(pg, PostgresAdapter)
    assert (duck.dialect, pg.dialect) == ("duckdb", "postgres")
    assert duck.render("SELECT COUNT(*) AS n FROM v") == "SELECT COUNT(*) AS n FROM v"
    assert duck.describe() == pg.describe()


def test_rendering_is_cached_and_qualified(engines):
    _, pg = engines
    sql = "SELECT COUNT(*) AS n FROM v"
    rendered = pg.render(sql)
    assert rendered is pg.render(sql)
    assert f'"{pg.source.schema}"."v"' in rendered
    assert "ESCAPE ''" in pg.render("SELECT COUNT(*) AS n FROM v WHERE s LIKE 'a%'")


REFUSED = {  # constructs whose PostgreSQL meaning differs and that are not rendered
    "try_cast": "SELECT TRY_CAST(s AS INTEGER) AS r FROM v",
    "substring_negative_start": "SELECT substring(s, -2, 1) AS r FROM v",
    "modulo_of_double": "SELECT x % 2 AS r FROM v",
    "upper_of_non_ascii": "SELECT upper(s) AS r FROM v",
    "strftime": "SELECT strftime(day, '%Y') AS r FROM v",
    "date_diff_week": "SELECT date_diff('week', day, day2) AS r FROM v",
    "extract_millisecond": "SELECT EXTRACT(millisecond FROM day) AS r FROM v",
    "round_computed_digits": "SELECT ROUND(x, i) AS r FROM v",
    "round_double_to_digits": "SELECT ROUND(x, 2) AS r FROM v",
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_construct_without_a_faithful_rendering_is_refused(engines, name):
    duck, pg = engines
    duck.execute(REFUSED[name])  # DuckDB answers it ...
    with pytest.raises(NotSupportedError, match="cannot be evaluated exactly as DuckDB"):
        pg.execute(REFUSED[name])  # ... the PostgreSQL site refuses rather than differ


NOT_SELECT = [
    "DELETE FROM v",
    "INSERT INTO v (id) VALUES (99)",
    "UPDATE v SET i = 1",
    "DROP TABLE v",
    "CREATE TABLE w AS SELECT 1 AS a",
    "TRUNCATE v",
    "SELECT 1 AS a; DELETE FROM v",
    "WITH d AS (DELETE FROM v RETURNING id) SELECT COUNT(*) AS n FROM d",
    "SELECT * INTO w FROM v",
    "COPY v TO '/tmp/fedquery-pwned.csv'",
    "SET statement_timeout = 0",
    "BEGIN",
    "COMMIT",
    "VACUUM",
    "ANALYZE v",
    "GRANT SELECT ON v TO PUBLIC",
    "CALL p()",
    "ATTACH 'x.duckdb' AS x",
    "PRAGMA version",
    "SELECT COUNT(*) AS n FROM v FOR UPDATE",
]


@pytest.mark.parametrize("sql", NOT_SELECT)
def test_a_fragment_that_is_not_one_select_never_reaches_the_database(engines, sql):
    _, pg = engines
    with pytest.raises(ProgrammingError, match="the site refuses"):
        pg.execute(sql)
    with pytest.raises(ProgrammingError, match="the site refuses"):
        pg.render(sql)


@pytest.mark.parametrize("sql", [
    "SELECT COUNT(*) AS n FROM pg_catalog.pg_authid",
    "SELECT COUNT(*) AS n FROM information_schema.tables",
    "SELECT set_config('default_transaction_read_only', 'off', false) AS r FROM v",
    "SELECT COUNT(*) AS n FROM v WHERE query_to_xml('SELECT 1', true, true, '') IS NOT NULL",
    "SELECT dblink_exec('dbname=test', 'DROP TABLE v') AS r FROM v",
    "SELECT pg_sleep(10) AS r FROM v",
    "SELECT nextval('s') AS r FROM v",
    "SELECT COUNT(*) AS n FROM other_table",
])
def test_fragment_reading_beyond_its_tables_or_calling_unknown_functions_is_refused(
        engines, sql):
    _, pg = engines
    with pytest.raises((ProgrammingError, NotSupportedError)):
        pg.execute(sql)


def test_the_rendered_sql_is_checked_again():
    from fedquery.site.engines.pg_render import check_rendered

    check_rendered('SELECT COUNT(*) FROM "s"."v" AS "v"', set(), {"v"}, "s")
    with pytest.raises(ProgrammingError, match="not one of the connector's tables"):
        check_rendered('SELECT COUNT(*) FROM "other"."v" AS "v"', set(), {"v"}, "s")
    with pytest.raises(ProgrammingError, match="calls"):
        check_rendered('SELECT lo_import(\'/etc/passwd\') FROM "s"."v"', set(), {"v"}, "s")
    with pytest.raises(ProgrammingError, match="DELETE"):
        parse_single_select('WITH d AS (DELETE FROM "s"."v" RETURNING 1) SELECT 1',
                            "postgres")
