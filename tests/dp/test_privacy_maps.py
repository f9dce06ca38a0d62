"""Privacy-map boundary tests (in the style of opendp's ``test_comb.py``).

For each mechanism and query shape, the plan a site builds gives every noisy partial a
sensitivity (``row_cap × per_row``, from the policy's caps and bounds); ``plan_noise`` calibrates
a scale and charges a zCDP ρ.  Here every measurement is rebuilt with OpenDP directly and:

* the charged ρ equals the sum over partials of OpenDP's privacy map at that sensitivity;
* ``check(d_in, d_out)`` holds at the charged ε/ρ share and fails just below it;
* the shares use the whole budget the query asked for (calibration is tight), never more;
* for gaussian, the query's ρ converts back through OpenDP to the asked (ε, δ).
"""

from __future__ import annotations

import math

import opendp.prelude as dp
import pytest

from fedquery.protect.noise import (calibrate_scale, charged_rho, epsilon_of, plan_noise,
                                    rho_for)

dp.enable_features("contrib")

CAP = 5
BOUNDS = (-2.5, 10.0)  # a negative low bound: per row, a sum moves by max(|lo|, |hi|)
DOMAIN = ("a", "b")  # + NULL: 3 public keys
FIXED_POINT = 100
DELTA = 1e-6
BELOW = 1 - 1e-9

# shape → (SQL, partial kinds in plan order)
SHAPES = {
    "count": ("SELECT COUNT(*) FROM t", ("count",)),
    "sum": ("SELECT SUM(x) FROM t", ("sum",)),
    "avg": ("SELECT g, AVG(x) FROM t GROUP BY g", ("sum", "count")),
    "var": ("SELECT g, VAR_SAMP(x) FROM t GROUP BY g", ("sum", "count", "sumsq")),
    "count_distinct_grouped": ("SELECT g, COUNT(DISTINCT pid) FROM t GROUP BY g",
                               ("count_distinct_unit",)),
    "count_distinct": ("SELECT COUNT(DISTINCT pid) FROM t", ("count_distinct_unit",)),
    "mixed": ("SELECT g, COUNT(*), SUM(x), AVG(x), STDDEV_SAMP(x) FROM t GROUP BY g",
              ("count", "sum", "count", "sumsq")),
}


def expected_per_row(kind: str) -> float:
    lo, hi = BOUNDS
    return {"count": 1.0, "count_distinct_unit": 1.0,
            "sum": max(abs(lo), abs(hi)) * FIXED_POINT,
            "sumsq": max(lo * lo, hi * hi) * FIXED_POINT}[kind]


def measurement(mechanism: str, scale: float):
    """The noise each partial vector gets, rebuilt with OpenDP (integer = discrete noise)."""
    domain = dp.vector_domain(dp.atom_domain(T="i64"))
    if mechanism == "laplace":
        return dp.m.make_laplace(domain, dp.l1_distance(T="i64"), scale=scale)
    return dp.m.make_gaussian(domain, dp.l2_distance(T="i64"), scale=scale)


def as_zcdp(mechanism: str, meas):
    return dp.c.make_pureDP_to_zCDP(meas) if mechanism == "laplace" else meas


def approx_dp_epsilon(rho: float, delta: float) -> float:
    """ε at δ of ρ-zCDP, through OpenDP's conversion (independently of fedquery's helper)."""
    gaussian = dp.m.make_gaussian(dp.atom_domain(T=float, nan=False),
                                  dp.absolute_distance(T=float), scale=1 / math.sqrt(2 * rho))
    eps, d = dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(gaussian), delta=delta).map(1.0)
    assert d == delta
    return eps


@pytest.fixture
def shaped_plan(make_bounding, dp_plan):
    def make(shape: str, mechanism: str):
        sql, kinds = SHAPES[shape]
        plan = dp_plan(sql, make_bounding(cap=CAP, bounds=BOUNDS, domain=DOMAIN), mechanism)
        assert tuple(p.kind for p in plan.fragment.partials) == kinds
        return plan
    return make


