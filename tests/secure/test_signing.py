"""Ed25519 signatures over contributions: a valid one verifies; tampering with any signed
field, the ciphertext bytes or their split, or using another site's key, is refused."""

from __future__ import annotations

import dataclasses
import stat

import pytest

from fedquery.errors import ConfigError, DataError, InternalError
from fedquery.protect import he, signing

SITES = ("hospital_a", "hospital_b", "hospital_c")


@pytest.fixture(scope="module")
def contribution(standard_ctx):
    return signing.Contribution(
        query_id="q-42", site="hospital_b", participants=SITES,
        context_fingerprint=standard_ctx.fingerprint,
        ciphertexts=tuple(he.encrypt(standard_ctx, list(range(4096 + 10)))))


@pytest.fixture(scope="module")
def signed(contribution, signing_key):
    key = signing_key("hospital_b")
    return signing.sign(key, contribution), key.public_key().public_bytes_raw()


def test_valid_signature_verifies(contribution, signed):
    signature, public = signed
    assert len(signature) == 64
    signing.verify(public, contribution, signature)  # no exception
    # The participant order is canonical: the same set in another order verifies too.
    reordered = dataclasses.replace(contribution, participants=SITES[::-1])
    signing.verify(public, reordered, signature)


def _flip(blob: bytes, index: int) -> bytes:
    data = bytearray(blob)
    data[index] ^= 0x01
    return bytes(data)


def _tampered(c: signing.Contribution, field: str) -> signing.Contribution:
    first, second = c.ciphertexts
    changes = {
        "query_id": {"query_id": "q-43"},
        "site": {"site": "hospital_a"},
        "participants_dropped": {"participants": ("hospital_b", "hospital_c")},
        "participants_added": {"participants": SITES + ("hospital_d",)},
        "fingerprint": {"context_fingerprint": "0" * 64},
        "ciphertext_byte": {"ciphertexts": (_flip(first, len(first) // 2), second)},
        "ciphertext_order": {"ciphertexts": (second, first)},
        "ciphertext_split": {"ciphertexts": (first + second[:1], second[1:])},
        "ciphertext_dropped": {"ciphertexts": (first,)},
    }[field]
    return dataclasses.replace(c, **changes)


@pytest.mark.parametrize("field", [
    "query_id", "site", "participants_dropped", "participants_added", "fingerprint",
    "ciphertext_byte", "ciphertext_order", "ciphertext_split", "ciphertext_dropped"])
def test_tampering_any_field_is_caught(contribution, signed, field):
    signature, public = signed
    forged = _tampered(contribution, field)
    assert forged.message() != contribution.message()
    with pytest.raises(InternalError, match="does not carry a valid signature"):
        signing.verify(public, forged, signature)


def test_tampered_signature_and_foreign_key_refused(contribution, signed, signing_key):
    signature, public = signed
    with pytest.raises(InternalError):
        signing.verify(public, contribution, _flip(signature, 10))
    other = signing_key("hospital_a").public_key().public_bytes_raw()
    with pytest.raises(InternalError):
        signing.verify(other, contribution, signature)
    with pytest.raises(ConfigError):
        signing.verify(b"\x01" * 31, contribution, signature)


def test_contribution_checks_its_facts(standard_ctx):
    with pytest.raises(DataError, match="not among"):
        signing.Contribution("q", "hospital_z", SITES, standard_ctx.fingerprint, (b"x",))
    with pytest.raises(DataError, match="query id"):
        signing.Contribution("", "hospital_a", SITES, standard_ctx.fingerprint, (b"x",))


def test_message_is_unambiguous(standard_ctx):
    """Moving bytes between adjacent fields changes the signed message."""
    fp = standard_ctx.fingerprint
    a = signing.Contribution("q1", "ab", ("ab", "c"), fp, (b"x",))
    b = signing.Contribution("q1a", "b", ("b", "c"), fp, (b"x",))
    assert a.message() != b.message()
    assert signing.ciphertext_digest([b"ab", b"c"]) != signing.ciphertext_digest([b"a", b"bc"])


def test_signing_key_file_and_public_text(tmp_path, contribution):
    key = signing.generate_private_key()
    path = signing.save_private_key(tmp_path / "sign.pem", key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = signing.load_private_key(path)
    public = signing.decode_public_key(signing.public_key_text(key), owner="hospital_b")
    signing.verify(public, contribution, signing.sign(loaded, contribution))
