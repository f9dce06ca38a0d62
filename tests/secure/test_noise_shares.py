"""Distributed discrete-Gaussian noise shares (OpenDP) and the accounting of their sum
(Kairouz, Liu & Steinke 2021)."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest

from fedquery.errors import DataError
from fedquery.protect import noise_shares as ns

# -- the reference implementation's formula -----------------------------------------------------
# google-research/federated, distributed_dp/accounting_utils.py: ``ddgauss_epsilon`` computes
# τ and the scales, ``compute_rdp_dgaussian`` the RDP of Proposition 14 / Eq. (17) of
# arXiv:2102.06387 at order λ (sampling rate q = 1, one step).  Restated here independently.


def reference_tau(local_stddev: float, num_clients: int) -> float:
    tau = 0.0
    for k in range(1, num_clients):
        tau += math.exp(-2 * (math.pi * local_stddev) ** 2 * (k / (k + 1)))
    return 10 * tau


def reference_rdp(order: float, l1_sens: float, l2_sens: float, local_stddev: float,
                  num_clients: int, dim: int) -> float:
    tau = reference_tau(local_stddev, num_clients)
    l1_scale = l1_sens / (math.sqrt(num_clients) * local_stddev)
    l2_scale = l2_sens / (math.sqrt(num_clients) * local_stddev)
    term_1 = (order / 2.0) * l2_scale ** 2 + tau * dim
    term_2 = (order / 2.0) * (l2_scale ** 2 + 2 * l1_scale * tau + tau ** 2 * dim)
    term_3 = (order / 2.0) * (l2_scale + math.sqrt(dim) * tau) ** 2
    return min(term_1, term_2, term_3)


CASES = [  # (Δ1, Δ2, σ_i, h, d): from the τ-dominated to the central regime
    (1, 1, 0.5, 5, 1),
    (1, 1, 0.6, 3, 12_288),
    (20, 20, 0.8, 10, 4096),
    (3, 2, 1.0, 50, 100),
    (1, 1, 1.2, 2, 12_288),
    (10, 10, 2.0, 20, 12_288),
    (100, 100, 5.0, 4, 8192),
]


@pytest.mark.parametrize("l1, l2, sigma, h, d", CASES)
def test_tau_matches_the_reference(l1, l2, sigma, h, d):
    assert ns.tau(sigma, h) == pytest.approx(reference_tau(sigma, h), rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("l1, l2, sigma, h, d", CASES)
def test_rho_is_the_zcdp_bound_of_the_reference_rdp(l1, l2, sigma, h, d):
    """ρ-zCDP means D_λ ≤ ρλ for every λ > 1.  The reference RDP divided by λ never exceeds
    our ρ, and approaches it as λ → 1⁺ (each RDP term over λ is non-increasing in λ), so ρ is
    exactly the best zCDP constant the reference formula supports."""
    rho = ns.zcdp_rho_of_sum(l1, l2, sigma, h, d)
    orders = [1 + 1e-9, 1.01, 1.5, 2, 3, 8, 32, 128, 256, 1e4]
    ratios = [reference_rdp(a, l1, l2, sigma, h, d) / a for a in orders]
    assert max(ratios) <= rho * (1 + 1e-9)
    assert ratios[0] == pytest.approx(rho, rel=1e-7)


def theorem_1_rho(l2, sigma, n, d):
    """Theorem 1 of arXiv:2102.06387: ε = min(√(a² + 2τd), a + τ√d), ρ = ε²/2."""
    a, tau = l2 / (math.sqrt(n) * sigma), reference_tau(sigma, n)
    return min(math.sqrt(a * a + 2 * tau * d), a + tau * math.sqrt(d)) ** 2 / 2


@pytest.mark.parametrize("l1, l2, sigma, h, d", CASES)
def test_rho_refines_theorem_1(l1, l2, sigma, h, d):
    """With the largest possible Δ1 (= √d·Δ2) ρ is Theorem 1's; a smaller Δ1 only helps."""
    assert ns.zcdp_rho_of_sum(math.sqrt(d) * l2, l2, sigma, h, d) == pytest.approx(
        theorem_1_rho(l2, sigma, h, d), rel=1e-12)
    assert ns.zcdp_rho_of_sum(l1, l2, sigma, h, d) <= theorem_1_rho(l2, sigma, h, d) * (1 + 1e-12)


def test_rho_formula_by_hand():
    """Δ1 = Δ2 = 1, σ_i = 1, n = 3, d = 1000: ε² = min(a² + 2τd, a² + 2bτ + τ²d, (a+τ√d)²)."""
    sigma, n, d = 1.0, 3, 1000
    tau = 10 * (math.exp(-math.pi ** 2) + math.exp(-2 * math.pi ** 2 * sigma ** 2 * 2 / 3))
    a = b = 1 / math.sqrt(3)
    eps2 = min(a * a + 2 * tau * d, a * a + 2 * b * tau + tau * tau * d,
               (a + tau * math.sqrt(d)) ** 2)
    assert ns.zcdp_rho_of_sum(1, 1, sigma, n, d) == pytest.approx(eps2 / 2, rel=1e-12)
    # Here the Δ1 term wins, and the discrete correction is visible (ρ > 1/(2nσ²) = 1/6).
    assert eps2 == pytest.approx(a * a + 2 * b * tau + tau * tau * d)
    assert ns.zcdp_rho_of_sum(1, 1, sigma, n, d) > 1 / 6 + 1e-4


def test_one_share_is_the_discrete_gaussian():
    """n = 1: τ = 0 and ρ = Δ2²/(2σ²), OpenDP's own privacy map of one share."""
    assert ns.tau(3.0, 1) == 0.0
    assert ns.zcdp_rho_of_sum(4, 4, 3.0, 1, 12_288) == pytest.approx(16 / 18)
    assert ns.local_rho(4, 3.0) == pytest.approx(16 / 18)


