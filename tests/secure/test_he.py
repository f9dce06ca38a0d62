"""BFV core: profiles, exact round trips, public contexts that cannot decrypt, refusal of
private/foreign/altered contexts, the key holder's key file, and secret-key hygiene."""

from __future__ import annotations

import inspect
import random
import re
import stat
from pathlib import Path

import pytest
import tenseal as ts

import fedquery
from fedquery.errors import ConfigError, DataError, InternalError, NotSupportedError
from fedquery.protect import he


def _is_prime(n: int) -> bool:
    """Deterministic Miller–Rabin for n < 3.3e24 (these bases suffice)."""
    if n < 2:
        return False
    bases = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
    for p in bases:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in bases:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


# -- profiles -----------------------------------------------------------------------------------

@pytest.mark.parametrize("profile", list(he.PROFILES.values()), ids=list(he.PROFILES))
def test_plain_modulus_is_a_batching_prime(profile):
    t, n = profile.plain_modulus, profile.poly_modulus_degree
    assert _is_prime(t)
    assert t % (2 * n) == 1  # batching: t ≡ 1 (mod 2N)
    assert profile.slots == n
    assert profile.max_abs_total * he.SAFETY_FACTOR <= profile.half_range
    assert 2 * profile.half_range + 1 == t  # signed range [-(t-1)/2, (t-1)/2]


def test_primality_check_can_fail():
    assert not _is_prime(he.STANDARD.plain_modulus + 2)
    assert not _is_prime(561)  # a Carmichael number


def test_profiles_are_the_recommended_parameters():
    assert (he.STANDARD.poly_modulus_degree, he.STANDARD.plain_modulus) == (4096,
                                                                           1125899906826241)
    assert (he.WIDE.poly_modulus_degree, he.WIDE.plain_modulus) == (8192, 576460752303210497)


def test_choose_profile_boundaries():
    assert he.choose_profile(0) is he.STANDARD
    assert he.choose_profile(he.STANDARD.max_abs_total) is he.STANDARD
    assert he.choose_profile(he.STANDARD.max_abs_total + 1) is he.WIDE
    assert he.choose_profile(he.WIDE.max_abs_total) is he.WIDE
    with pytest.raises(NotSupportedError, match="bounds") as caught:
        he.choose_profile(he.WIDE.max_abs_total + 1)
    assert "max_rows_per_unit" in str(caught.value) and "sites" in str(caught.value)
    with pytest.raises(DataError):
        he.choose_profile(-1)


def test_safety_margin_is_real():
    """A bound just under t/2 is refused even though it would fit without the margin."""
    with pytest.raises(NotSupportedError):
        he.choose_profile(he.WIDE.half_range)
    assert he.choose_profile(he.STANDARD.half_range) is he.WIDE


# -- round trips --------------------------------------------------------------------------------

