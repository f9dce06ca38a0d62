"""The key holder service end to end, in process (through the wire codec): three sites build
real contributions (slots.encode → zero-sum masks → BFV encrypt → Ed25519 sign), the
coordinator sums them, the key holder checks everything, decrypts its own re-sum once and
releases the pooled cells after the combined disclosure checks.  Every way a coordinator can
cheat — replay, drop or add a site, tamper, forge, swap the layout or the public context,
forward a partial sum — is refused, and the integrity failures rotate the keys."""

from __future__ import annotations

import dataclasses
import decimal
import os
import stat
import threading

import pyarrow as pa
import pytest

from fedquery.errors import ConfigError, DataError, InternalError
from fedquery.ir import (
    CellChecks,
    Requirements,
    SecureLayout,
    SecureReleaseRequest,
    SignedContribution,
    SlotColumn,
)
from fedquery.keyholder.client import InProcessKeyHolderClient
from fedquery.keyholder.service import KeyHolderService
from fedquery.protect import he, masks, signing, slots
from fedquery.transport.secure_codec import StaleEpoch

SITES = ("hospital_a", "hospital_b", "hospital_c")
REQUIREMENTS = Requirements(min_cell_count=10, min_sites=2, aggregation="secure")

# sex × (COUNT(*), SUM(bmi) as DECIMAL(…, 1), units behind the count, presence)
LAYOUT = SecureLayout(
    group_columns=("g_0",), groups=(("F",), ("M",), (None,)),
    columns=(SlotColumn("p_0"), SlotColumn("p_1", decimals=1), SlotColumn("__n_0"),
             SlotColumn("__present")),
    checks=CellChecks(min_cell_count=10, dominance=None, zero_cells_disclosive=False,
                      contributors=("__n_0",)),
    profile="standard", bound=10**9)


def _raw(rows: list[tuple]) -> pa.Table:
    """A site's raw result: (sex, count, sum of bmi) per group it has."""
    return pa.table({"g_0": [r[0] for r in rows], "p_0": [r[1] for r in rows],
                     "p_1": pa.array([decimal.Decimal(r[2]) for r in rows],
                                     pa.decimal128(12, 1)),
                     "__n_0": [r[1] for r in rows]})


# A group of 4 patients at each of 3 sites: combined 12 ≥ 10 (released in secure mode, where
# plain mode would suppress it at every site); M has 2 + 3 + 1 = 6 (suppressed).
DATA = {"hospital_a": _raw([("F", 4, "101.5"), ("M", 2, "50.0")]),
        "hospital_b": _raw([("F", 4, "99.1"), ("M", 3, "75.2")]),
        "hospital_c": _raw([("F", 4, "88.8"), ("M", 1, "30.3")])}


@pytest.fixture(scope="module")
def signing_keys(signing_key):
    return {s: signing_key(s).public_key().public_bytes_raw() for s in (*SITES, "hospital_d")}


@pytest.fixture
def service(tmp_path, signing_keys):
    known = {s: k for s, k in signing_keys.items() if s in SITES}
    with KeyHolderService(tmp_path / "kh", known) as svc:
        yield svc


@pytest.fixture
def client(service):
    return InProcessKeyHolderClient(service)


@pytest.fixture(scope="module")
def contribute(mask_key, mask_directory, signing_key):
    """``contribute(client, query_id, ...)``: what the sites and the coordinator do for one
    round; returns the release request (and the public context the sites used)."""
    directory = mask_directory((*SITES, "hospital_d"))

    def build(client, query_id, *, sites=SITES, layout=LAYOUT, data=None, requirements=None,
              context=None, signer=None):
        data = data or DATA
        requirements = requirements or {}
        if context is None:
            epoch, blob, fingerprint = client.public_context(layout.profile)
            ctx = he.load_public_context(blob, fingerprint)
        else:
            epoch, ctx = context
        t = ctx.profile.plain_modulus
        digest = slots.layout_digest(layout)
        contributions = []
        for site in sites:
            values = slots.encode(data.get(site, DATA["hospital_a"]), layout, present="rows")
            mask = masks.mask(site, mask_key(site), directory, query_id, sites, len(values), t)
            ciphertexts = tuple(he.encrypt(ctx, masks.apply(values, mask, t)))
            req = requirements.get(site, REQUIREMENTS)
            signed = signing.Contribution(query_id, site, sites, ctx.fingerprint, ciphertexts,
                                          digest, signing.requirements_json(req))
            signature = signing.sign(signing_key((signer or {}).get(site, site)), signed)
            contributions.append(SignedContribution(site, ciphertexts, signature, req,
                                                    ctx.fingerprint))
        summed = he.add(ctx, (c.ciphertexts for c in contributions))
        return SecureReleaseRequest(query_id, tuple(sites), epoch, layout,
                                    tuple(contributions), tuple(summed))

    return build


