"""The data steward's command line: ``fedquery policy schema|check|explain|test`` and
``fedquery site audit verify``, driven through click's CliRunner."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from fedquery.cli.main import main
from fedquery.demo.generate import write_federation
from fedquery.site.audit import AuditLog

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
HOSPITAL_A = POLICIES / "hospital_a.yaml"
ALL_POLICIES = sorted(POLICIES.glob("*.yaml")) + sorted((POLICIES / "examples").glob("*.yaml"))


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


# -- policy schema -------------------------------------------------------------------------------

def test_schema_command_prints_the_exported_schema_exactly():
    result = run("policy", "schema")
    assert result.exit_code == 0, result.output
    assert result.stdout == (POLICIES / "policy.schema.json").read_text(encoding="utf-8")
    json.loads(result.stdout)


def test_schema_command_writes_a_file(tmp_path):
    out = tmp_path / "policy.schema.json"
    result = run("policy", "schema", "-o", out)
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8") == (POLICIES / "policy.schema.json").read_text(
        encoding="utf-8")
    assert f"wrote {out}" in result.stderr


# -- policy check --------------------------------------------------------------------------------

def test_check_passes_every_shipped_policy_and_example():
    assert len(ALL_POLICIES) >= 6
    result = run("policy", "check", *ALL_POLICIES)
    assert result.exit_code == 0, result.output
    for path in ALL_POLICIES:
        assert f"ok {path} (" in result.output
    assert "FAIL" not in result.output
    # the synthetic-data example is valid but its risks are called out
    assert "W-MIN-CELL" in result.output and "W-DOMINANCE" in result.output


TYPO_POLICY = """\
version: 1
site: hospital_x
disclosure:
  min_cel_count: 10
aggregation: plain
tables:
  patients:
    privacy_unit: patient_id
    columns:
      sex: {domain: sex}
"""


def test_check_rejects_a_typo_with_its_position_and_a_suggestion(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text(TYPO_POLICY)
    result = run("policy", "check", path)
    assert result.exit_code == 1, result.output
    assert f"FAIL {path}" in result.output
    assert f"{path}:4:3: disclosure.min_cel_count: unknown key 'min_cel_count'" in result.output
    assert "did you mean 'min_cell_count'?" in result.output


def test_check_fails_when_any_file_fails(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text(TYPO_POLICY)
    result = run("policy", "check", HOSPITAL_A, path)
    assert result.exit_code == 1, result.output
    assert f"ok {HOSPITAL_A}" in result.output and f"FAIL {path}" in result.output


CONNECTOR = """\
version: 1
site: hospital_a
source:
  duckdb: {path: data/hospital_a.duckdb}
tables:
  patients:   {privacy_unit: patient_id}
  diagnoses:  {privacy_unit: patient_id}
  labs:       {privacy_unit: patient_id}
  treatments: {privacy_unit: patient_id}
  outcomes:   {privacy_unit: patient_id}
