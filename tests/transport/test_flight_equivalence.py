"""The equivalence corpus over real Arrow Flight sites gives the in-process answers.

Three ``SiteFlightServer``s on ``grpc+tls://127.0.0.1:0`` (certificates from a federation CA
made by :mod:`fedquery.transport.certs`) serve the same synthetic hospital data as
``tests/equivalence`` (same generator, sizes, seed and privacy units; open policy plus one
analyst with a bearer token).  The coordinator reaches them through ``FlightSiteClient``s, the
analyst through ``fedquery.dbapi.Connection``; ``local_federation`` over the same tables is the
in-process reference.  For every query of ``tests/equivalence/corpus.sql``:

* what each site sends back during that query (protected partials, fingerprint, suppressed
  count, meta, or the refusal; recorded by :class:`_Recording`) is *bit for bit* the same
  over Flight as in process;
* the release is the same: column names, DuckDB types, Arrow schema, Python value types,
  report, integers/strings/dates/NULLs exactly, row order where the corpus says ``ordered``,
  and floats up to rounding in the last bits (rel 1e-12).

The release is deterministic bit for bit (``test_release_is_deterministic``): the engine
combines replies in site order, as one chunk, whichever site answers first; the comparison
with in-process still allows rounding in the last bits (rel 1e-12).

The corpus parser and the fixture data are loaded from ``tests/equivalence`` (not copied), so
this module follows any change there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import itertools
import secrets
import sys
import threading
from pathlib import Path

import pyarrow.flight as flight
import pytest

from fedquery.dbapi import Connection
from fedquery.engine import Engine
from fedquery.policy.model import OPEN, Analyst
from fedquery.site.adapter import DuckDBAdapter
from fedquery.site.service import SiteService
from fedquery.testing import assert_results_equal, local_federation
from fedquery.transport import certs
from fedquery.transport.flight_client import FlightSiteClient
from fedquery.transport.flight_server import SiteFlightServer

EQUIVALENCE = Path(__file__).resolve().parent.parent / "equivalence"
ANALYST = "alice"
TURN_TIMEOUT = 20.0  # seconds a site's reply waits for the replies before it


def _load(path: Path, name: str):
    """Import a file of tests/equivalence under a private module name (no __init__.py)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_corpus_module = _load(EQUIVALENCE / "test_corpus.py", "_fq_flight_equivalence_corpus")
_data_module = _load(EQUIVALENCE / "conftest.py", "_fq_flight_equivalence_data")
CORPUS = _corpus_module.CORPUS
BY_NAME = {q.name: q for q in CORPUS}
PRIVACY_UNITS = dict(_data_module.PRIVACY_UNITS)


# ---------------------------------------------------------------------------------------------
# Fixtures


@dataclasses.dataclass(frozen=True)
class _Federation:
    endpoints: dict[str, str]  # site name -> grpc+tls://127.0.0.1:PORT
    token: str
    ca_pem: bytes

    def clients(self, order=None) -> list[FlightSiteClient]:
        return [FlightSiteClient(name, self.endpoints[name], self.token, ca_pem=self.ca_pem)
                for name in (order or self.endpoints)]


class _Recording:
    """A site client (Flight or in-process) that keeps its last reply or error, so that what
    each site sent can be compared after one release, without asking the sites twice."""

    def __init__(self, client) -> None:
        self.client = client
        self.name = client.name
        self.last = None

    def catalog(self):
        return self.client.catalog()

    def health(self):
        return self.client.health()

    def query(self, request, timeout=None):
        try:
            reply = self.client.query(request, timeout)
        except Exception as err:
            self.last = ("error", err)
            raise
        self.last = ("ok", reply)
        return reply

    def close(self) -> None:
        self.client.close()


def _recorded(conn) -> Connection:
    """``conn``'s sites behind :class:`_Recording`, in a new engine with the same options."""
    engine = conn.engine
    return Connection(Engine([_Recording(c) for c in engine.clients], timeout=engine.timeout,
                             on_site_failure=engine.on_site_failure), user=conn.user)


@pytest.fixture(scope="module")
def equivalence_sites():
    sites = _data_module._build_sites()
    # the data of tests/equivalence: 3 sites of 520/340/430 patients
    assert [tables["patients"].num_rows for tables in sites.values()] == [520, 340, 430]
    return sites


@pytest.fixture(scope="module")
def open_policy_and_token():
    token = secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).hexdigest()
    return dataclasses.replace(OPEN, analysts={ANALYST: Analyst(ANALYST, digest)}), token


