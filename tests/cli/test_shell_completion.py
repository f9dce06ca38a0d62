"""Completion in the SQL shell is a pure function: text + cursor + released catalog →
suggestions.  These pin what a user is offered in each context."""

from __future__ import annotations

import pytest

from fedquery.cli.shell.commands import COMMANDS, completion_spec
from fedquery.cli.shell.completion import complete, sources, split_statements

CATALOG = {
    "patients": {"patient_id": "VARCHAR", "sex": "VARCHAR", "age": "INTEGER",
                 "region": "VARCHAR", "bmi": "DOUBLE"},
    "labs": {"patient_id": "VARCHAR", "test_name": "VARCHAR", "value": "DOUBLE"},
    "diagnoses": {"patient_id": "VARCHAR", "icd10_chapter": "VARCHAR"},
}


def texts(text, cursor=None, **kw):
    return [s.text for s in complete(text, CATALOG, cursor=cursor, **kw)]


def kinds(text, cursor=None, **kw):
    return {s.text: s.kind for s in complete(text, CATALOG, cursor=cursor, **kw)}


def test_statement_start_offers_statement_keywords():
    assert texts("") == ["SELECT", "WITH", "SET", "RESET"]
    assert texts("se") == ["select", "set"]
    assert texts("SE") == ["SELECT", "SET"]


def test_tables_after_from_and_join_and_comma():
    assert texts("SELECT COUNT(*) FROM ") == ["diagnoses", "labs", "patients"]
    assert texts("SELECT COUNT(*) FROM pa") == ["patients"]
    assert texts("SELECT 1 FROM patients p JOIN l") == ["labs"]
    assert texts("SELECT 1 FROM patients, d") == ["diagnoses"]


def test_columns_come_from_the_tables_in_from_only():
    offered = kinds("SELECT  FROM labs", cursor=7)
    columns = [t for t, k in offered.items() if k == "column"]
    assert columns == ["patient_id", "test_name", "value"]
    assert "sex" not in offered


def test_columns_of_every_table_before_from_is_written():
    columns = [t for t, k in kinds("SELECT ").items() if k == "column"]
    assert set(columns) == {"patient_id", "sex", "age", "region", "bmi", "test_name", "value",
                            "icd10_chapter"}


@pytest.mark.parametrize("text", [
    "SELECT COUNT(*) FROM patients WHERE re",
    "SELECT COUNT(*) FROM patients GROUP BY re",
    "SELECT COUNT(*) FROM patients GROUP BY sex HAVING re",
    "SELECT COUNT(*) FROM patients ORDER BY re",
    "SELECT re",
    "SELECT sex, re",
    "SELECT AVG(re",
])
def test_column_in_every_expression_clause(text):
    assert texts(text)[0] == "region"


def test_alias_dot_offers_that_tables_columns():
    text = "SELECT COUNT(*) FROM patients p JOIN labs l ON l.patient_id = p."
    assert texts(text) == sorted(CATALOG["patients"])
    assert texts("SELECT l.v FROM labs AS l", cursor=10) == ["value"]
    assert texts("SELECT labs.te FROM labs", cursor=14) == ["test_name"]


def test_column_suggestion_carries_its_type():
    [bmi] = [s for s in complete("SELECT bm FROM patients", CATALOG, cursor=9)]
    assert (bmi.text, bmi.kind, bmi.meta, bmi.start) == ("bmi", "column", "DOUBLE", -2)


def test_functions_are_the_supported_aggregates_and_scalars():
    offered = kinds("SELECT st")
    assert offered["stddev_samp"] == "function"
    assert "median" not in texts("SELECT me")  # MEDIAN is refused: never offered
    assert texts("SELECT COUNT(*) FROM labs WHERE value > 1 an") == ["and"]


def test_keywords_after_a_table():
    assert texts("SELECT COUNT(*) FROM patients ") == [
        "AS", "JOIN", "LEFT JOIN", "INNER JOIN", "USING", "ON", "WHERE", "GROUP BY",
        "GROUP BY ALL", "HAVING", "ORDER BY", "LIMIT"]
    assert texts("SELECT COUNT(*) FROM patients wh") == ["where"]
    assert texts("SELECT COUNT(*) FROM patients p jo") == ["join"]


def test_strings_and_comments_do_not_confuse_the_context():
    assert texts("SELECT COUNT(*) FROM patients WHERE sex = 'from x' AND reg") == [
        "region", "regexp_matches"]
    assert texts("SELECT COUNT(*) -- from labs\nFROM patients WHERE bm") == ["bmi"]


def test_only_the_statement_under_the_cursor_counts():
    text = "SELECT COUNT(*) FROM labs; SELECT COUNT(*) FROM patients WHERE te"
    assert texts(text) == []  # test_name belongs to labs, not patients
    # no FROM in the statement under the cursor: every table's columns, not just labs'
    assert "sex" in texts("SELECT s; SELECT 1 FROM labs", cursor=8)


def test_backslash_commands_and_their_arguments():
    spec = completion_spec()
    assert texts("\\", commands=spec) == sorted(COMMANDS)
    assert texts("\\bu", commands=spec) == ["\\budget"]
    assert texts("\\d pa", commands=spec) == ["patients"]
    assert texts("\\format c", commands=spec) == ["csv"]
    assert texts("\\policy hospital_", commands=spec, sites=["hospital_a", "hospital_b"]) == [
        "hospital_a", "hospital_b"]
    assert texts("\\explain SELECT COUNT(*) FROM labs WHERE va", commands=spec) == [
        "value", "variance", "var_pop", "var_samp"]
    assert texts("\\timing o", commands=spec) == ["on", "off"]


def test_sources_resolve_aliases_and_schemas():
    assert sources("SELECT 1 FROM main.patients AS p LEFT JOIN labs l USING (patient_id) "
                   "JOIN diagnoses WHERE 1") == {"p": "patients", "patients": "patients",
                                            "l": "labs", "labs": "labs",
                                            "diagnoses": "diagnoses"}


def test_split_statements_respects_strings_and_comments():
    assert split_statements("SELECT 1;\nSELECT 'a;b' -- c;d\n; ;\n-- only a comment") == [
        "SELECT 1", "SELECT 'a;b' -- c;d"]
