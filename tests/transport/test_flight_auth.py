"""Who may talk to a site over Flight, and whom the coordinator trusts: tokens and TLS.

Real TLS Flight servers on 127.0.0.1 (in-process ``SiteFlightServer``s over the demo hospitals'
files, connectors and policies), reached both with a raw ``pyarrow.flight`` client and through
``fedquery.connect``.  Every refusal must be a typed error with a clear message, never a hang.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import time
from pathlib import Path

import pyarrow.flight as flight
import pytest

import fedquery
from fedquery.demo.federation import DEMO_ANALYST, DEMO_TOKEN, init_demo
from fedquery.errors import ConfigError, SiteError, SiteUnavailable
from fedquery.site.runner import build_site_service
from fedquery.transport import certs
from fedquery.transport.flight_server import SiteFlightServer

SITES = ("hospital_a", "hospital_b", "hospital_c")
QUERY = "SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex ORDER BY sex"
STEWARD_TOKEN = "steward-token-for-tests"
# A refusal must come back promptly: well under the 10 s connect deadline of the client.
PROMPT_S = 8.0


# ---------------------------------------------------------------------------------------------
# Fixtures: a demo federation on disk, served in-process over TLS


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("auth_demo")
    init_demo(directory, sites=3, patients=300, seed=1)
    # hospital_a also knows a steward who may read budgets but not run queries
    policy = directory / "policies" / "hospital_a.yaml"
    digest = hashlib.sha256(STEWARD_TOKEN.encode()).hexdigest()
    text = policy.read_text()
    assert "\nanalysts:\n" in text
    policy.write_text(text.replace("\nanalysts:\n", "\nanalysts:\n  auditor:\n"
                                   f"    token_sha256: {digest}\n    roles: [steward]\n", 1))
    return directory


@contextlib.contextmanager
def serve(demo: Path, site: str, cert: Path, key: Path):
    """One site over grpc+tls on a free loopback port, serving ``cert``/``key``."""
    service = build_site_service(demo / "connectors" / f"{site}.yaml",
                                 demo / "policies" / f"{site}.yaml", demo / "state" / site)
    pair = flight.CertKeyPair(cert=cert.read_bytes(), key=key.read_bytes())
    server = SiteFlightServer(service, "grpc+tls://127.0.0.1:0", tls_certificates=[pair])
    try:
        yield server
    finally:
        server.shutdown()
        server.wait()
        service.close()


@pytest.fixture(scope="module")
def servers(demo):
    """The three demo sites, with the certificates the federation CA issued them."""
    with contextlib.ExitStack() as stack:
        yield {site: stack.enter_context(serve(demo, site, demo / "certs" / f"{site}.pem",
                                                demo / "certs" / f"{site}.key"))
               for site in SITES}


def federation_file(path: Path, ports: dict[str, int], *, ca: Path, scheme: str = "grpc+tls",
                    insecure: bool | None = None, token_file: Path | None = None) -> Path:
    sites = "\n".join(f"  {site}: {{endpoint: '{scheme}://127.0.0.1:{port}'}}"
                      for site, port in ports.items())
    lines = ["version: 1", f"ca: '{ca}'", f"sites:\n{sites}",
             "defaults: {timeout_s: 10, min_sites: 1, on_site_failure: fail}"]
    if insecure is not None:
        lines.append(f"insecure: {'true' if insecure else 'false'}")
    if token_file is not None:
        lines.append(f"credentials: {{user: {DEMO_ANALYST}, token_file: '{token_file}'}}")
    else:
        lines.append(f"credentials: {{user: {DEMO_ANALYST}, token: {{$env: FQ_TEST_TOKEN}}}}")
    path.write_text("\n".join(lines) + "\n")
    return path


def private_token_file(path: Path, token: str = DEMO_TOKEN, mode: int = 0o600) -> Path:
    path.write_text(token + "\n")
    os.chmod(path, mode)
    return path


def raw_client(port: int, ca: Path) -> flight.FlightClient:
    return flight.FlightClient(f"grpc+tls://127.0.0.1:{port}",
                               tls_root_certs=certs.load_ca_pem(ca))


def bearer(token: str) -> flight.FlightCallOptions:
    return flight.FlightCallOptions(timeout=5,
                                    headers=[(b"authorization", f"Bearer {token}".encode())])


def connect_error(federation: Path, **options) -> tuple[BaseException, float]:
    """The error ``fedquery.connect`` (and a first query) raise, and how long it took."""
    started = time.monotonic()
    with pytest.raises(fedquery.Error) as info:
        with fedquery.connect(federation, **options) as conn:
            conn.cursor().execute(QUERY)
    return info.value, time.monotonic() - started


# ---------------------------------------------------------------------------------------------
# The right token over the right TLS: the baseline every refusal below departs from


def test_demo_token_over_tls_is_answered(demo, servers, tmp_path):
    token = private_token_file(tmp_path / "analyst.token")
    fed = federation_file(tmp_path / "federation.yaml",
                          {s: srv.port for s, srv in servers.items()},
                          ca=demo / "certs" / "ca.pem", token_file=token)
    with fedquery.connect(fed) as conn:
        cursor = conn.cursor().execute(QUERY)
        rows = cursor.fetchall()
        assert cursor.fq_report.sites_answered == SITES
    counts = {sex: n for sex, n in rows}
    assert counts["F"] > 0 and counts["M"] > 0   # exact, or noisy when the policies add noise


def test_raw_flight_client_with_the_demo_token(demo, servers):
    with raw_client(servers["hospital_a"].port, demo / "certs" / "ca.pem") as client:
        results = list(client.do_action(flight.Action("health", b""), bearer(DEMO_TOKEN)))
    assert len(results) == 1


# ---------------------------------------------------------------------------------------------
# Tokens


@pytest.mark.parametrize("call", ["health", "catalog", "budget", "query"])
def test_wrong_token_is_unauthenticated_at_the_flight_level(demo, servers, call):
    with raw_client(servers["hospital_a"].port, demo / "certs" / "ca.pem") as client:
        with pytest.raises(flight.FlightUnauthenticatedError) as err:
            if call == "query":
                client.do_get(flight.Ticket(b"anything"), bearer("wrong")).read_all()
            else:
                list(client.do_action(flight.Action(call, b""), bearer("wrong")))
    assert "unknown token" in str(err.value)


def test_wrong_token_through_connect_names_the_site(demo, servers, monkeypatch):
    monkeypatch.setenv("FQ_TEST_TOKEN", DEMO_TOKEN)
    fed = federation_file(demo / "fed_wrong_token.yaml",
                          {s: srv.port for s, srv in servers.items()},
                          ca=demo / "certs" / "ca.pem")
    err, elapsed = connect_error(fed, token="not-the-demo-token-4711")
    assert type(err) is SiteError
    assert err.site in SITES
    assert f"site {err.site!r}" in str(err)
    assert "authentication failed" in str(err)
    assert "unknown token" in str(err)
    assert isinstance(err.__cause__, flight.FlightUnauthenticatedError)
    assert elapsed < PROMPT_S
    assert "4711" not in str(err) and "4711" not in str(err.__cause__)   # never echoed


@pytest.mark.parametrize("headers, message", [
    ([], "no bearer token"),
    ([(b"authorization", b"Basic ZGVtbzpkZW1v")], "malformed authorization header"),
    ([(b"authorization", b"Bearer")], "malformed authorization header"),
    ([(b"authorization", b"Bearer ")], "malformed authorization header"),
])
def test_missing_or_malformed_token_is_unauthenticated(demo, servers, headers, message):
    options = flight.FlightCallOptions(timeout=5, headers=headers)
    with raw_client(servers["hospital_b"].port, demo / "certs" / "ca.pem") as client:
        with pytest.raises(flight.FlightUnauthenticatedError) as err:
            list(client.do_action(flight.Action("catalog", b""), options))
        with pytest.raises(flight.FlightUnauthenticatedError):
            client.do_get(flight.Ticket(b"anything"), options).read_all()
    assert message in str(err.value)


def test_analyst_without_the_analyst_role_is_unauthorized(demo, servers, monkeypatch):
    """A steward's token authenticates (budget) but may not run queries at that site."""
    with raw_client(servers["hospital_a"].port, demo / "certs" / "ca.pem") as client:
        budget = list(client.do_action(flight.Action("budget", b""), bearer(STEWARD_TOKEN)))
        assert len(budget) == 1
        with pytest.raises(flight.FlightUnauthorizedError) as err:
            client.do_get(flight.Ticket(b"anything"), bearer(STEWARD_TOKEN)).read_all()
    assert "'auditor' is not allowed to run queries" in str(err.value)

    monkeypatch.setenv("FQ_TEST_TOKEN", STEWARD_TOKEN)
    fed = federation_file(demo / "fed_steward.yaml", {"hospital_a": servers["hospital_a"].port},
                          ca=demo / "certs" / "ca.pem")
    err, _ = connect_error(fed, user="auditor")
    assert type(err) is SiteError and err.site == "hospital_a"
    assert "not authorised" in str(err)
    assert isinstance(err.__cause__, flight.FlightUnauthorizedError)


