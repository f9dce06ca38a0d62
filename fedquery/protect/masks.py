"""Pairwise zero-sum masks mod t (Bonawitz et al., CCS 2017; research note §2.2).

Every site has a long-lived X25519 key pair; its public key is published (base64) in
``federation.yaml``.  For one query, site i's mask is

    r_i = Σ_{j > i} PRG(s_ij) − Σ_{j < i} PRG(s_ij)   (mod t, participants ordered by name)

where s_ij is a seed both i and j derive from their X25519 shared secret with HKDF-SHA256,
bound to the query id, the sorted participant set and the pair.  So Σ_i r_i ≡ 0 (mod t): the
full sum decrypts exactly, while any single site's masked vector, and any sum of fewer than
all participants, is uniform mod t.  A dropped site therefore means re-running the query with
a new id and participant set (fresh masks), never re-using these.

The PRG is the ChaCha20 keystream (``cryptography``), read as little-endian 64-bit words and
turned into uniform integers mod t by rejection sampling.  Nothing here logs values or keys.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Mapping, Sequence

import numpy as np
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedquery.errors import ConfigError, DataError, InternalError
from fedquery.protect import keyfiles

LABEL = b"fedquery/secure-aggregation/pairwise-mask/v1"
_WORD = 8  # bytes per PRG word
_NONCE = bytes(16)  # ChaCha20 counter ‖ nonce: constant, the key is fresh per (pair, query)


# -- keys -------------------------------------------------------------------------------------

def generate_private_key() -> X25519PrivateKey:
    """A new X25519 private key for a site's masks."""
    return X25519PrivateKey.generate()


def public_key_text(private_key: X25519PrivateKey) -> str:
    """The site's public mask key as base64 of its raw 32 bytes (for ``federation.yaml``)."""
    return keyfiles.public_key_text(private_key)


def decode_public_key(text: str | bytes, *, owner: str = "a site") -> bytes:
    """Raw 32 bytes of a base64 public mask key read from ``federation.yaml``."""
    return keyfiles.decode_public_key(text, owner=owner)


def save_private_key(path: str | os.PathLike[str], private_key: X25519PrivateKey):
    """Write the key as PEM to a new file of mode 0600."""
    return keyfiles.save_private_key(path, private_key)


def load_private_key(path: str | os.PathLike[str]) -> X25519PrivateKey:
    """Read a PEM X25519 private key (refusing a file others may read)."""
    return keyfiles.load_private_key(path, X25519PrivateKey)


# -- masks ------------------------------------------------------------------------------------

def canonical_participants(participants: Sequence[str]) -> tuple[str, ...]:
    """The participant set in canonical order (sorted names); refuses duplicates and empty
    names."""
    names = tuple(sorted(participants))
    if any(not isinstance(n, str) or not n for n in names):
        raise DataError("participant names must be non-empty strings")
    if len(set(names)) != len(names):
        raise DataError("the participant list names a site twice")
    return names


def _field(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _pair_info(query_id: str, participants: tuple[str, ...], low: str, high: str,
               modulus: int) -> bytes:
    """HKDF info: the participant count, then the label, query id, sorted participant names,
    the ordered pair and t, each length-prefixed (so no two inputs share an encoding)."""
    fields = [LABEL, query_id.encode(), *(p.encode() for p in participants), low.encode(),
              high.encode(), str(modulus).encode()]
    return len(participants).to_bytes(4, "big") + b"".join(_field(f) for f in fields)


def _seed(shared: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def prg_mod(seed: bytes, length: int, modulus: int) -> np.ndarray:
    """``length`` integers uniform in [0, modulus) from the ChaCha20 keystream of ``seed``
    (rejection sampling: a 64-bit word w is used, as w mod t, only if w < ⌊2^64/t⌋·t)."""
    if not 2 <= modulus < 1 << 63:
        raise DataError("the mask modulus must be in [2, 2^63)")
    if length <= 0:
        return np.zeros(0, dtype=np.uint64)
    limit = (1 << 64) // modulus * modulus
    stream = Cipher(algorithms.ChaCha20(seed, _NONCE), mode=None).encryptor()
    out: list[np.ndarray] = []
    have = 0
    # Expected rejections are rare (probability < t / 2^64 per word); draw a little extra.
    want = length + 16 + length // 64
    while have < length:
        words = np.frombuffer(stream.update(bytes(_WORD * want)), dtype="<u8")
        kept = words[words < np.uint64(limit)]
        out.append(kept)
        have += kept.size
        want = length - have + 16
    return np.concatenate(out)[:length] % np.uint64(modulus)


def mask(site: str, private_key: X25519PrivateKey, peer_public_keys: Mapping[str, bytes],
         query_id: str, participants: Sequence[str], length: int, modulus: int) -> list[int]:
    """Site ``site``'s zero-sum mask for one query: ``length`` integers in [0, modulus) whose
    sum over all ``participants`` is ≡ 0 (mod modulus).

    ``peer_public_keys`` maps site names to raw 32-byte X25519 public keys (as
    :func:`decode_public_key` returns them); it must hold every other participant (and, if it
    lists ``site`` itself, that entry must be this private key's public key)."""
    names = canonical_participants(participants)
    if site not in names:
        raise DataError(f"site {site!r} is not among the query's participants")
    if len(names) < 2:
        raise DataError("secure aggregation needs at least two participants: a lone site's "
                        "mask would be zero")
    if not query_id:
        raise DataError("a mask needs a query id")
    if length < 0:
        raise DataError(f"mask length must be non-negative, got {length}")
    if not 2 <= modulus < 1 << 63:
        raise DataError("the mask modulus must be in [2, 2^63)")
    own = peer_public_keys.get(site)
    if own is not None and bytes(own) != private_key.public_key().public_bytes_raw():
        raise ConfigError(f"the published mask key of {site!r} is not this site's key")
    missing = [p for p in names if p != site and p not in peer_public_keys]
    if missing:
        raise ConfigError(f"no published mask public key for participant(s) "
                          f"{', '.join(missing)}")
    total = np.zeros(length, dtype=np.uint64)
    t = np.uint64(modulus)
    for peer in names:
        if peer == site:
            continue
        try:
            public = X25519PublicKey.from_public_bytes(bytes(peer_public_keys[peer]))
            shared = private_key.exchange(public)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise ConfigError(f"the mask public key of {peer!r} is not a usable X25519 "
                              "key") from None
        low, high = (site, peer) if site < peer else (peer, site)
        stream = prg_mod(_seed(shared, _pair_info(query_id, names, low, high, modulus)),
                         length, modulus)
        if peer > site:
            total = (total + stream) % t
        else:
            total = (total + (t - stream)) % t  # t - stream ∈ (0, t]: no underflow
    return total.tolist()


def apply(values: Sequence[int], mask_values: Sequence[int], modulus: int) -> list[int]:
    """``values + mask`` mod ``modulus`` (slot-wise): what a site encrypts."""
    if len(values) != len(mask_values):
        raise InternalError(f"the mask has {len(mask_values)} slots, the vector "
                            f"{len(values)}")
    try:
        return [(operator.index(v) + m) % modulus for v, m in zip(values, mask_values)]
    except TypeError:
        raise DataError("only integers can be masked (encode sums as fixed-point integers "
                        "first)") from None
