"""Secure-aggregation slot layouts: public-domain keys only, sums only, exact encoding."""

from __future__ import annotations

import decimal

import pyarrow as pa
import pytest

from fedquery.errors import NotSupportedError
from fedquery.ir import CellChecks, Requirements, SecureLayout, SlotColumn
from fedquery.plan.planner import plan_query
from fedquery.protect.disclosure import protect_secure_cells
from fedquery.protect.slots import (check_own_range, decode, encode, layout_digest,
                                    layout_from_json, layout_to_json)
from fedquery.sql import analyze

SCHEMA = {"t": {"pid": "BIGINT", "sex": "VARCHAR", "region": "VARCHAR", "age": "INTEGER",
                "cost": "DECIMAL(10,2)"}}
DOMAINS = ((("t", "sex"), ("F", "M")), (("t", "region"), ("N", "S", "E")))
SECURE = Requirements(aggregation="secure")


def plan(sql, requirements=SECURE, domains=DOMAINS):
    return plan_query(analyze(sql, SCHEMA), {"t": "pid"}, requirements,
                      public_domains=domains)


def test_groups_are_the_product_of_public_domains_with_null():
    p = plan("SELECT sex, region, COUNT(*) FROM t GROUP BY ALL")
    assert len(p.secure_groups) == 3 * 4
    assert p.secure_groups[0] == ("F", "N") and (None, None) in p.secure_groups


def test_a_query_without_group_by_has_one_slot_per_aggregate():
    assert plan("SELECT COUNT(*), SUM(age) FROM t").secure_groups == ((),)


def test_a_case_band_with_literal_labels_is_a_public_domain():
    p = plan("SELECT CASE WHEN age < 40 THEN 'young' ELSE 'old' END AS band, COUNT(*) "
             "FROM t GROUP BY band")
    assert p.secure_groups == (("young",), ("old",))


@pytest.mark.parametrize("sql", ["SELECT age, COUNT(*) FROM t GROUP BY age",
                                 "SELECT sex || 'x' AS k, COUNT(*) FROM t GROUP BY k"])
def test_data_dependent_keys_are_refused(sql):
    with pytest.raises(NotSupportedError, match="public domain"):
        plan(sql)


@pytest.mark.parametrize("aggregate", ["MIN(age)", "MAX(age)"])
def test_min_and_max_cannot_be_summed(aggregate):
    with pytest.raises(NotSupportedError, match="only be added"):
        plan(f"SELECT sex, {aggregate} FROM t GROUP BY sex")


def test_plain_plans_have_no_layout():
    assert plan("SELECT age, COUNT(*) FROM t GROUP BY age", Requirements()).secure_groups \
        is None


LAYOUT = SecureLayout(("g_0",), (("F",), ("M",), (None,)),
                      (SlotColumn("p_0"), SlotColumn("p_1", 100, 2), SlotColumn("__n_0"),
                       SlotColumn("__present")),
                      CellChecks(10, None, False, ("__n_0",)), "standard", 10**12)


def test_encode_is_aggregate_major_with_zeros_for_absent_groups():
    raw = pa.table({"g_0": ["M"], "p_0": [4], "p_1": [decimal.Decimal("12.34")],
                    "__n_0": [4]})
    assert encode(raw, LAYOUT, present="rows") == [0, 4, 0, 0, 1234, 0, 0, 4, 0, 0, 1, 0]
    assert encode(raw, LAYOUT, present="all")[-3:] == [1, 1, 1]


def test_a_key_outside_the_domain_has_no_slot():
    raw = pa.table({"g_0": ["X"], "p_0": [4], "p_1": [decimal.Decimal("1")], "__n_0": [4]})
    assert encode(raw, LAYOUT, present="rows") == [0] * 12


def test_a_double_sum_is_refused_in_exact_mode():
    layout = SecureLayout((), ((),), (SlotColumn("p_0"),), None, "standard", 10**12)
    with pytest.raises(NotSupportedError, match="DECIMAL"):
        encode(pa.table({"p_0": [1.5]}), layout, present="rows")


def test_decode_restores_exact_decimals_and_counts_sites():
    summed = [5, 7, 0, 1234, 99, 0, 3, 9, 0, 2, 3, 0]
    table = decode(summed, LAYOUT)
    assert table["c_1"].type == pa.decimal128(38, 2)
    assert table["c_1"].to_pylist()[0] == decimal.Decimal("12.34")
    assert table["__sites"].to_pylist() == [2, 3, 0]


def test_layout_round_trips_through_json_and_digest_changes_with_it():
    assert layout_from_json(layout_to_json(LAYOUT)) == LAYOUT
    other = SecureLayout(LAYOUT.group_columns, LAYOUT.groups[:2], LAYOUT.columns,
                         LAYOUT.checks, LAYOUT.profile, LAYOUT.bound)
    assert layout_digest(other) != layout_digest(LAYOUT)


def test_four_patients_at_each_of_three_sites_pass_a_combined_minimum_of_ten():
    """Plain mode suppresses each site's cell of 4 (< 10); secure mode checks the combined
    12 — the utility secure aggregation buys."""
    summed = [12, 30, 0, 0, 0, 0, 12, 30, 0, 3, 3, 0]
    combined, suppressed = protect_secure_cells(decode(summed, LAYOUT), LAYOUT.checks, 2)
    rows = combined.to_pylist()
    assert rows[0]["c_0"] == 12 and rows[0]["__suppressed"] is False
    assert suppressed == 1 and rows[2]["__suppressed"] is True  # no site: fewer than 2
    assert "__n_0" not in combined.column_names


def test_a_small_combined_cell_is_suppressed():
    summed = [6, 30, 0, 0, 0, 0, 6, 30, 0, 3, 3, 0]
    combined, _ = protect_secure_cells(decode(summed, LAYOUT), LAYOUT.checks, 2)
    assert combined.to_pylist()[0]["c_0"] is None


def test_a_site_refuses_a_share_that_could_wrap_the_sum():
    with pytest.raises(NotSupportedError, match="too large"):
        check_own_range([0, 10**12 // 3 + 1], LAYOUT, sites=3)
    check_own_range([0, 10**12 // 3], LAYOUT, sites=3)
