"""Group keys without a public domain: released only when their noisy unit count passes
OpenDP's Gaussian threshold mechanism, charged in ρ and in a separate δ budget."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from fedquery.policy.model import ColumnPolicy, Disclosure, Noise, Policy, TablePolicy
from fedquery.protect.noise import _threshold_measurement, calibrate_threshold, plan_noise
from fedquery.site.privacy import DELTA_ACCOUNT
from fedquery.testing import local_federation

POLICY = Policy(name="thr", disclosure=Disclosure(min_cell_count=1, dominance=None),
                noise=Noise(mechanism="laplace", max_epsilon_per_query=1.0, delta=1e-6,
                            budget_epsilon=100.0),
                tables={"t": TablePolicy(privacy_unit="pid", max_rows_per_unit=1, columns={
                    "pid": ColumnPolicy(role="identifier"), "city": ColumnPolicy(),
                    "x": ColumnPolicy(bounds=(0.0, 10.0))})})


def _table():
    cities = ["big"] * 300 + ["mid"] * 80 + ["rare"] * 2
    return pa.table({"pid": [str(i) for i in range(len(cities))], "city": cities,
                     "x": [1.0] * len(cities)})


@pytest.mark.parametrize("groups, rho, delta", [(1, 0.05, 1e-10), (12, 0.2, 1e-9)])
def test_threshold_calibration_is_at_the_boundary_of_openpd_s_map(groups, rho, delta):
    keys = calibrate_threshold(groups, rho, delta)
    d_in = (groups, math.ceil(math.sqrt(groups)), 1)
    spent = _threshold_measurement(keys.scale, keys.threshold).map(d_in)
    assert spent[0] <= rho * (1 + 1e-9) and spent[1] <= delta
    # one less on the threshold would fail the δ
    assert _threshold_measurement(keys.scale, keys.threshold - 1).map(d_in)[1] > delta


def test_rare_keys_are_not_released_and_common_ones_are(tmp_path):
    conn = local_federation({"s1": {"t": _table()}, "s2": {"t": _table()}}, POLICY,
                            privacy_units={"t": "pid"}, state_dir=tmp_path)
    cur = conn.cursor().execute("SELECT city, COUNT(*) FROM t GROUP BY city ORDER BY city")
    rows = dict(cur.fetchall())
    assert set(rows) == {"big", "mid"}
    assert abs(rows["big"] - 600) < 60 and abs(rows["mid"] - 160) < 60


def test_the_threshold_is_charged_in_rho_and_in_the_delta_budget(tmp_path):
    conn = local_federation({"s1": {"t": _table()}}, POLICY, privacy_units={"t": "pid"},
                            state_dir=tmp_path)
    conn.cursor().execute("SELECT city, COUNT(*) FROM t GROUP BY city")
    ledger = conn.engine.clients[0]._service.privacy.ledger
    plan = plan_noise(
        conn.engine.clients[0]._service._preparer.prepare(
            "SELECT city, COUNT(*) FROM t GROUP BY city").plan.fragment.partials,
        1, "laplace", 1.0, 1e-6, threshold=True)
    assert ledger.spent("analyst") == pytest.approx(plan.rho)
    assert ledger.spent("analyst" + DELTA_ACCOUNT) == pytest.approx(plan.keys.delta)
    assert plan.keys.delta <= 1e-6 * 1e-3
