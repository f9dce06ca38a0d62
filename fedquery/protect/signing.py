"""Ed25519 signatures over secure-aggregation contributions (research note §5.3, §7).

A site signs what it sends: the query id, its name, the participant set, the fingerprint of
the public context it encrypted under, a SHA-256 digest of its ciphertexts, the digest of the
slot layout it encoded them with (:func:`fedquery.protect.slots.layout_digest`) and its own
disclosure requirements (:func:`requirements_json`).  The key holder verifies every
contribution before it re-sums and decrypts, so the coordinator can neither forge, replay
(into another query or participant set), re-attribute nor alter one, nor make the key holder
read the slots with another layout or judge them by laxer requirements than a site's own.

Each site has a long-lived Ed25519 key pair; the public key is published (base64) in
``federation.yaml``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from fedquery.errors import ConfigError, DataError, InternalError
from fedquery.ir import Requirements
from fedquery.protect import keyfiles
from fedquery.protect.masks import canonical_participants

# v2: the layout digest and the site's requirements are signed too.
LABEL = b"fedquery/secure-aggregation/contribution/v2"
_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")


# -- keys -------------------------------------------------------------------------------------

def generate_private_key() -> Ed25519PrivateKey:
    """A new Ed25519 signing key for a site."""
    return Ed25519PrivateKey.generate()


def public_key_text(private_key: Ed25519PrivateKey) -> str:
    """The site's public signing key as base64 of its raw 32 bytes (for
    ``federation.yaml``)."""
    return keyfiles.public_key_text(private_key)


def decode_public_key(text: str | bytes, *, owner: str = "a site") -> bytes:
    """Raw 32 bytes of a base64 public signing key read from ``federation.yaml``."""
    return keyfiles.decode_public_key(text, owner=owner)


def save_private_key(path: str | os.PathLike[str], private_key: Ed25519PrivateKey):
    """Write the key as PEM to a new file of mode 0600."""
    return keyfiles.save_private_key(path, private_key)


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Read a PEM Ed25519 private key (refusing a file others may read)."""
    return keyfiles.load_private_key(path, Ed25519PrivateKey)


# -- what is signed ---------------------------------------------------------------------------

def ciphertext_digest(ciphertexts: Sequence[bytes]) -> bytes:
    """SHA-256 over the ciphertexts in order, each length-prefixed (so that moving bytes
    between ciphertexts changes the digest)."""
    digest = hashlib.sha256()
    digest.update(len(ciphertexts).to_bytes(4, "big"))
    for blob in ciphertexts:
        digest.update(len(blob).to_bytes(8, "big"))
        digest.update(blob)
    return digest.digest()


def _field(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _json_value(name: str, value):
    """A requirement's value in its canonical JSON form (tuples as lists, numbers typed)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DataError(f"requirement {name!r} is not a finite number")
        return float(value)
    if isinstance(value, tuple | list):
        return [_json_value(name, v) for v in value]
    raise DataError(f"requirement {name!r} of type {type(value).__name__} cannot be signed")


def requirements_json(requirements: Requirements) -> str:
    """A site's own disclosure requirements as canonical JSON (sorted keys, no spaces), the
    form a contribution signs.  Numbers are normalised (``dominance`` is ``[int n, float
    k]``, ``epsilon`` and ``delta`` floats), so that the same requirements always give the
    same text, also after a trip through the wire codec.

    >>> requirements_json(Requirements(min_cell_count=10, dominance=(2, 85)))[:60]
    '{"aggregation":"plain","delta":null,"dominance":[2,85.0],"ep'
    """
    if not isinstance(requirements, Requirements):
        raise TypeError("requirements_json needs a Requirements")
    obj = {f.name: _json_value(f.name, getattr(requirements, f.name))
           for f in dataclasses.fields(requirements)}
    if requirements.dominance is not None:
        n, k = requirements.dominance
        obj["dominance"] = [int(n), float(k)]
    for name in ("epsilon", "delta"):
        if obj.get(name) is not None:
            obj[name] = float(obj[name])
    for name in ("min_cell_count", "min_sites", "max_groups"):
        if obj.get(name) is not None:
            obj[name] = int(obj[name])
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class Contribution:
    """What one site sends for one query: its ciphertexts and the facts it signs with them."""

    query_id: str
    site: str
    participants: tuple[str, ...]
    context_fingerprint: str
    ciphertexts: tuple[bytes, ...]
    layout_digest: str  # slots.layout_digest of the layout the slots were encoded with
    requirements: str  # requirements_json of the site's own disclosure requirements

    def __post_init__(self) -> None:
        names = canonical_participants(self.participants)
        object.__setattr__(self, "participants", names)
        object.__setattr__(self, "ciphertexts", tuple(bytes(c) for c in self.ciphertexts))
        if self.site not in names:
            raise DataError(f"site {self.site!r} is not among the query's participants")
        if not self.query_id:
            raise DataError("a contribution needs a query id")
        digest = self.layout_digest.lower() if isinstance(self.layout_digest, str) else ""
        if not _HEX_DIGEST.match(digest):
            raise DataError("a contribution's layout digest must be a SHA-256 hex digest")
        object.__setattr__(self, "layout_digest", digest)
        if not isinstance(self.requirements, str):
            raise DataError("a contribution's requirements must be their canonical JSON "
                            "text (signing.requirements_json)")
        try:
            parsed = json.loads(self.requirements)
        except (json.JSONDecodeError, RecursionError, ValueError):
            parsed = None
        if not isinstance(parsed, dict):
            raise DataError("a contribution's requirements are not a JSON object")

    def message(self) -> bytes:
        """The canonical byte string that is signed: label, query id, site, sorted
        participants, context fingerprint, ciphertext digest, layout digest and the site's
        requirements, each length-prefixed."""
        fields = [LABEL, self.query_id.encode(), self.site.encode(),
                  len(self.participants).to_bytes(4, "big"),
                  *(p.encode() for p in self.participants),
                  self.context_fingerprint.lower().encode(),
                  ciphertext_digest(self.ciphertexts),
                  self.layout_digest.encode(), self.requirements.encode()]
        return b"".join(_field(f) for f in fields)


def sign(private_key: Ed25519PrivateKey, contribution: Contribution) -> bytes:
    """The site's 64-byte Ed25519 signature over ``contribution``."""
    return private_key.sign(contribution.message())


def verify(public_key: bytes, contribution: Contribution, signature: bytes) -> None:
    """Check ``signature`` (by the site named in ``contribution``, whose raw public key is
    ``public_key``); raises :class:`InternalError` if it does not verify."""
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes(public_key))
    except ValueError:
        raise ConfigError(f"the signing public key of {contribution.site!r} is not an "
                          "Ed25519 key") from None
    try:
        key.verify(bytes(signature), contribution.message())
    except InvalidSignature:
        raise InternalError(
            f"the secure-aggregation contribution of site {contribution.site!r} for query "
            f"{contribution.query_id!r} does not carry a valid signature: it was altered, "
            "replayed or not sent by that site; refusing it") from None
