"""Federation CA and site certificates: files, permissions, contents, and real Flight TLS."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import stat

import pyarrow.flight as flight
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedquery.cli.certs import certs as certs_cli
from fedquery.errors import ConfigError
from fedquery.transport import certs

OPTIONS = flight.FlightCallOptions(timeout=5)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _cert(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture
def ca_dir(tmp_path):
    folder = tmp_path / "pki"
    certs.init_ca(folder)
    return folder


# ---------------------------------------------------------------------------------------------
# Files, permissions, contents


def test_init_ca_writes_self_signed_ca_and_private_key(tmp_path):
    folder = tmp_path / "new" / "pki"
    files = certs.init_ca(folder, name="Test network CA")
    assert files == certs.CaFiles(cert=folder / "ca.pem", key=folder / "ca.key")
    assert _mode(files.key) == 0o600
    assert _mode(folder) == 0o700           # created by init_ca: holds private keys
    assert sorted(p.name for p in folder.iterdir()) == ["ca.key", "ca.pem"]   # no temp files

    ca = _cert(files.cert)
    assert ca.subject == ca.issuer
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Test network CA"
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(ca.public_key())
    ca.verify_directly_issued_by(ca)
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert dt.timedelta(days=3650) <= lifetime <= dt.timedelta(days=3650, minutes=10)

    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert key.public_key() == ca.public_key()


def test_init_ca_refuses_to_overwrite_unless_forced(ca_dir):
    before = (ca_dir / "ca.pem").read_bytes()
    with pytest.raises(ConfigError, match="ca.pem already exists") as err:
        certs.init_ca(ca_dir)
    assert err.value.path == str(ca_dir / "ca.pem")
    assert (ca_dir / "ca.pem").read_bytes() == before

    (ca_dir / "ca.pem").unlink()            # a lone key is protected too
    with pytest.raises(ConfigError, match="ca.key already exists"):
        certs.init_ca(ca_dir)

    files = certs.init_ca(ca_dir, force=True)
    assert certs.fingerprint(files.cert.read_bytes()) != certs.fingerprint(before)
    assert _mode(files.key) == 0o600


def test_private_keys_are_created_0600_and_replaced_atomically(ca_dir, monkeypatch):
    opened, real_open = [], os.open

    def spy(path, flags, mode=0o777, **kwargs):
        opened.append((os.fspath(path), flags, mode))
        return real_open(path, flags, mode, **kwargs)

    old_umask = os.umask(0)                 # a careless umask must not matter
    try:
        monkeypatch.setattr(os, "open", spy)
        files = certs.issue(ca_dir, "hospital_a")
    finally:
        os.umask(old_umask)
    key_opens = [(flags, mode) for path, flags, mode in opened if ".hospital_a.key." in path]
    assert key_opens and all(mode == 0o600 and flags & os.O_EXCL for flags, mode in key_opens)
    assert _mode(files.key) == 0o600 and _mode(files.cert) == 0o644

    # a failing rename leaves the old key in place and no temporary file behind
    before = files.key.read_bytes()
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "No space")))
    with pytest.raises(ConfigError, match="cannot write .*hospital_b.key"):
        certs.issue(ca_dir, "hospital_b")
    with pytest.raises(ConfigError, match="cannot write .*hospital_a.key"):
        certs.issue(ca_dir, "hospital_a", force=True)
    assert files.key.read_bytes() == before
    assert sorted(p.name for p in ca_dir.iterdir()) == ["ca.key", "ca.pem", "hospital_a.key",
                                                        "hospital_a.pem"]


def test_issue_signs_a_leaf_with_san_usage_and_key_ids(ca_dir):
    files = certs.issue(ca_dir, "hospital_a",
                        hosts=["site-a.example.org", "10.1.2.3", "::1", "localhost"])
    assert files == certs.CertFiles(name="hospital_a", cert=ca_dir / "hospital_a.pem",
                                    key=ca_dir / "hospital_a.key", ca=ca_dir / "ca.pem")
    assert _mode(files.key) == 0o600
    pem = files.cert.read_bytes()
    assert pem.count(b"BEGIN CERTIFICATE") == 1 and b"PRIVATE KEY" not in pem

    leaf, ca = _cert(files.cert), _cert(files.ca)
    leaf.verify_directly_issued_by(ca)
    assert leaf.issuer == ca.subject
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "hospital_a"
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["site-a.example.org", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.1.2.3"),
                                                       ipaddress.ip_address("::1")]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert leaf.not_valid_after_utc <= ca.not_valid_after_utc
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert dt.timedelta(days=825) <= lifetime <= dt.timedelta(days=825, minutes=10)
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    assert key.public_key() == leaf.public_key()


def test_default_hosts_are_loopback(ca_dir):
    leaf = _cert(certs.issue(ca_dir, "site").cert)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]


def test_chain_does_not_verify_against_another_ca(ca_dir, tmp_path):
    leaf = _cert(certs.issue(ca_dir, "hospital_a").cert)
    other = _cert(certs.init_ca(tmp_path / "other").cert)
    with pytest.raises((ValueError, InvalidSignature)):
        leaf.verify_directly_issued_by(other)


def test_issue_refuses_to_overwrite_unless_forced(ca_dir):
    first = certs.issue(ca_dir, "hospital_a")
    with pytest.raises(ConfigError, match="hospital_a.pem already exists"):
        certs.issue(ca_dir, "hospital_a")
    again = certs.issue(ca_dir, "hospital_a", force=True)
    assert again.cert.read_bytes() != b"" and _mode(again.key) == 0o600


@pytest.mark.parametrize("name", ["", "1site", "-x", "site a", "../etc/passwd", "a/b", "ca",
                                  "CA", "hôpital", None])
def test_issue_validates_the_name(ca_dir, name):
    with pytest.raises(ConfigError, match="invalid certificate name"):
        certs.issue(ca_dir, name)
    assert sorted(p.name for p in ca_dir.iterdir()) == ["ca.key", "ca.pem"]


@pytest.mark.parametrize("hosts", [[], [""], ["bad host"], ["-x.example"], ["a..b"],
                                   ["hôpital.example"]])
def test_issue_validates_hosts(ca_dir, hosts):
    with pytest.raises(ConfigError, match="host"):
        certs.issue(ca_dir, "site", hosts=hosts)


@pytest.mark.parametrize("days", [0, -1, 1.5, True])
def test_days_must_be_positive(ca_dir, days):
    with pytest.raises(ConfigError, match="days"):
        certs.issue(ca_dir, "site", days=days)


def test_issue_without_a_ca_says_how_to_make_one(tmp_path):
    with pytest.raises(ConfigError, match=r"ca.pem does not exist.*fedquery certs init"):
        certs.issue(tmp_path, "site")


def test_issue_rejects_mismatched_ca_files(ca_dir, tmp_path):
    other = certs.init_ca(tmp_path / "other")
    (ca_dir / "ca.key").write_bytes(other.key.read_bytes())
    with pytest.raises(ConfigError, match="does not belong to"):
        certs.issue(ca_dir, "site")


def test_load_ca_pem_and_fingerprint(ca_dir, tmp_path):
    pem = certs.load_ca_pem(ca_dir / "ca.pem")
    assert pem == (ca_dir / "ca.pem").read_bytes()
    der = _cert(ca_dir / "ca.pem").public_bytes(serialization.Encoding.DER)
    assert certs.fingerprint(pem) == hashlib.sha256(der).hexdigest()
    assert certs.fingerprint(pem.decode()) == certs.fingerprint(pem)

    with pytest.raises(ConfigError, match="does not exist") as err:
        certs.load_ca_pem(tmp_path / "missing.pem")
    assert err.value.path == str(tmp_path / "missing.pem")
    for content in (b"", b"hello", (ca_dir / "ca.key").read_bytes(),
                    b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"):
        (tmp_path / "bad.pem").write_bytes(content)
        with pytest.raises(ConfigError, match="bad.pem does not contain a PEM certificate"):
            certs.load_ca_pem(tmp_path / "bad.pem")
    with pytest.raises(ConfigError, match="does not contain a PEM certificate"):
        certs.fingerprint(b"nope")


# ---------------------------------------------------------------------------------------------
# Real TLS with Arrow Flight


class EchoServer(flight.FlightServerBase):
    def do_action(self, context, action):
        yield flight.Result(action.body)


def _tls_server(files: certs.CertFiles) -> EchoServer:
    pair = flight.CertKeyPair(cert=files.cert.read_bytes(), key=files.key.read_bytes())
    return EchoServer("grpc+tls://127.0.0.1:0", tls_certificates=[pair])


def _echo(location: str, **client_options) -> bytes:
    with flight.FlightClient(location, **client_options) as client:
        results = list(client.do_action(flight.Action("echo", b"ping"), OPTIONS))
    return results[0].body.to_pybytes()


def test_tls_round_trip_with_the_federation_ca(ca_dir):
    files = certs.issue(ca_dir, "hospital_a")
    ca_pem = certs.load_ca_pem(files.ca)
    with _tls_server(files) as server:
        assert _echo(f"grpc+tls://127.0.0.1:{server.port}", tls_root_certs=ca_pem) == b"ping"
        assert _echo(f"grpc+tls://localhost:{server.port}", tls_root_certs=ca_pem) == b"ping"


def test_client_trusting_another_ca_is_refused(ca_dir, tmp_path):
    files = certs.issue(ca_dir, "hospital_a")
    other_pem = certs.load_ca_pem(certs.init_ca(tmp_path / "other").cert)
    with _tls_server(files) as server:
        with pytest.raises(flight.FlightUnavailableError) as err:
            _echo(f"grpc+tls://127.0.0.1:{server.port}", tls_root_certs=other_pem)
    print(f"wrong CA: {type(err.value).__name__}: {err.value}")
    assert "certificate verify failed" in str(err.value)


def test_certificate_for_another_host_is_refused(ca_dir):
    files = certs.issue(ca_dir, "hospital_a", hosts=["site-a.example.org"])
    with _tls_server(files) as server:
        with pytest.raises(flight.FlightUnavailableError) as err:
            _echo(f"grpc+tls://127.0.0.1:{server.port}",
                  tls_root_certs=certs.load_ca_pem(files.ca))
    print(f"wrong host: {type(err.value).__name__}: {err.value}")
    assert "Peer name 127.0.0.1 is not in peer certificate" in str(err.value)


def test_expired_certificate_is_refused(ca_dir):
    files = certs.issue(ca_dir, "hospital_a", days=1,
                        valid_from=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=10))
    assert _cert(files.cert).not_valid_after_utc < dt.datetime.now(dt.timezone.utc)
    with _tls_server(files) as server:
        with pytest.raises(flight.FlightUnavailableError) as err:
            _echo(f"grpc+tls://127.0.0.1:{server.port}",
                  tls_root_certs=certs.load_ca_pem(files.ca))
    print(f"expired: {type(err.value).__name__}: {err.value}")
    assert "certificate has expired" in str(err.value)


def test_plaintext_client_against_tls_server_is_refused(ca_dir):
    files = certs.issue(ca_dir, "hospital_a")
    with _tls_server(files) as server:
        with pytest.raises(flight.FlightUnavailableError) as err:
            _echo(f"grpc+tcp://127.0.0.1:{server.port}")
    print(f"plaintext: {type(err.value).__name__}: {err.value}")


# ---------------------------------------------------------------------------------------------
# Command line


def test_cli_init_and_issue(tmp_path):
    runner = CliRunner()
    folder = tmp_path / "pki"
    result = runner.invoke(certs_cli, ["init", str(folder)])
    assert result.exit_code == 0, result.output
    digest = certs.fingerprint((folder / "ca.pem").read_bytes())
    assert f"wrote {folder / 'ca.pem'}" in result.stdout
    assert f"wrote {folder / 'ca.key'}" in result.stdout
    assert f"CA fingerprint (SHA-256): {digest}" in result.stdout

    result = runner.invoke(certs_cli, ["issue", str(folder), "hospital_a", "--host",
                                       "site-a.example.org", "--host", "10.0.0.7"])
    assert result.exit_code == 0, result.output
    assert f"wrote {folder / 'hospital_a.pem'}" in result.stdout
    assert f"wrote {folder / 'hospital_a.key'}" in result.stdout
    assert digest in result.stdout
    san = _cert(folder / "hospital_a.pem").extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["site-a.example.org"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.7")]

    result = runner.invoke(certs_cli, ["issue", str(folder), "hospital_b"])
    assert result.exit_code == 0, result.output
    assert "127.0.0.1, localhost" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["init", "{pki}"], "ca.pem already exists"),
    (["issue", "{pki}", "1bad"], "invalid certificate name '1bad'"),
    (["issue", "{pki}", "site", "--host", "bad host"], "invalid host 'bad host'"),
    (["issue", "{empty}", "site"], "ca.pem does not exist"),
])
def test_cli_errors_are_one_line_and_exit_2(ca_dir, tmp_path, args, message):
    args = [a.format(pki=ca_dir, empty=tmp_path / "empty") for a in args]
    result = CliRunner().invoke(certs_cli, args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1