@pytest.fixture(scope="module")
def flight_federation(equivalence_sites, open_policy_and_token, tmp_path_factory):
    """Three live TLS Flight site servers over the equivalence data; shut down afterwards."""
    policy, token = open_policy_and_token
    pki = tmp_path_factory.mktemp("flight-equivalence-pki")
    ca = certs.init_ca(pki)
    servers, services, endpoints = [], [], {}
    try:
        for name, tables in equivalence_sites.items():
            files = certs.issue(pki, name)
            service = SiteService(name, DuckDBAdapter.from_arrow(tables), policy=policy,
                                  privacy_units=PRIVACY_UNITS)
            services.append(service)
            pair = flight.CertKeyPair(cert=files.cert.read_bytes(), key=files.key.read_bytes())
            server = SiteFlightServer(service, "grpc+tls://127.0.0.1:0", tls_certificates=[pair])
            servers.append(server)
            endpoints[name] = f"grpc+tls://127.0.0.1:{server.port}"
        yield _Federation(endpoints, token, certs.load_ca_pem(ca.cert))
    finally:
        for server in servers:
            server.shutdown()
            server.wait()
        for service in services:
            service.close()


@pytest.fixture(scope="module")
def flight_conn(flight_federation):
    """The analyst's DB-API connection to the three Flight sites."""
    conn = Connection(Engine([_Recording(c) for c in flight_federation.clients()],
                             timeout=30.0), user=ANALYST)
    yield conn
    conn.close()  # closes the engine and its Flight clients


@pytest.fixture(scope="module")
def local_conn(equivalence_sites, open_policy_and_token):
    """The same federation in process: ``local_federation``'s sites, recorded."""
    policy, _ = open_policy_and_token
    base = local_federation(equivalence_sites, policy=policy, privacy_units=PRIVACY_UNITS,
                            user=ANALYST, timeout=30.0)
    conn = _recorded(base)  # base's engine is left unused: it never started a thread
    yield conn
    conn.close()  # closes the in-process sites


def _run(conn, sql: str):
    """("ok", description, rows, arrow table, report) or ("error", exception)."""
    cur = conn.cursor()
    try:
        cur.execute(sql)
        return ("ok", cur.description, cur.fetchall(), cur.fetch_arrow_table(), cur.fq_report)
    except Exception as err:  # noqa: BLE001 - compared with the other side's outcome
        return ("error", err)
    finally:
        cur.close()


def _types(rows: list[tuple]) -> list[tuple[str, ...]]:
    return sorted(tuple(type(v).__name__ for v in row) for row in rows)


def _assert_same_outcome(remote, local, q, *, rel: float, abs_tol: float) -> None:
    where = f"{q.name} @ corpus.sql:{q.line}"
    if local[0] == "error" or remote[0] == "error":
        assert local[0] == remote[0] == "error", (
            f"{where}: in-process {local[0]} vs Flight {remote[0]}: "
            f"{local[1] if local[0] == 'error' else remote[1]!r}")
        assert type(remote[1]) is type(local[1]), (
            f"{where}: refused as {type(remote[1]).__name__} over Flight but as "
            f"{type(local[1]).__name__} in process")
        assert str(remote[1]) == str(local[1]), f"{where}: refusal messages differ"
        return
    _, r_desc, r_rows, r_table, r_report = remote
    _, l_desc, l_rows, l_table, l_report = local
    assert [d[0] for d in r_desc] == [d[0] for d in l_desc], f"{where}: column names differ"
    assert r_desc == l_desc, f"{where}: cursor.description differs"
    assert r_table.schema.equals(l_table.schema, check_metadata=True), (
        f"{where}: Arrow schemas differ:\n{r_table.schema}\nvs\n{l_table.schema}")
    assert_results_equal(r_rows, l_rows, ordered=q.ordered, rel=rel, abs_tol=abs_tol,
                         context=f"{where}: Flight vs in-process")
    assert _types(r_rows) == _types(l_rows), f"{where}: Python value types differ"
    if q.ordered and rel == 0 and abs_tol == 0:
        assert r_rows == l_rows, f"{where}: rows differ"
    assert r_report == l_report, f"{where}: reports differ"


def _rows_repr(table) -> list[str]:
    return sorted(repr(row) for row in zip(*(c.to_pylist() for c in table.columns)))


# ---------------------------------------------------------------------------------------------
# Tests


def test_flight_federation_is_really_remote(flight_conn, flight_federation):
    """The connection under test talks TLS to three live Flight sites."""
    clients = [c.client for c in flight_conn.engine.clients]
    assert [type(c) for c in clients] == [FlightSiteClient] * 3
    assert [c.endpoint for c in clients] == list(flight_federation.endpoints.values())
    assert [c.health()["status"] for c in clients] == ["ok"] * 3