"""


@pytest.fixture(scope="module")
def demo_connector(tmp_path_factory) -> Path:
    """A connector for hospital_a over freshly generated demo data."""
    directory = tmp_path_factory.mktemp("federation")
    write_federation(directory, 3, 60, seed=3)
    connector = directory / "hospital_a.connector.yaml"
    connector.write_text(CONNECTOR)
    return connector


def test_check_against_the_demo_data_passes(demo_connector):
    result = run("policy", "check", "--connector", demo_connector, HOSPITAL_A)
    assert result.exit_code == 0, result.output
    assert f"ok {HOSPITAL_A} (cross-checked against {demo_connector})" in result.output


def test_check_against_the_data_names_a_column_the_data_lacks(demo_connector, tmp_path):
    path = tmp_path / "ghost.yaml"
    path.write_text("version: 1\nsite: hospital_a\ntables:\n  patients:\n"
                    "    privacy_unit: patient_id\n    columns:\n      sex: {domain: sex}\n"
                    "      blood_group: {domain: [A, B, AB, O]}\n")
    result = run("policy", "check", "--connector", demo_connector, path)
    assert result.exit_code == 1, result.output
    assert (f"error: {path}: tables.patients.columns.blood_group: table 'patients' has no "
            "column 'blood_group'") in result.output
    assert "columns.sex" not in result.output


# -- policy explain ------------------------------------------------------------------------------

def test_explain_an_allowed_query_per_site_and_for_the_federation():
    sql = "SELECT region, sex, COUNT(*) AS patients FROM patients GROUP BY region, sex"
    result = run("policy", "explain", "--policy", HOSPITAL_A, "--policy",
                 POLICIES / "hospital_b.yaml", sql)
    assert result.exit_code == 0, result.output
    assert "hospital_a: allowed." in result.output
    assert "hospital_b: allowed." in result.output
    assert ("cells with fewer than 11 patients (by their noisy count) are suppressed and "
            "flagged") in result.output
    # under noise: the epsilon cost and the expected precision, before anything runs
    assert "spends epsilon 0.5 per query here" in result.output
    assert "COUNT(*): ± " in result.output
    assert ("federation: 2 of 2 sites allow the query; the strictest rules apply: min cell 11, "
            "dominance (2, 80.0)") in result.output


def test_explain_a_refused_query_names_each_rule_with_its_hint():
    sql = ("SELECT age, postcode, COUNT(*) FROM patients "
           "WHERE patient_id = 'hospital_a:P0000001' GROUP BY age, postcode")
    result = run("policy", "explain", "--policy", HOSPITAL_A, sql)
    assert result.exit_code == 0, result.output
    assert "hospital_a: refused by 4 rule(s):" in result.output
    assert ("R-HIDDEN on patients.postcode: column patients.postcode is hidden — hint: hidden "
            "columns cannot be used in any way") in result.output
    assert ("R-IDENTIFIER on patients.patient_id: identifier patients.patient_id used in a "
            "filter position — hint: use the privacy unit only to join tables or in "
            "COUNT(DISTINCT ...)") in result.output
    assert "R-USE on patients.age" in result.output
    assert ("R-QI-GROUP on patients.age: quasi-identifier patients.age has no public domain to "
            "group by — hint: group by a coarser column with a public domain (e.g. an age "
            "band)") in result.output
    assert "hospital_a:P0000001" not in result.output  # a refusal never echoes data values


def test_explain_unsupported_sql_says_so():
    result = run("policy", "explain", "--policy", HOSPITAL_A, "SELECT bmi FROM patients")
    assert result.exit_code == 0, result.output
    assert "hospital_a: refused (NOT-SUPPORTED): queries must aggregate" in result.output


def test_explain_does_not_need_the_analysts_secrets(monkeypatch):
    monkeypatch.delenv("REGISTRY_ALICE_TOKEN_SHA256", raising=False)
    result = run("policy", "explain", "--policy",
                 POLICIES / "examples" / "cancer_registry_secure.yaml",
                 "SELECT stage, COUNT(*) FROM tumours GROUP BY stage")
    assert result.exit_code == 0, result.output
    assert "cancer_registry: allowed." in result.output


# -- policy test ---------------------------------------------------------------------------------

def test_the_shipped_cases_pass():
    cases = POLICIES / "tests" / "demo_hospitals.cases.yaml"
    result = run("policy", "test", cases)
    assert result.exit_code == 0, result.output
    assert "FAIL" not in result.output
    assert re.search(r"^(\d+) passed, 0 failed$", result.output, re.M)
    assert f"ok   {cases}: hospital_b: postcode is hidden (expected R-HIDDEN, got refused by " \
           "R-HIDDEN)" in result.output


def _cases(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "steward.cases.yaml"
    path.write_text(f"version: 1\npolicy: {HOSPITAL_A}\n{body}")
    return path


def test_a_wrong_expectation_fails_and_names_the_case(tmp_path):
    path = _cases(tmp_path, """\
