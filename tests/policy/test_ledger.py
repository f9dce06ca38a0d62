"""The site budget ledger: zCDP arithmetic, exhaustion, idempotence, persistence, races between
processes, SIGKILL at any point, the noise cache and corrupted files."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sqlite3
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from fedquery.errors import BudgetExhausted, OperationalError
from fedquery.policy.ledger import BudgetLedger, Reservation

TIMEOUT = 30.0


@pytest.fixture
def ledger(tmp_path):
    with BudgetLedger(tmp_path / "ledger.sqlite") as led:
        yield led


@pytest.fixture
def spawn(monkeypatch):
    """A spawn context whose children can import this module (importlib mode does not add it)."""
    root = Path(__file__).resolve().parents[__name__.count(".")]
    monkeypatch.syspath_prepend(str(root))
    return multiprocessing.get_context("spawn")


def raw(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    with closing(sqlite3.connect(path)) as db:
        return db.execute(sql, params).fetchall()


# --- arithmetic -------------------------------------------------------------------------------

def test_reserve_commit_rollback_arithmetic(ledger):
    a = ledger.reserve("alice", 0.3, budget_rho=1.0, query_id="q1")
    b = ledger.reserve("alice", 0.2, budget_rho=1.0, query_id="q2")
    assert a == Reservation(a.id, "alice", 0.3, "q1") and a.id != b.id
    assert ledger.reserved("alice") == pytest.approx(0.5) and ledger.spent("alice") == 0.0
    assert ledger.remaining("alice", 1.0) == pytest.approx(0.5)
    ledger.commit(a)
    assert ledger.spent("alice") == pytest.approx(0.3)
    assert ledger.reserved("alice") == pytest.approx(0.2)
    ledger.rollback(b)
    assert ledger.reserved("alice") == 0.0
    assert ledger.remaining("alice", 1.0) == pytest.approx(0.7)
    assert ledger.remaining("alice", 0.1) == 0.0  # a lowered budget never goes negative
    [h] = ledger.history("alice")
    assert h["query_id"] == "q1" and h["rho"] == 0.3 and abs(h["ts"] - time.time()) < 60
    # analysts are independent
    assert ledger.spent("bob") == 0.0 and ledger.remaining("bob", 1.0) == 1.0
    assert ledger.history("bob") == []


def test_budget_can_be_spent_exactly(ledger):
    for i in range(10):  # 10 x 0.1 sums to 0.9999999999999999 or 1.0000000000000002 naively
        ledger.commit(ledger.reserve("alice", 0.1, budget_rho=1.0, query_id=f"q{i}"))
    assert ledger.spent("alice") == pytest.approx(1.0)
    with pytest.raises(BudgetExhausted):
        ledger.reserve("alice", 1e-9, budget_rho=1.0, query_id="more")


def test_exhaustion_says_spent_reserved_remaining_requested_and_records_nothing(ledger):
    ledger.commit(ledger.reserve("alice", 0.6, budget_rho=1.0, query_id="q1"))
    held = ledger.reserve("alice", 0.2, budget_rho=1.0, query_id="q2")
    with pytest.raises(BudgetExhausted) as info:
        ledger.reserve("alice", 0.5, budget_rho=1.0, query_id="q3")
    msg = str(info.value)
    assert isinstance(info.value, OperationalError)
    for part in ("'alice'", "spent rho=0.6", "reserved rho=0.2", "remaining rho=0.2",
                 "requested rho=0.5"):
        assert part in msg, msg
    assert ledger.spent("alice") == pytest.approx(0.6)
    assert ledger.reserved("alice") == pytest.approx(0.2)
    assert [h["query_id"] for h in ledger.history("alice")] == ["q1"]
    ledger.rollback(held)
    ledger.commit(ledger.reserve("alice", 0.4, budget_rho=1.0, query_id="q3"))
    assert ledger.remaining("alice", 1.0) == pytest.approx(0.0)


@pytest.mark.parametrize("rho,budget", [(0.0, 1.0), (-1.0, 1.0), (float("nan"), 1.0),
                                        (float("inf"), 1.0), (0.1, float("nan")),
                                        (0.1, -1.0)])
def test_invalid_amounts_are_refused(ledger, rho, budget):
    with pytest.raises(ValueError, match="finite"):
        ledger.reserve("alice", rho, budget_rho=budget, query_id="q")
    assert ledger.reserved("alice") == 0.0


def test_an_infinite_budget_still_records_spends(ledger):
    ledger.commit(ledger.reserve("alice", 1e6, budget_rho=float("inf"), query_id="q"))
    assert ledger.spent("alice") == 1e6 and ledger.remaining("alice", float("inf")) == float("inf")


# --- idempotence, expiry, persistence --------------------------------------------------------

def test_commit_and_rollback_are_idempotent(ledger):
    res = ledger.reserve("alice", 0.25, budget_rho=1.0, query_id="q1")
    ledger.commit(res)
    ledger.commit(res)
    ledger.rollback(res)  # after commit: the spend stays
    assert ledger.spent("alice") == 0.25 and len(ledger.history("alice")) == 1
    other = ledger.reserve("alice", 0.25, budget_rho=1.0, query_id="q2")
    ledger.rollback(other)
    ledger.rollback(other)
    with pytest.raises(OperationalError, match="'q2' is unknown or reclaimed; nothing committed"):
        ledger.commit(other)
    with pytest.raises(OperationalError, match="unknown or reclaimed"):
        ledger.commit(Reservation("no-such-id", "alice", 0.25, "q9"))
    assert ledger.spent("alice") == 0.25 and ledger.reserved("alice") == 0.0


def test_a_query_id_is_charged_once(ledger):
    first = ledger.reserve("alice", 0.1, budget_rho=1.0, query_id="q1")
    twin = ledger.reserve("alice", 0.1, budget_rho=1.0, query_id="q1")
    ledger.commit(first)
    with pytest.raises(OperationalError, match="UNIQUE constraint failed"):
        ledger.commit(twin)
    with pytest.raises(OperationalError, match="'q1' of analyst 'alice' was already charged"):
        ledger.reserve("alice", 0.1, budget_rho=1.0, query_id="q1")
    ledger.rollback(twin)
    assert ledger.spent("alice") == 0.1 and ledger.reserved("alice") == 0.0
    ledger.commit(ledger.reserve("bob", 0.1, budget_rho=1.0, query_id="q1"))  # other analyst


def test_a_forged_reservation_is_not_committed(ledger):
    res = ledger.reserve("alice", 0.5, budget_rho=1.0, query_id="q1")
    with pytest.raises(OperationalError, match="unknown or reclaimed"):
        ledger.commit(Reservation(res.id, "alice", 0.01, "q1"))
    ledger.commit(res)
    assert ledger.spent("alice") == 0.5


def test_expired_reservations_are_reclaimed_and_cannot_be_committed(tmp_path):
    with BudgetLedger(tmp_path / "l.sqlite", reservation_ttl_s=0.05) as led:
        late = led.reserve("alice", 0.6, budget_rho=1.0, query_id="slow")
        time.sleep(0.1)
        with pytest.raises(OperationalError, match="'slow' is expired"):
            led.commit(late)
        assert raw(led.path, "SELECT count(*) FROM reservations") == [(0,)]  # deleted, not kept
        assert led.spent("alice") == 0.0 and led.reserved("alice") == 0.0
        led.reserve("alice", 0.6, budget_rho=1.0, query_id="q2")
        time.sleep(0.1)
        assert led.reclaim() == 1
        assert led.remaining("alice", 1.0) == 1.0


def test_budget_survives_close_and_reopen(tmp_path):
    path = tmp_path / "state" / "ledger.sqlite"  # parent directories are created
    with BudgetLedger(path) as led:
        led.commit(led.reserve("alice", 0.4, budget_rho=1.0, query_id="q1"))
        led.commit(led.reserve("alice", 0.35, budget_rho=1.0, query_id="q2"))
        led.cache_put("k", b"noisy")
        history = led.history("alice")
    with pytest.raises(OperationalError, match="is closed"):
        led.spent("alice")
    with BudgetLedger(path) as led:
        assert led.spent("alice") == pytest.approx(0.75)
        assert led.history("alice") == history
        assert led.cache_get("k") == b"noisy"
        with pytest.raises(BudgetExhausted):
            led.reserve("alice", 0.3, budget_rho=1.0, query_id="q3")
    assert raw(path, "PRAGMA journal_mode") == [("wal",)]
    assert raw(path, "SELECT version FROM schema_version") == [(1,)]


# --- files ------------------------------------------------------------------------------------

def test_corrupted_file_names_the_file(tmp_path):
    path = tmp_path / "ledger.sqlite"
    path.write_bytes(os.urandom(8192))
    with pytest.raises(OperationalError, match=r"budget ledger '.*ledger\.sqlite' cannot be "
                                               r"opened: file is not a database"):
        BudgetLedger(path)


def test_unopenable_path_names_the_file(tmp_path):
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(OperationalError, match=r"'.*dir\.sqlite' cannot be opened"):
        BudgetLedger(tmp_path / "dir.sqlite")


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "ledger.sqlite"
    BudgetLedger(path).close()
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(OperationalError, match="schema version 99 is newer"):
        BudgetLedger(path)


# --- noise cache ------------------------------------------------------------------------------

def test_cache_put_get_and_first_writer_wins(tmp_path):
    path = tmp_path / "ledger.sqlite"
    with BudgetLedger(path) as one, BudgetLedger(path) as two:
        assert one.cache_get("q|eps=1|v1") is None
        assert one.cache_put("q|eps=1|v1", b"\x00first") == b"\x00first"
        assert two.cache_put("q|eps=1|v1", b"second") == b"\x00first"
        assert two.cache_get("q|eps=1|v1") == b"\x00first"
        assert two.cache_put("q|eps=2|v1", b"other") == b"other"
        assert one.cache_get("q|eps=2|v1") == b"other"
        assert one.spent("anyone") == 0.0  # the cache costs nothing


def test_commit_and_cache_stores_the_spends_and_the_answer_together(tmp_path):
    path = tmp_path / "ledger.sqlite"
    with BudgetLedger(path) as one, BudgetLedger(path) as two:
        spend = one.reserve("alice", 0.25, budget_rho=1.0, query_id="q1")
        delta = one.reserve("alice\x1fdelta", 1e-9, budget_rho=1e-7, query_id="q1")
        assert one.commit_and_cache([spend, delta], "k1", b"first") == b"first"
        assert one.spent("alice") == 0.25 and one.spent("alice\x1fdelta") == 1e-9
        assert one.reserved("alice") == 0.0
        # a second answer under the same key: its spend counts, the first answer stays
        other = two.reserve("alice", 0.25, budget_rho=1.0, query_id="q2")
        assert two.commit_and_cache([other], "k1", b"second") == b"first"
        assert two.spent("alice") == 0.5
        one.commit(spend)  # already committed: a no-op
        assert one.spent("alice") == 0.5


def test_commit_and_cache_stores_nothing_when_a_reservation_is_gone(tmp_path):
    with BudgetLedger(tmp_path / "l.sqlite", reservation_ttl_s=0.05) as led:
        ok = led.reserve("alice", 0.2, budget_rho=1.0, query_id="q1")
        late = led.reserve("alice", 0.3, budget_rho=1.0, query_id="q2")
        time.sleep(0.1)
        with pytest.raises(OperationalError, match="'q2' is expired"):
            led.commit_and_cache([late], "k", b"answer")
        assert led.cache_get("k") is None
        forged = Reservation(ok.id, "alice", 0.01, "q1")
        with pytest.raises(OperationalError, match="unknown or reclaimed"):
            led.commit_and_cache([forged], "k", b"answer")
        assert led.cache_get("k") is None and led.spent("alice") == 0.0


# --- concurrency ------------------------------------------------------------------------------

def _spend_worker(path: str, worker: int, n: int, barrier, results) -> None:
    from fedquery.errors import BudgetExhausted
    from fedquery.policy.ledger import BudgetLedger

    ok = refused = 0
    with BudgetLedger(path) as led:
        barrier.wait(TIMEOUT)
        for i in range(n):
            try:
                res = led.reserve("alice", 1.0, budget_rho=100.0, query_id=f"w{worker}-{i}")
            except BudgetExhausted:
                refused += 1
                continue
            led.commit(res)
            ok += 1
    results.put((worker, ok, refused))


def test_eight_processes_race_for_one_hundred_spends(tmp_path, spawn):
    path = tmp_path / "site" / "ledger.sqlite"  # all eight create it at once, too
    barrier, results = spawn.Barrier(8), spawn.Queue()
    procs = [spawn.Process(target=_spend_worker, args=(str(path), w, 50, barrier, results))
             for w in range(8)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=TIMEOUT) for _ in procs]
    for p in procs:
        p.join(TIMEOUT)
        assert p.exitcode == 0
    assert sum(o[1] for o in outcomes) == 100
    assert sum(o[2] for o in outcomes) == 300
    with BudgetLedger(path) as led:
        assert led.spent("alice") == 100.0 and led.reserved("alice") == 0.0
        assert len({h["query_id"] for h in led.history("alice")}) == 100


def test_threads_sharing_one_ledger_never_overspend(ledger):
    counts = {"ok": 0, "refused": 0}
    lock = threading.Lock()

    def spend(t: int) -> None:
        for i in range(25):
            try:
                ledger.commit(ledger.reserve("alice", 1.0, budget_rho=50.0, query_id=f"{t}-{i}"))
                key = "ok"
            except BudgetExhausted:
                key = "refused"
            with lock:
                counts[key] += 1

    threads = [threading.Thread(target=spend, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert counts == {"ok": 50, "refused": 50} and ledger.spent("alice") == 50.0


# --- SIGKILL ----------------------------------------------------------------------------------

def _reserve_and_hang(path: str, commit: bool, ready) -> None:
    from fedquery.policy.ledger import BudgetLedger

    led = BudgetLedger(path)
    res = led.reserve("alice", 40.0, budget_rho=100.0, query_id="victim")
    if commit:
        led.commit(res)
    ready.set()
    time.sleep(120)


def _killed_child(spawn, path: Path, commit: bool) -> multiprocessing.process.BaseProcess:
    ready = spawn.Event()
    child = spawn.Process(target=_reserve_and_hang, args=(str(path), commit, ready))
    child.start()
    assert ready.wait(TIMEOUT), "child did not reserve in time"
    return child


def _kill(child, reap: bool = True) -> None:
    os.kill(child.pid, signal.SIGKILL)
    if reap:
        child.join(TIMEOUT)
        assert child.exitcode == -signal.SIGKILL


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_sigkill_between_reserve_and_commit_releases_the_reservation(ledger, spawn):
    child = _killed_child(spawn, ledger.path, commit=False)
    try:
        assert ledger.reserved("alice") == 40.0  # the owner is alive: kept
        with pytest.raises(BudgetExhausted, match="reserved rho=40"):
            ledger.reserve("alice", 70.0, budget_rho=100.0, query_id="q")
        _kill(child, reap=False)  # a zombie still answers kill(pid, 0); /proc says it is gone
        deadline = time.monotonic() + TIMEOUT
        while ledger.reserved("alice") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ledger.reserved("alice") == 0.0
    finally:
        _kill(child)
    assert ledger.spent("alice") == 0.0
    assert ledger.remaining("alice", 100.0) == 100.0
    ledger.commit(ledger.reserve("alice", 100.0, budget_rho=100.0, query_id="q"))


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_sigkill_after_commit_keeps_the_spend(ledger, spawn):
    _kill(_killed_child(spawn, ledger.path, commit=True))
    assert ledger.spent("alice") == 40.0 and ledger.reserved("alice") == 0.0
    assert [h["query_id"] for h in ledger.history("alice")] == ["victim"]
    assert ledger.remaining("alice", 100.0) == 60.0


def _spend_forever(path: str, tag: str, log: str, ready) -> None:
    from fedquery.policy.ledger import BudgetLedger

    led = BudgetLedger(path)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    ready.set()
    for i in range(10**9):
        res = led.reserve("alice", 0.5, budget_rho=1e9, query_id=f"{tag}-{i}")
        led.commit(res)
        os.write(fd, f"{res.query_id}\n".encode())  # acknowledged only after commit returned


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_sigkill_at_random_moments_leaves_a_consistent_ledger(tmp_path, spawn):
    path, log = tmp_path / "ledger.sqlite", tmp_path / "acknowledged.txt"
    BudgetLedger(path).close()
    rng = random.Random(20240505)
    for round_ in range(5):
        ready = spawn.Event()
        child = spawn.Process(target=_spend_forever,
                              args=(str(path), f"r{round_}", str(log), ready))
        child.start()
        assert ready.wait(TIMEOUT)
        time.sleep(rng.uniform(0.02, 0.3))
        _kill(child)
    with BudgetLedger(path) as led:
        led.reclaim()
        committed = {h["query_id"] for h in led.history("alice")}
        acknowledged = set(log.read_text().split())
        assert led.spent("alice") == pytest.approx(0.5 * len(committed))
        assert len(committed) == len(led.history("alice")) > 0
        assert acknowledged <= committed  # no acknowledged spend was lost
        assert len(committed - acknowledged) <= 5  # at most one per kill, between commit and ack
        assert led.reserved("alice") == 0.0
    assert raw(path, "SELECT count(*) FROM reservations") == [(0,)]
    assert raw(path, "PRAGMA integrity_check") == [("ok",)]
