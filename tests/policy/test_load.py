"""The policy language: loading, error messages, cross-field checks, the shipped schema."""

from __future__ import annotations

import hashlib
import json
import re
import textwrap
from pathlib import Path

import jsonschema
import pytest

from fedquery.errors import ConfigError, InterfaceError
from fedquery.policy.decide import strictest
from fedquery.policy.domains import LAB_TESTS, NAMED_DOMAINS
from fedquery.policy.load import load_policy, schema_text
from fedquery.policy.model import (
    AGGREGATES,
    AGGREGATION_MODES,
    BUILTIN,
    MECHANISMS,
    OPEN,
    ROLES,
    STRICT_DEFAULT,
    USES,
    ColumnPolicy,
    Disclosure,
    Noise,
    resolve_policy,
)

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
SHIPPED = sorted(POLICIES.glob("*.yaml")) + sorted((POLICIES / "examples").glob("*.yaml"))
HEX = "ab" * 32

MINIMAL = """\
version: 1
site: hospital_a
tables:
  patients:
    privacy_unit: patient_id
    columns:
      age: {bounds: [0, 110]}
"""


def write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def failure(tmp_path: Path, text: str, **kwargs) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_policy(path, **kwargs)
    return caught.value


def set_env_tokens(monkeypatch, path: Path) -> None:
    """Give every ``{$env: NAME}`` of a shipped policy a (distinct) sha256 hex digest."""
    for name in re.findall(r"\$env: *([A-Za-z_][A-Za-z0-9_]*)", path.read_text("utf-8")):
        monkeypatch.setenv(name, hashlib.sha256(name.encode()).hexdigest())


# -- the shipped policies ------------------------------------------------------------------------

@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(POLICIES)))
def test_shipped_policies_load(path, monkeypatch):
    set_env_tokens(monkeypatch, path)
    policy = load_policy(path)
    assert policy.site == policy.name
    assert policy.source == str(path)
    assert policy.tables, "a shipped policy should open at least one table"
    assert len(policy.content_hash) == 64


def test_shipped_policies_point_editors_at_the_schema():
    for path in SHIPPED:
        first = path.read_text("utf-8").splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path
        target = (path.parent / first.split("$schema=", 1)[1]).resolve()
        assert target == POLICIES / "policy.schema.json", path


def test_demo_policy_content():
    policy = load_policy(POLICIES / "hospital_a.yaml", site="hospital_a")
    assert policy.disclosure == Disclosure(min_cell_count=10, dominance=(2, 85.0), min_sites=1,
                                           max_groups=200)
    assert policy.noise == Noise(mechanism="laplace", max_epsilon_per_query=1.0, delta=1e-7,
                                 budget_epsilon=20.0)
    assert policy.aggregation == "plain"
    demo = policy.analysts["demo"]
    assert demo.token_sha256 == hashlib.sha256(b"demo-token-not-secret").hexdigest()
    assert demo.roles == ("analyst",)
    assert policy.column("patients", "sex") == ColumnPolicy(domain=("F", "M"), domain_name="sex")
    assert policy.column("patients", "postcode").role == "hidden"
    assert policy.column("patients", "patient_id").role == "identifier"
    assert policy.column("patients", "age").bounds == (0.0, 110.0)
    assert policy.column("patients", "age").uses == {"filter", "aggregate"}
    assert policy.column("diagnoses", "icd10_chapter").domain == NAMED_DOMAINS["icd10_chapter"]
    assert policy.column("diagnoses", "icd10_code").uses == {"filter"}
    assert policy.column("labs", "test_name").domain_name == "lab_test"
    assert policy.column("patients", "unknown_column") is None
    assert policy.table("unknown_table") is None


def test_demo_policies_cover_exactly_the_demo_tables():
    """Fail closed needs every demo column listed (else it is unqueryable) and nothing more."""
    from fedquery.demo.generate import TABLE_SCHEMAS

    for site in ("hospital_a", "hospital_b", "hospital_c"):
        policy = load_policy(POLICIES / f"{site}.yaml", site=site)
        assert set(policy.tables) == set(TABLE_SCHEMAS)
        for table, schema in TABLE_SCHEMAS.items():
            assert set(policy.tables[table].columns) == set(schema.names), (site, table)
            assert policy.tables[table].privacy_unit == "patient_id"
        units = {test.unit for test in LAB_TESTS.values()}
        assert set(policy.column("labs", "unit").domain) == units  # same code points, too


def test_strictest_demo_site_wins():
    reqs = [load_policy(POLICIES / f"hospital_{s}.yaml").requirements() for s in "abc"]
    combined = strictest(reqs)
    assert combined.min_cell_count == 11  # hospital_b
    assert combined.dominance == (2, 80.0)  # hospital_b
    assert combined.epsilon == 0.5  # hospital_b
    assert combined.max_groups == 100  # hospital_c