# ---------------------------------------------------------------------------------------------
# TLS: the coordinator verifies every site against the federation CA


def test_site_certificate_from_another_ca_is_refused(demo, tmp_path, monkeypatch):
    other = tmp_path / "other_ca"
    certs.init_ca(other, name="somebody else's CA")
    impostor = certs.issue(other, "hospital_a")   # right name and host, wrong issuer
    monkeypatch.setenv("FQ_TEST_TOKEN", DEMO_TOKEN)
    with serve(demo, "hospital_a", impostor.cert, impostor.key) as server:
        with raw_client(server.port, demo / "certs" / "ca.pem") as client:
            with pytest.raises(flight.FlightUnavailableError) as raw:
                list(client.do_action(flight.Action("health", b""), bearer(DEMO_TOKEN)))
        assert "certificate verify failed" in str(raw.value)

        fed = federation_file(tmp_path / "federation.yaml", {"hospital_a": server.port},
                              ca=demo / "certs" / "ca.pem")
        err, elapsed = connect_error(fed)
    assert isinstance(err, SiteError) and not isinstance(err, SiteUnavailable)
    assert err.site == "hospital_a"
    assert "site 'hospital_a'" in str(err)
    assert "TLS verification of the site failed" in str(err)
    assert "certificate verify failed" in str(err)
    assert isinstance(err.__cause__, flight.FlightUnavailableError)
    assert elapsed < PROMPT_S


