"""Queries a federation must refuse, each with the right error class and a message naming why.

The equivalence suite proves what the engine answers; this module pins what it must not try to
answer (valid SQL that cannot be decomposed exactly into per-site partials, bad SQL, unknown
names, statements other than SELECT).  Message fragments are matched case-insensitively and name
the construct as an analyst would look for it.
"""

from __future__ import annotations

import re

import pytest

from fedquery.errors import (
    DatabaseError,
    NotSupportedError,
    ProgrammingError,
    SqlParseError,
)


@pytest.fixture()
def assert_refused(fed_conn):
    """``assert_refused(sql, error_class, fragment)``: assert the federation refuses ``sql``."""

    def check(sql: str, error: type[Exception] | tuple[type[Exception], ...], fragment: str):
        cur = fed_conn.cursor()
        with pytest.raises(error) as info:
            cur.execute(sql)
            cur.fetchall()  # an engine that answers lazily must still refuse
        message = str(info.value)
        assert re.search(fragment, message, re.IGNORECASE), (
            f"refusal message does not mention {fragment!r}: {message!r}")
        return info.value

    return check


# ---------------------------------------------------------------------------------------------
# Aggregates without an exact decomposition


@pytest.mark.parametrize("sql, fragment", [
    ("SELECT MEDIAN(age) AS median_age FROM patients", r"median"),
    ("SELECT sex, MEDIAN(bmi) FROM patients GROUP BY sex", r"median"),
    ("SELECT QUANTILE_CONT(bmi, 0.9) AS p90 FROM patients", r"quantile"),
    ("SELECT test_name, QUANTILE_DISC(value, 0.5) FROM labs GROUP BY test_name", r"quantile"),
    ("SELECT PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY bmi) FROM patients", r"percentile"),
    ("SELECT PERCENTILE_DISC(0.25) WITHIN GROUP (ORDER BY age) FROM patients", r"percentile"),
], ids=["median", "median_grouped", "quantile_cont", "quantile_disc", "percentile_cont",
        "percentile_disc"])
def test_order_statistics_refused(assert_refused, sql, fragment):
    assert_refused(sql, NotSupportedError, fragment)


@pytest.mark.parametrize("sql", [
    "SELECT COUNT(DISTINCT region) AS n_regions FROM patients",
    "SELECT sex, COUNT(DISTINCT smoker) FROM patients GROUP BY sex",
    "SELECT COUNT(DISTINCT d.icd10_code) FROM patients p JOIN diagnoses d USING (patient_id)",
], ids=["region", "grouped_smoker", "joined_icd10_code"])
def test_count_distinct_of_non_unit_column_refused(assert_refused, sql):
    assert_refused(sql, NotSupportedError, r"distinct")


@pytest.mark.parametrize("sql", [
    "SELECT SUM(DISTINCT bmi) FROM patients",
    "SELECT sex, AVG(DISTINCT age) FROM patients GROUP BY sex",
], ids=["sum_distinct", "avg_distinct"])
def test_distinct_inside_other_aggregates_refused(assert_refused, sql):
    assert_refused(sql, NotSupportedError, r"distinct")


@pytest.mark.parametrize("sql", [
    "SELECT sex, COUNT(*) OVER () AS n_total FROM patients",
    "SELECT ROW_NUMBER() OVER (ORDER BY age) AS rn, age FROM patients",
    "SELECT sex, COUNT(*) AS n, SUM(COUNT(*)) OVER () AS total FROM patients GROUP BY sex",
    "SELECT region, AVG(bmi) OVER (PARTITION BY sex) FROM patients",
], ids=["count_over", "row_number", "window_over_aggregate", "avg_over_partition"])
def test_window_functions_refused(assert_refused, sql):
    assert_refused(sql, NotSupportedError, r"window")


@pytest.mark.parametrize("sql", [
    "SELECT AVG(n) FROM (SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex)",
    "WITH per_region AS (SELECT region, AVG(bmi) AS mean_bmi FROM patients GROUP BY region) "
    "SELECT MAX(mean_bmi) FROM per_region",
    "SELECT COUNT(*) FROM (SELECT icd10_code FROM diagnoses GROUP BY icd10_code HAVING COUNT(*) > 5)",
], ids=["from_subquery", "cte", "count_of_groups"])
def test_aggregate_over_cross_site_aggregate_refused(assert_refused, sql):
    assert_refused(sql, NotSupportedError, r"(nested|subquery|cte)[\s\S]*aggregat|aggregat[\s\S]*(nested|subquery|cte)")


@pytest.mark.parametrize("sql", [
    "SELECT COUNT(*) FROM patients WHERE bmi > (SELECT AVG(bmi) FROM patients)",
    "SELECT sex, AVG(age) FROM patients WHERE age > (SELECT MIN(age) FROM patients) GROUP BY sex",
], ids=["avg_in_where", "min_in_where"])
def test_scalar_subquery_with_aggregate_refused(assert_refused, sql):
    assert_refused(sql, NotSupportedError, r"subquery")


