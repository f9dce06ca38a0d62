"""A federation certificate authority and site certificates for Flight over TLS.

The network operator runs ``fedquery certs init DIR`` once: it writes a self-signed CA
(``ca.pem``, ``ca.key``).  ``fedquery certs issue DIR NAME`` then signs one certificate per site
(or coordinator, key holder, client) with that CA: ``NAME.pem`` and ``NAME.key``.  Sites serve
``NAME.pem``/``NAME.key``; every client trusts only ``ca.pem`` (``tls_root_certs``), so a site
certificate signed by anybody else is refused during the TLS handshake.

Keys are ECDSA P-256: generated in about a millisecond, and accepted by the gRPC TLS stack of
Arrow Flight (tests/transport/test_certs.py makes a real TLS round trip).  Private keys are
unencrypted PKCS#8 PEM, written with mode 0600 from the start (never world-readable, even for
an instant) and replaced atomically, so a crash never leaves a half-written key.
Only the ``cryptography`` package is used: no ``openssl`` subprocess.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     ca = init_ca(tmp)
...     site = issue(tmp, "hospital_a")
...     [p.name for p in (ca.cert, ca.key, site.cert, site.key)], oct(site.key.stat().st_mode)
(['ca.pem', 'ca.key', 'hospital_a.pem', 'hospital_a.key'], '0o100600')
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedquery.errors import ConfigError

__all__ = ["CA_CERT", "CA_KEY", "DEFAULT_HOSTS", "CaFiles", "CertFiles", "fingerprint",
           "init_ca", "issue", "load_ca_pem"]

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
DEFAULT_HOSTS = ("127.0.0.1", "localhost")

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
_CLOCK_SKEW = dt.timedelta(minutes=5)   # backdate notBefore so a slightly slow peer clock is fine
_ORGANIZATION = "fedquery"


@dataclass(frozen=True)
class CaFiles:
    """Where :func:`init_ca` wrote the federation CA."""

    cert: Path   # ca.pem: give it to every client and to federation.yaml
    key: Path    # ca.key: keep it offline; it signs every site certificate


@dataclass(frozen=True)
class CertFiles:
    """Where :func:`issue` wrote one certificate and its key, and the CA that signed it."""

    name: str
    cert: Path   # NAME.pem: the leaf certificate only
    key: Path    # NAME.key: mode 0600
    ca: Path     # ca.pem of the signing CA


# ---------------------------------------------------------------------------------------------
# Public API


def init_ca(directory: str | os.PathLike[str], *, name: str = "fedquery federation CA",
            days: int = 3650, force: bool = False) -> CaFiles:
    """Create a self-signed federation CA in ``directory`` (created with mode 0700 if missing).

    Refuses to replace an existing ``ca.pem`` or ``ca.key`` unless ``force`` is true: replacing
    the CA invalidates every certificate it signed.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("the CA name must be a non-empty string", key="name")
    _check_days(days)
    folder = Path(directory)
    cert_path, key_path = folder / CA_CERT, folder / CA_KEY
    if not force:
        for path in (cert_path, key_path):
            if path.exists():
                raise ConfigError(f"{path} already exists: refusing to replace the federation "
                                  "CA (every certificate it signed would stop working); pass "
                                  "--force / force=True to replace it", path=str(path))
    _make_private_dir(folder)

    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _utcnow()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    # key first: a ca.pem without its key would be useless, a key without ca.pem is re-creatable
    _write_atomic(key_path, _key_pem(key), mode=0o600)
    _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return CaFiles(cert=cert_path, key=key_path)


def issue(directory: str | os.PathLike[str], name: str, *,
          hosts: Iterable[str] = DEFAULT_HOSTS, days: int = 825, force: bool = False,
          valid_from: dt.datetime | None = None) -> CertFiles:
    """Sign a certificate for ``name`` with the CA in ``directory``; write NAME.pem and NAME.key.

    ``hosts`` become the SubjectAlternativeName: IP addresses when they parse as one, DNS names
    otherwise.  Clients check the host they dial against these, so list every name or address
    the site is reached at.  The certificate is good for TLS servers and clients
    (serverAuth + clientAuth).  Its validity ends at the latest when the CA's does.
    ``valid_from`` (default: now) back- or post-dates the certificate, e.g. for tests of
    expired certificates.  Refuses to replace an existing NAME.pem/NAME.key unless ``force``.
    """
    _check_name(name)
    _check_days(days)
    san = _subject_alt_names(hosts)
    folder = Path(directory)
    ca_cert, ca_key = _load_ca(folder)
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    if not force:
        for path in (cert_path, key_path):
            if path.exists():
                raise ConfigError(f"{path} already exists: refusing to replace it; pass "
                                  "--force / force=True to issue a new certificate for "
                                  f"{name!r}", path=str(path))

    if valid_from is not None and valid_from.utcoffset() is None:
        raise ConfigError("valid_from must be timezone-aware (e.g. datetime.now(timezone.utc))",
                          key="valid_from")
    key = _new_key()
    start = (valid_from if valid_from is not None else _utcnow()) - _CLOCK_SKEW
    end = min(start + _CLOCK_SKEW + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    if end <= start:
        raise ConfigError(f"the CA in {folder / CA_CERT} has expired "
                          f"({ca_cert.not_valid_after_utc:%Y-%m-%d}): create a new one with "
                          "`fedquery certs init --force` and re-issue every certificate",
                          path=str(folder / CA_CERT))
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
                                 x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_atomic(key_path, _key_pem(key), mode=0o600)
    _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return CertFiles(name=name, cert=cert_path, key=key_path, ca=folder / CA_CERT)


def load_ca_pem(path: str | os.PathLike[str]) -> bytes:
    """The PEM bytes of a CA certificate file (e.g. for ``tls_root_certs``), checked.

    Raises ConfigError naming the file when it is missing, unreadable or holds no certificate.
    """
    file = Path(path)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"CA certificate {file} does not exist (create one with "
                          "`fedquery certs init DIR`)", path=str(file)) from None
    except OSError as err:
        raise ConfigError(f"cannot read CA certificate {file}: {err.strerror or err}",
                          path=str(file)) from None
    _parse_certificates(data, file)
    return data


