"""Sites that die or hang mid-query, as real ``fedquery site serve`` processes over TLS.

Three demo hospitals run as separate processes (the demo launcher).  A site killed with SIGKILL
in the middle of a query, or frozen past its deadline (SIGSTOP), must make the query fail or
degrade per ``on_site_failure`` within the deadline, naming the site; the other sites and the
coordinator keep working, and the next query succeeds once the site is back.

Every test leaves the three sites running and not stopped (an autouse fixture checks and
repairs); the module fixture stops them all at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import fedquery
from fedquery.demo.federation import init_demo
from fedquery.demo.launcher import SiteProcesses
from fedquery.errors import SiteUnavailable
from fedquery.transport.federation import load_federation

SITES = ("hospital_a", "hospital_b", "hospital_c")
QUERY = "SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex ORDER BY sex"
KILL_TIMEOUT = 5.0   # per-site deadline while a site is killed mid-query
HANG_TIMEOUT = 3.0   # per-site deadline while a site hangs (the whole deadline is waited out)
SLACK = 2.0          # what the coordinator may take beyond the deadline


@dataclass
class Network:
    directory: Path
    federation: Path
    ports: dict[str, int]
    processes: SiteProcesses

    def process(self, site: str) -> subprocess.Popen:
        return self.processes.processes[site]

    def restart(self, site: str) -> None:
        self.processes.start(site, self.ports[site])

    def connect(self, **options):
        return fedquery.connect(self.federation, **options)

    def log(self, site: str) -> str:
        return (self.directory / "state" / site / "site.log").read_text()


def _state(pid: int) -> str:
    """The process state letter from /proc (T: stopped; Z: zombie), '' if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[0]


