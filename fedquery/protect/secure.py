"""A site's side of secure aggregation: noise shares, mask, encryption and signature over its
slots — everything that happens to a site's partials before they leave it in secure mode.

- **Noise shares** (under a noise policy): the query's ρ — what plain mode would charge — is
  split evenly over its partials; each partial's share σ_i is the smallest whose sum over the
  ``honest_sites`` shares the steward assumes meets its ρ by the distributed discrete Gaussian
  analysis (:func:`fedquery.protect.noise_shares.zcdp_rho_of_sum`), and the ledger is charged
  that analysis' ρ.  Every participant adds its share, so the decrypted sum carries at least
  one central-strength draw even if all but ``honest_sites`` sites collude, and nobody —
  the key holder included — ever sees a noise-free aggregate.
- **Mask**: pairwise zero-sum masks mod t (:mod:`fedquery.protect.masks`), keyed by the query
  id and the participant set: one site's ciphertext, or any partial sum, decrypts to noise.
- **Encryption** under the key holder's pinned public context, **signature** (Ed25519) over
  the round, the layout's digest and the site's requirements.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fedquery.ir import Requirements, SecureLayout
from fedquery.protect import he, masks, signing
from fedquery.protect.noise import plan_noise
from fedquery.protect.noise_shares import add_share, share_sigma_for, zcdp_rho_of_sum
from fedquery.protect.slots import layout_digest


@dataclass(frozen=True)
class ShareNoise:
    name: str  # the partial ("p_i")
    sensitivity: int  # L1 = L2 sensitivity of the partial's slots (one unit, all groups)
    sigma: float  # this site's share σ_i
    fixed_point: int
    rho: float  # zCDP of the federation-wide sum of ``honest_sites`` shares


@dataclass(frozen=True)
class SharePlan:
    epsilon: float
    delta: float | None
    rho: float  # what the site's ledger charges
    partials: tuple[ShareNoise, ...]


def plan_shares(partials, row_cap: int, mechanism: str, epsilon: float, delta: float | None,
                honest_sites: int, groups: int) -> SharePlan:
    """Noise shares for a query allowed ``epsilon`` (, ``delta``): the ρ plain mode would
    charge, split evenly over the partials, each met by the distributed analysis."""
    plain = plan_noise(partials, row_cap, mechanism, epsilon, delta)
    share_rho = plain.rho / max(len(plain.partials), 1)
    out = []
    for p in plain.partials:
        sigma = share_sigma_for(share_rho, p.sensitivity, p.sensitivity, honest_sites,
                                max(groups, 1))
        out.append(ShareNoise(p.name, p.sensitivity, sigma, p.fixed_point, zcdp_rho_of_sum(
            p.sensitivity, p.sensitivity, sigma, honest_sites, max(groups, 1))))
    return SharePlan(epsilon, delta, sum(p.rho for p in out), tuple(out))


def add_shares(slots: list[int], layout: SecureLayout, shares: SharePlan) -> list[int]:
    """The slots with this site's OpenDP noise share added to every partial's range."""
    out = list(slots)
    n = len(layout.groups)
    by_name = {p.name: p for p in shares.partials}
    for c, column in enumerate(layout.columns):
        share = by_name.get(column.name)
        if share is not None:
            out[c * n:(c + 1) * n] = add_share(out[c * n:(c + 1) * n], share.sigma)
    return out


def seal(slots: Sequence[int], layout: SecureLayout, *, site: str, query_id: str,
         participants: Sequence[str], mask_key, peer_mask_keys: Mapping[str, bytes],
         context: he.PublicContext, signing_key,
         requirements: Requirements) -> tuple[list[bytes], bytes]:
    """Mask, encrypt and sign a site's (already noised) slots: (ciphertexts, signature)."""
    modulus = context.profile.plain_modulus
    mask = masks.mask(site, mask_key, peer_mask_keys, query_id, participants, len(slots),
                      modulus)
    ciphertexts = he.encrypt(context, masks.apply(slots, mask, modulus))
    contribution = signing.Contribution(
        query_id=query_id, site=site, participants=tuple(participants),
        context_fingerprint=context.fingerprint, ciphertexts=tuple(ciphertexts),
        layout_digest=layout_digest(layout), requirements=signing.requirements_json(requirements))
    return ciphertexts, signing.sign(signing_key, contribution)
