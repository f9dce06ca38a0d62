"""A secure federation for real: `fedquery demo init --secure`, three site processes and a key
holder process over TLS, queried through fedquery.connect; a site killed with SIGKILL gives a
new round without it (partial) or a clean failure naming it (fail) — never a garbage release."""

from __future__ import annotations

import os
import signal

import pytest

import fedquery
from fedquery.demo.federation import KEY_HOLDER, init_demo
from fedquery.demo.launcher import SiteProcesses
from fedquery.errors import OperationalError
from fedquery.transport.federation import load_federation

QUERY = "SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex ORDER BY sex"


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def secure_demo(tmp_path_factory):
    directory = tmp_path_factory.mktemp("secure-demo")
    path = init_demo(directory, patients=400, secure=True)
    federation = load_federation(path, secrets=False)
    processes = SiteProcesses(directory)
    try:
        processes.start_key_holder(KEY_HOLDER, _port(federation.key_holder.endpoint), path)
        for site in federation.sites:
            processes.start(site.name, _port(site.endpoint), federation=path)
        yield path, processes
    finally:
        processes.stop()


def test_a_secure_query_over_tls_processes(secure_demo):
    path, _ = secure_demo
    with fedquery.connect(path) as conn:
        cursor = conn.cursor().execute(QUERY)
        rows = cursor.fetchall()
        report = cursor.fq_report
    assert [r[0] for r in rows] == ["F", "M", None]
    assert all(n > 100 for _, n in rows[:2])
    assert report.mode == "secure/laplace"
    assert report.sites_answered == ("hospital_a", "hospital_b", "hospital_c")
    assert any("Gaussian noise shares" in note for note in report.notes)
    assert all(interval is not None for interval in report.intervals[0][1:])


def test_the_sites_contributions_were_encrypted(secure_demo):
    """The coordinator-side reply of a site is ciphertext only (no partials in clear)."""
    path, _ = secure_demo
    from fedquery.ir import QueryRequest, SecureRound, Settings

    with fedquery.connect(path) as conn:
        engine = conn.engine
        epoch, _, _ = engine.key_holder.public_context("standard")
        client = engine.clients[0]
        reply = client.query(QueryRequest(
            sql=QUERY, analyst="demo", settings=Settings((("epsilon", 0.1),)),
            query_id="probe-1", secure=SecureRound(
                tuple(c.name for c in engine.clients), engine.requirements, epoch)))
    assert reply.partials.column_names == ["ciphertext"]
    assert all(len(c) > 50_000 for c in reply.partials.column("ciphertext").to_pylist())


def test_a_killed_site_restarts_the_round_or_fails_cleanly(secure_demo):
    """Connected while every site is up, then a site dies: the first round fails for it."""
    path, processes = secure_demo
    strict = fedquery.connect(path, on_site_failure="fail", timeout=10)
    lenient = fedquery.connect(path, on_site_failure="partial", timeout=10)
    victim = processes.processes["hospital_c"]
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    try:
        with pytest.raises(OperationalError, match="hospital_c"):
            strict.cursor().execute(QUERY)
        cursor = lenient.cursor().execute(QUERY)
        rows = cursor.fetchall()
        assert cursor.fq_report.sites_answered == ("hospital_a", "hospital_b")
        assert [s for s, _ in cursor.fq_report.sites_failed] == ["hospital_c"]
        assert all(0 < n < 1000 for _, n in rows[:2])  # two hospitals of 400 patients
    finally:
        strict.close(), lenient.close()


def test_a_site_server_can_also_be_the_key_holder(tmp_path):
    """`site serve --key-holder`: hospital_a's process also runs the key holder role."""
    path = init_demo(tmp_path, patients=300, secure=True)
    federation = load_federation(path, secrets=False)
    processes = SiteProcesses(tmp_path)
    try:
        for site in federation.sites:
            extra = ()
            if site.name == "hospital_a":
                extra = ("--key-holder", "--key-holder-port",
                         str(_port(federation.key_holder.endpoint)),
                         "--key-holder-token-file", str(tmp_path / "coordinator.token"))
            processes.start(site.name, _port(site.endpoint), federation=path, extra=extra)
        assert (tmp_path / "state" / "hospital_a" / "keyholder.port").exists()
        with fedquery.connect(path) as conn:
            rows = conn.cursor().execute(QUERY).fetchall()
        assert [r[0] for r in rows] == ["F", "M", None]
        log = (tmp_path / "state" / "hospital_a" / "site.log").read_text()
        assert "event=listening keyholder" in log and "(in a site process)" in log
    finally:
        processes.stop()
