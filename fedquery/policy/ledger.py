"""The site's privacy-budget ledger: zCDP spends per analyst, and the noise cache, in SQLite.

One file per site, shared by all server processes and threads of the site.  Amounts are zCDP
rho (floats); ``fedquery.protect`` converts them to (epsilon, delta) for users.  The caller's
contract is reserve -> compute -> commit -> release the answer (rollback if none is released).

Consistency under ``kill -9`` at any point:

* Each state change is one SQLite transaction, so a crash leaves all or none of it.  ``reserve``
  takes the write lock before reading the totals (``BEGIN IMMEDIATE``): racing reservations are
  serialised, so two processes can never both get the last budget.
* Killed between reserve and commit: the reservation names its owner (host, pid, process start
  time); the next ``reserve``/``reclaim`` deletes it once the owner is gone or the TTL passed.
  No answer was released, because release happens only after commit.
* Killed in or after commit: inserting the spend and deleting the reservation is one
  transaction, durable before ``commit`` returns, hence before any release.
* Never double-counted: a spend records its reservation id (commit is idempotent) and
  (analyst, query_id) is its primary key.  A reclaimed reservation cannot be committed, so even
  a wrong reclaim (pid checks are only trusted on this host) cannot cause an overspend.

``synchronous=FULL`` rather than NORMAL: under WAL, NORMAL survives process kills but may lose
the latest transactions on power loss or an OS crash, i.e. a spend whose answer is already out.
FULL fsyncs the WAL at each commit, a few milliseconds per query.
"""

from __future__ import annotations

import math
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fedquery.errors import BudgetExhausted, OperationalError

SCHEMA_VERSION = 1
TOLERANCE = 1e-12
_BUSY_S = 30.0
_HOST = socket.gethostname()
_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY, analyst TEXT NOT NULL, rho REAL NOT NULL, query_id TEXT NOT NULL,
    host TEXT NOT NULL, pid INTEGER NOT NULL, pid_start INTEGER, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS spends (
    analyst TEXT NOT NULL, query_id TEXT NOT NULL, rho REAL NOT NULL, ts REAL NOT NULL,
    reservation_id TEXT NOT NULL UNIQUE, PRIMARY KEY (analyst, query_id));
CREATE TABLE IF NOT EXISTS noise_cache (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, ts REAL NOT NULL);
"""


@dataclass(frozen=True)
class Reservation:
    """Budget held for one query until it is committed or rolled back."""

    id: str
    analyst: str
    rho: float
    query_id: str


def _proc_start(pid: int) -> int | None:
    """Linux start time of ``pid`` (ticks since boot), -1 for a zombie, None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return -1 if fields[0] == b"Z" else int(fields[19])


def _alive(host: str, pid: int, pid_start: int | None) -> bool:
    """False only when the owner is known to be gone; unknown counts as alive."""
    if host != _HOST or os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        pass
    now = _proc_start(pid)  # a zombie, or the pid reused by a newer process: gone
    return now is None or pid_start is None or now == pid_start


def _wal(db: sqlite3.Connection) -> str:
    """Switch to WAL; the switch does not wait on the busy handler, so retry while locked."""
    deadline = time.monotonic() + _BUSY_S
    while True:
        try:
            return db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
        time.sleep(0.01)


def _sum(db: sqlite3.Connection, table: str, analyst: str) -> float:
    return math.fsum(r for r, in db.execute(f"SELECT rho FROM {table} WHERE analyst = ?",
                                            (analyst,)))  # noqa: S608 - fixed table names


