"""Ed25519 signatures over secure-aggregation contributions (research note §5.3, §7).

A site signs what it sends: the query id, its name, the participant set, the fingerprint of
the public context it encrypted under and a SHA-256 digest of its ciphertexts.  The key
holder verifies every contribution before it re-sums and decrypts, so the coordinator can
neither forge, replay (into another query or participant set), re-attribute nor alter one.

Each site has a long-lived Ed25519 key pair; the public key is published (base64) in
``federation.yaml``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from fedquery.errors import ConfigError, DataError, InternalError
from fedquery.protect import keyfiles
from fedquery.protect.masks import canonical_participants

LABEL = b"fedquery/secure-aggregation/contribution/v1"


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


@dataclass(frozen=True)
class Contribution:
    """What one site sends for one query: its ciphertexts and the facts it signs with them."""

    query_id: str
    site: str
    participants: tuple[str, ...]
    context_fingerprint: str
    ciphertexts: tuple[bytes, ...]

    def __post_init__(self) -> None:
        names = canonical_participants(self.participants)
        object.__setattr__(self, "participants", names)
        object.__setattr__(self, "ciphertexts", tuple(bytes(c) for c in self.ciphertexts))
        if self.site not in names:
            raise DataError(f"site {self.site!r} is not among the query's participants")
        if not self.query_id:
            raise DataError("a contribution needs a query id")

    def message(self) -> bytes:
        """The canonical byte string that is signed: label, query id, site, sorted
        participants, context fingerprint and ciphertext digest, each length-prefixed."""
        fields = [LABEL, self.query_id.encode(), self.site.encode(),
                  len(self.participants).to_bytes(4, "big"),
                  *(p.encode() for p in self.participants),
                  self.context_fingerprint.lower().encode(),
                  ciphertext_digest(self.ciphertexts)]
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