# -- secrets -------------------------------------------------------------------------------------

ENV_POLICY = MINIMAL + "analysts:\n  alice: {token_sha256: {$env: FQ_TEST_ALICE_SHA256}}\n"


def test_env_secret_is_resolved(tmp_path, monkeypatch):
    monkeypatch.setenv("FQ_TEST_ALICE_SHA256", HEX)
    policy = load_policy(write(tmp_path, ENV_POLICY))
    assert policy.analysts["alice"].token_sha256 == HEX


def test_unset_env_secret_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("FQ_TEST_ALICE_SHA256", raising=False)
    error = failure(tmp_path, ENV_POLICY)
    assert error.key == "analysts.alice.token_sha256"
    assert "policy.yaml:9:" in str(error)
    assert "environment variable FQ_TEST_ALICE_SHA256 is not set" in str(error)


def test_env_secret_that_is_not_a_hash_is_refused_without_showing_it(tmp_path, monkeypatch):
    monkeypatch.setenv("FQ_TEST_ALICE_SHA256", "the-clear-token")
    error = failure(tmp_path, ENV_POLICY)
    assert "FQ_TEST_ALICE_SHA256 does not hold a sha256 hex digest" in str(error)
    assert "the-clear-token" not in str(error)


def test_clear_token_is_refused_without_showing_it(tmp_path):
    error = failure(tmp_path, MINIMAL + "analysts:\n  alice: {token_sha256: my-clear-token}\n")
    assert "analysts.alice.token_sha256: the value does not match" in str(error)
    assert "my-clear-token" not in str(error)


# -- YAML-level errors ---------------------------------------------------------------------------

def test_yaml_syntax_error_has_line_and_column(tmp_path):
    error = failure(tmp_path, "version: 1\nsite: a\ntables:\n  t: {columns: {a: {}}\n  u: 1\n")
    assert isinstance(error, InterfaceError)
    assert re.search(r"policy\.yaml:5:3: YAML syntax error: expected ',' or '}'", str(error))
    assert "line 4, column 6" in str(error)


def test_duplicate_and_non_text_keys_are_refused(tmp_path):
    message = str(failure(tmp_path, "version: 1\nsite: a\nsite: b\n1: x\ntables: {}\n"))
    assert "policy.yaml:3:1: site: duplicate key 'site'" in message
    assert "policy.yaml:4:1: 1: the key '1' must be text" in message


def test_infinite_numbers_are_refused(tmp_path):
    message = str(failure(tmp_path, MINIMAL.replace("[0, 110]", "[0, .inf]")))
    assert "tables.patients.columns.age.bounds[1]: expected a finite number" in message


def test_yaml_1_1_booleans_are_refused(tmp_path):
    message = str(failure(tmp_path, MINIMAL + "      country: {domain: [NL, NO, SE]}\n"))
    assert "tables.patients.columns.country.domain[1]: NO reads as a boolean" in message
    message = str(failure(tmp_path, MINIMAL + "disclosure: {exact_extremes: yes}\n"))
    assert "disclosure.exact_extremes: yes reads as a boolean: write true or false" in message


def test_empty_file(tmp_path):
    assert "(top level): expected a mapping, got nothing" in str(failure(tmp_path, ""))


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the policy file"):
        load_policy(tmp_path / "missing.yaml")


# -- schema errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, key, meant", [
    (MINIMAL.replace("tables:", "tabels:"), "tabels", "tables"),
    (MINIMAL + "disclosure: {min_cel_count: 10}\n", "disclosure.min_cel_count", "min_cell_count"),
    (MINIMAL + "noise: {budget: {epsilom: 2}}\n", "noise.budget.epsilom", "epsilon"),
    (MINIMAL.replace("columns:", "colums:"), "tables.patients.colums", "columns"),
    (MINIMAL.replace("bounds:", "bouns:"), "tables.patients.columns.age.bouns", "bounds"),
    (MINIMAL + f"analysts: {{a: {{token_sha265: {HEX}}}}}\n", "analysts.a.token_sha265",
     "token_sha256"),
    (MINIMAL + "analysts: {a: {token_sha256: {$evn: X}}}\n", "analysts.a.token_sha256.$evn",
     "$env"),
])
def test_unknown_key_says_did_you_mean(tmp_path, text, key, meant):
    message = str(failure(tmp_path, text))
    assert f": {key}: unknown key {key.rsplit('.', 1)[-1]!r}; did you mean {meant!r}?" in message
    assert "allowed here:" in message


