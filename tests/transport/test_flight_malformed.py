"""Malformed, hostile and oversized requests to a live TLS Flight site are refused, typed and
without a stack trace, and the site keeps answering afterwards.

One ``SiteFlightServer`` on ``grpc+tls://127.0.0.1:0`` (certificate from a federation CA),
open policy with an analyst and a steward, an audit log.  Requests are sent with a raw
``pyarrow.flight.FlightClient`` and a valid bearer token, so only the request itself is wrong.
After every refusal the *same* server must still answer a normal query correctly, both to a
raw ``DoGet`` and through the coordinator (``Engine`` + ``FlightSiteClient`` + DB-API).

The site trusts nobody (DESIGN.md §2): the analyst it answers, audits and charges is the one
its middleware authenticated, never a name inside the request body.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import time
import uuid

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from fedquery.dbapi import Connection
from fedquery.engine import Engine
from fedquery.errors import SiteError
from fedquery.policy.model import OPEN, Analyst
from fedquery.site import audit
from fedquery.site.adapter import DuckDBAdapter
from fedquery.site.service import SiteService
from fedquery.transport import certs, codec
from fedquery.transport.flight_client import FlightSiteClient
from fedquery.transport.flight_server import SiteFlightServer
from fedquery.transport.wire_errors import from_flight_error

SITE = "site_a"
ANALYST, ANALYST_TOKEN = "alice", "malformed-tests-analyst-token"
STEWARD, STEWARD_TOKEN = "sam", "malformed-tests-steward-token"
N_PATIENTS = 40
COUNT_SQL = "SELECT COUNT(*) AS n FROM patients"
GROUP_SQL = "SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex ORDER BY sex"
TIMEOUT = 30.0  # no refusal may take anywhere near this long


def _options(token: str = ANALYST_TOKEN) -> flight.FlightCallOptions:
    return flight.FlightCallOptions(timeout=TIMEOUT,
                                    headers=[(b"authorization", f"Bearer {token}".encode())])


def _request(**fields) -> bytes:
    """A request body: a valid one, with ``fields`` replaced (``None`` removes a field)."""
    body = {"version": codec.VERSION, "sql": COUNT_SQL, "analyst": ANALYST, "settings": [],
            "query_id": uuid.uuid4().hex, "fingerprint": ""}
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


# ---------------------------------------------------------------------------------------------
# Fixtures


@dataclasses.dataclass(frozen=True)
class _Site:
    endpoint: str
    ca_pem: bytes
    audit_path: object
    server: SiteFlightServer


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A live TLS site: 40 patients, open policy, analyst + steward, audit log."""
    tmp = tmp_path_factory.mktemp("flight-malformed")
    ca = certs.init_ca(tmp / "pki")
    files = certs.issue(tmp / "pki", SITE)
    policy = dataclasses.replace(OPEN, analysts={
        ANALYST: Analyst(ANALYST, hashlib.sha256(ANALYST_TOKEN.encode()).hexdigest()),
        STEWARD: Analyst(STEWARD, hashlib.sha256(STEWARD_TOKEN.encode()).hexdigest(),
                         roles=("steward",))})
    patients = pa.table({"patient_id": list(range(N_PATIENTS)),
                         "sex": ["female", "male"] * (N_PATIENTS // 2),
                         "age": [20 + i for i in range(N_PATIENTS)]})
    service = SiteService(SITE, DuckDBAdapter.from_arrow({"patients": patients}), policy=policy,
                          privacy_units={"patients": "patient_id"},
                          audit_path=tmp / "audit.jsonl")
    pair = flight.CertKeyPair(cert=files.cert.read_bytes(), key=files.key.read_bytes())
    server = SiteFlightServer(service, "grpc+tls://127.0.0.1:0", tls_certificates=[pair])
    try:
        yield _Site(f"grpc+tls://127.0.0.1:{server.port}", certs.load_ca_pem(ca.cert),
                    tmp / "audit.jsonl", server)
    finally:
        server.shutdown()
        server.wait()
        service.close()


@pytest.fixture(scope="module")
def raw(site):
    client = flight.FlightClient(site.endpoint, tls_root_certs=site.ca_pem)
    yield client
    client.close()


@pytest.fixture(scope="module")
def coordinator(site):
    conn = Connection(Engine([FlightSiteClient(SITE, site.endpoint, ANALYST_TOKEN,
                                               ca_pem=site.ca_pem)], timeout=TIMEOUT),
                      user=ANALYST)
    yield conn
    conn.close()


@pytest.fixture
def still_serving(raw, coordinator):
    """Checks, after the test's hostile request, that the same server answers correctly."""
    def check() -> None:
        reader = raw.do_get(flight.Ticket(_request()), _options())
        reply = codec.decode_reply_table(reader.read_all())
        assert reply.site == SITE
        assert reply.partials.column("p_0").to_pylist() == [N_PATIENTS]
        health = [json.loads(r.body.to_pybytes())
                  for r in raw.do_action(flight.Action("health", b""), _options())]
        assert health == [{"site": SITE, "status": "ok", "tables": 1}]
        rows = coordinator.cursor().execute(GROUP_SQL).fetchall()
        assert rows == [("female", N_PATIENTS // 2), ("male", N_PATIENTS // 2)]
    check()  # and before: the server is sane to begin with
    return check


def _refused(call) -> tuple[BaseException, float]:
    """Run ``call``; return the exception it raised and how long it took."""
    started = time.monotonic()
    with pytest.raises(Exception) as info:
        call()
    return info.value, time.monotonic() - started


def _site_errors(caplog) -> list[logging.LogRecord]:
    """Records of an unexpected exception at the site (``log.exception``: ERROR with a trace)."""
    return [r for r in caplog.records
            if r.name.startswith("fedquery") and r.levelno >= logging.ERROR]


# ---------------------------------------------------------------------------------------------
# Malformed DoGet tickets


MALFORMED = {
    # name: (ticket, what the message must say)
    "random_bytes": (random.Random(20240611).randbytes(4096), "request is not UTF-8 JSON"),
    "empty": (b"", "request is not UTF-8 JSON"),
    "truncated_json": (_request()[:-10], "request is not UTF-8 JSON"),
    "json_array": (b'["version", 1]', "request must be a JSON object"),
    "json_string": (b'"SELECT COUNT(*) FROM patients"', "request must be a JSON object"),
    "version_99": (_request(version=99),
                   "unsupported request version 99 (this site speaks version 1)"),
    "version_missing": (_request(version=None), "unsupported request version None"),
    "version_as_string": (_request(version="1"), "unsupported request version '1'"),
    "sql_missing": (_request(sql=None), "request is missing field 'sql'"),
    "analyst_missing": (_request(analyst=None), "request is missing field 'analyst'"),
    "sql_not_a_string": (_request(sql=["SELECT 1"]), "request field 'sql' has the wrong type"),
    "analyst_not_a_string": (_request(analyst=7), "request field 'analyst' has the wrong type"),
    "settings_not_a_list": (_request(settings={"epsilon": 1.0}),
                            "request field 'settings' has the wrong type"),
    "settings_not_pairs": (_request(settings=[["epsilon"]]),
                           "request settings must be [name, scalar] pairs"),
    "setting_value_not_scalar": (_request(settings=[["epsilon", {"x": 1}]]),
                                 "request settings must be [name, scalar] pairs"),
    "query_id_not_a_string": (_request(query_id=7),
                              "request field 'query_id' has the wrong type"),
    "unknown_field": (_request(sql_fragment="SELECT * FROM patients"),
                      "request has unknown fields: sql_fragment"),
    "sql_over_limit": (_request(sql="SELECT " + "x" * (codec.MAX_SQL_BYTES + 100_000)),
                       f"exceeds the limit of {codec.MAX_SQL_BYTES} bytes of SQL"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_ticket_gets_a_typed_error_naming_the_problem(case, raw, still_serving,
                                                                caplog):
    ticket, expected = MALFORMED[case]
    err, took = _refused(lambda: raw.do_get(flight.Ticket(ticket), _options()).read_all())
    print(f"{case}: {type(err).__name__}: {str(err).split('. Detail:')[0]}")

    assert type(err) is flight.FlightServerError, f"{type(err).__name__}: {err}"
    message = str(err)
    assert expected in message
    assert "Traceback" not in message and 'File "' not in message
    # the typed payload the coordinator rebuilds the error from
    payload = json.loads(err.extra_info.decode())
    assert payload["version"] == 1 and payload["type"] == "MalformedMessage"
    assert expected in payload["message"]
    rebuilt = from_flight_error(SITE, err)
    assert isinstance(rebuilt, SiteError)
    assert str(rebuilt) == (f"site {SITE!r}: the site rejected the request as malformed: "
                            f"{payload['message']}")
    assert took < 10, f"the refusal took {took:.1f} s"
    assert not _site_errors(caplog), "the site logged an unexpected exception"
    still_serving()


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_explain_body_gets_a_typed_error(case, raw, still_serving, caplog):
    """``explain`` (where a site offers it) takes the same request body as DoGet."""
    if "explain" not in {a.type for a in raw.list_actions(_options())}:
        pytest.skip("this site offers no explain action")
    body, expected = MALFORMED[case]
    err, took = _refused(lambda: list(raw.do_action(flight.Action("explain", body),
                                                    _options())))
    assert type(err) is flight.FlightServerError, f"{type(err).__name__}: {err}"
    assert expected in str(err)
    assert "Traceback" not in str(err) and 'File "' not in str(err)
    assert json.loads(err.extra_info.decode())["type"] == "MalformedMessage"
    assert took < 10
    assert not _site_errors(caplog)
    still_serving()


def test_100_mb_sql_is_refused_without_hanging(raw, still_serving, caplog):
    ticket = _request(sql="SELECT COUNT(*) FROM patients WHERE sex = '" + "x" * 100_000_000
                      + "'")
    assert len(ticket) > 100_000_000
    err, took = _refused(lambda: raw.do_get(flight.Ticket(ticket), _options()).read_all())
    del ticket
    print(f"100 MB: {type(err).__name__} after {took:.2f} s: {str(err).split('. Detail:')[0]}")
    assert isinstance(err, flight.FlightError), f"{type(err).__name__}: {err}"
    assert took < TIMEOUT
    # today the whole message passes gRPC (no receive limit) and the codec refuses it
    assert "exceeds the limit of 1000000 bytes of SQL" in str(err)
    assert "Traceback" not in str(err)
    assert not _site_errors(caplog)
    still_serving()


# ---------------------------------------------------------------------------------------------
# Hostile JSON: refused by the codec as a typed malformed request


HOSTILE = {
    # json.loads raises RecursionError, which codec._load does not catch
    "deeply_nested": b'{"version": 1, "sql": "x", "analyst": "a", "settings": '
                     + b"[" * 100_000 + b"]" * 100_000 + b"}",
    # json.loads raises ValueError (int max_str_digits), not JSONDecodeError
    "integer_of_5000_digits": b'{"version": 1, "sql": "x", "analyst": "a", "settings": '
                              b'[["epsilon", ' + b"9" * 5000 + b"]]}",
    # valid JSON; the lone surrogate fails later in SiteService.query (sql.encode())
    "lone_surrogate_in_sql": b'{"version": 1, "sql": "SELECT COUNT(*) FROM patients -- '
                             b'\\ud800", "analyst": "a"}',
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_json_is_refused_and_the_site_survives(case, raw, still_serving):
    err, took = _refused(lambda: raw.do_get(flight.Ticket(HOSTILE[case]), _options()).read_all())
    print(f"{case}: {type(err).__name__}: {str(err).split('. Detail:')[0]}")
    assert isinstance(err, flight.FlightError)
    assert "Traceback" not in str(err) and 'File "' not in str(err)
    assert took < 10
    still_serving()


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_json_is_a_typed_malformed_request(case, raw, caplog):
    err, _ = _refused(lambda: raw.do_get(flight.Ticket(HOSTILE[case]), _options()).read_all())
    assert type(err) is flight.FlightServerError, f"{type(err).__name__}: {err}"
    assert json.loads(err.extra_info.decode())["type"] == "MalformedMessage"
    assert not _site_errors(caplog)


# ---------------------------------------------------------------------------------------------
# Actions and other RPCs


def test_unknown_action_gets_a_typed_error(raw, still_serving, caplog):
    err, took = _refused(lambda: list(raw.do_action(flight.Action("drop_tables", b"patients"),
                                                    _options())))
    print(f"unknown action: {type(err).__name__}: {str(err).split('. Detail:')[0]}")
    assert type(err) is flight.FlightServerError
    message = str(err).split(". Detail:")[0]
    assert message.startswith("unknown action 'drop_tables'; known: ")
    assert {"catalog", "health", "budget"} <= set(message.split("known: ")[1].split(", "))
    assert "Traceback" not in str(err)
    assert took < 10
    assert not _site_errors(caplog)
    still_serving()


def test_listed_actions_include_the_site_protocol(raw):
    assert {"catalog", "health", "budget"} <= {a.type for a in raw.list_actions(_options())}


UNSERVED = {
    "do_put": lambda raw: raw.do_put(flight.FlightDescriptor.for_path("patients"),
                                     pa.schema([("patient_id", pa.int64())]),
                                     _options())[0].close(),
    "list_flights": lambda raw: list(raw.list_flights(b"", _options())),
    "get_flight_info": lambda raw: raw.get_flight_info(
        flight.FlightDescriptor.for_command(_request()), _options()),
}


@pytest.mark.parametrize("rpc", list(UNSERVED))
def test_rpcs_a_site_does_not_serve_are_refused(rpc, raw, still_serving):
    err, took = _refused(lambda: UNSERVED[rpc](raw))
    print(f"{rpc}: {type(err).__module__}.{type(err).__name__}: {str(err)[:120]!r}")
    assert isinstance(err, pa.ArrowException)  # FlightError or ArrowNotImplementedError
    assert took < 10
    still_serving()


@pytest.mark.parametrize("rpc", list(UNSERVED))
def test_rpcs_a_site_does_not_serve_get_a_typed_error(rpc, raw):
    err, _ = _refused(lambda: UNSERVED[rpc](raw))
    assert isinstance(err, flight.FlightError), f"{type(err).__name__}"
    assert "Traceback" not in str(err)


# ---------------------------------------------------------------------------------------------
# Who is answered


def _audit_records(site: _Site) -> list[dict]:
    return [json.loads(line) for line in site.audit_path.read_text().splitlines()]


def test_analyst_named_in_the_request_is_ignored(site, raw, still_serving):
    """The site answers, audits (and would charge) the authenticated analyst."""
    query_id = uuid.uuid4().hex
    reader = raw.do_get(flight.Ticket(_request(analyst="mallory", query_id=query_id)),
                        _options())
    assert codec.decode_reply_table(reader.read_all()).partials.column("p_0").to_pylist() == [
        N_PATIENTS]
    [record] = [r for r in _audit_records(site) if r.get("query_id") == query_id]
    assert record["analyst"] == ANALYST
    assert record["decision"] == "released"
    assert all(r.get("analyst") != "mallory" for r in _audit_records(site))
    result = audit.verify(site.audit_path)
    assert result.ok, result.problems
    still_serving()


def test_steward_may_not_query(site, raw, still_serving):
    before = len(_audit_records(site))
    err, took = _refused(lambda: raw.do_get(flight.Ticket(_request(analyst=ANALYST)),
                                            _options(STEWARD_TOKEN)).read_all())
    print(f"steward: {type(err).__name__}: {str(err).split('. Detail:')[0]}")
    assert type(err) is flight.FlightUnauthorizedError
    assert (f"analyst {STEWARD!r} is not allowed to run queries at this site (needs role "
            "analyst)") in str(err)
    assert took < 10
    assert len(_audit_records(site)) == before  # refused before the service saw it
    # the steward is authenticated, though: budgets are theirs to read
    [budget] = [json.loads(r.body.to_pybytes())
                for r in raw.do_action(flight.Action("budget", b""), _options(STEWARD_TOKEN))]
    assert budget["analyst"] == STEWARD
    still_serving()