def fingerprint(pem: bytes | str) -> str:
    """SHA-256 of the DER encoding of the (first) certificate in ``pem``, as lowercase hex.

    Compare it out of band (phone, signed e-mail) before trusting a CA file you received.
    """
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    cert = _parse_certificates(data, None)[0]
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


# ---------------------------------------------------------------------------------------------
# Helpers


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"invalid certificate name {name!r}: use a letter followed by "
                          "letters, digits, '_', '.' or '-' (e.g. hospital_a)", key="name")
    if name.lower() == Path(CA_CERT).stem:
        raise ConfigError(f"invalid certificate name {name!r}: it would overwrite the CA files "
                          f"{CA_CERT}/{CA_KEY}", key="name")


def _check_days(days: object) -> None:
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ConfigError(f"days must be a positive whole number, got {days!r}", key="days")


def _subject_alt_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    if isinstance(hosts, str):   # a bare string would become one entry per character
        hosts = (hosts,)
    names: list[x509.GeneralName] = []
    for host in hosts:
        host = host.strip() if isinstance(host, str) else host
        if not isinstance(host, str) or not host:
            raise ConfigError(f"invalid host {host!r}: give a DNS name or an IP address",
                              key="hosts")
        try:
            entry: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
        except ValueError:
            labels = host.rstrip(".").split(".")
            if labels[0] == "*":   # one leading wildcard label, as browsers and gRPC accept
                labels = labels[1:]
            if not labels or len(host) > 253 or not all(_DNS_LABEL.match(x) for x in labels):
                raise ConfigError(f"invalid host {host!r}: not an IP address and not a DNS name "
                                  "(letters, digits, '-' and '.'; non-ASCII names in their "
                                  "xn-- form)", key="hosts") from None
            entry = x509.DNSName(host.rstrip(".").lower())
        if entry not in names:
            names.append(entry)
    if not names:
        raise ConfigError("at least one host (DNS name or IP address) is needed for the "
                          "certificate's SubjectAlternativeName", key="hosts")
    return names


def _parse_certificates(data: bytes, file: Path | None) -> list[x509.Certificate]:
    where = f"{file}" if file is not None else "the given PEM data"
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise ConfigError(f"{where} does not contain a PEM certificate "
                          "('-----BEGIN CERTIFICATE-----')",
                          path=str(file) if file is not None else None)
    return certs


def _load_ca(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = folder / CA_CERT, folder / CA_KEY
    for path in (cert_path, key_path):
        if not path.exists():
            raise ConfigError(f"{path} does not exist: create the federation CA first with "
                              f"`fedquery certs init {folder}`", path=str(path))
    cert = _parse_certificates(load_ca_pem(cert_path), cert_path)[0]
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{key_path} is not an unencrypted PEM private key ({err})",
                          path=str(key_path)) from None
    if key.public_key() != cert.public_key():
        raise ConfigError(f"{key_path} does not belong to {cert_path}: the CA files are from "
                          "different runs of `fedquery certs init`", path=str(key_path))
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise ConfigError(f"{cert_path} is not a CA certificate made by `fedquery certs init`",
                          path=str(cert_path))
    return cert, key


def _make_private_dir(folder: Path) -> None:
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create directory {folder}: {err.strerror or err}",
                          path=str(folder)) from None
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a directory", path=str(folder))


def _write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    """Write ``data`` to a temp file created with ``mode``, fsync, then rename over ``path``."""
    tmp = None
    try:
        fd, tmp = _create_temp(path.parent, path.name, mode)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)   # exact mode, whatever the umask
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        raise ConfigError(f"cannot write {path}: {err.strerror or err}", path=str(path)) from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _create_temp(folder: Path, stem: str, mode: int) -> tuple[int, str]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        candidate = folder / f".{stem}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(candidate, flags, mode), str(candidate)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name in {folder}")


def check_key_pair(cert_path: str | os.PathLike, key_path: str | os.PathLike) -> None:
    """ConfigError unless the private key in ``key_path`` belongs to the certificate."""
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(f"cannot read the TLS certificate {cert_path} or key {key_path}: "
                          f"{err}", path=str(key_path)) from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if cert.public_key().public_bytes(encoding, public) != key.public_key().public_bytes(
            encoding, public):
        raise ConfigError(f"the TLS key {key_path} does not belong to the certificate "
                          f"{cert_path}", path=str(key_path))
