"""Pairwise zero-sum masks: they cancel exactly in the full sum, differ per query id,
participant set and site, are refused without a complete key directory, and make any single
site's (or any partial sum's) decrypted vector statistically uniform mod t."""

from __future__ import annotations

import math
import random
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from fedquery.errors import ConfigError, DataError, InternalError
from fedquery.protect import he, masks

T = he.STANDARD.plain_modulus
SITES = ("hospital_a", "hospital_b", "hospital_c", "hospital_d", "hospital_e")


@pytest.fixture(scope="module")
def make_mask(mask_key, mask_directory):
    directory = mask_directory(SITES)

    def make(site, query_id="q-1", participants=SITES, length=64, modulus=T):
        return masks.mask(site, mask_key(site), directory, query_id, participants, length,
                          modulus)
    return make


# -- algebra ------------------------------------------------------------------------------------

@pytest.mark.parametrize("participants", [SITES[:2], SITES[:3], SITES])
def test_masks_sum_to_zero_mod_t(make_mask, participants):
    length = 300
    all_masks = [make_mask(s, participants=participants, length=length) for s in participants]
    for column in zip(*all_masks):
        assert sum(column) % T == 0
    assert all(0 <= v < T for m in all_masks for v in m)
    assert all(any(v != 0 for v in m) for m in all_masks)


def test_masks_are_deterministic(make_mask):
    assert make_mask("hospital_b", length=50) == make_mask("hospital_b", length=50)
    # A longer mask extends the shorter one (same stream).
    assert make_mask("hospital_b", length=80)[:50] == make_mask("hospital_b", length=50)


def test_empty_mask(make_mask):
    assert make_mask("hospital_a", length=0) == []


def test_participant_order_does_not_matter(make_mask):
    assert make_mask("hospital_a") == make_mask("hospital_a", participants=SITES[::-1])


def test_masks_differ_per_query_per_participant_set_and_per_site(make_mask):
    base = make_mask("hospital_a")
    assert make_mask("hospital_a", query_id="q-2") != base
    assert make_mask("hospital_a", participants=SITES[:4]) != base
    assert make_mask("hospital_b") != base
    assert make_mask("hospital_a", modulus=he.WIDE.plain_modulus) != base
    # Fresh for the smaller set: not the old masks minus the dropped site's pairs.
    a_small = make_mask("hospital_a", participants=SITES[:2])
    a_big = make_mask("hospital_a", participants=SITES[:3])
    c_pair = make_mask("hospital_c", participants=("hospital_a", "hospital_c"))
    assert a_small != [(x - y) % T for x, y in zip(a_big, c_pair)]


def test_apply_adds_mod_t():
    assert masks.apply([1, -1, 5], [T - 1, 1, 0], T) == [0, 0, 5]
    with pytest.raises(InternalError):
        masks.apply([1, 2], [3], T)
    with pytest.raises(DataError, match="only integers"):
        masks.apply([1.5], [3], T)


# -- refusals -----------------------------------------------------------------------------------

def test_refusals(mask_key, mask_directory):
    key = mask_key("hospital_a")
    directory = mask_directory(SITES)
    with pytest.raises(DataError, match="not among"):
        masks.mask("hospital_z", key, directory, "q", SITES, 4, T)
    with pytest.raises(DataError, match="at least two"):
        masks.mask("hospital_a", key, directory, "q", ["hospital_a"], 4, T)
    with pytest.raises(DataError, match="twice"):
        masks.mask("hospital_a", key, directory, "q", ["hospital_a", "hospital_b",
                                                       "hospital_b"], 4, T)
    with pytest.raises(DataError, match="query id"):
        masks.mask("hospital_a", key, directory, "", SITES, 4, T)
    with pytest.raises(DataError, match="modulus"):
        masks.mask("hospital_a", key, directory, "q", SITES, 4, 1 << 64)
    partial = {s: k for s, k in directory.items() if s != "hospital_d"}
    with pytest.raises(ConfigError, match="hospital_d"):
        masks.mask("hospital_a", key, partial, "q", SITES, 4, T)
    wrong_self = dict(directory, hospital_a=directory["hospital_b"])
    with pytest.raises(ConfigError, match="not this site's key"):
        masks.mask("hospital_a", key, wrong_self, "q", SITES, 4, T)
    bad_peer = dict(directory, hospital_c=b"\x00" * 32)  # a low-order point: no shared secret
    with pytest.raises(ConfigError, match="hospital_c"):
        masks.mask("hospital_a", key, bad_peer, "q", SITES, 4, T)


