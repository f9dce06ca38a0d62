"""``federation.yaml``: the sites of a federation, how to reach and verify them, the key
holder of secure aggregation, the query defaults, and where the analyst's token comes from.

For secure aggregation every site may publish two public keys (base64 of the raw 32 bytes):
``x25519`` (pairwise masks) and ``ed25519`` (the key holder verifies its contributions with
it); the ``key_holder`` section says where the key holder listens and where the coordinator's
token for releases comes from::

    key_holder: {endpoint: "grpc+tls://kh.example:8815", token_file: coordinator.token}
    sites:
      hospital_a: {endpoint: "grpc+tls://a.example:8815", x25519: "…=", ed25519: "…="}

>>> # fedquery.connect("federation.yaml") is the usual way in; this module only reads files.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from fedquery.configfile import Schema, config_error, env_value, read_yaml
from fedquery.errors import ConfigError

SCHEMA = Schema("fedquery.transport", "federation.schema.json")


@dataclass(frozen=True)
class SiteEntry:
    name: str
    endpoint: str
    ca: Path | None
    x25519: bytes | None = None  # raw public mask key (secure aggregation)
    ed25519: bytes | None = None  # raw public signing key (secure aggregation)


@dataclass(frozen=True)
class KeyHolderEntry:
    endpoint: str
    ca: Path | None
    token: str | None = None  # the coordinator's token for releases; resolved


@dataclass(frozen=True)
class Federation:
    path: Path
    sites: tuple[SiteEntry, ...]
    timeout: float
    min_sites: int
    on_site_failure: str
    insecure: bool
    user: str | None
    token: str | None  # resolved; None when the file names no credentials
    key_holder: KeyHolderEntry | None = None

    @property
    def signing_keys(self) -> dict[str, bytes]:
        """Site → raw Ed25519 public key, for the sites that publish one."""
        return {s.name: s.ed25519 for s in self.sites if s.ed25519 is not None}

    @property
    def mask_keys(self) -> dict[str, bytes]:
        """Site → raw X25519 public key, for the sites that publish one."""
        return {s.name: s.x25519 for s in self.sites if s.x25519 is not None}


def _public_key(text: str) -> bytes | None:
    """The raw 32 bytes of a base64 public key, or None if it is not one."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


def _read_token_file(path: Path, at: tuple) -> tuple[str | None, str | None]:
    """(token, problem): the file must exist and be private to its owner."""
    try:
        mode = path.stat().st_mode
    except OSError as err:
        return None, f"cannot read the token file {path}: {err.strerror}"
    if stat.S_IMODE(mode) & 0o077:
        return None, (f"the token file {path} is readable by others (mode "
                      f"{stat.S_IMODE(mode):o}); run: chmod 600 {path}")
    token = path.read_text().strip()
    return (token, None) if token else (None, f"the token file {path} is empty")


def _token(spec: dict, base: Path, at: tuple, problems: list) -> str | None:
    """The token of ``token: {$env: NAME}`` or ``token_file``; problems are appended."""
    if "token" in spec:
        value = env_value(spec["token"], (*at, "token"))
        if isinstance(value, tuple):
            problems.append(value)
            return None
        return value
    if "token_file" in spec:
        token, problem = _read_token_file(base / spec["token_file"], (*at, "token_file"))
        if problem:
            problems.append(((*at, "token_file"), problem))
        return token
    return None


