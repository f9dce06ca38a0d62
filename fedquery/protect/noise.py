"""Differential privacy with OpenDP: calibration, noise, accounting and accuracy.

Every number here comes from OpenDP; nothing is hand-rolled.

- **Mechanisms.** Each partial column (a vector over the groups) gets integer noise: discrete
  Laplace (``laplace``) or discrete Gaussian (``gaussian``), OpenDP's ``make_laplace`` /
  ``make_gaussian`` on ``i64`` vectors.  Sums of real values arrive fixed-point encoded, so
  they are integers too; they are decoded after noise (post-processing).
- **Sensitivity.** One privacy unit adds at most ``row_cap`` rows, each moving a partial by at
  most ``per_row`` (clamped in the site's SQL), so a partial vector moves by at most
  ``row_cap × per_row`` in L1 and in L2.
- **Splitting a query's budget.** A query asking for ε (and δ) splits it evenly over its
  noisy partials.  ``laplace``: each of the m partials gets ε/m (pure DP; the query is ε-DP by
  composition).  ``gaussian``: the query's ρ is the largest zCDP ρ whose OpenDP conversion
  gives (ε, δ); each partial gets ρ/m.
- **Accounting.** The ledger counts zCDP ρ: the sum of OpenDP's privacy maps (Laplace through
  ``make_pureDP_to_zCDP``).  Users see (ε, δ) through OpenDP's zCDP → approximate-DP
  conversion at the policy's δ.
- **Accuracy.** 95 % half-widths from OpenDP's accuracy functions for one site; for the sum of
  several sites' independent noises, the union bound over the sites at α/k each (conservative:
  coverage ≥ 95 %), or for Gaussian noise the exact variance sum.
"""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass

import opendp.prelude as dp
import pyarrow as pa
import pyarrow.compute as pc

from fedquery.errors import DataError

dp.enable_features("contrib")

MECHANISMS = ("laplace", "gaussian")
DEFAULT_DELTA = 1e-7  # to show a spent ρ as (ε, δ) when a policy gives no δ


def _space(mechanism: str):
    if mechanism == "laplace":
        return dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64")
    return dp.vector_domain(dp.atom_domain(T="i64")), dp.l2_distance(T="i64")


def _measurement(mechanism: str, scale: float):
    domain, metric = _space(mechanism)
    if mechanism == "laplace":
        return dp.m.make_laplace(domain, metric, scale=scale)
    return dp.m.make_gaussian(domain, metric, scale=scale)


@functools.lru_cache(maxsize=256)
def _noiser(mechanism: str, scale: float):
    """The measurement that noises a vector at ``scale``: built once, invoked per query
    (each invocation draws fresh noise)."""
    return _measurement(mechanism, scale)


@functools.lru_cache(maxsize=4096)
def calibrate_scale(mechanism: str, sensitivity: int, loss: float) -> float:
    """The smallest noise scale whose OpenDP privacy map at ``sensitivity`` is at most
    ``loss`` (ε for laplace, ρ for gaussian)."""
    return dp.binary_search_param(lambda s: _measurement(mechanism, s), d_in=sensitivity,
                                  d_out=loss)


@functools.lru_cache(maxsize=4096)
def charged_rho(mechanism: str, scale: float, sensitivity: int) -> float:
    """zCDP ρ of one noisy partial, from OpenDP's privacy map."""
    measurement = _measurement(mechanism, scale)
    if mechanism == "laplace":
        measurement = dp.c.make_pureDP_to_zCDP(measurement)
    return float(measurement.map(sensitivity))


@functools.lru_cache(maxsize=1024)
def rho_for(epsilon: float, delta: float) -> float:
    """The largest ρ such that ρ-zCDP implies (ε, δ)-DP (OpenDP's conversion)."""
    def make(rho: float):
        scale = 1.0 / math.sqrt(2.0 * rho)
        return dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(dp.m.make_gaussian(
            dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float), scale=scale)),
            delta=delta)
    low, high = 1e-12, max(epsilon, 1.0) * 10
    for _ in range(60):  # bisection on ρ through OpenDP's own map (monotone in ρ)
        mid = (low + high) / 2
        try:
            fits = make(mid).map(1.0)[0] <= epsilon
        except dp.OpenDPException:  # the conversion overflows for absurdly large ρ
            fits = False
        if fits:
            low = mid
        else:
            high = mid
    return low


@functools.lru_cache(maxsize=4096)
def epsilon_of(rho: float, delta: float) -> float:
    """ε at δ of a ρ-zCDP guarantee, by OpenDP's conversion (0 for ρ = 0).  Memoised: the
    conversion is a numerical search of some milliseconds, and a site shows the same spent
    and total budgets again and again."""
    if rho <= 0:
        return 0.0
    gaussian = dp.m.make_gaussian(dp.atom_domain(T=float, nan=False),
                                  dp.absolute_distance(T=float),
                                  scale=1.0 / math.sqrt(2.0 * rho))
    return float(dp.c.make_zCDP_to_approxDP(gaussian).map(1.0).epsilon(delta))