def test_deep_error_has_the_right_line_and_column(tmp_path):
    text = """\
    version: 1
    site: hospital_a
    tables:
      labs:
        privacy_unit: patient_id
        columns:
          test_name: {domain: lab_test}
          value:
            uses: [filter, aggregate]
            bounds: [0, "high"]
    """
    error = failure(tmp_path, text)
    path = tmp_path / "policy.yaml"
    assert str(error) == (f"{path}:10:21: tables.labs.columns.value.bounds[1]: expected a "
                          "number, got text")
    assert error.key == "tables.labs.columns.value.bounds[1]"
    assert error.path == str(path)


def test_every_problem_is_reported_one_per_line_first_first(tmp_path):
    text = """\
    version: 1
    site: hospital_a
    aggregation: secret
    disclosure: {min_cell_count: 0}
    noise: {mechanism: laplce}
    tables: {}
    """
    lines = str(failure(tmp_path, text)).splitlines()
    assert [line.split(": ", 2)[1] for line in lines] == [
        "aggregation", "disclosure.min_cell_count", "noise.mechanism"]
    assert lines[0].endswith("aggregation: expected one of 'plain', 'secure', got 'secret'; "
                             "did you mean 'secure'?")
    assert lines[1].endswith("expected a whole number >= 1, got 0")
    assert re.match(r".*policy\.yaml:3:1: ", lines[0])


def test_named_domain_typo_and_bad_names(tmp_path):
    text = MINIMAL + "      sex: {domain: sexx}\n      'bad name': {}\n"
    message = str(failure(tmp_path, text))
    assert "tables.patients.columns.sex.domain: expected one of 'sex'," in message
    assert "got 'sexx'; did you mean 'sex'?" in message
    assert "tables.patients.columns.bad name: 'bad name' is not a valid name" in message


def test_missing_required_keys(tmp_path):
    message = str(failure(tmp_path, "version: 1\ntables: {t: {privacy_unit: id}}\n"))
    assert "(top level)" not in message
    assert ": site: missing required key 'site'" in message
    assert ": tables.t.columns: missing required key 'columns'" in message


# -- cross-field checks --------------------------------------------------------------------------

COLUMNS = MINIMAL.replace("      age: {bounds: [0, 110]}\n", "")


@pytest.mark.parametrize("text, key, words", [
    (MINIMAL.replace("[0, 110]", "[110, 0]"), "tables.patients.columns.age.bounds",
     "low < high"),
    (MINIMAL.replace("[0, 110]", "[5, 5]"), "tables.patients.columns.age.bounds", "low < high"),
    (COLUMNS + "      patient_id: {role: attribute}\n", "tables.patients.columns.patient_id.role",
     "privacy_unit, so its role must be identifier"),
    (COLUMNS + "      Patient_ID: {role: hidden}\n", "tables.patients.columns.Patient_ID.role",
     "must be identifier, not hidden"),
    (MINIMAL.replace("    privacy_unit: patient_id\n", "    max_rows_per_unit: 3\n"),
     "tables.patients.max_rows_per_unit", "needs privacy_unit"),
    (COLUMNS + "      postcode: {role: hidden, domain: [1, 2]}\n",
     "tables.patients.columns.postcode.domain", "hidden columns take no domain"),
    (COLUMNS + "      patient_id: {role: identifier, uses: [filter]}\n",
     "tables.patients.columns.patient_id.uses", "identifier columns take no uses"),
    (COLUMNS + "      ssn: {role: identifier, bounds: [0, 9]}\n",
     "tables.patients.columns.ssn.bounds", "identifier columns take no bounds"),
    (COLUMNS + "      ssn: {role: hidden, aggregates: [COUNT]}\n",
     "tables.patients.columns.ssn.aggregates", "hidden columns take no aggregates"),
    (COLUMNS + "      bmi: {uses: [filter], aggregates: [AVG]}\n",
     "tables.patients.columns.bmi.aggregates", "uses does not include aggregate"),
    (COLUMNS + "      age: {}\n      AGE: {}\n", "tables.patients.columns.AGE", "same name"),
    (MINIMAL + "noise: {max_epsilon_per_query: 2, budget: {epsilon: 1}}\n",
     "noise.max_epsilon_per_query", "more than the whole budget"),
    (MINIMAL + "noise: {mechanism: gaussian, max_epsilon_per_query: 1}\n", "noise.mechanism",
     "gaussian mechanism needs noise.delta"),
    (MINIMAL + "noise: {delta: 1.0}\n", "noise.delta", "a number > 0 and < 1"),
    (MINIMAL + "noise: {delta: 0}\n", "noise.delta", "a number > 0 and < 1"),
    (MINIMAL + "disclosure: {min_sites: 0}\n", "disclosure.min_sites", "a whole number >= 1"),
    (MINIMAL + f"analysts: {{a: {{token_sha256: {HEX}}}, b: {{token_sha256: {HEX}}}}}\n",
     "analysts.b.token_sha256", "the same token hash as analyst 'a'"),
])
def test_cross_field_check(tmp_path, text, key, words):
    message = str(failure(tmp_path, text))
    line = next((line for line in message.splitlines() if f": {key}: " in line), message)
    assert words in line