cases:
  - name: counts by sex
    sql: SELECT sex, COUNT(*) FROM patients GROUP BY sex
    expect: allow
  - name: grouping by exact age is fine
    sql: SELECT age, COUNT(*) FROM patients GROUP BY age
    expect: allow
  - name: postcode refused for the wrong reason
    sql: SELECT postcode, COUNT(*) FROM patients GROUP BY postcode
    expect: {refuse: R-USE}
""")
    result = run("policy", "test", path)
    assert result.exit_code == 1, result.output
    assert f"ok   {path}: counts by sex (expected allow, got allowed)" in result.output
    assert (f"FAIL {path}: grouping by exact age is fine (expected allow, got refused by "
            "R-USE, R-QI-GROUP)") in result.output
    assert (f"FAIL {path}: postcode refused for the wrong reason (expected R-USE, got refused "
            "by R-HIDDEN)") in result.output
    assert "1 passed, 2 failed" in result.output


@pytest.mark.parametrize("body, message", [
    ("cases:\n  - name: x\n    sql: SELECT COUNT(*) FROM patients\n    expect: refuse\n",
     "cases[0]: expect must be 'allow' or {refuse: RULE-ID}, got 'refuse'"),
    ("cases:\n  - name: no sql\n    expect: allow\n",
     "cases[0]: each case needs name, sql and expect"),
    ("cases: {name: not a list}\n", "expected {version: 1, policy: FILE"),
    ("cases: [\n", "cannot read test cases"),
])
def test_a_malformed_cases_file_exits_2_with_a_clear_message(tmp_path, body, message):
    path = _cases(tmp_path, body)
    result = run("policy", "test", path)
    assert result.exit_code == 2, result.output
    assert f"error: {path}" in result.stderr
    assert message in result.stderr


def test_a_cases_file_naming_a_missing_policy_exits_2(tmp_path):
    path = tmp_path / "cases.yaml"
    path.write_text("version: 1\npolicy: nowhere.yaml\ncases:\n  - {sql: SELECT 1, "
                    "expect: allow}\n")
    result = run("policy", "test", path)
    assert result.exit_code == 2, result.output
    assert "nowhere.yaml: cannot read the policy file" in result.stderr


# -- site audit verify ---------------------------------------------------------------------------

def _audit_log(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    for query_id, decision in (("q1", "released"), ("q2", "refused"), ("q3", "released")):
        log.append({"event": "query", "site": "hospital_a", "analyst": "alice",
                    "query_id": query_id, "decision": decision, "rules": []})
    return path


def test_audit_verify_accepts_an_intact_log(tmp_path):
    path = _audit_log(tmp_path)
    result = run("site", "audit", "verify", path)
    assert result.exit_code == 0, result.output
    assert f"OK: {path}: 3 records, hash chain intact; head seq 2 " in result.output


def test_audit_verify_names_the_tampered_line(tmp_path):
    path = _audit_log(tmp_path)
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace('"decision":"refused"', '"decision":"released"')
    path.write_text("".join(lines))
    result = run("site", "audit", "verify", path)
    assert result.exit_code == 1, result.output
    assert f"FAILED: {path}: 1 problem(s), 3 records read" in result.output
    assert "line 2: hash mismatch (record modified)" in result.output


def test_audit_verify_detects_a_truncated_tail_with_an_exported_head(tmp_path):
    path = _audit_log(tmp_path)
    head = json.loads(path.read_text().splitlines()[-1])["hash"]
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:2]))
    assert run("site", "audit", "verify", path).exit_code == 0  # a shorter chain is a chain
    result = run("site", "audit", "verify", "--expect-head", head, path)
    assert result.exit_code == 1, result.output
    assert f"expected head {head} is not in the log" in result.output
