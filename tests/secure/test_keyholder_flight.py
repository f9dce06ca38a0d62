"""The key holder over Arrow Flight (TLS on 127.0.0.1, port 0): the same answers as in
process, the coordinator's token guarding releases, typed errors across the wire; the
``key_holder`` section and site public keys of ``federation.yaml``; ``fedquery keyholder
serve`` as a real process."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from fedquery.errors import ConfigError, DataError, InternalError, OperationalError
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
from fedquery.transport import certs, secure_codec
from fedquery.transport.codec import MalformedMessage
from fedquery.transport.federation import key_holder_client, load_federation
from fedquery.transport.keyholder_flight import (
    FlightKeyHolderClient,
    KeyHolderFlightServer,
)
from fedquery.transport.secure_codec import StaleEpoch

SITES = ("hospital_a", "hospital_b", "hospital_c")
TOKEN = "coordinator-token-for-tests"
REQUIREMENTS = Requirements(min_cell_count=5, min_sites=2, aggregation="secure")
LAYOUT = SecureLayout(
    group_columns=("g_0",), groups=(("F",), ("M",)),
    columns=(SlotColumn("p_0"), SlotColumn("__n_0"), SlotColumn("__present")),
    checks=CellChecks(5, None, False, ("__n_0",)), profile="standard", bound=10**9)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    certs.init_ca(folder)
    certs.issue(folder, "key_holder")
    return folder


@pytest.fixture(scope="module")
def keyholder(tmp_path_factory, pki, signing_key):
    """A key holder service served over TLS; yields (service, server)."""
    keys = {s: signing_key(s).public_key().public_bytes_raw() for s in SITES}
    service = KeyHolderService(tmp_path_factory.mktemp("kh") / "state", keys)
    pair = flight.CertKeyPair(cert=(pki / "key_holder.pem").read_bytes(),
                              key=(pki / "key_holder.key").read_bytes())
    server = KeyHolderFlightServer(service, "grpc+tls://127.0.0.1:0", tls_certificates=[pair],
                                   token_sha256=hashlib.sha256(TOKEN.encode()).hexdigest())
    try:
        yield service, server
    finally:
        server.shutdown()
        server.wait()
        service.close()


def _client(server, pki, token: str | None = TOKEN) -> FlightKeyHolderClient:
    return FlightKeyHolderClient(f"grpc+tls://127.0.0.1:{server.port}", token,
                                 ca_pem=certs.load_ca_pem(pki / "ca.pem"), timeout=30)


@pytest.fixture
def client(keyholder, pki):
    c = _client(keyholder[1], pki)
    yield c
    c.close()


@pytest.fixture(scope="module")
def contribute(mask_key, mask_directory, signing_key):
    directory = mask_directory(SITES)

    def build(client, query_id: str) -> SecureReleaseRequest:
        epoch, blob, fingerprint = client.public_context("standard")
        ctx = he.load_public_context(blob, fingerprint)
        t, digest = ctx.profile.plain_modulus, slots.layout_digest(LAYOUT)
        contributions = []
        for i, site in enumerate(SITES):
            raw = pa.table({"g_0": ["F", "M"], "p_0": [3 + i, 1], "__n_0": [3 + i, 1]})
            values = slots.encode(raw, LAYOUT, present="rows")
            mask = masks.mask(site, mask_key(site), directory, query_id, SITES, len(values), t)
            cts = tuple(he.encrypt(ctx, masks.apply(values, mask, t)))
            signed = signing.Contribution(query_id, site, SITES, fingerprint, cts, digest,
                                          signing.requirements_json(REQUIREMENTS))
            contributions.append(SignedContribution(
                site, cts, signing.sign(signing_key(site), signed), REQUIREMENTS, fingerprint))
        summed = he.add(ctx, (c.ciphertexts for c in contributions))
        return SecureReleaseRequest(query_id, SITES, epoch, LAYOUT, tuple(contributions),
                                    tuple(summed))

    return build


# ---------------------------------------------------------------------------------------------
# Flight == in process


def test_flight_gives_the_same_answers_as_in_process(keyholder, client, contribute):
    service, _ = keyholder
    local = InProcessKeyHolderClient(service)
    for profile in he.PROFILES:
        assert client.public_context(profile) == local.public_context(profile)
    over_flight = client.release(contribute(client, "q-flight"))
    in_process = local.release(contribute(local, "q-local"))
    assert over_flight[0].equals(in_process[0]) and over_flight[1] == in_process[1]
    cells = {r["g_0"]: r for r in over_flight[0].to_pylist()}
    assert cells["F"]["c_0"] == 12 and cells["M"]["c_0"] is None  # 3 < 5: suppressed
    assert client.health()["epoch"] == service.epoch


def test_public_context_needs_no_token(keyholder, pki):
    with _client(keyholder[1], pki, token=None) as anonymous:
        epoch, blob, fingerprint = anonymous.public_context("standard")
        assert he.load_public_context(blob, fingerprint).profile is he.STANDARD
        with pytest.raises(ConfigError, match="needs the coordinator's token"):
            anonymous.release(SecureReleaseRequest("q", SITES, epoch, LAYOUT, (), ()))


def test_wrong_or_missing_token_is_refused(keyholder, pki, contribute, client):
    request = contribute(client, "q-token")
    with _client(keyholder[1], pki, token="not-the-coordinator") as wrong:
        with pytest.raises(OperationalError, match="authentication failed.*unknown token") \
                as err:
            wrong.release(request)
        assert isinstance(err.value.__cause__, flight.FlightUnauthenticatedError)
        assert "not-the-coordinator" not in str(err.value)
    raw = flight.FlightClient(f"grpc+tls://127.0.0.1:{keyholder[1].port}",
                              tls_root_certs=certs.load_ca_pem(pki / "ca.pem"))
    with raw:
        descriptor = flight.FlightDescriptor.for_command(b"release")
        with pytest.raises(flight.FlightUnauthenticatedError, match="coordinator's bearer"):
            writer, reader = raw.do_exchange(descriptor, flight.FlightCallOptions(timeout=5))
            table = secure_codec.release_request_table(request)
            writer.begin(table.schema)
            writer.write_table(table)
            writer.done_writing()
            reader.read_all()
        bad = flight.FlightCallOptions(timeout=5, headers=[(b"authorization", b"Bearer nope")])
        with pytest.raises(flight.FlightUnauthenticatedError, match="unknown token"):
            list(raw.do_action(flight.Action("health", b""), bad))
    # Nothing was attempted: the query id is still unused.
    assert client.release(request)[1]["participants"] == list(SITES)


def test_errors_are_typed_across_the_wire(keyholder, client, contribute):
    service, _ = keyholder
    request = contribute(client, "q-typed")
    client.release(request)
    with pytest.raises(InternalError, match="already used"):
        client.release(request)
    stale = contribute(client, "q-typed-stale")
    service.rotate()
    with pytest.raises(StaleEpoch, match="fetch the public context again"):
        client.release(stale)
    epoch = service.epoch
    cheat = contribute(client, "q-typed-cheat")
    with pytest.raises(InternalError, match="not the sum of the signed contributions"):
        client.release(dataclasses.replace(cheat, summed=cheat.contributions[0].ciphertexts))
    assert service.epoch == epoch + 1
    with pytest.raises(DataError, match="unknown encryption profile"):
        client.public_context("huge")


def test_malformed_requests_are_refused(keyholder, pki):
    raw = flight.FlightClient(f"grpc+tls://127.0.0.1:{keyholder[1].port}",
                              tls_root_certs=certs.load_ca_pem(pki / "ca.pem"))
    options = flight.FlightCallOptions(
        timeout=5, headers=[(b"authorization", f"Bearer {TOKEN}".encode())])
    with raw:
        writer, reader = raw.do_exchange(flight.FlightDescriptor.for_command(b"release"),
                                         options)
        table = pa.table({"x": [1]})
        with pytest.raises(flight.FlightServerError, match="no fedquery-secure header"):
            writer.begin(table.schema)
            writer.write_table(table)
            writer.done_writing()
            reader.read_all()
        with pytest.raises(flight.FlightServerError, match="unknown action"):
            list(raw.do_action(flight.Action("decrypt", b""), options))
        with pytest.raises(flight.FlightServerError, match="not offered by the key holder"):
            raw.do_get(flight.Ticket(b"x"), options).read_all()


# ---------------------------------------------------------------------------------------------
# The codec


def test_codec_round_trip_and_checks(keyholder, contribute):
    local = InProcessKeyHolderClient(keyholder[0])
    request = contribute(local, "q-codec")
    assert secure_codec.decode_release_request(
        secure_codec.encode_release_request(request)) == request
    table = secure_codec.release_request_table(request)
    header = table.schema.metadata[secure_codec.HEADER_KEY]
    cases = {
        b'"version":1': b'"version":2',
        b'"kind":"release_request"': b'"kind":"release_reply"',
        b'"epoch":': b'"epoch":true,"x":',
        b'"min_sites":2': b'"min_sites":"2"',
        b'"context_fingerprint":"': b'"context_fingerprint":"zz',
    }
    for old, new in cases.items():
        assert old in header, old
        broken = table.replace_schema_metadata({secure_codec.HEADER_KEY:
                                                header.replace(old, new, 1)})
        with pytest.raises(MalformedMessage):
            secure_codec.decode_release_request_table(broken)
    # Rows: a signature missing, a ciphertext part twice, a row for an unknown site.
    rows = table.to_pylist()
    for mutate in (lambda r: [x for x in r if x["role"] != "signature"],
                   lambda r: r + [r[0]],
                   lambda r: r + [dict(r[0], site="hospital_z")],
                   lambda r: [dict(x, role="plaintext") if i == 0 else x
                              for i, x in enumerate(r)]):
        broken = pa.Table.from_pylist(mutate(rows), schema=table.schema)
        with pytest.raises(MalformedMessage):
            secure_codec.decode_release_request_table(broken)
    with pytest.raises(MalformedMessage, match="does not match its fingerprint"):
        secure_codec.decode_public_context(
            secure_codec.encode_public_context(1, "standard", b"blob", "0" * 64))


# ---------------------------------------------------------------------------------------------
# federation.yaml


def _federation(path: Path, pki: Path, *, key_holder: str = "", site_extra: str = "") -> Path:
    keys = f", x25519: '{'A' * 43}=', ed25519: '{'B' * 43}='"
    path.write_text(
        "version: 1\n"
        f"ca: '{pki / 'ca.pem'}'\n"
        "sites:\n"
        f"  hospital_a: {{endpoint: 'grpc+tls://127.0.0.1:1'{keys}{site_extra}}}\n"
        "  hospital_b: {endpoint: 'grpc+tls://127.0.0.1:2'}\n"
        + key_holder)
    return path


def test_federation_key_holder_and_site_keys(tmp_path, pki, keyholder, monkeypatch):
    monkeypatch.setenv("FQ_KH_TOKEN", TOKEN)
    path = _federation(tmp_path / "federation.yaml", pki, key_holder=(
        f"key_holder: {{endpoint: 'grpc+tls://127.0.0.1:{keyholder[1].port}', "
        "token: {$env: FQ_KH_TOKEN}}\n"))
    fed = load_federation(path)
    assert fed.key_holder.endpoint.endswith(f":{keyholder[1].port}")
    assert fed.key_holder.token == TOKEN and fed.key_holder.ca == pki / "ca.pem"
    assert fed.sites[0].x25519 == b"\x00" * 32 and fed.sites[0].ed25519[:1] == b"\x04"
    assert fed.signing_keys.keys() == fed.mask_keys.keys() == {"hospital_a"}
    with key_holder_client(fed) as client:
        assert client.public_context("standard")[0] == keyholder[0].epoch
    monkeypatch.delenv("FQ_KH_TOKEN")
    with pytest.raises(ConfigError, match="FQ_KH_TOKEN is not set"):
        load_federation(path)
    assert load_federation(path, secrets=False).key_holder.token is None


def test_federation_without_key_holder(tmp_path, pki):
    fed = load_federation(_federation(tmp_path / "f.yaml", pki))
    assert fed.key_holder is None
    with pytest.raises(ConfigError, match="no key_holder section"):
        key_holder_client(fed)


@pytest.mark.parametrize("key_holder, site_extra, message", [
    ("key_holder: {endpoint: 'grpc+tcp://127.0.0.1:9'}\n", "",
     "key_holder.endpoint: plain-text endpoint"),
    ("key_holder: {endpoint: 'grpc+tls://127.0.0.1:9', token: {$env: X}, token_file: t}\n",
     "", "key_holder: give token or token_file, not both"),
    ("key_holder: {endpoint: 'grpc+tls://127.0.0.1:9', tokne: x}\n", "",
     "unknown key 'tokne'; did you mean 'token'"),
    ("key_holder: {endpoint: 'https://x:1'}\n", "", "key_holder.endpoint"),
    ("", ", signing: x", "unknown key 'signing'"),
])
def test_federation_problems_are_located(tmp_path, pki, key_holder, site_extra, message):
    path = _federation(tmp_path / "f.yaml", pki, key_holder=key_holder, site_extra=site_extra)
    with pytest.raises(ConfigError, match=message):
        load_federation(path)


def test_federation_refuses_malformed_public_keys(tmp_path, pki):
    path = tmp_path / "f.yaml"
    head = f"version: 1\nca: '{pki / 'ca.pem'}'\nsites:\n"
    path.write_text(head + "  hospital_a: {endpoint: 'grpc+tls://127.0.0.1:1', "
                    "ed25519: 'short='}\n")
    with pytest.raises(ConfigError, match="f.yaml:4:.*sites.hospital_a.ed25519: 'short=' is "
                                          "not valid: expected base64 of a raw 32-byte"):
        load_federation(path)
    path.write_text(head + "".join(f"  {s}: {{endpoint: 'grpc+tls://127.0.0.1:1', "
                                   f"x25519: '{'A' * 43}='}}\n" for s in SITES[:2]))
    with pytest.raises(ConfigError, match="two sites publish the same x25519 key"):
        load_federation(path)


# ---------------------------------------------------------------------------------------------
# fedquery keyholder serve


def test_keyholder_serve_process(tmp_path, pki, signing_key):
    federation = tmp_path / "federation.yaml"
    site_keys = {s: signing.public_key_text(signing_key(s)) for s in SITES}
    federation.write_text(
        f"version: 1\nca: '{pki / 'ca.pem'}'\nsites:\n" + "".join(
            f"  {s}: {{endpoint: 'grpc+tls://127.0.0.1:{i + 1}', ed25519: '{k}'}}\n"
            for i, (s, k) in enumerate(site_keys.items())))
    token_file = tmp_path / "coordinator.token"
    token_file.write_text(TOKEN + "\n")
    os.chmod(token_file, 0o600)
    port_file = tmp_path / "port"
    command = [sys.executable, "-m", "fedquery.cli.main", "keyholder", "serve",
               "--federation", str(federation), "--state-dir", str(tmp_path / "state"),
               "--tls-cert", str(pki / "key_holder.pem"), "--tls-key",
               str(pki / "key_holder.key"), "--token-file", str(token_file),
               "--port-file", str(port_file)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the key holder did not start"
            time.sleep(0.05)
        port = int(port_file.read_text())
        with FlightKeyHolderClient(f"grpc+tls://127.0.0.1:{port}", TOKEN,
                                   ca_pem=certs.load_ca_pem(pki / "ca.pem")) as client:
            health = client.health()
            assert health["epoch"] == 1 and health["sites"] == list(SITES)
            _, blob, fingerprint = client.public_context("standard")
            assert he.load_public_context(blob, fingerprint).profile is he.STANDARD
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
        assert process.returncode == 0, stderr
        assert "event=stopped keyholder" in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    keys = sorted(p.name for p in (tmp_path / "state" / "keys").iterdir())
    assert keys == ["epoch-00000001-standard.bfv", "epoch-00000001-wide.bfv"]


def test_keyholder_serve_usage_errors(tmp_path, pki):
    from click.testing import CliRunner

    from fedquery.cli.main import main
    federation = _federation(tmp_path / "f.yaml", pki)
    base = ["keyholder", "serve", "--federation", str(federation), "--state-dir",
            str(tmp_path / "state"), "--insecure"]
    runner = CliRunner()
    result = runner.invoke(main, base)
    assert result.exit_code == 2 and "--token-sha256 HASH or --token-file" in result.output
    result = runner.invoke(main, [*base, "--token-sha256", "abc"])
    assert result.exit_code == 2 and "SHA-256 hex digest" in result.output
    no_keys = tmp_path / "nokeys.yaml"
    no_keys.write_text(f"version: 1\nca: '{pki / 'ca.pem'}'\nsites:\n"
                       "  hospital_a: {endpoint: 'grpc+tls://127.0.0.1:1'}\n")
    result = runner.invoke(main, ["keyholder", "serve", "--federation", str(no_keys),
                                  "--state-dir", str(tmp_path / "s2"), "--insecure",
                                  "--token-sha256", "0" * 64])
    assert result.exit_code == 2 and "no site publishes an ed25519 key" in result.output
