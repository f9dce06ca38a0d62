"""BFV homomorphic encryption (TenSEAL) for secure aggregation.

Who holds what (research note §2.1, §5.4, §7):

- The **key holder** owns :class:`KeyHolderKeys`: the private TenSEAL context.  It publishes
  :meth:`KeyHolderKeys.public_context_bytes` and their SHA-256 :meth:`~KeyHolderKeys.fingerprint`
  and decrypts only the federation-wide sum.  This class is the only code in fedquery that may
  serialize a secret key (a test greps the sources).
- **Sites and the coordinator** hold a :class:`PublicContext`, obtained only through
  :func:`load_public_context`, which checks the pinned fingerprint, that the blob carries no
  secret key, and that its parameters are one of the known :data:`PROFILES`.  A public context
  cannot decrypt.
- A site encrypts its (noisy, masked) integer vector with :func:`encrypt`; the coordinator
  sums the sites' ciphertexts slot-wise with :func:`add`.  Ciphertexts travel as ``bytes``.

Values are integers mod the plain modulus ``t``, read in the signed range
``[-(t-1)/2, (t-1)/2]``; the planner bounds the decrypted sum with :func:`choose_profile`.
Nothing here logs values.
"""

from __future__ import annotations

import hashlib
import hmac
import operator
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import tenseal as ts
import tenseal.sealapi  # registers SEAL types, so that parameters can be read

from fedquery.errors import ConfigError, DataError, InternalError, NotSupportedError
from fedquery.protect import keyfiles


@dataclass(frozen=True)
class Profile:
    """BFV parameters: ring degree N (= slots per ciphertext) and plain modulus t, with
    SEAL's default 128-bit coefficient modulus for N (``BFVDefault``)."""

    name: str
    poly_modulus_degree: int
    plain_modulus: int
    slots: int

    @property
    def half_range(self) -> int:
        """The largest |v| a slot can hold: values live in [-(t-1)/2, (t-1)/2]."""
        return (self.plain_modulus - 1) // 2

    @property
    def max_abs_total(self) -> int:
        """The largest |decrypted sum| the planner may ask for (see :data:`SAFETY_FACTOR`)."""
        return self.half_range // SAFETY_FACTOR


STANDARD = Profile("standard", 4096, 1125899906826241, 4096)  # t ≈ 2^50, range ±5.6e14
WIDE = Profile("wide", 8192, 576460752303210497, 8192)  # t ≈ 2^59, range ±2.9e17
PROFILES: dict[str, Profile] = {p.name: p for p in (STANDARD, WIDE)}

# The planned bound must stay below half_range / SAFETY_FACTOR.  The margin absorbs a noise
# tail the planner underestimated, and it makes the key holder's range check meaningful: a
# wrapped-around or tampered sum decrypts to values that are uniform mod t, which fall inside
# the bound with probability at most 1/SAFETY_FACTOR per slot.
SAFETY_FACTOR = 16
# At most this many ciphertexts are summed (research note §3.3: the standard profile has
# ≥ 15 bits of worst-case noise headroom, i.e. > 30,000 fresh ciphertexts).
MAX_SUMMANDS = 1000
# Total coefficient-modulus bits of SEAL's BFVDefault, the 128-bit maximum (note §4).
_COEFF_BITS = {4096: 109, 8192: 218}


def choose_profile(max_abs_total: int) -> Profile:
    """The smallest profile whose signed range holds ``max_abs_total`` — the largest absolute
    value any slot of the decrypted sum can take (clamp bounds × row caps × fixed-point scale ×
    sites, plus the noise tail) — with a :data:`SAFETY_FACTOR` margin.

    Raises :class:`NotSupportedError` when even the wide profile is too small."""
    if max_abs_total < 0:
        raise DataError(f"max_abs_total must be non-negative, got {max_abs_total}")
    for profile in (STANDARD, WIDE):
        if max_abs_total <= profile.max_abs_total:
            return profile
    raise NotSupportedError(
        f"secure aggregation cannot hold the sum: its planned bound ({max_abs_total:.3g}) "
        f"exceeds the {WIDE.max_abs_total:.3g} that the widest encryption profile allows; "
        "the value bounds × rows per unit × fixed-point scale × sites are too large — "
        "narrow the column bounds in the policy, lower max_rows_per_unit, use fewer decimal "
        "places, query fewer sites, or use plain aggregation")


def fingerprint_of(blob: bytes) -> str:
    """SHA-256 (hex) of a public context blob: what sites and the coordinator pin."""
    return hashlib.sha256(blob).hexdigest()


def _parameters(context: ts.Context) -> tuple[str, int, int, int]:
    """(scheme, N, t, total coefficient-modulus bits) of a TenSEAL context."""
    data = context.seal_context().data
    key_data = data.key_context_data()
    parms = key_data.parms()
    scheme = parms.scheme().name
    plain = parms.plain_modulus().value() if scheme == "BFV" else 0
    return scheme, parms.poly_modulus_degree(), plain, key_data.total_coeff_modulus_bit_count()


