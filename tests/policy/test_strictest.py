"""The federation applies the strictest requirement of every participating site (DESIGN.md §4).

One test per field of :class:`fedquery.ir.Requirements`, each registered with ``@covers``; a
meta-test fails when a field has no test, so a new requirement cannot be added without its
"strictest" rule.  An end-to-end test shows what the rule means in a running federation.
"""

from __future__ import annotations

import dataclasses
import itertools

import pyarrow as pa
import pytest

from fedquery.ir import QueryRequest, Requirements
from fedquery.policy.decide import strictest
from fedquery.policy.model import Disclosure, Policy
from fedquery.testing import local_federation

COVERED: set[str] = set()


def covers(field_name: str):
    """Register a test as the proof of ``field_name``'s strictest rule."""
    def register(test):
        COVERED.add(field_name)
        return test
    return register


def merged(*reqs: Requirements) -> Requirements:
    """strictest() of ``reqs``, checked to be independent of the order of the sites."""
    results = {strictest(order) for order in itertools.permutations(reqs)}
    assert len(results) == 1, f"strictest depends on the order of the sites: {results}"
    return results.pop()


def test_every_requirements_field_has_a_strictest_test():
    fields = {f.name for f in dataclasses.fields(Requirements)}
    missing = sorted(fields - COVERED)
    assert not missing, (f"Requirements field(s) {missing} have no test proving strictest() "
                         "takes their strictest value: add one to tests/policy/test_strictest.py")
    assert not COVERED - fields, f"tests cover fields that no longer exist: {COVERED - fields}"


def test_no_sites_means_default_requirements():
    assert strictest([]) == Requirements()


def test_one_site_is_its_own_strictest():
    only = Requirements(min_cell_count=7, dominance=(3, 70.0), min_sites=2, max_groups=40,
                        noise="laplace", aggregation="secure", epsilon=0.3, delta=1e-8,
                        zero_cells_disclosive=True)
    assert strictest([only]) == only


@covers("min_cell_count")
def test_min_cell_count_takes_the_largest():
    assert merged(Requirements(min_cell_count=5), Requirements(min_cell_count=12),
                  Requirements(min_cell_count=10)).min_cell_count == 12


@covers("dominance")
def test_dominance_takes_the_largest_n_and_the_smallest_k():
    assert merged(Requirements(dominance=(2, 90.0)),
                  Requirements(dominance=(3, 95.0))).dominance == (3, 90.0)
    assert merged(Requirements(dominance=(2, 85.0)),
                  Requirements(dominance=(2, 70.0))).dominance == (2, 70.0)


@covers("dominance")
def test_dominance_of_one_site_applies_when_another_has_none():
    assert merged(Requirements(dominance=None),
                  Requirements(dominance=(2, 85.0))).dominance == (2, 85.0)
    assert merged(Requirements(dominance=None), Requirements(dominance=None)).dominance is None


@covers("min_sites")
def test_min_sites_takes_the_largest():
    assert merged(Requirements(min_sites=1), Requirements(min_sites=3),
                  Requirements(min_sites=2)).min_sites == 3


@covers("max_groups")
def test_max_groups_takes_the_smallest_limit():
    assert merged(Requirements(max_groups=200), Requirements(max_groups=100),
                  Requirements(max_groups=150)).max_groups == 100


@covers("max_groups")
def test_max_groups_none_means_unlimited_and_never_wins():
    assert merged(Requirements(max_groups=None), Requirements(max_groups=50)).max_groups == 50
    assert merged(Requirements(max_groups=None), Requirements(max_groups=None)).max_groups is None


@covers("noise")
@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_any_noisy_site_makes_the_federation_noisy(mechanism):
    assert merged(Requirements(noise="none"), Requirements(noise=mechanism),
                  Requirements(noise="none")).noise == mechanism
    assert merged(Requirements(noise="none"), Requirements(noise="none")).noise == "none"


@covers("aggregation")
def test_secure_aggregation_beats_plain():
    assert merged(Requirements(aggregation="plain"), Requirements(aggregation="secure"),
                  Requirements(aggregation="plain")).aggregation == "secure"
    assert merged(Requirements(aggregation="plain"),
                  Requirements(aggregation="plain")).aggregation == "plain"