def _cells(table: pa.Table) -> dict:
    return {row["g_0"]: row for row in table.to_pylist()}


# ---------------------------------------------------------------------------------------------
# The happy path


def test_releases_exactly_the_pooled_sums(client, service, contribute):
    request = contribute(client, "q-happy")
    table, info = client.release(request)
    cells = _cells(table)
    assert cells["F"]["c_0"] == 12
    assert str(cells["F"]["c_1"]) == "289.4"  # 101.5 + 99.1 + 88.8, exact DECIMAL
    assert cells["F"]["__sites"] == 3 and cells["F"]["__suppressed"] is False
    # M: 6 patients < 10 → suppressed and flagged; the empty group: no site behind it.
    assert cells["M"]["c_0"] is None and cells["M"]["c_1"] is None
    assert cells["M"]["__suppressed"] is True
    assert cells[None]["__suppressed"] is True and cells[None]["__sites"] == 0
    assert "__n_0" not in table.column_names and "__present" not in table.column_names
    assert info == {"suppressed": 2, "participants": list(SITES), "epoch": 1}
    assert service.epoch == 1  # a good release does not rotate


def test_strictest_signed_requirements_apply(client, contribute):
    """One site's own minimum cell is 13: the combined 12 is suppressed too."""
    strict = dataclasses.replace(REQUIREMENTS, min_cell_count=13)
    table, info = client.release(contribute(client, "q-strict",
                                            requirements={"hospital_b": strict}))
    assert _cells(table)["F"]["c_0"] is None and info["suppressed"] == 3


def test_min_sites_from_the_strictest_requirements(client, contribute):
    """F has rows at all three sites, M only at two: min_sites 3 suppresses M (whatever its
    count) even with min cell 1."""
    lax = Requirements(min_cell_count=1, min_sites=3, aggregation="secure")
    data = dict(DATA, hospital_c=_raw([("F", 4, "88.8")]))
    table, _ = client.release(contribute(client, "q-sites", data=data,
                                         requirements={s: lax for s in SITES}))
    cells = _cells(table)
    assert cells["F"]["c_0"] == 12 and cells["M"]["__suppressed"] is True


def test_under_noise_the_coordinator_judges_cells(client, contribute):
    """noise_sigma > 0: no count checks at the key holder (counts are noisy), min_sites still."""
    layout = dataclasses.replace(LAYOUT, noise_sigma=2.0)
    data = {s: DATA[s] for s in SITES}
    table, info = client.release(contribute(client, "q-noise", layout=layout, data=data))
    cells = _cells(table)
    assert cells["M"]["c_0"] == 6  # below min cell, but judged later on the noisy count
    assert info["suppressed"] == 1  # the empty group: fewer sites than min_sites


def test_cell_checks_required_but_missing_from_the_layout(client, service, contribute):
    layout = dataclasses.replace(LAYOUT, checks=None)
    with pytest.raises(InternalError, match="no check columns"):
        client.release(contribute(client, "q-nochecks", layout=layout))
    assert service.epoch == 1


# ---------------------------------------------------------------------------------------------
# Refusals that do not rotate (nothing was decrypted, no integrity failure)


