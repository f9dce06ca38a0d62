"""``federation.yaml``: the sites of a federation, how to reach and verify them, the query
defaults, and where the analyst's token comes from.

>>> # fedquery.connect("federation.yaml") is the usual way in; this module only reads files.
"""

from __future__ import annotations

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


def load_federation(path: str | os.PathLike[str]) -> Federation:
    """Read and check a federation file; ConfigError names every problem with its position."""
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
        sites.append(SiteEntry(name, spec["endpoint"], ca))
    creds = data.get("credentials", {})
    token = None
    if "token" in creds:
        value = env_value(creds["token"], ("credentials", "token"))
        if isinstance(value, tuple):
            problems.append(value)
        else:
            token = value
    elif "token_file" in creds:
        token, problem = _read_token_file(base / creds["token_file"],
                                          ("credentials", "token_file"))
        if problem:
            problems.append((("credentials", "token_file"), problem))
    if problems:
        raise config_error(path, root, problems)
    defaults = data.get("defaults", {})
    return Federation(path=path, sites=tuple(sites),
                      timeout=float(defaults.get("timeout_s", 30)),
                      min_sites=int(defaults.get("min_sites", 1)),
                      on_site_failure=defaults.get("on_site_failure", "fail"),
                      insecure=bool(data.get("insecure", False)), user=creds.get("user"),
                      token=token)


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