@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_sensitivity_follows_from_caps_and_bounds(shaped_plan, shape, mechanism):
    plan = shaped_plan(shape, mechanism)
    cap = plan.fragment.row_cap
    assert cap == CAP
    grouped = "GROUP BY" in SHAPES[shape][0]
    for p in plan.fragment.partials:
        assert p.per_row == expected_per_row(p.kind), p
        if p.kind == "count_distinct_unit":
            # a unit is counted once per group it reaches: at most min(cap, #public keys)
            assert p.sensitivity == (min(cap, len(DOMAIN) + 1) if grouped else 1)
        else:
            assert p.sensitivity == cap * p.per_row, p
        assert p.fixed_point == (FIXED_POINT if p.kind in ("sum", "sumsq") else 1)
        assert p.arg_bounds == (BOUNDS if p.kind in ("sum", "sumsq") else None)


@pytest.mark.parametrize("epsilon", [0.3, 2.5])
@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_charged_rho_is_opendps_map_at_the_boundary(shaped_plan, shape, mechanism, epsilon):
    plan = shaped_plan(shape, mechanism)
    partials = plan.fragment.partials
    delta = DELTA if mechanism == "gaussian" else None
    noise = plan_noise(partials, plan.fragment.row_cap, mechanism, epsilon, delta)
    assert noise.mechanism == mechanism and len(noise.partials) == len(partials)
    m = len(partials)
    # the documented split: ε/m each (laplace), or the query's ρ(ε, δ)/m each (gaussian)
    share = epsilon / m if mechanism == "laplace" else rho_for(epsilon, delta) / m

    rhos, shares = [], []
    for p, pn in zip(partials, noise.partials):
        d_in = int(math.ceil(p.sensitivity))
        assert pn.name == p.name and pn.sensitivity == d_in and pn.fixed_point == p.fixed_point
        meas = measurement(mechanism, pn.scale)
        # Native measure: ε (max divergence) for laplace, ρ (zCDP) for gaussian.
        loss = meas.map(d_in)
        shares.append(loss)
        assert meas.check(d_in, loss)
        assert not meas.check(d_in, loss * BELOW)
        assert meas.check(d_in, share)  # the asked share covers it...
        assert share * (1 - 1e-6) <= loss <= share  # ...and calibration wastes none of it
        # What the ledger is charged: OpenDP's zCDP map, exactly.
        zmeas = as_zcdp(mechanism, meas)
        rho = zmeas.map(d_in)
        assert zmeas.check(d_in, rho) and not zmeas.check(d_in, rho * BELOW)
        assert pn.rho == pytest.approx(rho, rel=1e-12)
        assert charged_rho(mechanism, pn.scale, d_in) == pytest.approx(rho, rel=1e-12)
        if mechanism == "laplace":
            assert rho == pytest.approx(loss ** 2 / 2, rel=1e-12)  # ε-DP ⇒ ε²/2-zCDP
        rhos.append(rho)

    assert noise.rho == pytest.approx(math.fsum(rhos), rel=1e-12)
    if mechanism == "laplace":
        # pure-DP composition: the query is ε-DP, and uses all of it
        assert epsilon * (1 - 1e-6) <= math.fsum(shares) <= epsilon * (1 + 1e-12)
    else:
        # the query's ρ converts back to the asked (ε, δ), through OpenDP
        assert approx_dp_epsilon(noise.rho, delta) == pytest.approx(epsilon, rel=1e-5)
        assert approx_dp_epsilon(noise.rho, delta) <= epsilon * (1 + 1e-9)
        assert epsilon_of(noise.rho, delta) == pytest.approx(epsilon, rel=1e-5)