@covers("epsilon")
def test_epsilon_takes_the_smallest():
    assert merged(Requirements(epsilon=1.0), Requirements(epsilon=0.5),
                  Requirements(epsilon=None)).epsilon == 0.5
    assert merged(Requirements(epsilon=None), Requirements(epsilon=None)).epsilon is None


@covers("delta")
def test_delta_takes_the_smallest():
    assert merged(Requirements(delta=1e-6), Requirements(delta=1e-8),
                  Requirements(delta=None)).delta == 1e-8
    assert merged(Requirements(delta=None), Requirements(delta=None)).delta is None


@covers("zero_cells_disclosive")
def test_zero_cells_are_disclosive_if_any_site_says_so():
    assert merged(Requirements(zero_cells_disclosive=False),
                  Requirements(zero_cells_disclosive=True)).zero_cells_disclosive is True
    assert merged(Requirements(zero_cells_disclosive=False),
                  Requirements(zero_cells_disclosive=False)).zero_cells_disclosive is False


def test_policies_feed_their_requirements():
    """The demo-style policies: hospital_b's min cell 11 and 80 % dominance, c's max groups."""
    a = Policy(name="a", disclosure=Disclosure(min_cell_count=10, dominance=(2, 85.0),
                                               max_groups=200))
    b = Policy(name="b", disclosure=Disclosure(min_cell_count=11, dominance=(2, 80.0),
                                               max_groups=150))
    c = Policy(name="c", disclosure=Disclosure(min_cell_count=10, dominance=(2, 85.0),
                                               max_groups=100))
    req = merged(a.requirements(), b.requirements(), c.requirements())
    assert (req.min_cell_count, req.dominance, req.max_groups) == (11, (2, 80.0), 100)


# -- end to end ----------------------------------------------------------------------------------

def _site(site: str, groups: dict[str, int]) -> pa.Table:
    ids, keys = [], []
    for key, n in groups.items():
        ids += [f"{site}:{key}:{i}" for i in range(n)]
        keys += [key] * n
    return pa.table({"patient_id": ids, "g": keys, "x": [1.0] * len(ids)})


def _policy(site: str, min_cell_count: int) -> Policy:
    # tables=None: every table and column is queryable as an attribute
    return Policy(name=site, site=site, disclosure=Disclosure(min_cell_count=min_cell_count,
                                                              dominance=None), tables=None)


def _federation(min_cells: dict[str, int]):
    sites = {s: {"t": _site(s, {"g8": 8, "g20": 20})} for s in min_cells}
    return local_federation(sites, {s: _policy(s, m) for s, m in min_cells.items()},
                            privacy_units={"t": "patient_id"})


SQL = "SELECT g, COUNT(*) AS n FROM t GROUP BY g ORDER BY g"


def test_federation_requirements_are_the_strictest_of_its_sites():
    conn = _federation({"lenient": 5, "strict": 12})
    try:
        assert conn.engine.requirements.min_cell_count == 12
        assert conn.engine.requirements == strictest(
            [_policy("lenient", 5).requirements(), _policy("strict", 12).requirements()])
    finally:
        conn.close()


def test_a_cell_the_strict_site_suppresses_is_suppressed_in_the_release():
    """8 patients at each site: the min-cell-5 site releases its cell, the min-cell-12 site
    suppresses its own, so the combined 16 is suppressed and flagged (never a partial total)."""
    conn = _federation({"lenient": 5, "strict": 12})
    try:
        replies = {c.name: c.query(QueryRequest(SQL, "analyst")) for c in conn.engine.clients}
        assert replies["lenient"].suppressed == 0
        assert replies["strict"].suppressed == 1
        cur = conn.cursor().execute(SQL)
        assert cur.fetchall() == [("g20", 40), ("g8", None)]
        assert cur.fq_report.suppressed_cells == 1 and cur.fq_report.suppressed_rows == (1,)
    finally:
        conn.close()


def test_without_the_strict_site_the_same_cells_are_released():
    conn = _federation({"lenient": 5, "also_lenient": 5})
    try:
        cur = conn.cursor().execute(SQL)
        assert cur.fetchall() == [("g20", 40), ("g8", 16)]
        assert cur.fq_report.suppressed_cells == 0
    finally:
        conn.close()


def test_mixed_noise_mechanisms_do_not_depend_on_site_order():
    # pure DP (laplace) is stricter than approximate DP (gaussian), whatever the site order
    assert merged(Requirements(noise="laplace"),
                  Requirements(noise="gaussian", delta=1e-7)).noise == "laplace"