def test_replayed_query_id_is_refused(client, service, contribute):
    request = contribute(client, "q-replay")
    client.release(request)
    with pytest.raises(InternalError, match="already used"):
        client.release(request)
    assert service.epoch == 1


def test_a_failed_attempt_burns_the_query_id(client, service, contribute):
    request = contribute(client, "q-burnt")
    with pytest.raises(InternalError):
        client.release(dataclasses.replace(request, summed=request.contributions[0].ciphertexts))
    assert service.epoch == 2
    with pytest.raises(InternalError, match="already used"):
        client.release(contribute(client, "q-burnt"))  # re-encrypted at the new epoch


def test_stale_epoch_is_refused(client, service, contribute):
    request = contribute(client, "q-stale")
    assert service.rotate() == 2
    with pytest.raises(StaleEpoch, match="epoch 1.*epoch 2"):
        client.release(request)
    assert service.epoch == 2
    table, _ = client.release(contribute(client, "q-stale-again"))
    assert _cells(table)["F"]["c_0"] == 12


def test_missing_participant_is_refused(client, service, contribute):
    request = contribute(client, "q-missing")
    dropped = dataclasses.replace(request, contributions=request.contributions[:2])
    with pytest.raises(InternalError, match="no contribution from announced participant"
                                            r"\(s\) hospital_c"):
        client.release(dropped)
    assert service.epoch == 1


def test_extra_contribution_is_refused(client, contribute):
    request = contribute(client, "q-extra")
    other = contribute(client, "q-extra-d", sites=("hospital_a", "hospital_d"))
    extra = dataclasses.replace(request, contributions=request.contributions
                                + other.contributions[1:])
    with pytest.raises(InternalError, match="not announced: hospital_d"):
        client.release(extra)


def test_unknown_site_is_refused(client, service, contribute):
    """A participant without a published signing key cannot take part."""
    request = contribute(client, "q-unknown", sites=(*SITES, "hospital_d"))
    with pytest.raises(InternalError, match="no published signing key for site.*hospital_d"):
        client.release(request)
    assert service.epoch == 1


def test_a_single_participant_is_refused(client, service, contribute):
    request = contribute(client, "q-alone", sites=("hospital_a", "hospital_b"))
    alone = dataclasses.replace(request, participants=("hospital_a",),
                                contributions=request.contributions[:1])
    with pytest.raises(InternalError, match="at least two participants"):
        client.release(alone)


def test_a_bound_beyond_the_profile_is_refused(client, contribute):
    layout = dataclasses.replace(LAYOUT, bound=he.STANDARD.half_range)
    with pytest.raises(InternalError, match="bound is outside"):
        client.release(contribute(client, "q-bound", layout=layout))


# ---------------------------------------------------------------------------------------------
# Integrity failures: refused, nothing released, keys rotated


def _flip(blob: bytes, index: int) -> bytes:
    data = bytearray(blob)
    data[index] ^= 0x01
    return bytes(data)


def _assert_rotated(service, old_fingerprint: str, epoch: int = 2) -> None:
    assert service.epoch == epoch
    assert service.public_context("standard")[2] != old_fingerprint
    files = sorted(p.name for p in (service.state_dir / "keys").iterdir())
    assert files == [f"epoch-{epoch:08d}-standard.bfv", f"epoch-{epoch:08d}-wide.bfv"]