# -- the PRG ------------------------------------------------------------------------------------

def _reference_prg(seed: bytes, length: int, modulus: int) -> list[int]:
    """The specification, word by word: ChaCha20 keystream (zero nonce), little-endian 64-bit
    words, keep w < ⌊2^64/t⌋·t, output w mod t."""
    stream = Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None).encryptor()
    limit = (1 << 64) // modulus * modulus
    out = []
    while len(out) < length:
        word = int.from_bytes(stream.update(bytes(8)), "little")
        if word < limit:
            out.append(word % modulus)
    return out


@pytest.mark.parametrize("modulus", [T, he.WIDE.plain_modulus, 3 << 61, 7])
def test_prg_matches_the_reference(modulus):
    seed = bytes(range(32))
    assert masks.prg_mod(seed, 5000, modulus).tolist() == _reference_prg(seed, 5000, modulus)


def test_prg_rejection_sampling_keeps_uniformity():
    """With t = 3·2^61, a quarter of the 64-bit words are rejected.  A plain ``w mod t`` would
    give the residues below 2^62 (two thirds of [0, t)) three preimages instead of two, i.e.
    probability 3/4 instead of 2/3; the rejection sampler must not."""
    modulus = 3 << 61
    values = masks.prg_mod(bytes(32), 40_000, modulus).tolist()
    low = sum(1 for v in values if v < 1 << 62) / len(values)
    assert abs(low - 2 / 3) < 0.01, low  # a naive reduction gives ≈ 0.75
    stream = Cipher(algorithms.ChaCha20(bytes(32), bytes(16)), mode=None).encryptor()
    naive = [int.from_bytes(stream.update(bytes(8)), "little") % modulus for _ in range(40_000)]
    assert abs(sum(1 for v in naive if v < 1 << 62) / len(naive) - 0.75) < 0.01  # the control


# -- statistics ---------------------------------------------------------------------------------

BINS = 64


