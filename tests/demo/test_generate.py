"""The synthetic hospital generator: determinism, schema, value domains, per-site shape, files."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from fedquery.demo.codelists import (
    ATC_COMMON_CODES,
    ATC_LEVEL1,
    ICD10_CHAPTERS,
    ICD10_COMMON_CODES,
    LAB_TESTS,
    NAMED_DOMAINS,
    REGIONS,
    SEX,
    SMOKER,
    icd10_chapter_of,
)
from fedquery.demo.generate import (
    SITE_NAMES,
    TABLE_SCHEMAS,
    generate_federation_tables,
    generate_site_tables,
    site_names,
    site_regions,
    write_federation,
    write_site_duckdb,
)

# The contract other modules write SQL against, spelled out independently of TABLE_SCHEMAS.
EXPECTED_COLUMNS = {
    "patients": [("patient_id", "VARCHAR"), ("sex", "VARCHAR"), ("birth_year", "INTEGER"),
                 ("age", "INTEGER"), ("region", "VARCHAR"), ("bmi", "DOUBLE"),
                 ("smoker", "VARCHAR"), ("postcode", "VARCHAR")],
    "diagnoses": [("patient_id", "VARCHAR"), ("icd10_code", "VARCHAR"),
                  ("icd10_chapter", "VARCHAR"), ("diagnosis_date", "DATE")],
    "labs": [("patient_id", "VARCHAR"), ("test_name", "VARCHAR"), ("value", "DOUBLE"),
             ("unit", "VARCHAR"), ("lab_date", "DATE")],
    "treatments": [("patient_id", "VARCHAR"), ("atc_code", "VARCHAR"), ("atc_group", "VARCHAR"),
                   ("start_date", "DATE"), ("end_date", "DATE")],
    "outcomes": [("patient_id", "VARCHAR"), ("followup_days", "INTEGER"), ("death", "INTEGER")],
}
ARROW_TYPES = {"VARCHAR": pa.string(), "INTEGER": pa.int32(), "DOUBLE": pa.float64(),
               "DATE": pa.date32()}
NULLABLE = {("patients", "bmi"), ("patients", "smoker"), ("labs", "value"),
            ("treatments", "end_date")}
SIZES = (1500, 800, 1200)


@pytest.fixture(scope="module")
def federation() -> dict[str, dict[str, pa.Table]]:
    return generate_federation_tables(3, SIZES, seed=7)


def column(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist()


def scalar(con: duckdb.DuckDBPyConnection, sql: str):
    """The single value of a one-row, one-column query (fetched completely)."""
    (row,) = con.execute(sql).fetchall()
    return row[0]


# ---------------------------------------------------------------------------- determinism

def test_same_inputs_give_equal_tables():
    first = generate_site_tables("hospital_b", 300, seed=3, site_index=1)
    second = generate_site_tables("hospital_b", 300, seed=3, site_index=1)
    assert all(first[name].equals(second[name]) for name in EXPECTED_COLUMNS)


@pytest.mark.parametrize("change", [{"seed": 4}, {"site_index": 5}])
def test_other_seed_or_site_index_gives_other_data(change):
    base = generate_site_tables("hospital_b", 300, **{"seed": 3, "site_index": 1})
    other = generate_site_tables("hospital_b", 300, **{"seed": 3, "site_index": 1, **change})
    assert not base["patients"].equals(other["patients"])
    assert not base["diagnoses"].equals(other["diagnoses"])


def test_federation_sites_match_single_site_generation(federation):
    alone = generate_site_tables("hospital_c", SIZES[2], seed=7, site_index=2)
    assert all(federation["hospital_c"][name].equals(alone[name]) for name in alone)


# ---------------------------------------------------------------------------- schema

def test_arrow_schemas_are_the_contract(federation):
    for tables in federation.values():
        assert set(tables) == set(EXPECTED_COLUMNS)
        for name, expected in EXPECTED_COLUMNS.items():
            schema = tables[name].schema
            assert [(f.name, f.type) for f in schema] == [
                (col, ARROW_TYPES[sql_type]) for col, sql_type in expected]
            assert schema == TABLE_SCHEMAS[name]


def test_duckdb_file_has_all_tables_with_sql_types(tmp_path, federation):
    path = tmp_path / "hospital_a.duckdb"
    write_site_duckdb(path, federation["hospital_a"])
    with duckdb.connect(str(path), read_only=True) as con:
        tables = {row[0] for row in con.execute("SHOW TABLES").fetchall()}
        assert tables == set(EXPECTED_COLUMNS)
        for name, expected in EXPECTED_COLUMNS.items():
            described = [(row[0], row[1]) for row in con.execute(f"DESCRIBE {name}").fetchall()]
            assert described == expected
            count = scalar(con, f"SELECT COUNT(*) FROM {name}")
            assert count == federation["hospital_a"][name].num_rows
        stored = con.sql("SELECT * FROM labs").to_arrow_table()
    assert stored.equals(federation["hospital_a"]["labs"])


def test_zero_patients_give_empty_tables_with_the_schema():
    tables = generate_site_tables("hospital_a", 0)
    assert all(t.num_rows == 0 and t.schema == TABLE_SCHEMAS[n] for n, t in tables.items())


# ---------------------------------------------------------------------------- value domains

def test_patients_domains(federation):
    for index, (site, tables) in enumerate(federation.items()):
        patients = tables["patients"]
        ages = np.array(column(patients, "age"))
        assert set(column(patients, "sex")) <= set(SEX)
        assert ages.min() >= 0 and ages.max() <= 105
        assert (np.array(column(patients, "birth_year")) == 2025 - ages).all()
        assert set(column(patients, "region")) == set(site_regions(index))
        assert set(column(patients, "smoker")) - {None} == set(SMOKER)
        bmi = pc.drop_null(patients["bmi"]).to_numpy()
        assert bmi.min() >= 15 and bmi.max() <= 60
        assert np.allclose(bmi, np.round(bmi, 1))
        postcodes = column(patients, "postcode")
        assert all(len(code) in (4, 5) and code.isdigit() for code in postcodes)


def test_diagnoses_domains(federation):
    for tables in federation.values():
        diagnoses = tables["diagnoses"]
        pairs = set(zip(column(diagnoses, "icd10_code"), column(diagnoses, "icd10_chapter")))
        assert all(icd10_chapter_of(code) == chapter for code, chapter in pairs)
        dates = column(diagnoses, "diagnosis_date")
        assert min(dates) >= dt.date(2015, 1, 1) and max(dates) <= dt.date(2025, 12, 31)
        assert max(pc.value_counts(diagnoses["patient_id"]).field("counts").to_pylist()) <= 8


def test_labs_domains(federation):
    for tables in federation.values():
        labs = tables["labs"]
        for test, unit, value in zip(column(labs, "test_name"), column(labs, "unit"),
                                     column(labs, "value")):
            assert unit == LAB_TESTS[test].unit
            assert value is None or LAB_TESTS[test].low <= value <= LAB_TESTS[test].high
        assert max(pc.value_counts(labs["patient_id"]).field("counts").to_pylist()) <= 12


def test_treatments_domains(federation):
    for tables in federation.values():
        treatments = tables["treatments"]
        for code, group in zip(column(treatments, "atc_code"), column(treatments, "atc_group")):
            assert len(code) == 7 and code[0] == group
        for start, end in zip(column(treatments, "start_date"), column(treatments, "end_date")):
            assert end is None or start <= end <= dt.date(2025, 12, 31)
        assert max(pc.value_counts(treatments["patient_id"]).field("counts").to_pylist()) <= 6


def test_one_outcome_per_patient(federation):
    for tables in federation.values():
        outcomes = tables["outcomes"]
        assert column(outcomes, "patient_id") == column(tables["patients"], "patient_id")
        followup = np.array(column(outcomes, "followup_days"))
        assert followup.min() >= 1 and followup.max() <= 3650
        assert set(column(outcomes, "death")) == {0, 1}


def test_patient_ids_unique_across_sites_and_referenced(federation):
    all_ids = [pid for t in federation.values() for pid in column(t["patients"], "patient_id")]
    assert len(all_ids) == len(set(all_ids)) == sum(SIZES)
    for tables in federation.values():
        known = set(column(tables["patients"], "patient_id"))
        for name in ("diagnoses", "labs", "treatments"):
            assert set(column(tables[name], "patient_id")) <= known


def test_nulls_only_where_expected(federation):
    for tables in federation.values():
        for name, table in tables.items():
            for field in table.schema:
                nulls = table[field.name].null_count
                assert (nulls > 0) == ((name, field.name) in NULLABLE), (name, field.name)


# ---------------------------------------------------------------------------- clinical shape

def test_sites_differ_in_age_and_case_mix(federation):
    mean_age = {site: np.mean(column(t["patients"], "age")) for site, t in federation.items()}
    assert mean_age["hospital_a"] - mean_age["hospital_c"] > 20
    neoplasm_share = {site: np.mean(np.array(column(t["diagnoses"], "icd10_chapter")) == "II")
                      for site, t in federation.items()}
    assert neoplasm_share["hospital_a"] > 2 * neoplasm_share["hospital_c"]


def test_hba1c_is_higher_for_type_2_diabetes(federation):
    tables = federation["hospital_a"]
    query = """
        SELECT bool_or(d.icd10_code LIKE 'E11%') AS e11, avg(l.value) AS hba1c
        FROM labs l LEFT JOIN diagnoses d USING (patient_id)
        WHERE l.test_name = 'HbA1c' GROUP BY l.patient_id
    """
    with duckdb.connect() as con:
        for name, table in tables.items():
            con.register(name, table)
        means = dict(con.execute(f"SELECT e11, avg(hba1c) FROM ({query}) GROUP BY e11").fetchall())
    assert means[True] > means[False] + 10


# ---------------------------------------------------------------------------- sites and files

def test_site_names():
    assert SITE_NAMES == site_names(3) == ("hospital_a", "hospital_b", "hospital_c")
    assert site_names(28)[25:] == ("hospital_z", "hospital_aa", "hospital_ab")


def test_region_lists_overlap_partly_and_use_the_codelist():
    regions = [set(site_regions(index)) for index in range(4)]
    assert all(r <= set(REGIONS) for r in regions)
    assert regions[0] & regions[1] and regions[0] != regions[1]


def test_patients_per_site_must_match_the_number_of_sites():
    with pytest.raises(ValueError, match="3 sites"):
        generate_federation_tables(3, [10, 10])


def test_write_federation_writes_one_file_per_site(tmp_path):
    paths = write_federation(tmp_path, 2, [40, 60], seed=1)
    assert paths == {site: tmp_path / "data" / f"{site}.duckdb" for site in site_names(2)}
    for site, size in zip(paths, (40, 60)):
        with duckdb.connect(str(paths[site]), read_only=True) as con:
            assert scalar(con, "SELECT COUNT(*) FROM patients") == size
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "hospital_a.duckdb", "hospital_b.duckdb"]


def test_write_replaces_file_and_failure_keeps_old_one(tmp_path):
    path = tmp_path / "site.duckdb"
    write_site_duckdb(path, generate_site_tables("hospital_a", 30))
    write_site_duckdb(path, generate_site_tables("hospital_a", 50))
    broken = {"patients": pa.table({"x": [1]}), "labs": object()}
    with pytest.raises(duckdb.Error):  # fails after "patients" was written to the staged file
        write_site_duckdb(path, broken)
    assert [p.name for p in tmp_path.iterdir()] == ["site.duckdb"]
    with duckdb.connect(str(path), read_only=True) as con:
        assert scalar(con, "SELECT COUNT(*) FROM patients") == 50


# ---------------------------------------------------------------------------- code lists

def test_icd10_code_lists_fit_their_chapters():
    assert [c.numeral for c in ICD10_CHAPTERS] == list(NAMED_DOMAINS["icd10_chapter"])
    assert len(ICD10_CHAPTERS) == 22 and set(ICD10_COMMON_CODES) == set(NAMED_DOMAINS[
        "icd10_chapter"])
    for numeral, codes in ICD10_COMMON_CODES.items():
        assert 5 <= len(codes) <= 15 and len(set(codes)) == len(codes)
        assert {icd10_chapter_of(code) for code in codes} == {numeral}


def test_atc_code_lists_fit_their_groups():
    assert [g.letter for g in ATC_LEVEL1] == list("ABCDGHJLMNPRSV")
    assert set(ATC_COMMON_CODES) == set(NAMED_DOMAINS["atc_group"])
    for letter, codes in ATC_COMMON_CODES.items():
        assert all(len(code) == 7 and code[0] == letter for code in codes)
        assert len(set(codes)) == len(codes)


def test_icd10_chapter_of_rejects_unknown_codes():
    with pytest.raises(ValueError):
        icd10_chapter_of("U99")