@pytest.mark.parametrize("length", [1, 4095, 4096, 4097, 3 * 4096 + 5])
def test_round_trip_exact_standard(standard_keys, standard_ctx, length):
    rng = random.Random(length)
    bound = he.STANDARD.half_range
    values = [rng.randint(-bound, bound) for _ in range(length)]
    values[0] = -bound  # the extremes of the signed range survive
    if length > 1:
        values[-1] = bound
    blobs = he.encrypt(standard_ctx, values)
    assert len(blobs) == he.ciphertext_count(length, he.STANDARD) == -(-length // 4096)
    assert standard_keys.decrypt(blobs) == values


def test_round_trip_exact_wide(wide_keys, wide_ctx):
    rng = random.Random(3)
    bound = he.WIDE.half_range
    values = [rng.randint(-bound, bound) for _ in range(8192 + 17)]
    blobs = he.encrypt(wide_ctx, values)
    assert len(blobs) == 2
    assert wide_keys.decrypt(blobs) == values


def test_values_are_reduced_mod_t(standard_keys, standard_ctx):
    t = he.STANDARD.plain_modulus
    values = [t + 5, -t - 5, 2 * t, (t + 1) // 2, 10**30 + 7]
    expected = [5, -5, 0, -(t - 1) // 2, (10**30 + 7) % t - t * ((10**30 + 7) % t > t // 2)]
    assert standard_keys.decrypt(he.encrypt(standard_ctx, values)) == expected


def test_sum_of_many_sites_is_exact(standard_keys, standard_ctx):
    rng = random.Random(11)
    sites = [[rng.randint(-10**9, 10**9) for _ in range(4096 + 300)] for _ in range(20)]
    total = he.add(standard_ctx, (he.encrypt(standard_ctx, v) for v in sites))
    assert standard_keys.decrypt(total) == [sum(col) for col in zip(*sites)]


def test_add_is_in_place_and_leaves_inputs_alone(standard_keys, standard_ctx):
    a = he.encrypt(standard_ctx, [1, 2, 3])
    b = he.encrypt(standard_ctx, [10, 20, 30])
    assert standard_keys.decrypt(he.add(standard_ctx, [a, b, a])) == [12, 24, 36]
    assert standard_keys.decrypt(a) == [1, 2, 3]


def test_empty_vector_refused(standard_ctx):
    with pytest.raises(DataError):
        he.encrypt(standard_ctx, [])


def test_non_integers_refused(standard_ctx):
    with pytest.raises(DataError, match="only integers"):
        he.encrypt(standard_ctx, [1, 2.5])


def test_add_refuses_mismatched_layouts(standard_ctx):
    four = he.encrypt(standard_ctx, list(range(4096 + 1)))
    with pytest.raises(InternalError, match="ciphertexts, expected"):
        he.add(standard_ctx, [four, four[:1]])
    with pytest.raises(InternalError, match="slots, expected"):
        he.add(standard_ctx, [four, he.encrypt(standard_ctx, list(range(4096 + 2)))])
    with pytest.raises(InternalError, match="not a BFV ciphertext"):
        he.add(standard_ctx, [four, [b"junk", four[1]]])
    with pytest.raises(InternalError, match="no contribution"):
        he.add(standard_ctx, [])


def test_ciphertext_of_another_profile_refused(standard_ctx, wide_ctx):
    with pytest.raises(InternalError):
        he.add(standard_ctx, [he.encrypt(wide_ctx, [1, 2])])


def test_decrypt_bound_check(standard_keys, standard_ctx):
    blobs = he.encrypt(standard_ctx, [5, -7, 100])
    assert standard_keys.decrypt(blobs, bound=100) == [5, -7, 100]
    with pytest.raises(InternalError, match="1 of 3 decrypted slots exceed") as caught:
        standard_keys.decrypt(blobs, bound=99)
    assert "100" not in str(caught.value)  # no value in the message


def test_encrypt_needs_a_checked_public_context(standard_ctx):
    with pytest.raises(TypeError):
        he.encrypt(standard_ctx.context, [1])
    with pytest.raises(TypeError):
        he.add(standard_ctx.context, [])


# -- public contexts ----------------------------------------------------------------------------

def test_public_context_cannot_decrypt(standard_keys, standard_ctx):
    blob = he.encrypt(standard_ctx, [1, 2, 3])[0]
    total = he.add(standard_ctx, [[blob], [blob]])[0]
    assert not standard_ctx.context.is_private()
    assert not standard_ctx.context.has_secret_key()
    for b in (blob, total):
        vector = ts.bfv_vector_from(standard_ctx.context, b)
        with pytest.raises(ValueError, match="secret_key"):
            vector.decrypt()
    assert standard_keys.decrypt([total]) == [2, 4, 6]


def test_public_blob_holds_only_the_public_key(standard_keys):
    blob = standard_keys.public_context_bytes()
    loaded = ts.context_from(blob)
    assert not loaded.is_private() and loaded.has_public_key()
    assert not loaded.has_relin_keys() and not loaded.has_galois_keys()
    assert len(blob) < 200_000  # research note T8: ≤ 200 KB
    assert standard_keys.fingerprint() == he.fingerprint_of(blob)
    assert re.fullmatch(r"[0-9a-f]{64}", standard_keys.fingerprint())
    assert standard_keys.public_context().fingerprint == standard_keys.fingerprint()


def test_fingerprint_is_case_and_space_tolerant(standard_keys):
    ctx = he.load_public_context(standard_keys.public_context_bytes(),
                                 f" {standard_keys.fingerprint().upper()}\n")
    assert ctx.profile is he.STANDARD


def test_private_blob_refused(standard_keys):
    # What a careless key holder would publish: the private context with its secret key.
    private = standard_keys._context.serialize(save_secret_key=True)
    with pytest.raises(InternalError, match="secret key"):
        he.load_public_context(private, he.fingerprint_of(private))


def test_foreign_key_holder_refused(standard_keys):
    other = he.KeyHolderKeys.generate(he.STANDARD)
    with pytest.raises(InternalError, match="fingerprint"):
        he.load_public_context(other.public_context_bytes(), standard_keys.fingerprint())


def test_altered_blob_refused(standard_keys):
    blob = bytearray(standard_keys.public_context_bytes())
    blob[len(blob) // 2] ^= 0x01
    with pytest.raises(InternalError, match="fingerprint"):
        he.load_public_context(bytes(blob), standard_keys.fingerprint())
    # Even when the attacker also controls the pinned fingerprint, junk does not load.
    with pytest.raises(InternalError, match="does not parse"):
        he.load_public_context(b"junk" * 100, he.fingerprint_of(b"junk" * 100))


def _public(context) -> bytes:
    context.make_context_public()
    return context.serialize(save_relin_keys=False, save_galois_keys=False)


@pytest.mark.parametrize("make", [
    lambda: ts.context(ts.SCHEME_TYPE.BFV, 4096, 1099511480321),       # 40-bit t
    lambda: ts.context(ts.SCHEME_TYPE.BFV, 8192, 1125899906826241),    # standard t, N=8192
    lambda: ts.context(ts.SCHEME_TYPE.BFV, 4096, 1125899906826241,     # weaker modulus
                       coeff_mod_bit_sizes=[30, 30, 30]),
    lambda: ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40, 60]),
], ids=["bfv-40bit-t", "bfv-8192-standard-t", "bfv-small-q", "ckks"])
def test_parameters_outside_the_allow_list_refused(make):
    blob = _public(make())
    with pytest.raises(InternalError, match="not an allowed profile"):
        he.load_public_context(blob, he.fingerprint_of(blob))


# -- the key holder's key file ------------------------------------------------------------------

def test_key_file_round_trip(tmp_path, standard_keys, standard_ctx):
    path = standard_keys.save(tmp_path / "keys" / "bfv.key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = he.KeyHolderKeys.load(path)
    assert loaded.profile is he.STANDARD
    assert loaded.fingerprint() == standard_keys.fingerprint()
    assert loaded.decrypt(he.encrypt(standard_ctx, [-3, 4])) == [-3, 4]
    assert not list(path.parent.glob(".*tmp"))  # no temporary file left behind


def test_fingerprint_stable_after_use(tmp_path, standard_ctx):
    """TenSEAL flips serialized context flags when it loads a ciphertext: the fingerprint of a
    key holder that has decrypted, and of its key file, must not move."""
    keys = he.KeyHolderKeys.generate(he.STANDARD)
    before = keys.fingerprint()
    ctx = keys.public_context()
    keys.decrypt(he.encrypt(ctx, [1, 2, 3]))
    assert he.fingerprint_of(he._public_blob(keys._context)) == before
    assert he.KeyHolderKeys.load(keys.save(tmp_path / "k.key")).fingerprint() == before
    assert he.load_public_context(keys.public_context_bytes(), before).fingerprint == before


def test_key_file_not_overwritten(tmp_path, standard_keys):
    path = standard_keys.save(tmp_path / "bfv.key")
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="overwrite"):
        he.KeyHolderKeys.generate(he.STANDARD).save(path)
    assert path.read_bytes() == before


def test_key_file_readable_by_others_refused(tmp_path, standard_keys):
    path = standard_keys.save(tmp_path / "bfv.key")
    path.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        he.KeyHolderKeys.load(path)


def test_key_file_of_public_context_refused(tmp_path, standard_keys):
    path = tmp_path / "bfv.key"
    path.write_bytes(he.KeyHolderKeys._MAGIC + standard_keys.public_context_bytes())
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="no secret key"):
        he.KeyHolderKeys.load(path)
    other = tmp_path / "other.key"
    other.write_bytes(b"not a key")
    other.chmod(0o600)
    with pytest.raises(ConfigError, match="not a fedquery BFV private key"):
        he.KeyHolderKeys.load(other)
    with pytest.raises(ConfigError, match="does not exist"):
        he.KeyHolderKeys.load(tmp_path / "missing.key")


def test_repr_shows_no_key_material(standard_keys, standard_ctx):
    assert "KeyHolderKeys(standard" in repr(standard_keys)
    assert "PublicContext(standard" in repr(standard_ctx)


# -- secret-key hygiene (research note §5.4 rule a) ---------------------------------------------

# The method call ``.secret_key()`` (not ``has_secret_key()``) and serializing with the key.
SECRET_PATTERNS = (re.compile(r"save_secret_key\s*=\s*True"), re.compile(r"\.secret_key\s*\("))


def test_secret_key_is_serialized_only_by_the_key_holder_class():
    package = Path(fedquery.__file__).parent
    he_path = Path(he.__file__).resolve()
    offenders = []
    for path in package.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for pattern in SECRET_PATTERNS:
            if pattern.search(text) and path.resolve() != he_path:
                offenders.append(f"{path.relative_to(package)}: {pattern.pattern}")
    assert offenders == [], f"secret-key access outside KeyHolderKeys: {offenders}"
    module = he_path.read_text(encoding="utf-8")
    owner = inspect.getsource(he.KeyHolderKeys)
    for pattern in SECRET_PATTERNS:
        assert len(pattern.findall(module)) == len(pattern.findall(owner)), pattern.pattern
    assert len(SECRET_PATTERNS[0].findall(owner)) == 1  # only save() writes the secret key
    assert not SECRET_PATTERNS[1].search(module)  # decryption links the context, never exports sk


def test_secret_key_patterns_can_fire():
    assert SECRET_PATTERNS[0].search("ctx.serialize(save_secret_key = True)")
    assert SECRET_PATTERNS[1].search("sk = ctx.secret_key()")
    assert not SECRET_PATTERNS[1].search("ctx.has_secret_key()")
