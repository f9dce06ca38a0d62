"""Shared fixtures of the secure-aggregation core tests: key holders of both profiles, their
checked public contexts, and deterministic per-site X25519 / Ed25519 keys (derived from the
site name, so that mask-based statistics are reproducible run to run).

With ``--import-mode=importlib`` a conftest cannot be imported, so helpers are fixtures.
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedquery.protect import he


@pytest.fixture(scope="session")
def standard_keys() -> he.KeyHolderKeys:
    return he.KeyHolderKeys.generate(he.STANDARD)


@pytest.fixture(scope="session")
def standard_ctx(standard_keys) -> he.PublicContext:
    return he.load_public_context(standard_keys.public_context_bytes(),
                                  standard_keys.fingerprint())


@pytest.fixture(scope="session")
def wide_keys() -> he.KeyHolderKeys:
    return he.KeyHolderKeys.generate(he.WIDE)


@pytest.fixture(scope="session")
def wide_ctx(wide_keys) -> he.PublicContext:
    return he.load_public_context(wide_keys.public_context_bytes(), wide_keys.fingerprint())


def _seed(label: str, site: str) -> bytes:
    return hashlib.sha256(f"fedquery-tests/{label}/{site}".encode()).digest()


@pytest.fixture(scope="session")
def mask_key():
    """``mask_key(site)``: a deterministic X25519 private key for ``site``."""
    return lambda site: X25519PrivateKey.from_private_bytes(_seed("x25519", site))


@pytest.fixture(scope="session")
def mask_directory(mask_key):
    """``mask_directory(sites)``: site → raw public mask key, as read from federation.yaml."""
    return lambda sites: {s: mask_key(s).public_key().public_bytes_raw() for s in sites}


@pytest.fixture(scope="session")
def signing_key():
    """``signing_key(site)``: a deterministic Ed25519 private key for ``site``."""
    return lambda site: Ed25519PrivateKey.from_private_bytes(_seed("ed25519", site))
