"""The secure-aggregation core end to end, as the services will wire it: sites add a noise
share and a zero-sum mask, encrypt and sign; the coordinator sums ciphertexts; the key
holder verifies every signature, re-sums the signed contributions itself and decrypts only
that sum, range-checked."""

from __future__ import annotations

import random
import statistics

import pytest

from fedquery.errors import InternalError
from fedquery.ir import Requirements
from fedquery.protect import he, masks, noise_shares, signing

LAYOUT = "0f" * 32  # the digest of the slot layout every site encoded with
REQUIREMENTS = signing.requirements_json(Requirements(aggregation="secure"))


def _site(name, values, *, ctx, query_id, participants, mask_key, directory, signing_key,
          share_sigma=None):
    """What a site does before anything leaves it."""
    if share_sigma is not None:
        values = noise_shares.add_share(values, share_sigma)
    t = ctx.profile.plain_modulus
    mask = masks.mask(name, mask_key(name), directory, query_id, participants, len(values), t)
    contribution = signing.Contribution(query_id, name, tuple(participants), ctx.fingerprint,
                                        tuple(he.encrypt(ctx, masks.apply(values, mask, t))),
                                        LAYOUT, REQUIREMENTS)
    return contribution, signing.sign(signing_key(name), contribution)


def _key_holder(keys, contributions, signing_key, *, query_id, participants, bound):
    """What the key holder does: check the manifest and signatures, re-sum, decrypt."""
    assert {c.site for c, _ in contributions} == set(participants)
    for contribution, signature in contributions:
        assert contribution.query_id == query_id
        assert contribution.context_fingerprint == keys.fingerprint()
        assert contribution.participants == tuple(sorted(participants))
        public = signing_key(contribution.site).public_key().public_bytes_raw()
        signing.verify(public, contribution, signature)
    ctx = keys.public_context()
    total = he.add(ctx, (c.ciphertexts for c, _ in contributions))
    return keys.decrypt(total, bound=bound)


@pytest.fixture(scope="module")
def federation(mask_directory):
    sites = [f"site_{i:02d}" for i in range(6)]
    return sites, mask_directory(sites)


def test_exact_sum_without_noise(standard_keys, standard_ctx, federation, mask_key,
                                 signing_key):
    sites, directory = federation
    rng = random.Random(99)
    groups, aggregates = 1500, 3  # 4500 slots: two ciphertexts per site
    data = {s: [rng.randrange(0, 200) for _ in range(groups * aggregates)] for s in sites}
    query = {"query_id": "q-exact", "participants": sites}
    contributions = [_site(s, data[s], ctx=standard_ctx, mask_key=mask_key,
                           directory=directory, signing_key=signing_key, **query)
                     for s in sites]
    bound = he.STANDARD.max_abs_total
    # The coordinator's sum equals the key holder's own re-sum.
    coordinator = he.add(standard_ctx, (c.ciphertexts for c, _ in contributions))
    released = _key_holder(standard_keys, contributions, signing_key, bound=bound, **query)
    assert standard_keys.decrypt(coordinator) == released
    assert released == [sum(col) for col in zip(*data.values())]


def test_noise_shares_inside_ciphertexts_give_the_central_variance(
        standard_keys, standard_ctx, federation, mask_key, signing_key):
    """h = 3 honest sites out of 6, central σ = 12: each site adds N_Z(0, σ²/h), so the sum
    carries variance n·σ²/h = 2σ² — at least σ² from the honest ones alone."""
    sites, directory = federation
    central, h, slots = 12.0, 3, 4096
    sigma_i = noise_shares.share_sigma(central, h)
    rng = random.Random(3)
    data = {s: [rng.randrange(0, 1000) for _ in range(slots)] for s in sites}
    query = {"query_id": "q-noise", "participants": sites}
    contributions = [_site(s, data[s], ctx=standard_ctx, mask_key=mask_key,
                           directory=directory, signing_key=signing_key, share_sigma=sigma_i,
                           **query) for s in sites]
    released = _key_holder(standard_keys, contributions, signing_key,
                           bound=he.STANDARD.max_abs_total, **query)
    noise = [r - sum(col) for r, col in zip(released, zip(*data.values()))]
    expected = len(sites) * sigma_i ** 2
    assert statistics.pvariance(noise) == pytest.approx(expected, rel=0.10)
    assert noise_shares.zcdp_rho_of_sum(1, 1, sigma_i, h, slots) == pytest.approx(
        1 / (2 * central ** 2))


def test_wide_profile_for_large_sums(federation, mask_key, signing_key):
    """Sums of squares of fixed-point values need the wide profile; they come back exact."""
    sites, directory = federation
    per_site = 10**15  # e.g. 10^7 rows × (100.00 at fixed-point scale 10^2)² per site
    bound = per_site * len(sites)
    profile = he.choose_profile(bound)
    assert profile is he.WIDE
    keys = he.KeyHolderKeys.generate(profile)
    ctx = he.load_public_context(keys.public_context_bytes(), keys.fingerprint())
    rng = random.Random(8)
    data = {s: [rng.randrange(0, per_site) for _ in range(300)] for s in sites}
    query = {"query_id": "q-wide", "participants": sites}
    contributions = [_site(s, data[s], ctx=ctx, mask_key=mask_key, directory=directory,
                           signing_key=signing_key, **query) for s in sites]
    released = _key_holder(keys, contributions, signing_key, bound=bound, **query)
    assert released == [sum(col) for col in zip(*data.values())]


def test_missing_or_foreign_contribution_is_caught(standard_keys, standard_ctx, federation,
                                                   mask_key, signing_key):
    """A coordinator that drops a site, or swaps in a contribution from another query, gets
    nothing released: the sum of the others decrypts to uniform noise (range check), and a
    contribution from another query fails the manifest/signature checks."""
    sites, directory = federation
    data = {s: [5] * 100 for s in sites}
    query = {"query_id": "q-drop", "participants": sites}
    contributions = [_site(s, data[s], ctx=standard_ctx, mask_key=mask_key,
                           directory=directory, signing_key=signing_key, **query)
                     for s in sites]
    partial = he.add(standard_ctx, (c.ciphertexts for c, _ in contributions[:-1]))
    with pytest.raises(InternalError, match="exceed the planned bound"):
        standard_keys.decrypt(partial, bound=10**6)
    other, signature = _site(sites[0], data[sites[0]], ctx=standard_ctx, mask_key=mask_key,
                             directory=directory, signing_key=signing_key,
                             query_id="q-other", participants=sites)
    relabelled = signing.Contribution("q-drop", other.site, other.participants,
                                      other.context_fingerprint, other.ciphertexts,
                                      other.layout_digest, other.requirements)
    with pytest.raises(InternalError, match="signature"):
        signing.verify(signing_key(sites[0]).public_key().public_bytes_raw(), relabelled,
                       signature)