def test_expired_site_certificate_is_refused(demo, tmp_path, monkeypatch):
    long_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=400)
    expired = certs.issue(demo / "certs", "hospital_a_expired", valid_from=long_ago, days=1,
                          force=True)
    monkeypatch.setenv("FQ_TEST_TOKEN", DEMO_TOKEN)
    with serve(demo, "hospital_a", expired.cert, expired.key) as server:
        fed = federation_file(tmp_path / "federation.yaml", {"hospital_a": server.port},
                              ca=demo / "certs" / "ca.pem")
        err, elapsed = connect_error(fed)
    assert isinstance(err, SiteError) and not isinstance(err, SiteUnavailable)
    assert err.site == "hospital_a"
    assert "TLS verification of the site failed" in str(err)
    assert "expired" in str(err)
    assert isinstance(err.__cause__, flight.FlightUnavailableError)
    assert elapsed < PROMPT_S


def test_plain_text_client_against_a_tls_site_fails_fast(demo, servers, tmp_path, monkeypatch):
    monkeypatch.setenv("FQ_TEST_TOKEN", DEMO_TOKEN)
    fed = federation_file(tmp_path / "federation.yaml",
                          {"hospital_c": servers["hospital_c"].port},
                          ca=demo / "certs" / "ca.pem", scheme="grpc+tcp", insecure=True)
    err, elapsed = connect_error(fed)
    assert isinstance(err, SiteError)        # SiteUnavailable is a SiteError
    assert err.site == "hospital_c"
    assert "site 'hospital_c'" in str(err)
    assert isinstance(err.__cause__, flight.FlightError)
    assert elapsed < PROMPT_S

    # the same at the Flight level: a typed error, not a hang
    started = time.monotonic()
    with flight.FlightClient(f"grpc+tcp://127.0.0.1:{servers['hospital_c'].port}") as client:
        with pytest.raises(flight.FlightUnavailableError):
            list(client.do_action(flight.Action("health", b""), bearer(DEMO_TOKEN)))
    assert time.monotonic() - started < PROMPT_S


# ---------------------------------------------------------------------------------------------
# federation.yaml: no plain text by accident, no token readable by others


@pytest.mark.parametrize("insecure", [None, False])
def test_plain_text_endpoint_needs_insecure_true(demo, tmp_path, monkeypatch, insecure):
    monkeypatch.setenv("FQ_TEST_TOKEN", DEMO_TOKEN)
    fed = federation_file(tmp_path / "federation.yaml", {"hospital_a": 1, "hospital_b": 2},
                          ca=demo / "certs" / "ca.pem", scheme="grpc+tcp", insecure=insecure)
    with pytest.raises(ConfigError) as err:
        fedquery.connect(fed)
    message = str(err.value)
    assert err.value.key == "sites.hospital_a.endpoint"
    assert err.value.path == str(fed)
    assert "sites.hospital_a.endpoint" in message and "sites.hospital_b.endpoint" in message
    assert "insecure: true" in message
    assert str(fed) in message


def test_token_file_readable_by_others_is_refused(demo, servers, tmp_path):
    token = private_token_file(tmp_path / "analyst.token", mode=0o644)
    fed = federation_file(tmp_path / "federation.yaml",
                          {s: srv.port for s, srv in servers.items()},
                          ca=demo / "certs" / "ca.pem", token_file=token)
    with pytest.raises(ConfigError) as err:
        fedquery.connect(fed)
    assert err.value.key == "credentials.token_file"
    assert f"chmod 600 {token}" in str(err.value)
    assert "644" in str(err.value)
    assert DEMO_TOKEN not in str(err.value)

    os.chmod(token, 0o600)   # fixed as told: now it connects
    with fedquery.connect(fed) as conn:
        assert conn.cursor().execute(QUERY).fq_report.sites_answered == SITES