def _profile_of(context: ts.Context) -> Profile | None:
    """The known profile whose parameters ``context`` has, else None."""
    scheme, degree, plain, bits = _parameters(context)
    for profile in PROFILES.values():
        if (scheme == "BFV" and degree == profile.poly_modulus_degree
                and plain == profile.plain_modulus and bits == _COEFF_BITS[degree]):
            return profile
    return None


def _public_blob(context: ts.Context) -> bytes:
    public = context.copy()
    if public.is_private():
        public.make_context_public()
    # TenSEAL flips these flags when a BFV vector is built or loaded with the context, and
    # they are serialized: fix them, so the fingerprint depends on the public key alone.
    public.auto_relin = public.auto_rescale = public.auto_mod_switch = True
    return public.serialize(save_public_key=True, save_secret_key=False,
                            save_relin_keys=False, save_galois_keys=False)


class PublicContext:
    """A checked public BFV context (sites and coordinator).  Build it with
    :func:`load_public_context`; it can encrypt and add, never decrypt."""

    __slots__ = ("context", "fingerprint", "profile")

    def __init__(self, context: ts.Context, profile: Profile, fingerprint: str) -> None:
        self.context = context
        self.profile = profile
        self.fingerprint = fingerprint

    def __repr__(self) -> str:
        return f"PublicContext({self.profile.name}, fingerprint={self.fingerprint[:12]}…)"


def load_public_context(blob: bytes, expected_fingerprint: str) -> PublicContext:
    """Load the key holder's public context, refusing (with :class:`InternalError`) a blob
    whose SHA-256 is not ``expected_fingerprint``, that holds a secret key, that does not
    parse, or whose parameters are not a known profile."""
    actual = fingerprint_of(blob)
    if not hmac.compare_digest(actual, expected_fingerprint.strip().lower()):
        raise InternalError("the public encryption context does not match the pinned "
                            "fingerprint: refusing it (was it replaced in transit?)")
    try:
        context = ts.context_from(blob)
    except (ValueError, RuntimeError, TypeError):
        raise InternalError("the public encryption context does not parse") from None
    if context.is_private() or context.has_secret_key():
        raise InternalError("the encryption context holds a secret key: a site or the "
                            "coordinator must never receive one; refusing it")
    if not context.has_public_key():
        raise InternalError("the encryption context has no public key")
    profile = _profile_of(context)
    if profile is None:
        scheme, degree, plain, bits = _parameters(context)
        raise InternalError(
            f"the encryption context's parameters ({scheme}, N={degree}, t={plain}, "
            f"{bits}-bit coefficient modulus) are not an allowed profile "
            f"({', '.join(PROFILES)})")
    return PublicContext(context, profile, actual)


def _signed(values: Iterable[int], modulus: int) -> list[int]:
    """Each value mod ``modulus``, centred into [-(m-1)/2, (m-1)/2] (m odd)."""
    half = modulus // 2
    try:
        residues = [operator.index(v) % modulus for v in values]
    except TypeError:
        raise DataError("only integers can be encrypted (encode sums as fixed-point "
                        "integers first)") from None
    return [r - modulus if r > half else r for r in residues]