@pytest.mark.parametrize("name", [q.name for q in CORPUS])
def test_corpus_query_same_over_flight_as_in_process(name, flight_conn, local_conn,
                                                    flight_federation):
    q = BY_NAME[name]
    where = f"{name} @ corpus.sql:{q.line}"

    for recorder in (*flight_conn.engine.clients, *local_conn.engine.clients):
        recorder.last = None
    remote, local = _run(flight_conn, q.sql), _run(local_conn, q.sql)

    # what each site sent back, bit for bit
    local_sites = {c.name: c.last for c in local_conn.engine.clients}
    for recorder in flight_conn.engine.clients:
        site, r, lo = recorder.name, recorder.last, local_sites[recorder.name]
        assert (r is None) == (lo is None), f"{where} @ {site}: asked on one side only"
        if r is None:  # refused by the coordinator before any site was asked
            continue
        assert r[0] == lo[0], f"{where} @ {site}: Flight {r} vs in-process {lo}"
        if r[0] == "error":
            assert (type(r[1]), str(r[1])) == (type(lo[1]), str(lo[1])), (
                f"{where} @ {site}: refusals differ")
            continue
        r, lo = r[1], lo[1]
        assert (r.site, r.fingerprint, r.suppressed, r.meta) == (
            lo.site, lo.fingerprint, lo.suppressed, lo.meta), f"{where} @ {site}: headers differ"
        assert r.partials.schema.equals(lo.partials.schema, check_metadata=True), (
            f"{where} @ {site}: partial schemas differ")
        # rows bit for bit (repr of a float round-trips exactly); the order of the group rows
        # is DuckDB's hash-aggregate order, which varies from run to run on either side
        assert _rows_repr(r.partials) == _rows_repr(lo.partials), (
            f"{where} @ {site}: partials differ:\n{r.partials}\nvs\n{lo.partials}")

    # the release
    _assert_same_outcome(remote, local, q, rel=1e-12, abs_tol=1e-12)
    if remote[0] == "ok":
        assert remote[4].sites_answered == tuple(sorted(flight_federation.endpoints))


# ---------------------------------------------------------------------------------------------
# Determinism of the release (engine bug, see the module docstring)


class _Turns:
    """Counts the batches of replies the dispatcher has taken (via ``progress``)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._taken = 0

    def reset(self) -> None:
        with self._cond:
            self._taken = 0

    def progress(self, answered: int, total: int) -> None:
        with self._cond:
            self._taken += 1
            self._cond.notify_all()

    def wait_for(self, position: int) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._taken >= position, TURN_TIMEOUT):
                raise AssertionError(f"reply {position} waited {TURN_TIMEOUT} s for its turn")


class _InTurn:
    """A site client whose reply is handed over only after the replies of the sites before
    it have been taken: the coordinator receives the replies in a chosen order."""

    def __init__(self, client, position: int, turns: _Turns) -> None:
        self._client = client
        self._position = position
        self._turns = turns
        self.name = client.name

    def catalog(self):
        return self._client.catalog()

    def health(self):
        return self._client.health()

    def query(self, request, timeout=None):
        try:
            return self._client.query(request, timeout)
        finally:
            self._turns.wait_for(self._position)

    def close(self) -> None:
        self._client.close()


class _Ordered:
    """An engine over fresh Flight clients whose replies arrive in ``order``."""

    def __init__(self, federation: _Federation, order) -> None:
        self._turns = _Turns()
        self.engine = Engine([_InTurn(c, i, self._turns)
                              for i, c in enumerate(federation.clients(order))], timeout=30.0)

    def release(self, sql: str) -> list[tuple]:
        self._turns.reset()
        return self.engine.execute(sql, analyst=ANALYST,
                                   progress=self._turns.progress).table.to_pylist()


def test_release_is_deterministic(flight_federation):
    """The same query on the same data gives the same release, whichever site answers first.

    Each site order is forced (``_InTurn``) and repeated; every run must agree bit for bit.
    """
    engines = [_Ordered(flight_federation, order)
               for order in itertools.permutations(flight_federation.endpoints)]
    differing = {}
    try:
        for name in ("avg_bmi_by_smoking_nulls_first", "lab_second_moments"):
            answers: dict[str, list[str]] = {}
            for attempt, ordered in itertools.product(range(3), engines):
                rows = ordered.release(BY_NAME[name].sql)
                answers.setdefault(repr(sorted(rows, key=repr)), []).append(
                    f"{' → '.join(c.name for c in ordered.engine.clients)} #{attempt}")
                if len(answers) > 1:
                    differing[name] = answers
                    break
    finally:
        for ordered in engines:
            ordered.engine.close()
    assert not differing, "\n".join(
        f"{name}: {len(answers)} different releases: " + "; ".join(
            f"{runs[:2]}: {answer[:160]}" for answer, runs in answers.items())
        for name, answers in differing.items())