def chi_square(values, modulus):
    """Pearson χ² of ``values`` (residues mod ``modulus``) against uniform, over 64 bins."""
    counts = [0] * BINS
    for v in values:
        counts[(v % modulus) * BINS // modulus] += 1
    expected = len(values) / BINS
    return sum((c - expected) ** 2 / expected for c in counts)


def chi_square_critical(dof: int, z: float = 3.719) -> float:
    """Upper quantile of χ²(dof) by Wilson–Hilferty; z = 3.719 ↔ α = 1e-4."""
    h = 2.0 / (9.0 * dof)
    return dof * (1.0 - h + z * math.sqrt(h)) ** 3


def ks_statistic(values, modulus):
    """Kolmogorov–Smirnov distance of ``values`` (residues mod ``modulus``) to U[0, 1)."""
    xs = sorted((v % modulus) / modulus for v in values)
    n = len(xs)
    return max(max((i + 1) / n - x, x - i / n) for i, x in enumerate(xs))


def ks_critical(n: int) -> float:
    return 1.95 / math.sqrt(n)  # asymptotic, α ≈ 1e-3


def assert_uniform(values, modulus):
    n = len(values)
    assert n >= 4096
    chi2 = chi_square(values, modulus)
    assert chi2 < chi_square_critical(BINS - 1), f"χ² = {chi2:.1f}: not uniform mod t"
    ks = ks_statistic(values, modulus)
    assert ks < ks_critical(n), f"KS = {ks:.4f}: not uniform mod t"


def test_the_uniformity_test_can_fail():
    """Negative controls: the test rejects raw data, and a subtly weak mask (uniform on only
    half of [0, t)) — so passing it below means something."""
    rng = random.Random(5)
    raw = [rng.randrange(10**6) for _ in range(4096)]
    with pytest.raises(AssertionError, match="not uniform"):
        assert_uniform(raw, T)
    weak = [(x + rng.randrange(T // 2)) % T for x in raw]
    with pytest.raises(AssertionError, match="not uniform"):
        assert_uniform(weak, T)
    assert_uniform([rng.randrange(T) for _ in range(4096)], T)  # and accepts uniform noise


@pytest.fixture(scope="module")
def masked_federation(mask_key, mask_directory, standard_ctx):
    """Four sites' masked, encrypted vectors (2 × 4096 slots of realistic partials: counts,
    sums), from seeded data; the masks come from deterministic keys, so the statistics below
    are the same on every run."""
    sites = SITES[:4]
    directory = mask_directory(sites)
    rng = random.Random(2021)
    length = 2 * 4096
    data = {s: [rng.randrange(0, 500) if j % 2 else rng.randrange(0, 10**7)
                for j in range(length)] for s in sites}
    ciphertexts = {}
    for s in sites:
        m = masks.mask(s, mask_key(s), directory, "q-uniform", sites, length, T)
        ciphertexts[s] = he.encrypt(standard_ctx, masks.apply(data[s], m, T))
    return sites, data, ciphertexts


def test_single_site_decrypts_to_uniform_noise(standard_keys, masked_federation):
    sites, data, ciphertexts = masked_federation
    for site in (sites[0], sites[-1]):
        seen = standard_keys.decrypt(ciphertexts[site])
        assert seen != data[site]
        assert_uniform(seen, T)


def test_sum_missing_one_site_is_uniform(standard_keys, standard_ctx, masked_federation):
    sites, _data, ciphertexts = masked_federation
    partial = he.add(standard_ctx, [ciphertexts[s] for s in sites[:-1]])
    assert_uniform(standard_keys.decrypt(partial), T)


def test_full_sum_is_exact(standard_keys, standard_ctx, masked_federation):
    sites, data, ciphertexts = masked_federation
    total = he.add(standard_ctx, [ciphertexts[s] for s in sites])
    expected = [sum(col) for col in zip(*(data[s] for s in sites))]
    assert standard_keys.decrypt(total, bound=he.STANDARD.max_abs_total) == expected


# -- keys ---------------------------------------------------------------------------------------

def test_mask_key_file_and_public_text(tmp_path):
    key = masks.generate_private_key()
    path = masks.save_private_key(tmp_path / "mask.pem", key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = masks.load_private_key(path)
    text = masks.public_key_text(key)
    assert masks.public_key_text(loaded) == text
    assert masks.decode_public_key(text) == key.public_key().public_bytes_raw()
    with pytest.raises(ConfigError, match="overwrite"):
        masks.save_private_key(path, masks.generate_private_key())
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        masks.load_private_key(path)


def test_wrong_key_type_and_bad_public_text_refused(tmp_path):
    path = masks.save_private_key(tmp_path / "signing.pem", Ed25519PrivateKey.generate())
    with pytest.raises(ConfigError, match="expected a X25519PrivateKey"):
        masks.load_private_key(path)
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnope\n")
    junk.chmod(0o600)
    with pytest.raises(ConfigError, match="not an unencrypted PEM"):
        masks.load_private_key(junk)
    with pytest.raises(ConfigError, match="base64"):
        masks.decode_public_key("not base64!", owner="hospital_a")
    with pytest.raises(ConfigError, match="18 bytes, expected 32"):
        masks.decode_public_key("A" * 24)


def test_published_keys_reach_the_same_masks(tmp_path):
    """The full round trip a federation does: keys to files, public keys to base64 text
    (federation.yaml), back to raw bytes; the masks still cancel."""
    sites = ("a", "b", "c")
    keys = {}
    for s in sites:
        masks.save_private_key(tmp_path / f"{s}.pem", X25519PrivateKey.generate())
        keys[s] = masks.load_private_key(tmp_path / f"{s}.pem")
    federation = {s: masks.public_key_text(k) for s, k in keys.items()}
    directory = {s: masks.decode_public_key(text, owner=s) for s, text in federation.items()}
    all_masks = [masks.mask(s, keys[s], directory, "q", sites, 100, T) for s in sites]
    assert all(sum(col) % T == 0 for col in zip(*all_masks))