def ciphertext_count(length: int, profile: Profile) -> int:
    """How many ciphertexts :func:`encrypt` makes of ``length`` values."""
    return -(-length // profile.slots)


def encrypt(public_ctx: PublicContext, values: Sequence[int]) -> list[bytes]:
    """Encrypt integers (reduced mod t) into ⌈len/N⌉ serialized ciphertexts of N slots each
    (the last one shorter).  The sum of several sites' lists is :func:`add`."""
    if not isinstance(public_ctx, PublicContext):
        raise TypeError("encrypt needs a PublicContext from load_public_context")
    if len(values) == 0:
        raise DataError("nothing to encrypt: the vector is empty")
    t = public_ctx.profile.plain_modulus
    n = public_ctx.profile.slots
    signed = _signed(values, t)
    return [ts.bfv_vector(public_ctx.context, signed[start:start + n]).serialize()
            for start in range(0, len(signed), n)]


def _load_vector(context: ts.Context, blob: bytes, what: str):
    try:
        return ts.bfv_vector_from(context, blob)
    except (ValueError, RuntimeError, TypeError):
        raise InternalError(f"{what} is not a BFV ciphertext of this context") from None


def add(public_ctx: PublicContext,
        ciphertext_lists: Iterable[Sequence[bytes]]) -> list[bytes]:
    """The slot-wise homomorphic sum of several sites' :func:`encrypt` outputs (each a list of
    serialized ciphertexts of the same layout).  Streams: one accumulator per ciphertext."""
    if not isinstance(public_ctx, PublicContext):
        raise TypeError("add needs a PublicContext from load_public_context")
    accumulators = None
    sizes: list[int] = []
    count = 0
    for position, blobs in enumerate(ciphertext_lists):
        count += 1
        if count > MAX_SUMMANDS:
            raise NotSupportedError(f"secure aggregation sums at most {MAX_SUMMANDS} "
                                    "contributions (BFV noise headroom)")
        if accumulators is None:
            if len(blobs) == 0:
                raise InternalError("contribution 0 holds no ciphertext")
            accumulators = [_load_vector(public_ctx.context, b, f"contribution 0, part {i}")
                            for i, b in enumerate(blobs)]
            sizes = [a.size() for a in accumulators]
            continue
        if len(blobs) != len(accumulators):
            raise InternalError(f"contribution {position} has {len(blobs)} ciphertexts, "
                                f"expected {len(accumulators)}")
        for i, blob in enumerate(blobs):
            vector = _load_vector(public_ctx.context, blob, f"contribution {position}, part {i}")
            if vector.size() != sizes[i]:
                raise InternalError(f"contribution {position}, part {i} has "
                                    f"{vector.size()} slots, expected {sizes[i]}")
            accumulators[i].add_(vector)
    if accumulators is None:
        raise InternalError("no contribution to add")
    return [a.serialize() for a in accumulators]


class KeyHolderKeys:
    """The key holder's BFV key pair (a private TenSEAL context).  The only place in fedquery
    where a secret key is serialized (:meth:`save`) or used (:meth:`decrypt`)."""

    __slots__ = ("_context", "_public_blob", "profile")

    def __init__(self, context: ts.Context, profile: Profile) -> None:
        if not context.is_private():
            raise InternalError("KeyHolderKeys needs a private context")
        self._context = context
        self.profile = profile
        self._public_blob = _public_blob(context)

    def __repr__(self) -> str:
        return f"KeyHolderKeys({self.profile.name}, fingerprint={self.fingerprint()[:12]}…)"

    @classmethod
    def generate(cls, profile: Profile = STANDARD) -> KeyHolderKeys:
        """A fresh key pair for ``profile`` (TenSEAL draws the keys from SEAL's CSPRNG)."""
        context = ts.context(ts.SCHEME_TYPE.BFV, profile.poly_modulus_degree,
                             profile.plain_modulus)
        return cls(context, profile)

    def public_context_bytes(self) -> bytes:
        """The public context to publish: public key only (no secret, relinearization or
        Galois keys)."""
        return self._public_blob

    def fingerprint(self) -> str:
        """SHA-256 (hex) of :meth:`public_context_bytes`, pinned in ``federation.yaml``."""
        return fingerprint_of(self._public_blob)

    def public_context(self) -> PublicContext:
        """The key holder's own checked public context (to re-sum signed contributions)."""
        return load_public_context(self._public_blob, self.fingerprint())

    def decrypt(self, ciphertexts: Sequence[bytes], *,
                bound: int | None = None) -> list[int]:
        """The values of serialized ciphertexts (concatenated, in order), each centred into
        [-(t-1)/2, (t-1)/2].  Decrypt only a federation-wide sum.

        With ``bound`` (the planner's max_abs_total), refuse with :class:`InternalError` if
        any slot exceeds it: the sum wrapped around, a site is missing, or a ciphertext was
        tampered with — release nothing then (and rotate the key)."""
        t = self.profile.plain_modulus
        out: list[int] = []
        for i, blob in enumerate(ciphertexts):
            vector = _load_vector(self._context, blob, f"ciphertext {i}")
            out.extend(_signed(vector.decrypt(), t))
        if bound is not None:
            over = sum(1 for v in out if abs(v) > bound)
            if over:
                raise InternalError(
                    f"{over} of {len(out)} decrypted slots exceed the planned bound: the sum "
                    "wrapped around, a contribution is missing, or a ciphertext was altered; "
                    "nothing may be released from it")
        return out

    # -- persistence (mode 0600) ---------------------------------------------------------------

    _MAGIC = b"fedquery-bfv-private-context-v1\n"

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the private context (with its secret key) to a new file of mode 0600."""
        blob = self._context.serialize(save_public_key=True, save_secret_key=True,
                                       save_relin_keys=False, save_galois_keys=False)
        return keyfiles.write_private_file(path, self._MAGIC + blob)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KeyHolderKeys:
        """Read a key pair written by :meth:`save` (refusing a file others may read)."""
        data = keyfiles.read_private_file(path)
        if not data.startswith(cls._MAGIC):
            raise ConfigError(f"{path} is not a fedquery BFV private key file",
                                       path=str(path))
        try:
            context = ts.context_from(data[len(cls._MAGIC):])
        except (ValueError, RuntimeError, TypeError):
            raise ConfigError(f"{path} does not hold a readable BFV context",
                                       path=str(path)) from None
        if not context.is_private():
            raise ConfigError(f"{path} holds no secret key", path=str(path))
        profile = _profile_of(context)
        if profile is None:
            raise ConfigError(f"{path} holds a context of unknown parameters",
                                       path=str(path))
        return cls(context, profile)