def _kill(proc: subprocess.Popen) -> None:
    """SIGCONT then SIGKILL ``proc`` if it still runs, and reap it."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    directory = tmp_path_factory.mktemp("failures_demo")
    federation = init_demo(directory, sites=3, patients=300, seed=1)
    ports = {s.name: int(s.endpoint.rsplit(":", 1)[1])
             for s in load_federation(federation).sites}
    processes = SiteProcesses(directory)
    try:
        for site, port in ports.items():
            processes.start(site, port)
        yield Network(directory, federation, ports, processes)
    finally:
        for proc in processes.processes.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)   # a stopped process ignores SIGTERM
        processes.stop()


@pytest.fixture(autouse=True)
def all_sites_running(network):
    """Before and after each test: every site runs and is not stopped."""
    def repair() -> None:
        for site in SITES:
            proc = network.process(site)
            if proc.poll() is None and _state(proc.pid) == "T":
                os.kill(proc.pid, signal.SIGCONT)
            if proc.poll() is not None:
                network.restart(site)

    repair()
    yield
    repair()


def _in_thread(fn):
    """Run ``fn`` in a thread; return (thread, outcome) where outcome gets result/error/s."""
    outcome: dict = {}

    def run() -> None:
        started = time.monotonic()
        try:
            outcome["result"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the test
            outcome["error"] = err
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _query(conn):
    cursor = conn.cursor().execute(QUERY)
    return cursor.fetchall(), cursor.fq_report


def _kill_mid_query(network: Network, conn, site: str) -> dict:
    """Freeze ``site``, start a query, SIGKILL the frozen site 0.5 s later; the outcome."""
    proc = network.process(site)
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        thread, outcome = _in_thread(lambda: _query(conn))
        time.sleep(0.5)
        assert thread.is_alive(), f"the query finished while {site} was frozen: {outcome}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        thread.join(KILL_TIMEOUT + SLACK + 5)
        assert not thread.is_alive(), "the query did not return after the site was killed"
    finally:
        _kill(proc)
    return outcome


def _total(rows) -> int:
    """All released patients (a suppressed cell is None)."""
    return sum(n for _, n in rows if n is not None)


def _about(total: int, expected: int) -> bool:
    """Equal, or within 10 % when the demo policies add noise (a repeated query is answered
    from each site's noise cache, so it is usually exactly equal even then)."""
    return abs(total - expected) <= 0.1 * expected


# ---------------------------------------------------------------------------------------------
# A site killed in the middle of a query


def test_sigkill_mid_query_fails_in_fail_mode_then_recovers(network):
    with network.connect(timeout=KILL_TIMEOUT, on_site_failure="fail") as conn:
        rows, report = _query(conn)
        assert report.sites_answered == SITES
        everyone = _total(rows)

        outcome = _kill_mid_query(network, conn, "hospital_b")
        err = outcome.get("error")
        assert isinstance(err, SiteUnavailable), outcome
        assert err.site == "hospital_b"
        assert "site 'hospital_b'" in str(err)
        assert outcome["seconds"] < KILL_TIMEOUT + SLACK

        # the coordinator still works: the dead site fails fast, the others answer
        with network.connect(timeout=KILL_TIMEOUT, on_site_failure="partial") as partial:
            rows, report = _query(partial)
            assert report.sites_answered == ("hospital_a", "hospital_c")
            assert [s for s, _ in report.sites_failed] == ["hospital_b"]
            assert 0 < _total(rows) < everyone

    network.restart("hospital_b")
    with network.connect(timeout=KILL_TIMEOUT, on_site_failure="fail") as conn:
        rows, report = _query(conn)
    assert report.sites_answered == SITES
    assert report.sites_failed == ()
    assert _about(_total(rows), everyone)


def test_sigkill_mid_query_degrades_in_partial_mode(network):
    with network.connect(timeout=KILL_TIMEOUT, on_site_failure="partial") as conn:
        rows, _ = _query(conn)
        everyone = _total(rows)

        outcome = _kill_mid_query(network, conn, "hospital_c")
        assert "error" not in outcome, outcome["error"]
        rows, report = outcome["result"]
        assert outcome["seconds"] < KILL_TIMEOUT + SLACK
        assert report.sites_answered == ("hospital_a", "hospital_b")
        assert [s for s, _ in report.sites_failed] == ["hospital_c"]
        assert "hospital_c" in report.sites_failed[0][1]
        assert 0 < _total(rows) < everyone

        # the other sites keep working: the next query (same connection) degrades again
        rows, report = _query(conn)
        assert report.sites_answered == ("hospital_a", "hospital_b")
        assert [s for s, _ in report.sites_failed] == ["hospital_c"]

    network.restart("hospital_c")
    with network.connect(timeout=KILL_TIMEOUT, on_site_failure="fail") as conn:
        rows, report = _query(conn)
    assert report.sites_answered == SITES
    assert _about(_total(rows), everyone)


def test_partial_mode_releases_nothing_below_min_sites(network):
    """Two of three sites down with min_sites 2: nothing is released, both are named."""
    with network.connect(timeout=KILL_TIMEOUT, on_site_failure="partial") as conn:
        _query(conn)
        for site in ("hospital_a", "hospital_b"):
            _kill(network.process(site))
        started = time.monotonic()
        with pytest.raises(fedquery.OperationalError) as err:
            _query(conn)
        assert time.monotonic() - started < KILL_TIMEOUT + SLACK
    message = str(err.value)
    assert "min_sites=2" in message and "nothing was released" in message
    assert "hospital_a" in message and "hospital_b" in message


# ---------------------------------------------------------------------------------------------
# A site that hangs past its deadline


@pytest.mark.parametrize("mode", ["fail", "partial"])
def test_hung_site_fails_or_degrades_within_the_deadline(network, mode):
    with network.connect(timeout=HANG_TIMEOUT, on_site_failure=mode) as conn:
        rows, _ = _query(conn)
        everyone = _total(rows)
        proc = network.process("hospital_a")
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            if mode == "fail":
                with pytest.raises(SiteUnavailable) as err:
                    _query(conn)
                assert err.value.site == "hospital_a"
                assert "site 'hospital_a'" in str(err.value)
                assert "deadline" in str(err.value)
            else:
                rows, report = _query(conn)
                assert report.sites_answered == ("hospital_b", "hospital_c")
                assert [s for s, _ in report.sites_failed] == ["hospital_a"]
                assert "deadline" in report.sites_failed[0][1]
                assert 0 < _total(rows) < everyone
            elapsed = time.monotonic() - started
            assert HANG_TIMEOUT - 0.5 <= elapsed < HANG_TIMEOUT + SLACK
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        assert _state(proc.pid) != "T"

        # back: the next query on the same connection is answered by all three
        rows, report = _query(conn)
        assert report.sites_answered == SITES
        assert _about(_total(rows), everyone)
    assert proc.poll() is None   # the site survived being frozen


def test_connect_with_a_hung_site_respects_the_deadline(network):
    proc = network.process("hospital_a")
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with network.connect(timeout=HANG_TIMEOUT, on_site_failure="partial") as conn:
            connected = time.monotonic() - started
            assert connected < HANG_TIMEOUT + SLACK, f"connect took {connected:.1f} s"
            started = time.monotonic()
            rows, report = _query(conn)
            assert time.monotonic() - started < HANG_TIMEOUT + SLACK
            assert report.sites_answered == ("hospital_b", "hospital_c")
    finally:
        os.kill(proc.pid, signal.SIGCONT)


# ---------------------------------------------------------------------------------------------
# A long-lived coordinator connection after a longer outage


def test_same_connection_recovers_promptly_after_a_longer_outage(network):
    """After 10 s down (queried every 0.5 s) gRPC's randomised reconnect backoff is several
    seconds: recovery was measured at 1.4-7.9 s after the site was back (11.9 s after a 20 s
    outage), so this fails in most runs and passes in some by luck (hence not strict).  With
    the backoff capped at ~1 s (grpc.max_reconnect_backoff_ms in the client's generic_options)
    recovery took 0.9 s after a 20 s outage: then it passes every time."""
    with network.connect(timeout=KILL_TIMEOUT, on_site_failure="partial") as conn:
        _query(conn)
        _kill(network.process("hospital_b"))
        down_until = time.monotonic() + 10
        while time.monotonic() < down_until:   # a coordinator that keeps being used
            _, report = _query(conn)
            assert [s for s, _ in report.sites_failed] == ["hospital_b"]
            time.sleep(0.5)
        network.restart("hospital_b")
        back = time.monotonic()
        answered = ()
        while time.monotonic() - back < 2.0 and answered != SITES:
            answered = _query(conn)[1].sites_answered
            time.sleep(0.1)
        assert answered == SITES, (
            f"hospital_b is back but the same connection still does not reach it after "
            f"{time.monotonic() - back:.1f} s")


# ---------------------------------------------------------------------------------------------
# Clean shutdown


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_site_stops_cleanly_on_sigterm_and_sigint(network, sig):
    site = "hospital_c"
    proc = network.process(site)
    with network.connect(timeout=KILL_TIMEOUT) as conn:
        _query(conn)                      # the site is serving
    before = network.log(site).count(f"event=stopped site={site}")
    started = time.monotonic()
    proc.send_signal(sig)
    try:
        assert proc.wait(5) == 0
    finally:
        _kill(proc)
    assert time.monotonic() - started < 5
    log = network.log(site)
    assert f"event=stopping site={site} signal={sig.name}" in log
    assert log.count(f"event=stopped site={site}") == before + 1
    assert "Traceback" not in log

    network.restart(site)                 # and it comes back on the same port
    with network.connect(timeout=KILL_TIMEOUT) as conn:
        assert _query(conn)[1].sites_answered == SITES


# ---------------------------------------------------------------------------------------------
# Start-up failures: one line on stderr and exit 2, like every other operator error


@pytest.mark.parametrize("problem", ["port in use", "key of another site"])
def test_site_serve_start_up_failure_is_one_line_and_exit_2(network, tmp_path, problem):
    d = network.directory
    key = d / "certs" / ("hospital_b.key" if problem == "key of another site"
                         else "hospital_a.key")
    port = network.ports["hospital_a"] if problem == "port in use" else 0
    result = subprocess.run(
        [sys.executable, "-m", "fedquery.cli.main", "site", "serve",
         str(d / "connectors" / "hospital_a.yaml"), "--policy",
         str(d / "policies" / "hospital_a.yaml"), "--port", str(port),
         "--tls-cert", str(d / "certs" / "hospital_a.pem"), "--tls-key", str(key),
         "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")