def test_site_must_match_the_callers_site(tmp_path):
    path = write(tmp_path, MINIMAL)
    assert load_policy(path, site="hospital_a").site == "hospital_a"
    with pytest.raises(ConfigError, match="site: this policy is for site 'hospital_a', but it "
                                          "was loaded for site 'hospital_b'"):
        load_policy(path, site="hospital_b")


def test_privacy_unit_is_added_as_an_identifier(tmp_path):
    policy = load_policy(write(tmp_path, MINIMAL))
    assert policy.tables["patients"].privacy_unit == "patient_id"
    assert policy.column("patients", "patient_id") == ColumnPolicy(role="identifier")


def test_names_are_case_insensitive(tmp_path):
    text = MINIMAL.replace("  patients:", "  Patients:").replace("age:", "Age:")
    policy = load_policy(write(tmp_path, text))
    assert policy.column("PATIENTS", "AGE").bounds == (0.0, 110.0)


def test_defaults_and_dominance_off(tmp_path):
    policy = load_policy(write(tmp_path, MINIMAL))
    assert (policy.disclosure, policy.noise, policy.aggregation, policy.analysts) == (
        Disclosure(), Noise(), "plain", {})
    assert policy.column("patients", "age").uses == frozenset(USES)
    off = load_policy(write(tmp_path, MINIMAL + "disclosure: {dominance: false}\n", "off.yaml"))
    assert off.disclosure.dominance is None


# -- built-in policies ---------------------------------------------------------------------------

def test_builtin_policies_resolve(tmp_path):
    assert resolve_policy("open") is OPEN
    assert resolve_policy("strict-default") is STRICT_DEFAULT
    assert set(BUILTIN) == {"open", "strict-default"}
    assert resolve_policy(str(write(tmp_path, MINIMAL))).site == "hospital_a"
    with pytest.raises(ConfigError, match="unknown policy"):
        resolve_policy("opn")


# -- the schema ----------------------------------------------------------------------------------

def test_exported_schema_is_identical_to_the_packaged_one():
    """``fedquery policy schema --output policies/policy.schema.json`` refreshes the copy."""
    assert (POLICIES / "policy.schema.json").read_text("utf-8") == schema_text()


def test_schema_is_valid_and_pretty_printed():
    schema = json.loads(schema_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema_text() == json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def subschemas(schema, at="#"):
    """Every (location, subschema) of a schema, recursively."""
    yield at, schema
    for key, value in schema.items():
        if key in ("properties", "patternProperties", "$defs"):
            for name, sub in value.items():
                yield from subschemas(sub, f"{at}/{key}/{name}")
        elif key in ("items", "propertyNames") and isinstance(value, dict):
            yield from subschemas(value, f"{at}/{key}")
        elif key == "oneOf":
            for i, sub in enumerate(value):
                yield from subschemas(sub, f"{at}/{key}/{i}")


def test_every_object_forbids_unknown_keys_and_every_property_is_described():
    schema = json.loads(schema_text())
    for at, sub in subschemas(schema):
        if sub.get("type") == "object" or "properties" in sub:
            assert sub.get("additionalProperties") is False, at
        for kind in ("properties", "patternProperties"):
            for name, prop in sub.get(kind, {}).items():
                assert prop.get("description", "").strip(), f"{at}/{kind}/{name}"


def test_schema_vocabulary_matches_the_model():
    schema = json.loads(schema_text())
    column = schema["properties"]["tables"]["patternProperties"]
    column = next(iter(column.values()))["properties"]["columns"]["patternProperties"]
    column = next(iter(column.values()))["properties"]
    assert column["role"]["enum"] == list(ROLES)
    assert column["uses"]["items"]["enum"] == list(USES)
    assert column["aggregates"]["items"]["enum"] == list(AGGREGATES)
    assert column["domain"]["oneOf"][0]["enum"] == list(NAMED_DOMAINS)
    assert schema["properties"]["noise"]["properties"]["mechanism"]["enum"] == list(MECHANISMS)
    assert schema["properties"]["aggregation"]["enum"] == list(AGGREGATION_MODES)


def test_named_domains():
    assert NAMED_DOMAINS["icd10_chapter"][0] == "I" and NAMED_DOMAINS["icd10_chapter"][-1] == "XXII"
    assert len(NAMED_DOMAINS["icd10_chapter"]) == 22
    assert "".join(NAMED_DOMAINS["atc_group"]) == "ABCDGHJLMNPRSV"
    assert {"age_band", "sex", "smoker", "region", "lab_test"} <= set(NAMED_DOMAINS)
    assert all(isinstance(values, tuple) and values for values in NAMED_DOMAINS.values())