def budget_rho(epsilon: float, delta: float) -> float:
    """A policy's per-analyst budget ε (at its δ) as the zCDP ρ the ledger counts."""
    return rho_for(epsilon, delta)


@dataclass(frozen=True)
class PartialNoise:
    name: str
    sensitivity: int
    scale: float
    fixed_point: int
    rho: float


@dataclass(frozen=True)
class KeyThreshold:
    """OpenDP's Gaussian threshold mechanism for group keys the data reveals."""

    scale: float
    threshold: int
    rho: float
    delta: float  # the failure probability this query spends (charged to a δ budget)


@dataclass(frozen=True)
class NoisePlan:
    mechanism: str
    epsilon: float
    delta: float | None
    rho: float  # what the ledger charges
    partials: tuple[PartialNoise, ...]
    keys: KeyThreshold | None = None


# A query whose keys have no public domain spends this fraction of the policy's δ, so an
# analyst's threshold releases together stay within δ (at most 1/fraction such queries).
THRESHOLD_DELTA_SHARE = 1e-3


def _threshold_measurement(scale: float, threshold: int):
    domain = dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T="i64"))
    return dp.m.make_gaussian_threshold(domain, dp.l02inf_distance(
        dp.absolute_distance(T="i64")), scale=scale, threshold=threshold)


@functools.lru_cache(maxsize=1024)
def calibrate_threshold(groups_touched: int, rho: float, delta: float) -> KeyThreshold:
    """Scale and threshold so that releasing the keys whose noisy unit count passes costs at
    most ``rho`` (zCDP) with failure probability at most ``delta`` (OpenDP's privacy map at
    d_in = (groups a unit touches, its L2, its L∞ = 1))."""
    d_in = (groups_touched, int(math.ceil(math.sqrt(groups_touched))), 1)
    low, high = 1e-3, 1e6
    for _ in range(80):  # the smallest scale whose ρ fits
        mid = math.sqrt(low * high)
        if _threshold_measurement(mid, 10**9).map(d_in)[0] <= rho:
            high = mid
        else:
            low = mid
    lo_t, hi_t = 1, 10**9
    while lo_t < hi_t:  # the smallest threshold whose δ fits
        mid_t = (lo_t + hi_t) // 2
        if _threshold_measurement(high, mid_t).map(d_in)[1] <= delta:
            hi_t = mid_t
        else:
            lo_t = mid_t + 1
    spent = _threshold_measurement(high, lo_t).map(d_in)
    return KeyThreshold(high, lo_t, float(spent[0]), float(spent[1]))


def threshold_keys(table: pa.Table, group_columns, units_column: str,
                   keys: KeyThreshold) -> pa.Table:
    """The rows whose noisy unit count passes the threshold (OpenDP draws the noise)."""
    import json
    names = [json.dumps(row, default=str) for row in zip(
        *(table[g].to_pylist() for g in group_columns))] if group_columns else []
    counts = {name: int(v or 0) for name, v in zip(names, table[units_column].to_pylist())}
    kept = _threshold_measurement(keys.scale, keys.threshold)(counts) if counts else {}
    mask = pa.array([name in kept for name in names], pa.bool_())
    return table.filter(mask).drop_columns([units_column])


def plan_noise(partials, row_cap: int, mechanism: str, epsilon: float,
               delta: float | None, threshold: bool = False) -> NoisePlan:
    """Calibrate every partial's noise for a query that may spend ``epsilon`` (, ``delta``);
    with ``threshold`` (group keys without a public domain) one more even share pays for
    releasing the keys through OpenDP's Gaussian threshold mechanism."""
    if mechanism not in MECHANISMS:
        raise DataError(f"unknown noise mechanism {mechanism!r}")
    if not epsilon > 0:
        raise DataError(f"epsilon must be positive, got {epsilon!r}")
    if mechanism == "gaussian" and not (delta and 0 < delta < 1):
        raise DataError("the gaussian mechanism needs 0 < delta < 1 (SET delta = 1e-7)")
    if threshold and not (delta and 0 < delta < 1):
        raise DataError("group keys without a public domain are released by a threshold "
                        "mechanism, which needs 0 < delta < 1 (SET delta = 1e-7, or a delta in "
                        "the policy)")
    m = len(partials) + (1 if threshold else 0)
    share = epsilon / m if mechanism == "laplace" else rho_for(epsilon, delta) / m
    out = []
    for p in partials:
        sensitivity = max(int(math.ceil(p.sensitivity or row_cap * p.per_row)), 1)
        scale = calibrate_scale(mechanism, sensitivity, share)
        out.append(PartialNoise(p.name, sensitivity, scale, p.fixed_point,
                                charged_rho(mechanism, scale, sensitivity)))
    keys = None
    if threshold:  # a pure-DP share ε' is worth ε'²/2 of zCDP
        rho_keys = share * share / 2 if mechanism == "laplace" else share
        keys = calibrate_threshold(max(row_cap, 1), rho_keys, delta * THRESHOLD_DELTA_SHARE)
    rho = sum(p.rho for p in out) + (keys.rho if keys else 0.0)
    return NoisePlan(mechanism, epsilon, delta, rho, tuple(out), keys)


