"""Distributed discrete-Gaussian noise for secure aggregation (research note §2.7).

Under secure aggregation nobody sees a site's partials, so nobody can add central noise.
Instead each site adds a *share*: discrete Gaussian noise N_Z(0, σ_i²) from OpenDP (as in
:mod:`fedquery.protect.noise`, ``make_gaussian`` on ``i64`` vectors: exact sampling from a
CSPRNG), inside its ciphertext.  The decrypted sum then carries the sum of the shares.

- **Sizing.** Shares are sized for the h sites assumed honest (the minimum number of
  contributors that do not collude with the key holder): σ_i = σ/√h (:func:`share_sigma`),
  so the h honest shares alone carry variance ≈ σ².  Colluding sites can subtract their own
  shares; the others still protect.
- **Accounting.** A sum of discrete Gaussians is not a discrete Gaussian;
  :func:`zcdp_rho_of_sum` is the zCDP guarantee of the sum of h shares by Kairouz, Liu &
  Steinke (ICML 2021), and :func:`share_sigma_for` inverts it.
- **Degradation.** Were one site's ciphertext ever decrypted alone, its own share still gives
  :func:`local_rho` (h times the central ρ, roughly).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import opendp.prelude as dp

from fedquery.errors import DataError

dp.enable_features("contrib")

MIN_SHARE_SIGMA = 0.5  # the theorem below needs σ ≥ 1/2


@functools.lru_cache(maxsize=256)
def _share_measurement(share_sigma: float):
    return dp.m.make_gaussian(dp.vector_domain(dp.atom_domain(T="i64")),
                              dp.l2_distance(T="i64"), scale=share_sigma)


def _check_sigma(share_sigma: float) -> None:
    if not (math.isfinite(share_sigma) and share_sigma >= MIN_SHARE_SIGMA):
        raise DataError(f"a noise share needs σ ≥ {MIN_SHARE_SIGMA}, got {share_sigma!r}")


def share_sigma(central_sigma: float, honest_sites: int) -> float:
    """The per-site σ_i = σ/√h whose h honest shares add up to variance ≈ σ²."""
    if honest_sites < 1:
        raise DataError(f"honest_sites must be at least 1, got {honest_sites}")
    return central_sigma / math.sqrt(honest_sites)


def draw_share(length: int, share_sigma: float) -> list[int]:
    """One site's noise share: ``length`` independent N_Z(0, share_sigma²) draws (OpenDP)."""
    _check_sigma(share_sigma)
    if length < 0:
        raise DataError(f"length must be non-negative, got {length}")
    return list(_share_measurement(float(share_sigma))([0] * length)) if length else []


def add_share(values: Sequence[int], share_sigma: float) -> list[int]:
    """``values`` plus one site's noise share (slot-wise)."""
    noise = draw_share(len(values), share_sigma)
    return [int(v) + e for v, e in zip(values, noise)]


def local_rho(l2_sensitivity: int, share_sigma: float) -> float:
    """zCDP ρ of a single share on its own (OpenDP's privacy map): what protects a site's
    values if its ciphertext were ever decrypted alone."""
    _check_sigma(share_sigma)
    return float(_share_measurement(float(share_sigma)).map(math.ceil(l2_sensitivity)))


def noise_tail(share_sigma: float, sites: int, dimension: int,
               failure: float = 2.0 ** -40) -> int:
    """A bound B with P(some slot of the summed noise has |noise| > B) ≤ ``failure``, for
    ``sites`` shares over ``dimension`` slots: the planner adds it to the data bound it gives
    :func:`fedquery.protect.he.choose_profile`.  N_Z(0, σ²) is σ²-subgaussian (Canonne,
    Kamath & Steinke 2020, Cor. 9), so the sum of n shares is nσ²-subgaussian, and a union
    bound over the slots gives B = σ√(2n·ln(2d/failure))."""
    _check_sigma(share_sigma)
    if sites < 1 or dimension < 1 or not 0 < failure < 1:
        raise DataError("noise_tail needs sites ≥ 1, dimension ≥ 1 and 0 < failure < 1")
    return math.ceil(share_sigma * math.sqrt(2.0 * sites * math.log(2.0 * dimension / failure)))


