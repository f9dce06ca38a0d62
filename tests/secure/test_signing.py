"""Ed25519 signatures over contributions: a valid one verifies; tampering with any signed
field, the ciphertext bytes or their split, or using another site's key, is refused."""

from __future__ import annotations

import dataclasses
import json
import stat

import pytest

from fedquery.errors import ConfigError, DataError, InternalError
from fedquery.ir import Requirements
from fedquery.protect import he, signing

SITES = ("hospital_a", "hospital_b", "hospital_c")
LAYOUT = "ab" * 32  # a layout digest (SHA-256 hex)
REQUIREMENTS = signing.requirements_json(Requirements(min_cell_count=10, dominance=(2, 85),
                                                      min_sites=2, aggregation="secure"))


@pytest.fixture(scope="module")
def contribution(standard_ctx):
    return signing.Contribution(
        query_id="q-42", site="hospital_b", participants=SITES,
        context_fingerprint=standard_ctx.fingerprint,
        ciphertexts=tuple(he.encrypt(standard_ctx, list(range(4096 + 10)))),
        layout_digest=LAYOUT, requirements=REQUIREMENTS)


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
        "layout_digest": {"layout_digest": "cd" * 32},
        "requirements": {"requirements": signing.requirements_json(
            Requirements(min_cell_count=5, dominance=(2, 85), min_sites=2,
                         aggregation="secure"))},
    }[field]
    return dataclasses.replace(c, **changes)


@pytest.mark.parametrize("field", [
    "query_id", "site", "participants_dropped", "participants_added", "fingerprint",
    "ciphertext_byte", "ciphertext_order", "ciphertext_split", "ciphertext_dropped",
    "layout_digest", "requirements"])
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
    fp = standard_ctx.fingerprint
    with pytest.raises(DataError, match="not among"):
        signing.Contribution("q", "hospital_z", SITES, fp, (b"x",), LAYOUT, REQUIREMENTS)
    with pytest.raises(DataError, match="query id"):
        signing.Contribution("", "hospital_a", SITES, fp, (b"x",), LAYOUT, REQUIREMENTS)
    with pytest.raises(DataError, match="layout digest"):
        signing.Contribution("q", "hospital_a", SITES, fp, (b"x",), "not-hex", REQUIREMENTS)
    with pytest.raises(DataError, match="requirements"):
        signing.Contribution("q", "hospital_a", SITES, fp, (b"x",), LAYOUT, "[1]")
    # The layout digest is compared case-insensitively (kept lower case).
    upper = signing.Contribution("q", "hospital_a", SITES, fp, (b"x",), LAYOUT.upper(),
                                 REQUIREMENTS)
    assert upper.layout_digest == LAYOUT


def test_requirements_json_is_canonical():
    """Equal requirements give equal text whatever the number types (YAML may give 85 or
    85.0); every field is in it, keys sorted, no spaces."""
    a = Requirements(min_cell_count=10, dominance=(2, 85), epsilon=1, min_sites=2)
    b = Requirements(min_cell_count=10, dominance=(2.0, 85.0), epsilon=1.0, min_sites=2)
    assert signing.requirements_json(a) == signing.requirements_json(b)
    obj = json.loads(signing.requirements_json(a))
    assert set(obj) == {f.name for f in dataclasses.fields(Requirements)}
    assert list(obj) == sorted(obj) and " " not in signing.requirements_json(a)
    assert obj["dominance"] == [2, 85.0] and obj["epsilon"] == 1.0
    assert signing.requirements_json(a) != signing.requirements_json(
        dataclasses.replace(a, zero_cells_disclosive=True))
    with pytest.raises(DataError, match="finite"):
        signing.requirements_json(Requirements(epsilon=float("inf")))


def test_message_is_unambiguous(standard_ctx):
    """Moving bytes between adjacent fields changes the signed message."""
    fp = standard_ctx.fingerprint
    a = signing.Contribution("q1", "ab", ("ab", "c"), fp, (b"x",), LAYOUT, REQUIREMENTS)
    b = signing.Contribution("q1a", "b", ("b", "c"), fp, (b"x",), LAYOUT, REQUIREMENTS)
    assert a.message() != b.message()
    assert signing.ciphertext_digest([b"ab", b"c"]) != signing.ciphertext_digest([b"a", b"bc"])


def test_signing_key_file_and_public_text(tmp_path, contribution):
    key = signing.generate_private_key()
    path = signing.save_private_key(tmp_path / "sign.pem", key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = signing.load_private_key(path)
    public = signing.decode_public_key(signing.public_key_text(key), owner="hospital_b")
    signing.verify(public, contribution, signing.sign(loaded, contribution))