@pytest.mark.parametrize("sql", [
    "SELECT age FROM patients",
    "SELECT * FROM patients",
    "SELECT patient_id, bmi FROM patients WHERE age > 90 ORDER BY bmi LIMIT 10",
    "SELECT p.sex, d.icd10_code FROM patients p JOIN diagnoses d USING (patient_id)",
], ids=["one_column", "star", "filtered_rows", "joined_rows"])
def test_row_level_queries_refused(assert_refused, sql):
    assert_refused(sql, NotSupportedError, r"aggregat")


@pytest.mark.parametrize("sql", [
    "SELECT COUNT(*) FROM patients UNION SELECT COUNT(*) FROM labs",
    "SELECT sex, COUNT(*) FROM patients GROUP BY sex UNION ALL "
    "SELECT sex, COUNT(*) FROM patients WHERE age > 50 GROUP BY sex",
], ids=["union", "union_all"])
def test_union_of_aggregate_queries_refused(assert_refused, sql):
    assert_refused(sql, NotSupportedError, r"union")


# ---------------------------------------------------------------------------------------------
# Bad SQL and unknown names


@pytest.mark.parametrize("sql, line, column", [
    ("SELECT sex, COUNT(*)\nFROM patients WHERE age > GROUP BY sex", 2, 27),
    ("SELECT COUNT(*)\nFROM patients WHERE smoker = 'never", 2, 30),
    ("SELECT sex, COUNT(*)\nFROM patients GROUP sex", 2, None),
    ("SELECT sex, COUNT(*)\nFROM patients GROUP BY sex HAVING", 2, None),
], ids=["missing_operand", "unterminated_string", "group_without_by", "empty_having"])
def test_syntax_error_has_position(assert_refused, sql, line, column):
    err = assert_refused(sql, SqlParseError, r"syntax")
    assert err.line == line, f"line {err.line!r}, expected {line}: {err}"
    assert isinstance(err.column, int), f"column not set: {err}"
    if column is not None:
        assert err.column == column, f"column {err.column!r}, expected {column}: {err}"
    else:
        assert 1 <= err.column <= len(sql.splitlines()[line - 1]) + 1


def test_syntax_error_on_first_line(assert_refused):
    err = assert_refused("SELEC COUNT(*) FROM patients", SqlParseError, r"syntax")
    assert err.line == 1
    assert isinstance(err.column, int)


@pytest.mark.parametrize("sql", [
    "SELECT COUNT(*) FROM patientz",
    "SELECT p.sex, COUNT(*) FROM patients p JOIN patientz z ON z.patient_id = p.patient_id "
    "GROUP BY p.sex",
], ids=["from", "join"])
def test_unknown_table(assert_refused, sql):
    assert_refused(sql, ProgrammingError, r"patientz")


@pytest.mark.parametrize("sql, column", [
    ("SELECT AVG(bmii) FROM patients", "bmii"),
    ("SELECT COUNT(*) FROM patients WHERE agee > 40", "agee"),
    ("SELECT regio, COUNT(*) FROM patients GROUP BY regio", "regio"),
    ("SELECT p.sex, AVG(l.valu) FROM patients p JOIN labs l USING (patient_id) GROUP BY p.sex",
     "valu"),
], ids=["in_aggregate", "in_where", "in_group_by", "qualified_in_join"])
def test_unknown_column(assert_refused, sql, column):
    assert_refused(sql, ProgrammingError, re.escape(column))


# ---------------------------------------------------------------------------------------------
# Statements other than SELECT: refused, and the data are untouched


@pytest.mark.parametrize("sql", [
    "INSERT INTO patients (patient_id, sex, age) VALUES ('X1', 'F', 40)",
    "CREATE TABLE copy_of_patients AS SELECT * FROM patients",
    "DROP TABLE patients",
    "UPDATE patients SET age = age + 1",
    "DELETE FROM labs WHERE value IS NULL",
], ids=["insert", "create", "drop", "update", "delete"])
def test_non_select_statements_refused(assert_refused, fed_conn, pooled, run_federated, sql):
    assert_refused(sql, (NotSupportedError, ProgrammingError), r"only SELECT")
    _, rows = run_federated(fed_conn, "SELECT COUNT(*) AS n FROM patients")
    _, labs = run_federated(fed_conn, "SELECT COUNT(*) AS n FROM labs")
    assert rows == pooled.execute("SELECT COUNT(*) FROM patients").fetchall()
    assert labs == pooled.execute("SELECT COUNT(*) FROM labs").fetchall()


def test_several_statements_refused(assert_refused, fed_conn, pooled, run_federated):
    assert_refused("SELECT COUNT(*) FROM patients; DROP TABLE patients",
           (NotSupportedError, ProgrammingError), r"statement")
    _, rows = run_federated(fed_conn, "SELECT COUNT(*) AS n FROM patients")
    assert rows == pooled.execute("SELECT COUNT(*) FROM patients").fetchall()


def test_refusals_are_database_errors():
    """PEP 249: every refusal above is catchable as DatabaseError."""
    for cls in (NotSupportedError, ProgrammingError, SqlParseError):
        assert issubclass(cls, DatabaseError)