class BudgetLedger:
    """Privacy budget per (analyst, this site) and the noise cache, in one SQLite file."""

    def __init__(self, path: str | os.PathLike[str], *, reservation_ttl_s: float = 600.0) -> None:
        self.path = Path(path)
        self.reservation_ttl_s = float(reservation_ttl_s)
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=_BUSY_S, isolation_level=None,
                                       check_same_thread=False)
            if _wal(self._db).lower() != "wal":
                raise sqlite3.OperationalError("cannot switch to WAL journal mode")
            self._db.execute("PRAGMA synchronous = FULL")
            if self._db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("integrity check failed")
            with self._tx() as db:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)
                version = db.execute("SELECT max(version) FROM schema_version").fetchone()[0]
                if version is None:
                    db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
                elif version > SCHEMA_VERSION:
                    raise sqlite3.DatabaseError(f"schema version {version} is newer than this "
                                                f"fedquery supports ({SCHEMA_VERSION})")
        except (sqlite3.Error, OSError, OperationalError) as e:
            self.close()
            cause = e.__cause__ if isinstance(e, OperationalError) and e.__cause__ else e
            raise OperationalError(f"budget ledger {str(self.path)!r} cannot be opened: "
                                   f"{cause}") from e

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction; writes take the write lock first (BEGIN IMMEDIATE).  Names the file."""
        with self._lock:
            if self._db is None:
                raise OperationalError(f"budget ledger {str(self.path)!r} is closed")
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield db
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                raise OperationalError(f"budget ledger {str(self.path)!r}: {e}") from e

    def _reclaim(self, db: sqlite3.Connection) -> int:
        cutoff = time.time() - self.reservation_ttl_s
        rows = db.execute("SELECT id, host, pid, pid_start, created FROM reservations").fetchall()
        gone = [(r[0],) for r in rows if r[4] < cutoff or not _alive(r[1], r[2], r[3])]
        db.executemany("DELETE FROM reservations WHERE id = ?", gone)
        return len(gone)

    def reclaim(self) -> int:
        """Delete reservations of dead processes or older than the TTL; return how many."""
        with self._tx() as db:
            return self._reclaim(db)

    def reserve(self, analyst: str, rho: float, *, budget_rho: float, query_id: str) -> Reservation:
        """Hold ``rho`` for ``query_id``, or raise BudgetExhausted and record nothing."""
        if not (math.isfinite(rho) and rho > 0 and budget_rho >= 0):  # inf: no budget set
            raise ValueError(f"rho must be finite and > 0 and budget_rho >= 0 (inf for none), "
                             f"got rho={rho!r}, budget_rho={budget_rho!r}")
        res = Reservation(uuid.uuid4().hex, analyst, float(rho), query_id)
        with self._tx() as db:
            self._reclaim(db)
            if db.execute("SELECT 1 FROM spends WHERE analyst = ? AND query_id = ?",
                          (analyst, query_id)).fetchone():
                raise OperationalError(f"query {query_id!r} of analyst {analyst!r} was already "
                                       "charged; a query id is spent once")
            spent, held = _sum(db, "spends", analyst), _sum(db, "reservations", analyst)
            if spent + held + rho > budget_rho + TOLERANCE:
                left = max(0.0, budget_rho - spent - held)
                raise BudgetExhausted(
                    f"privacy budget exhausted for analyst {analyst!r}: spent rho={spent:.6g}, "
                    f"reserved rho={held:.6g}, remaining rho={left:.6g} of {budget_rho:.6g}, "
                    f"requested rho={rho:.6g}")
            db.execute("INSERT INTO reservations VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (res.id, analyst, res.rho, query_id, _HOST, os.getpid(),
                        _proc_start(os.getpid()), time.time()))
        return res

    def commit(self, reservation: Reservation) -> None:
        """Turn the reservation into a committed spend; a second commit is a no-op."""
        with self._tx() as db:
            failure = self._commit(db, reservation)
        if failure:
            raise OperationalError(failure)

    def commit_and_cache(self, reservations: list[Reservation], key: str,
                         value: bytes) -> bytes:
        """Commit every reservation and store the answer they paid for under ``key``, in one
        transaction (one fsync): the spends and the answer are durable together.  Returns
        the stored answer (first writer wins).  If any reservation cannot be committed,
        nothing is stored and OperationalError is raised (as ``commit``)."""
        with self._tx() as db:
            failures = [f for f in (self._commit(db, r) for r in reservations) if f]
            if not failures:
                db.execute("INSERT OR IGNORE INTO noise_cache VALUES (?, ?, ?)",
                           (key, bytes(value), time.time()))
                stored = bytes(db.execute("SELECT value FROM noise_cache WHERE key = ?",
                                          (key,)).fetchone()[0])
        if failures:
            raise OperationalError(failures[0])
        return stored

    def _commit(self, db: sqlite3.Connection, res: Reservation) -> str | None:
        """Commit ``res`` inside the caller's transaction; the reason it cannot, or None."""
        if db.execute("SELECT 1 FROM spends WHERE reservation_id = ?", (res.id,)).fetchone():
            return None
        row = db.execute("SELECT analyst, rho, query_id, created FROM reservations "
                         "WHERE id = ?", (res.id,)).fetchone()
        expired = row is not None and row[3] < time.time() - self.reservation_ttl_s
        valid = row is not None and row[:3] == (res.analyst, res.rho, res.query_id)
        if valid and not expired:
            db.execute("INSERT INTO spends VALUES (?, ?, ?, ?, ?)",
                       (res.analyst, res.query_id, res.rho, time.time(), res.id))
        if valid:  # committed or expired: the reservation is gone either way
            db.execute("DELETE FROM reservations WHERE id = ?", (res.id,))
        if valid and not expired:
            return None
        state = "expired" if valid else "unknown or reclaimed"
        return (f"budget ledger {str(self.path)!r}: the reservation for query "
                f"{res.query_id!r} is {state}; nothing committed")

    def rollback(self, reservation: Reservation) -> None:
        """Release the reservation; no-op if already released or committed."""
        with self._tx() as db:
            db.execute("DELETE FROM reservations WHERE id = ?", (reservation.id,))

    def spent(self, analyst: str) -> float:
        """Committed rho of ``analyst``."""
        with self._tx(write=False) as db:
            return _sum(db, "spends", analyst)

    def reserved(self, analyst: str) -> float:
        """Rho held by live reservations of ``analyst`` (dead ones are reclaimed first)."""
        return self.usage(analyst)[1]

    def remaining(self, analyst: str, budget_rho: float) -> float:
        """Rho still available to ``analyst`` under ``budget_rho`` (never negative)."""
        return max(0.0, budget_rho - sum(self.usage(analyst)))

    def usage(self, analyst: str) -> tuple[float, float]:
        """(committed, reserved) rho of ``analyst``, read in one transaction (dead
        reservations are reclaimed first)."""
        with self._tx() as db:
            self._reclaim(db)
            return _sum(db, "spends", analyst), _sum(db, "reservations", analyst)

    def history(self, analyst: str) -> list[dict]:
        """Committed spends of ``analyst``, oldest first: ``query_id``, ``rho``, ``ts``."""
        with self._tx(write=False) as db:
            return [{"query_id": q, "rho": r, "ts": t} for q, r, t in db.execute(
                "SELECT query_id, rho, ts FROM spends WHERE analyst = ? ORDER BY ts, rowid",
                (analyst,))]

    def cache_get(self, key: str) -> bytes | None:
        """The noisy answer stored under the canonical query ``key``, if any."""
        with self._tx(write=False) as db:
            row = db.execute("SELECT value FROM noise_cache WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def cache_put(self, key: str, value: bytes) -> bytes:
        """Store ``value`` unless ``key`` is taken; return the stored value (first writer wins)."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO noise_cache VALUES (?, ?, ?)",
                       (key, bytes(value), time.time()))
            return bytes(db.execute("SELECT value FROM noise_cache WHERE key = ?",
                                    (key,)).fetchone()[0])

    def close(self) -> None:
        """Close the connection; further calls raise OperationalError."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> BudgetLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