def add_noise(table: pa.Table, plan: NoisePlan) -> pa.Table:
    """The table with every partial column noised (OpenDP) and fixed-point sums decoded."""
    columns = {name: table[name] for name in table.column_names}
    for p in plan.partials:
        exact = [int(v) for v in pc.fill_null(columns[p.name], 0).to_pylist()]
        noisy = _noiser(plan.mechanism, p.scale)(exact) if exact else []
        if p.fixed_point == 1:
            columns[p.name] = pa.array(noisy, pa.int64())
        else:
            columns[p.name] = pa.array([v / p.fixed_point for v in noisy], pa.float64())
    return pa.table(list(columns.values()), names=list(columns))


def half_width(noises: list[tuple[str, float]], alpha: float = 0.05) -> float:
    """(1 − alpha) half-width of the sum of independent integer noises ``(mechanism, scale)``
    (one per site): OpenDP's accuracy for one; for several Gaussians the variance adds; any
    other mix uses the union bound over the sites at alpha/k each (coverage ≥ 1 − alpha)."""
    if not noises:
        return 0.0
    if all(m == "gaussian" for m, _ in noises):
        return gaussian_accuracy(math.sqrt(sum(s * s for _, s in noises)), alpha)
    share = alpha / len(noises)
    return float(sum(gaussian_accuracy(s, share) if m == "gaussian"
                     else dp.discrete_laplacian_scale_to_accuracy(s, alpha=share)
                     for m, s in noises))


# Above this scale OpenDP's exact discrete-Gaussian accuracy (a sum whose cost grows with the
# scale: 0.4 s at 7.8e5) is replaced by the continuous quantile rounded up, plus one.
_CLOSED_FORM_SCALE = 1000.0


@functools.lru_cache(maxsize=4096)
def gaussian_accuracy(scale: float, alpha: float) -> float:
    """The (1 − alpha) half-width of N_Z(0, scale²): OpenDP's, or for large scales
    ⌈z_{1−alpha/2}·scale⌉ + 1, which is never below it (checked against OpenDP in the tests;
    at scale ≥ 1000 the two differ by at most 1)."""
    if scale >= _CLOSED_FORM_SCALE:
        return float(math.ceil(statistics.NormalDist().inv_cdf(1 - alpha / 2) * scale) + 1)
    return float(dp.discrete_gaussian_scale_to_accuracy(float(scale), alpha=alpha))


def clamp_combined(combined: pa.Table, partials, bounds: dict[str, tuple[float, float]],
                   min_cell_count: int) -> pa.Table:
    """Post-processing of combined noisy partials (no privacy cost): counts are at least 0,
    a sum lies within [n·low, n·high] for its own noisy count n (so a mean lies within the
    bounds and a variance is feasible), and a cell whose noisy count is below the minimum
    cell count is suppressed."""
    columns = {name: combined[name] for name in combined.column_names}
    counts = {}
    small = pa.array([False] * combined.num_rows, pa.bool_())
    for p in partials:
        column = "c_" + p.name[2:]
        if p.kind in ("count", "count_distinct_unit"):
            clamped = pc.max_element_wise(pc.cast(columns[column], pa.float64()), 0.0)
            columns[column] = clamped
            counts.setdefault((p.argument, p.condition), clamped)
            small = pc.or_(small, pc.less(clamped, min_cell_count))
    for p in partials:
        column = "c_" + p.name[2:]
        n = counts.get((p.argument, p.condition))
        if p.kind not in ("sum", "sumsq") or n is None or p.name not in bounds:
            continue
        lo, hi = bounds[p.name]
        if p.kind == "sumsq":
            lo, hi = (0.0 if lo <= 0 <= hi else min(lo * lo, hi * hi)), max(lo * lo, hi * hi)
        value = pc.cast(columns[column], pa.float64())
        columns[column] = pc.min_element_wise(pc.max_element_wise(value, pc.multiply(n, lo)),
                                              pc.multiply(n, hi))
    if min_cell_count > 1:
        columns["__suppressed"] = pc.or_(pc.fill_null(columns["__suppressed"], True), small)
    return pa.table(list(columns.values()), names=list(columns))
