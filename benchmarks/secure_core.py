"""The cryptographic core of secure aggregation, against plain int64 aggregation.

    python -m benchmarks.secure_core --groups 4096 --aggregates 3 --sites 10 50 [--repeat 5]

For each number of sites: every site holds ``groups × aggregates`` partials (synthetic
integers below 10^6), adds an OpenDP discrete-Gaussian noise share (central σ
``--sigma``, sized for h = all sites honest), adds its pairwise zero-sum mask (X25519 with
every other site, HKDF, ChaCha20), encrypts (BFV, the planner's profile for the bound) and
signs (Ed25519).  The coordinator sums the sites' ciphertexts; the key holder verifies every
signature and decrypts the sum (range-checked), which must equal the exact sum plus noise.

Times are medians over ``--repeat`` runs, per role (sites run in parallel, so one site's time
is on the critical path).  Baseline, measured in the same run (research note §3.4): each site
ships ``tobytes()`` of its int64 partials and the coordinator ``frombuffer``-sums them.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from fedquery.protect import he, masks, noise_shares, signing

VALUE_LIMIT = 10**6


def _median_ms(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def run(groups: int, aggregates: int, sites: int, repeat: int, sigma: float) -> dict:
    length = groups * aggregates
    names = [f"site_{i:03d}" for i in range(sites)]
    rng = np.random.default_rng(7)
    data = rng.integers(0, VALUE_LIMIT, size=(sites, length), dtype=np.int64)
    share_sigma = noise_shares.share_sigma(sigma, sites)
    bound = (VALUE_LIMIT - 1) * sites + noise_shares.noise_tail(share_sigma, sites, length)
    profile = he.choose_profile(bound)
    keys = he.KeyHolderKeys.generate(profile)
    ctx = he.load_public_context(keys.public_context_bytes(), keys.fingerprint())
    t = profile.plain_modulus
    mask_keys = {s: masks.generate_private_key() for s in names}
    directory = {s: masks.decode_public_key(masks.public_key_text(k), owner=s)
                 for s, k in mask_keys.items()}
    sign_keys = {s: signing.generate_private_key() for s in names}
    verify_keys = {s: signing.decode_public_key(signing.public_key_text(k), owner=s)
                   for s, k in sign_keys.items()}
    query_id = "bench-q"
    values = {s: data[i].tolist() for i, s in enumerate(names)}
    noisy = {s: noise_shares.add_share(values[s], share_sigma) for s in names}

    def site_protect(site: str):
        mask = masks.mask(site, mask_keys[site], directory, query_id, names, length, t)
        ciphertexts = he.encrypt(ctx, masks.apply(noisy[site], mask, t))
        contribution = signing.Contribution(query_id, site, tuple(names), ctx.fingerprint,
                                            tuple(ciphertexts), layout_digest="0" * 64,
                                            requirements="{}")
        return contribution, signing.sign(sign_keys[site], contribution)

    contributions = [site_protect(s) for s in names]

    def coordinator():
        return he.add(ctx, (c.ciphertexts for c, _ in contributions))

    total = coordinator()

    def key_holder_verify():
        for contribution, signature in contributions:
            signing.verify(verify_keys[contribution.site], contribution, signature)

    def key_holder_decrypt():
        return keys.decrypt(total, bound=bound)

    released = np.array(key_holder_decrypt(), dtype=np.int64)
    noise = released - data.sum(axis=0)
    exact_noise = np.array([sum(col) for col in zip(*noisy.values())]) - data.sum(axis=0)
    assert (noise == exact_noise).all(), "the decrypted sum is not the noisy sum"

    plain = [data[i].tobytes() for i in range(sites)]

    def plain_sum():
        acc = np.zeros(length, np.int64)
        for blob in plain:
            acc += np.frombuffer(blob, np.int64)
        return acc

    site = names[0]
    row = {
        "sites": sites, "profile": profile.name, "slots": length,
        "ciphertexts": len(total),
        "bytes_per_site": sum(len(c) for c in contributions[0][0].ciphertexts),
        "plain_bytes_per_site": data[0].nbytes,
        "noise_ms": _median_ms(lambda: noise_shares.add_share(values[site], share_sigma),
                               max(1, repeat // 2)),
        "mask_ms": _median_ms(lambda: masks.mask(site, mask_keys[site], directory, query_id,
                                                 names, length, t), repeat),
        "site_ms": _median_ms(lambda: site_protect(site), repeat),
        "coordinator_ms": _median_ms(coordinator, repeat),
        "plain_sum_ms": _median_ms(plain_sum, repeat * 4),
        "verify_ms": _median_ms(key_holder_verify, repeat),
        "decrypt_ms": _median_ms(key_holder_decrypt, repeat),
        "noise_sd": float(noise.std()),
    }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=4096)
    parser.add_argument("--aggregates", type=int, default=3)
    parser.add_argument("--sites", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sigma", type=float, default=10.0,
                        help="central noise σ of the sum (shares sized for all sites honest)")
    args = parser.parse_args()
    rows = [run(args.groups, args.aggregates, s, args.repeat, args.sigma) for s in args.sites]
    print(f"{args.groups} groups × {args.aggregates} aggregates, central σ = {args.sigma:g}, "
          f"median of {args.repeat}")
    print()
    print("| sites | profile | ciphertexts/site | bytes/site | vs int64 | site noise share ms "
          "| site mask ms | site mask+encrypt+sign ms | coordinator sum ms | vs plain sum "
          "| key holder verify ms | key holder decrypt ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['sites']} | {r['profile']} | {r['ciphertexts']} | "
              f"{r['bytes_per_site']:,} | {r['bytes_per_site'] / r['plain_bytes_per_site']:.2f}× | "
              f"{r['noise_ms']:.1f} | {r['mask_ms']:.1f} | {r['site_ms']:.1f} | "
              f"{r['coordinator_ms']:.1f} | {r['coordinator_ms'] / r['plain_sum_ms']:.0f}× | "
              f"{r['verify_ms']:.1f} | {r['decrypt_ms']:.1f} |")
    print()
    print("Plain baseline: int64 tobytes per site, coordinator frombuffer + sum "
          + ", ".join(f"{r['plain_sum_ms']:.2f} ms ({r['sites']} sites)" for r in rows)
          + ".  Empirical noise s.d. of the decrypted sum: "
          + ", ".join(f"{r['noise_sd']:.2f}" for r in rows) + f" (target {args.sigma:g}).")


if __name__ == "__main__":
    main()