@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_charged_rho_at_the_boundary_through_composition(shaped_plan, mechanism):
    """The query as one OpenDP measurement: the partials composed (zCDP), d_in = one unit."""
    plan = shaped_plan("var", mechanism)
    delta = DELTA if mechanism == "gaussian" else None
    noise = plan_noise(plan.fragment.partials, plan.fragment.row_cap, mechanism, 1.0, delta)
    # One unit moves partial i by at most its sensitivity: scale each measurement's input so
    # that d_in = 1 means "one unit" for all of them, then compose them with OpenDP.
    space = dp.vector_domain(dp.atom_domain(T="i64")), (
        dp.l1_distance(T="i64") if mechanism == "laplace" else dp.l2_distance(T="i64"))
    parts = [as_zcdp(mechanism, dp.m.make_noise(
        *space, output_measure=dp.max_divergence() if mechanism == "laplace"
        else dp.zero_concentrated_divergence(), scale=pn.scale / pn.sensitivity))
        for pn in noise.partials]
    composed = dp.c.make_composition(parts)
    assert composed.map(1) == pytest.approx(noise.rho, rel=1e-9)
    assert composed.check(1, noise.rho * (1 + 1e-9))
    assert not composed.check(1, noise.rho * (1 - 1e-6))


@pytest.mark.parametrize("mechanism,sensitivity,loss,closed_form", [
    ("laplace", 3, 0.5, 3 / 0.5),
    ("laplace", 3000, 1 / 3, 3000 * 3),
    ("gaussian", 3, 0.05, 3 / math.sqrt(2 * 0.05)),
    ("gaussian", 30000, 0.01, 30000 / math.sqrt(2 * 0.01)),
])
def test_calibrated_scale_is_the_closed_form(mechanism, sensitivity, loss, closed_form):
    """Laplace scale = Δ₁/ε, Gaussian σ = Δ₂/√(2ρ) (anchors §9.2), to binary-search precision."""
    assert calibrate_scale(mechanism, sensitivity, loss) == pytest.approx(closed_form, rel=1e-6)


@pytest.mark.parametrize("epsilon,delta", [(0.1, 1e-7), (1.0, 1e-6), (1.0, 1e-9),
                                           (5.0, 1e-7), (20.0, 1e-7)])
def test_rho_for_and_epsilon_of_are_opendps_conversion(epsilon, delta):
    rho = rho_for(epsilon, delta)
    assert approx_dp_epsilon(rho, delta) <= epsilon * (1 + 1e-12)  # the largest safe ρ...
    assert approx_dp_epsilon(rho * (1 + 1e-6), delta) > epsilon  # ...and not smaller than it
    assert epsilon_of(rho, delta) == pytest.approx(epsilon, rel=1e-9)
    assert epsilon_of(0.0, delta) == 0.0


def test_gaussian_needs_delta_and_mechanisms_are_checked(shaped_plan):
    from fedquery.errors import DataError

    plan = shaped_plan("count", "gaussian")
    with pytest.raises(DataError, match="delta"):
        plan_noise(plan.fragment.partials, plan.fragment.row_cap, "gaussian", 1.0, None)
    with pytest.raises(DataError, match="epsilon"):
        plan_noise(plan.fragment.partials, plan.fragment.row_cap, "laplace", 0.0, None)
    with pytest.raises(DataError, match="mechanism"):
        plan_noise(plan.fragment.partials, plan.fragment.row_cap, "exponential", 1.0, None)


@pytest.mark.parametrize("scale", [1000.0, 1234.5, 5000.0, 20000.0, 100000.0])
@pytest.mark.parametrize("alpha", [0.05, 0.05 / 3, 0.01])
def test_the_closed_form_gaussian_accuracy_never_undercuts_opendp(scale, alpha):
    import opendp.prelude as dp

    from fedquery.protect.noise import gaussian_accuracy
    exact = dp.discrete_gaussian_scale_to_accuracy(scale, alpha=alpha)
    assert exact <= gaussian_accuracy(scale, alpha) <= exact + 1
