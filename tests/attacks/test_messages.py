"""Refusal messages (rule id, site, hint, no data) and the policy layer on its own."""

from __future__ import annotations

import pytest

from fedquery.errors import PolicyViolation
from fedquery.ir import QueryRequest
from fedquery.policy import decide
from fedquery.sql import analyze

GROUP_BY_AGE = "SELECT age, COUNT(*) FROM patients GROUP BY age"


def test_site_refusal_lists_rule_site_and_hint(sites, expect):
    for name, service in sites.items():
        with pytest.raises(PolicyViolation) as caught:
            service.query(QueryRequest(GROUP_BY_AGE, "mallory"))
        err, text = caught.value, str(caught.value)
        assert {h.rule for h in err.rules} == {"R-USE", "R-QI-GROUP"}
        assert f"refused by the policy of {name}" in text
        for hit in err.rules:
            assert hit.site == name and hit.subject == "patients.age"
            assert hit.hint, f"{hit.rule} has no hint"
            assert f"{hit.rule} at {name}" in text and f"(hint: {hit.hint})" in text
        assert "age band" in text  # the hint says what to do instead
        expect.no_data_values(err)


def test_engine_refusal_names_every_refusing_site(federation, expect):
    with pytest.raises(PolicyViolation) as caught:
        federation.cursor().execute(GROUP_BY_AGE)
    err = caught.value
    assert {h.site for h in err.rules} == {"hospital_a", "hospital_b", "hospital_c"}
    assert "hospital_a, hospital_b, hospital_c" in str(err)
    expect.no_data_values(err)


def test_probe_with_many_real_ids_echoes_none(sites, data_values, expect):
    """A refusal does not tell which of the probed ids exist (nor echo any of them)."""
    ids = sorted(data_values.patient_ids)[:50] + ["hospital_a:P9999999"]
    sql = ("SELECT COUNT(*) FROM patients WHERE patient_id IN ("
           + ", ".join(f"'{i}'" for i in ids) + ")")
    messages = set()
    for service in sites.values():
        with pytest.raises(PolicyViolation) as caught:
            service.query(QueryRequest(sql, "mallory"))
        expect.no_data_values(caught.value)
        messages.add(str(caught.value).replace(service.name, "SITE"))
    assert len(messages) == 1  # the same words at every site, whatever its data


# The planner refuses UNION ALL sources before the policy runs (test_allowed.py); the policy
# must refuse this laundering on its own all the same, so that fixing the planner opens no hole.
@pytest.mark.parametrize(("sql", "rule"), [
    ("SELECT v, COUNT(*) FROM (SELECT patient_id, sex AS v FROM patients UNION ALL "
     "SELECT patient_id, patient_id AS v FROM patients) u GROUP BY v", "R-IDENTIFIER"),
    ("SELECT COUNT(*) FROM (SELECT patient_id, sex AS v FROM patients UNION ALL "
     "SELECT patient_id, postcode AS v FROM patients) u WHERE u.v LIKE '10%'", "R-HIDDEN"),
    ("WITH u AS (SELECT patient_id, region AS v FROM patients UNION ALL SELECT patient_id, "
     "age AS v FROM patients) SELECT v, COUNT(*) FROM u GROUP BY v", "R-USE"),
], ids=["identifier", "hidden", "quasi_identifier"])
def test_policy_alone_sees_through_union_all(sites, demo_policies, privacy_units, sql, rule):
    for name, service in sites.items():
        # The site's own schema (its published catalog leaves hidden columns out).
        schema = {t.name: {c.name: c.type for c in t.columns} for t in service.adapter.describe()}
        decision = decide(analyze(sql, schema), demo_policies[name], name, privacy_units)
        assert not decision.allowed
        assert rule in {h.rule for h in decision.fired}


def test_the_data_value_check_itself_works(data_values):
    """Negative control for ``expect.no_data_values``: it finds ids and postcodes."""
    some_id, some_postcode = min(data_values.patient_ids), min(data_values.postcodes)
    assert data_values.leaked(f"no patient {some_id} here") == [some_id]
    assert data_values.leaked(f"postcode {some_postcode}.") == [some_postcode]
    assert data_values.leaked("more than max_groups=200 (hint: hospital_a:P)") == []