@pytest.mark.parametrize("h", [2, 5, 50])
def test_large_sigma_approaches_the_central_gaussian(h):
    d, l2 = 12_288, 7
    for sigma in (2.0, 5.0, 50.0):
        central = l2 ** 2 / (2 * h * sigma ** 2)
        assert ns.zcdp_rho_of_sum(l2, l2, sigma, h, d) == pytest.approx(central, rel=1e-9)
    # …but not for small σ, where summing discrete Gaussians costs extra.
    assert ns.zcdp_rho_of_sum(l2, l2, 0.6, h, d) > 1.01 * l2 ** 2 / (2 * h * 0.36)


def test_monotonicity():
    sigmas = [0.5, 0.55, 0.6, 0.7, 0.8, 1.0, 1.5, 2, 4, 10, 100]
    for h in (2, 10):
        rhos = [ns.zcdp_rho_of_sum(5, 5, s, h, 12_288) for s in sigmas]
        assert all(x > y for x, y in itertools.pairwise(rhos)), rhos  # more noise, less loss
    by_h = [ns.zcdp_rho_of_sum(5, 5, 1.0, h, 4096) for h in (1, 2, 4, 8, 16)]
    assert all(x > y for x, y in itertools.pairwise(by_h))  # more honest shares, less loss
    by_d = [ns.zcdp_rho_of_sum(5, 5, 0.7, 4, d) for d in (1, 10, 100, 10_000)]
    assert all(x <= y for x, y in itertools.pairwise(by_d))
    by_l2 = [ns.zcdp_rho_of_sum(l, l, 1.0, 4, 4096) for l in (1, 2, 5, 10)]
    assert all(x < y for x, y in itertools.pairwise(by_l2))


@pytest.mark.parametrize("rho", [1e-4, 0.01, 0.5, 5.0])
@pytest.mark.parametrize("h, d", [(3, 12_288), (20, 4096), (1, 1)])
def test_share_sigma_for_inverts_the_accounting(rho, h, d):
    sigma = ns.share_sigma_for(rho, 10, 10, h, d)
    assert ns.zcdp_rho_of_sum(10, 10, sigma, h, d) <= rho
    if sigma > ns.MIN_SHARE_SIGMA:
        assert ns.zcdp_rho_of_sum(10, 10, sigma * (1 - 1e-6), h, d) > rho  # smallest


def test_share_sigma_for_large_noise_is_the_central_calibration():
    rho, h = 0.01, 10
    expected = 10 / math.sqrt(2 * h * rho)  # Δ2/√(2hρ): the central Gaussian split in h
    assert ns.share_sigma_for(rho, 10, 10, h, 12_288) == pytest.approx(expected, rel=1e-8)
    assert ns.share_sigma(expected * math.sqrt(h), h) == pytest.approx(expected)


def test_refusals():
    with pytest.raises(DataError):
        ns.zcdp_rho_of_sum(1, 1, 0.4, 3, 10)  # the theorem needs σ ≥ 1/2
    with pytest.raises(DataError):
        ns.zcdp_rho_of_sum(1, 1, 1.0, 0, 10)
    with pytest.raises(DataError):
        ns.zcdp_rho_of_sum(1, 1, 1.0, 3, 0)
    with pytest.raises(DataError):
        ns.zcdp_rho_of_sum(-1, 1, 1.0, 3, 10)
    with pytest.raises(DataError):
        ns.share_sigma_for(0, 1, 1, 3, 10)
    with pytest.raises(DataError):
        ns.draw_share(10, 0.1)
    with pytest.raises(DataError):
        ns.share_sigma(10.0, 0)


# -- the shares themselves ----------------------------------------------------------------------

def test_shares_are_integers_and_fresh():
    first, second = ns.draw_share(2000, 3.0), ns.draw_share(2000, 3.0)
    assert all(type(v) is int for v in first)
    assert first != second
    assert ns.draw_share(0, 3.0) == []
    values = list(range(100))
    noisy = ns.add_share(values, 3.0)
    assert noisy != values and all(type(v) is int for v in noisy)


def test_sum_of_h_shares_has_the_central_variance():
    """h = 4 sites, central σ = 10 → σ_i = 5; over 8192 slots the summed noise has variance
    within 10% of σ² = 100 (the sampling s.d. of the estimate is ≈ 1.6%) and mean ≈ 0."""
    central, h, slots = 10.0, 4, 8192
    sigma_i = ns.share_sigma(central, h)
    shares = [ns.draw_share(slots, sigma_i) for _ in range(h)]
    total = [sum(col) for col in zip(*shares)]
    assert statistics.pvariance(total) == pytest.approx(central ** 2, rel=0.10)
    assert abs(statistics.fmean(total)) < 5 * central / math.sqrt(slots)
    # Each share alone has variance ≈ σ_i² = σ²/h.
    assert statistics.pvariance(shares[0]) == pytest.approx(sigma_i ** 2, rel=0.10)


def test_noise_tail_bounds_the_summed_noise():
    sigma_i, sites, slots = 4.0, 5, 4096
    tail = ns.noise_tail(sigma_i, sites, slots)
    assert 8 * sigma_i * math.sqrt(sites) < tail < 10 * sigma_i * math.sqrt(sites)
    total = [sum(col) for col in zip(*(ns.draw_share(slots, sigma_i) for _ in range(sites)))]
    assert max(abs(v) for v in total) <= tail
    assert ns.noise_tail(sigma_i, sites, slots, failure=1e-3) < tail
    with pytest.raises(DataError):
        ns.noise_tail(sigma_i, sites, slots, failure=0)