def load_federation(path: str | os.PathLike[str], *, secrets: bool = True) -> Federation:
    """Read and check a federation file; ConfigError names every problem with its position.

    ``secrets=False`` leaves the tokens unread (``None``): for the key holder and other
    services that need the federation's public facts (endpoints, public keys) only."""
    path = Path(path)
    data, root = read_yaml(path, "federation")
    problems = SCHEMA.problems(data)
    if problems:
        raise config_error(path, root, problems)
    base = path.parent
    default_ca = base / data["ca"] if "ca" in data else None
    sites = []
    for name, spec in data["sites"].items():
        ca = base / spec["ca"] if "ca" in spec else default_ca
        tls = spec["endpoint"].startswith("grpc+tls://")
        if tls and ca is None:
            problems.append((("sites", name, "ca"), "a grpc+tls endpoint needs a CA: set ca "
                             "here or at the top of the file"))
        if not tls and not data.get("insecure", False):
            problems.append((("sites", name, "endpoint"), "plain-text endpoint: use "
                             "grpc+tls://, or set insecure: true for a closed test network"))
        if ca is not None and not ca.is_file():
            problems.append((("sites", name, "ca") if "ca" in spec else ("ca",),
                             f"the CA certificate {ca} does not exist"))
        keys = {}
        for kind in ("x25519", "ed25519"):
            if kind in spec:
                keys[kind] = _public_key(spec[kind])
                if keys[kind] is None:
                    problems.append((("sites", name, kind), f"not the base64 of a 32-byte "
                                     f"{kind.upper() if kind == 'x25519' else 'Ed25519'} "
                                     "public key"))
        sites.append(SiteEntry(name, spec["endpoint"], ca, **keys))
    if len({s.x25519 for s in sites if s.x25519}) < sum(1 for s in sites if s.x25519):
        problems.append((("sites",), "two sites publish the same x25519 key"))
    if len({s.ed25519 for s in sites if s.ed25519}) < sum(1 for s in sites if s.ed25519):
        problems.append((("sites",), "two sites publish the same ed25519 key"))
    creds = data.get("credentials", {})
    token = _token(creds, base, ("credentials",), problems) if secrets else None
    key_holder = None
    if "key_holder" in data:
        spec = data["key_holder"]
        at = ("key_holder",)
        ca = base / spec["ca"] if "ca" in spec else default_ca
        tls = spec["endpoint"].startswith("grpc+tls://")
        if tls and ca is None:
            problems.append(((*at, "ca"), "a grpc+tls endpoint needs a CA: set ca here or at "
                             "the top of the file"))
        if not tls and not data.get("insecure", False):
            problems.append(((*at, "endpoint"), "plain-text endpoint: use grpc+tls://, or set "
                             "insecure: true for a closed test network"))
        if ca is not None and not ca.is_file():
            problems.append(((*at, "ca") if "ca" in spec else ("ca",),
                             f"the CA certificate {ca} does not exist"))
        if "token" in spec and "token_file" in spec:
            problems.append((at, "give token or token_file, not both"))
        key_holder = KeyHolderEntry(spec["endpoint"], ca,
                                    _token(spec, base, at, problems) if secrets else None)
    if problems:
        raise config_error(path, root, problems)
    defaults = data.get("defaults", {})
    return Federation(path=path, sites=tuple(sites),
                      timeout=float(defaults.get("timeout_s", 30)),
                      min_sites=int(defaults.get("min_sites", 1)),
                      on_site_failure=defaults.get("on_site_failure", "fail"),
                      insecure=bool(data.get("insecure", False)), user=creds.get("user"),
                      token=token, key_holder=key_holder)


def site_clients(federation: Federation, token: str, timeout: float | None = None):
    """One Flight client per site, verifying each site against its CA; catalog and health
    calls give up after ``timeout`` (default: the federation's query timeout)."""
    from fedquery.transport.certs import load_ca_pem
    from fedquery.transport.flight_client import FlightSiteClient

    if not token:
        raise ConfigError(f"{federation.path}: no analyst token: add credentials (token: "
                          "{$env: NAME} or token_file) or pass token=", path=str(federation.path),
                          key="credentials")
    connect_timeout = timeout if timeout is not None else federation.timeout
    return [FlightSiteClient(s.name, s.endpoint, token,
                             ca_pem=load_ca_pem(s.ca) if s.ca else None,
                             insecure=federation.insecure, connect_timeout=connect_timeout)
            for s in federation.sites]


def key_holder_client(federation: Federation, token: str | None = None, *,
                      timeout: float = 120.0):
    """A Flight client of the federation's key holder, verified against its CA.  ``token``
    (default: the file's ``key_holder`` token) is the coordinator's, needed for releases;
    without one the client can still fetch public contexts."""
    from fedquery.transport.certs import load_ca_pem
    from fedquery.transport.keyholder_flight import FlightKeyHolderClient

    entry = federation.key_holder
    if entry is None:
        raise ConfigError(f"{federation.path}: no key_holder section: secure aggregation needs "
                          "one (key_holder: {endpoint: grpc+tls://HOST:PORT, token_file: ...})",
                          path=str(federation.path), key="key_holder")
    return FlightKeyHolderClient(entry.endpoint, token or entry.token,
                                 ca_pem=load_ca_pem(entry.ca) if entry.ca else None,
                                 insecure=federation.insecure, timeout=timeout,
                                 connect_timeout=min(federation.timeout, timeout))