def _attack(name: str, request: SecureReleaseRequest, contribute, client, standard_keys):
    contributions = request.contributions
    first, second, third = contributions
    if name == "tampered_ciphertext":
        blob = first.ciphertexts[0]
        changed = dataclasses.replace(first, ciphertexts=(_flip(blob, len(blob) // 2),))
        return dataclasses.replace(request, contributions=(changed, second, third))
    if name == "forged_signature":
        return dataclasses.replace(request, contributions=(
            dataclasses.replace(first, signature=_flip(first.signature, 5)), second, third))
    if name == "signed_by_another_site":
        other = contribute(client, "q-attack", signer={"hospital_a": "hospital_b"})
        return dataclasses.replace(request, contributions=(other.contributions[0], second,
                                                           third))
    if name == "lowered_requirements":  # the coordinator weakens a site's own requirements
        lax = Requirements(min_cell_count=1, aggregation="secure")
        return dataclasses.replace(request, contributions=(
            dataclasses.replace(first, requirements=lax), second, third))
    if name == "wrong_layout_digest":
        return dataclasses.replace(request, layout=dataclasses.replace(LAYOUT, bound=10**10))
    if name == "dropped_site_and_shrunk_participants":
        return dataclasses.replace(request, participants=SITES[:2],
                                   contributions=(first, second))
    if name == "swapped_public_context":  # sites were given the coordinator's own key pair
        ctx = he.load_public_context(standard_keys.public_context_bytes(),
                                     standard_keys.fingerprint())
        return contribute(client, "q-attack", context=(request.epoch, ctx))
    if name == "summed_is_one_site":
        return dataclasses.replace(request, summed=first.ciphertexts)
    if name == "summed_is_a_subset":
        ctx = he.load_public_context(*client.public_context("standard")[1:])
        return dataclasses.replace(request, summed=tuple(
            he.add(ctx, [first.ciphertexts, second.ciphertexts])))
    if name == "summed_is_garbage":
        return dataclasses.replace(request, summed=(b"\x00" * 64,))
    if name == "contribution_with_an_extra_ciphertext":
        return dataclasses.replace(request, contributions=(
            dataclasses.replace(first, ciphertexts=first.ciphertexts + first.ciphertexts),
            second, third))
    raise AssertionError(name)


ATTACKS = {
    "tampered_ciphertext": "signature", "forged_signature": "signature",
    "signed_by_another_site": "signature", "lowered_requirements": "signature",
    "wrong_layout_digest": "signature", "dropped_site_and_shrunk_participants": "signature",
    "swapped_public_context": "another public context", "summed_is_one_site": "sum",
    "summed_is_a_subset": "sum", "summed_is_garbage": "sum",
    "contribution_with_an_extra_ciphertext": "ciphertexts, the layout needs",
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_integrity_failures_are_refused_and_rotate_the_keys(attack, client, service,
                                                            contribute, standard_keys):
    old = service.public_context("standard")[2]
    request = _attack(attack, contribute(client, "q-attack"), contribute, client,
                      standard_keys)
    with pytest.raises(InternalError, match=ATTACKS[attack]) as err:
        client.release(request)
    assert "rotated its keys (now epoch 2)" in str(err.value)
    _assert_rotated(service, old)


def test_the_range_check_refuses_a_wrapped_sum(client, service, contribute):
    """Each site's value fits, but three of them wrap around mod t: the decrypted slot is far
    outside the bound, so nothing is released (and the keys rotate)."""
    half = he.STANDARD.half_range
    layout = dataclasses.replace(LAYOUT, checks=None, columns=LAYOUT.columns[:1],
                                 bound=he.STANDARD.max_abs_total)
    big = pa.table({"g_0": ["F"], "p_0": [half // 2 + 1]})
    lax = Requirements(aggregation="secure")
    request = contribute(client, "q-wrap", layout=layout, data={s: big for s in SITES},
                         requirements={s: lax for s in SITES})
    with pytest.raises(InternalError, match="out of range") as err:
        client.release(request)
    assert "rotated" in str(err.value)
    message = str(err.value)
    assert str(half // 2 + 1) not in message and "slots exceed" not in message  # no values
    assert service.epoch == 2


def test_a_sum_beyond_the_planned_bound_is_refused(client, service, contribute):
    layout = dataclasses.replace(LAYOUT, bound=20)  # the bmi sums (×10) exceed it
    with pytest.raises(InternalError, match="out of range"):
        client.release(contribute(client, "q-over", layout=layout))
    assert service.epoch == 2


# ---------------------------------------------------------------------------------------------
# Epochs and persistence


def test_rotates_after_epoch_queries_releases(tmp_path, signing_keys, contribute):
    known = {s: signing_keys[s] for s in SITES}
    with KeyHolderService(tmp_path / "kh", known, epoch_queries=2) as service:
        client = InProcessKeyHolderClient(service)
        client.release(contribute(client, "q-1"))
        assert service.epoch == 1
        _, info = client.release(contribute(client, "q-2"))
        assert info["epoch"] == 1 and service.epoch == 2
        client.release(contribute(client, "q-3"))
    with KeyHolderService(tmp_path / "kh", known, epoch_queries=2) as service:
        client = InProcessKeyHolderClient(service)
        assert service.epoch == 2  # one release in epoch 2 so far (persisted)
        client.release(contribute(client, "q-4"))
        assert service.epoch == 3


def test_state_survives_a_restart(tmp_path, signing_keys, contribute):
    known = {s: signing_keys[s] for s in SITES}
    state = tmp_path / "kh"
    with KeyHolderService(state, known) as service:
        client = InProcessKeyHolderClient(service)
        before = {p: service.public_context(p) for p in he.PROFILES}
        released = client.release(contribute(client, "q-persist"))
        pending = contribute(client, "q-pending")  # encrypted, not yet released
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    for path in (state / "keys").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with KeyHolderService(state, known) as service:
        client = InProcessKeyHolderClient(service)
        assert {p: service.public_context(p) for p in he.PROFILES} == before  # same keys
        with pytest.raises(InternalError, match="already used"):
            client.release(contribute(client, "q-persist"))
        table, info = client.release(pending)  # the old epoch's ciphertexts still decrypt
        assert table.equals(released[0]) and info == released[1]


def test_one_process_per_state_dir(service, signing_keys):
    with pytest.raises(ConfigError, match="another key holder"):
        KeyHolderService(service.state_dir, {"hospital_a": signing_keys["hospital_a"]})


def test_unusable_key_files_are_replaced(tmp_path, signing_keys):
    known = {s: signing_keys[s] for s in SITES}
    with KeyHolderService(tmp_path / "kh", known) as service:
        fingerprint = service.public_context("standard")[2]
    key = tmp_path / "kh" / "keys" / "epoch-00000001-standard.bfv"
    os.chmod(key, 0o644)  # others could have read it: never use it again
    with KeyHolderService(tmp_path / "kh", known) as service:
        assert service.epoch == 2 and service.public_context("standard")[2] != fingerprint
    assert not key.exists()


def test_bad_signing_keys_and_settings_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not an Ed25519 key"):
        KeyHolderService(tmp_path / "a", {"hospital_a": b"\x01" * 31})
    with pytest.raises(ConfigError, match="epoch_queries"):
        KeyHolderService(tmp_path / "b", {}, epoch_queries=0)


def test_the_public_context_is_checked_and_public(client):
    epoch, blob, fingerprint = client.public_context("wide")
    ctx = he.load_public_context(blob, fingerprint)  # refuses a private context
    assert epoch == 1 and ctx.profile is he.WIDE
    with pytest.raises(DataError, match="unknown encryption profile"):
        client.public_context("huge")


def test_homomorphic_sums_serialise_byte_identically(client, contribute):
    """What lets the key holder compare the coordinator's sum with its own byte for byte:
    TenSEAL's sum of the same ciphertexts serialises identically, whatever the order of the
    summands and whichever loaded copy of the public context adds them."""
    request = contribute(client, "q-bytes")
    _, blob, fingerprint = client.public_context("standard")
    one = he.load_public_context(blob, fingerprint)
    two = he.load_public_context(blob, fingerprint)
    lists = [c.ciphertexts for c in request.contributions]
    assert he.add(one, lists) == he.add(two, lists[::-1]) == list(request.summed)
    assert he.add(one, [request.summed]) == list(request.summed)  # re-serialising: same bytes


def test_concurrent_releases_of_one_query_id_decrypt_once(client, contribute):
    """Coordinator threads racing with the same request: exactly one release."""
    request = contribute(client, "q-race")
    outcomes: list[str] = []

    def attempt() -> None:
        try:
            client.release(request)
            outcomes.append("released")
        except InternalError as err:
            outcomes.append("replay" if "already used" in str(err) else str(err))

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["released", "replay", "replay", "replay"]
