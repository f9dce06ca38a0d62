"""``fedquery demo init DIR``: a complete demo federation on disk, ready to start.

    DIR/data/<site>.duckdb         synthetic hospitals
    DIR/connectors/<site>.yaml     where each site's data is
    DIR/policies/<site>.yaml       each site's steward policy (the shipped demo policies)
    DIR/certs/                     a federation CA and one TLS certificate per site
    DIR/analyst.token              the demo analyst's token (mode 0600; a demo credential)
    DIR/federation.yaml            sites, endpoints, CA, defaults, credentials reference

With ``secure=True`` the stewards' policies ask for secure aggregation (noise shares sized for
two honest sites), every site gets its mask and signing keys (``DIR/state/<site>/*.key``,
published in ``federation.yaml``), and a key holder joins: its certificate, the coordinator's
token for releases (``DIR/coordinator.token``) and a ``key_holder`` section.

With ``postgres=DSN`` the last hospital's tables are loaded into that PostgreSQL database
(schema ``fedquery_demo``) and its connector pushes fragments down there instead, reading the
connection string from ``$FEDQUERY_DEMO_PG_DSN``: a mixed federation of DuckDB and PostgreSQL
sites.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from pathlib import Path

from fedquery.demo.generate import site_names
from fedquery.demo.showcase import TABLES, demo_policy_path, ensure_demo_data

DEMO_ANALYST = "demo"
PG_DSN_ENV = "FEDQUERY_DEMO_PG_DSN"  # the PostgreSQL site's connector reads its DSN from here
PG_SCHEMA = "fedquery_demo"
DEMO_TOKEN = "demo-token-not-secret"  # its sha256 is in the shipped demo policies
KEY_HOLDER = "keyholder"  # the key holder's certificate and state directory name


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free right now on ``host`` (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _connector_text(site: str, pg_schema: str | None = None) -> str:
    tables = "\n".join(f"  {t}: {{privacy_unit: patient_id}}" for t in TABLES)
    source = (f"  duckdb: {{path: ../data/{site}.duckdb}}\n" if pg_schema is None else
              f"  # PostgreSQL: fragments run inside the database, read-only; the connection\n"
              f"  # string is read from the environment (export {PG_DSN_ENV}=...).\n"
              f"  postgres: {{dsn: {{$env: {PG_DSN_ENV}}}, schema: {pg_schema}}}\n")
    return (f"# Demo connector of {site}: written by `fedquery demo init`.\n"
            f"version: 1\nsite: {site}\nsource:\n{source}tables:\n{tables}\n")


def load_site_into_postgres(database: Path, dsn: str, schema: str = PG_SCHEMA) -> None:
    """Copy one demo hospital's DuckDB file into PostgreSQL ``schema`` (tables replaced)."""
    import duckdb

    from fedquery.site.engines.postgres import load_tables

    con = duckdb.connect(str(database), read_only=True)
    try:
        tables = {t: con.sql(f'SELECT * FROM "{t}"').to_arrow_table() for t in TABLES}
    finally:
        con.close()
    load_tables(dsn, schema, tables)


def _policy_text(site: str, index: int, secure: bool) -> str:
    text = demo_policy_path(index).read_text()
    text = re.sub(r"(?m)^site: \S+", f"site: {site}", text)
    if secure:
        text = re.sub(r"(?m)^aggregation: plain.*$", "aggregation: secure\n"
                      "# Noise shares are sized so that two honest sites make one central draw.\n"
                      "honest_sites: 2", text)
    return text


def _federation_text(ports: dict[str, int], timeout: float, keys: dict | None = None,
                     key_holder_port: int | None = None) -> str:
    keys = keys or {}
    sites = "\n".join(
        f"  {site}: {{endpoint: grpc+tls://127.0.0.1:{port}"
        + (f",\n    x25519: {keys[site][0]}, ed25519: {keys[site][1]}" if site in keys else "")
        + "}" for site, port in ports.items())
    holder = ("# Secure aggregation: the key holder decrypts only federation-wide sums.\n"
              f"key_holder: {{endpoint: grpc+tls://127.0.0.1:{key_holder_port}, "
              "token_file: coordinator.token}\n") if key_holder_port else ""
    return ("# Demo federation: written by `fedquery demo init`; start it with "
            "`fedquery demo up DIR`.\n"
            "version: 1\n"
            "# The federation CA that signed every site's certificate (clients verify sites).\n"
            "ca: certs/ca.pem\n"
            f"sites:\n{sites}\n{holder}"
            "defaults:\n"
            f"  timeout_s: {timeout:g}          # per-site deadline for one query\n"
            "  min_sites: 2           # never release an answer from fewer sites\n"
            "  on_site_failure: fail  # or partial: answer from the sites that did\n"
            "credentials:\n"
            f"  user: {DEMO_ANALYST}\n"
            "  token_file: analyst.token   # mode 0600; or token: {$env: FEDQUERY_TOKEN}\n")


def init_demo(directory: Path, *, sites: int = 3, patients: int = 20_000, seed: int = 42,
              secure: bool = False, timeout: float = 30.0, postgres: str | None = None,
              pg_schema: str = PG_SCHEMA) -> Path:
    """Write everything a demo federation needs; return the federation file's path.

    ``postgres`` (a connection string) puts the last hospital in that database instead of a
    DuckDB file; its site then needs ``$FEDQUERY_DEMO_PG_DSN`` set to reach it."""
    from fedquery.transport.certs import init_ca, issue

    directory = Path(directory)
    names = site_names(sites)
    paths = ensure_demo_data(directory, sites, patients, seed)
    in_postgres = names[-1] if postgres else None
    if in_postgres is not None:
        load_site_into_postgres(paths[in_postgres], postgres, pg_schema)
    certs = directory / "certs"
    if not (certs / "ca.pem").exists():
        init_ca(certs)
    for index, site in enumerate(names):
        if not (certs / f"{site}.pem").exists():
            issue(certs, site)
        _write(directory / "connectors" / f"{site}.yaml",
               _connector_text(site, pg_schema if site == in_postgres else None))
        _write(directory / "policies" / f"{site}.yaml", _policy_text(site, index, secure))
    _write(directory / "analyst.token", DEMO_TOKEN + "\n", mode=0o600)
    keys, holder_port = {}, None
    if secure:
        from fedquery.site.runner import site_keys
        keys = {site: site_keys(directory / "state" / site) for site in names}
        if not (certs / f"{KEY_HOLDER}.pem").exists():
            issue(certs, KEY_HOLDER)
        if not (directory / "coordinator.token").exists():
            _write(directory / "coordinator.token", secrets.token_urlsafe(32) + "\n",
                   mode=0o600)
        holder_port = free_port()
    federation = directory / "federation.yaml"
    _write(federation, _federation_text({s: free_port() for s in names}, timeout, keys,
                                        holder_port))
    return federation