def tau(sigma_per_share: float, honest_sites: int) -> float:
    """τ = 10 · Σ_{k=1}^{n−1} exp(−2π²σ²·k/(k+1)) of Kairouz, Liu & Steinke (2021): how far
    the sum of n discrete Gaussians N_Z(0, σ²) is from N_Z(0, nσ²) (0 for n = 1)."""
    s2 = sigma_per_share * sigma_per_share
    return 10.0 * math.fsum(math.exp(-2.0 * math.pi ** 2 * s2 * k / (k + 1))
                            for k in range(1, honest_sites))


def zcdp_rho_of_sum(l1_sensitivity: float, l2_sensitivity: float, sigma_per_share: float,
                    honest_sites: int, dimension: int) -> float:
    """zCDP ρ of releasing x + Z, Z the sum of ``honest_sites`` (= n) independent
    ``dimension``-dimensional (= d) discrete Gaussian shares N_Z(0, σ²)^d, for queries whose
    sensitivity is at most Δ₁ in L1 and Δ₂ in L2.

    Source: P. Kairouz, Z. Liu, T. Steinke, "The Distributed Discrete Gaussian Mechanism for
    Federated Learning with Secure Aggregation", ICML 2021 (arXiv:2102.06387).  With σ ≥ 1/2,
    a = Δ₂/(√n σ), b = Δ₁/(√n σ) and τ = :func:`tau`:

    - Theorem 1 (arXiv numbering): the sum is ½ε²-concentrated DP with
      ε = min{ √(a² + 2τd),  a + τ√d };
    - Proposition 14 / Eq. (17), which it follows from, bounds every Rényi divergence of
      order λ ≥ 1 by min{ λ/2·a² + τd,  λ/2·(a² + 2bτ + τ²d),  λ/2·(a + τ√d)² } (the form
      google-research/federated implements in ``distributed_dp/accounting_utils.py``,
      ``compute_rdp_dgaussian``).  Its middle term adds the Δ₁ refinement: since λ ≥ 1 each
      term is at most λ·ε_k²/2, so the sum is also ½ε²-zCDP with

        ε = min{ √(a² + 2τd),  √(a² + 2bτ + τ²d),  a + τ√d },   ρ = ε²/2,

    which is returned.  It equals Theorem 1 when Δ₁ = √d·Δ₂ (the largest Δ₁ can be) and is
    smaller otherwise.  As σ grows, τ → 0 and ρ → Δ₂²/(2nσ²), the central discrete
    Gaussian's ρ at variance nσ²."""
    if honest_sites < 1:
        raise DataError(f"honest_sites must be at least 1, got {honest_sites}")
    if dimension < 1:
        raise DataError(f"dimension must be at least 1, got {dimension}")
    if l1_sensitivity < 0 or l2_sensitivity < 0:
        raise DataError("sensitivities must be non-negative")
    _check_sigma(sigma_per_share)
    scale = math.sqrt(honest_sites) * sigma_per_share
    a = l2_sensitivity / scale
    b = l1_sensitivity / scale
    t = tau(sigma_per_share, honest_sites)
    eps_squared = min(a * a + 2.0 * t * dimension,
                      a * a + 2.0 * b * t + t * t * dimension,
                      (a + t * math.sqrt(dimension)) ** 2)
    return eps_squared / 2.0


def share_sigma_for(rho_target: float, l1_sensitivity: float, l2_sensitivity: float,
                    honest_sites: int, dimension: int) -> float:
    """The smallest σ_i (within 1e-9 relative, rounded up) whose h shares give at most
    ``rho_target`` by :func:`zcdp_rho_of_sum` (bisection; ρ decreases in σ_i)."""
    if not rho_target > 0:
        raise DataError(f"rho_target must be positive, got {rho_target!r}")

    def rho(sigma: float) -> float:
        return zcdp_rho_of_sum(l1_sensitivity, l2_sensitivity, sigma, honest_sites, dimension)

    low = MIN_SHARE_SIGMA
    if rho(low) <= rho_target:
        return low
    high = max(2.0 * low, l2_sensitivity / math.sqrt(2.0 * honest_sites * rho_target))
    while rho(high) > rho_target:
        low, high = high, 2.0 * high
        if high > 1e15:
            raise DataError(f"no noise scale reaches ρ = {rho_target!r}")
    while high - low > 1e-9 * high:
        middle = (low + high) / 2.0
        if rho(middle) <= rho_target:
            high = middle
        else:
            low = middle
    return high
