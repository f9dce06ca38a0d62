"""The site's audit log: append-only JSON lines, hash-chained, verifiable (DESIGN.md §2).

Every line is one record in canonical JSON (sorted keys, compact separators, ASCII).
``hash`` is the sha256 of the canonical JSON of the record without ``hash``; ``prev`` is the
``hash`` of the line before (64 zeros for the first line) and ``seq`` counts from 0.  Editing,
deleting, inserting or reordering a line therefore breaks the chain at that line, and
:func:`verify` names it.  Appends hold an exclusive ``flock`` on the log file across
read-last-line + write, write the line with a single ``os.write`` on an ``O_APPEND``
descriptor and ``fsync`` it, so concurrent processes and threads still produce one chain.

Records never carry row-level values: event keys are limited to :data:`ALLOWED_KEYS`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from fedquery.errors import OperationalError

GENESIS = "0" * 64
ALLOWED_KEYS = frozenset({
    "event", "site", "analyst", "query_id", "sql_sha256", "sql", "decision", "rules",
    "policy_hash", "epsilon", "delta", "rho", "groups", "suppressed", "sites", "error", "ms",
    "mode", "fingerprint"})
_REPAIR_HINT = "a torn last line is a crash artefact: AuditLog(path).repair_truncated_tail()"


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def _digest(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(_canonical(body).encode("ascii")).hexdigest()


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _check_json(value, where: str) -> None:
    """Raise unless ``value`` is built from JSON scalars, lists and str-keyed dicts."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"audit event {where}: {value!r} is not a finite number")
    if isinstance(value, (list, tuple)):
        items = enumerate(value)
    elif isinstance(value, dict) and all(isinstance(k, str) for k in value):
        items = value.items()
    elif value is None or isinstance(value, (str, bool, int, float)):
        return
    else:
        raise TypeError(f"audit event {where}: {type(value).__name__} is not a JSON value")
    for key, item in items:
        _check_json(item, f"{where}[{key!r}]")


def _check_event(event: dict) -> None:
    if not isinstance(event, dict):
        raise TypeError(f"audit event must be a dict, not {type(event).__name__}")
    for key in event:
        if key not in ALLOWED_KEYS:
            raise ValueError(f"audit event key {key!r} is not an allowed audit field "
                             f"(allowed: {', '.join(sorted(ALLOWED_KEYS))}); audit records "
                             "must never carry row-level values")
        _check_json(event[key], key)


def _record(raw: bytes):
    """The record on one line (without newline), or None when it is not a JSON object."""
    try:
        rec = json.loads(raw.decode("utf-8"))
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def _is_record(rec) -> bool:
    return (isinstance(rec, dict) and type(rec.get("seq")) is int
            and isinstance(rec.get("hash"), str) and isinstance(rec.get("prev"), str))


def _complete_record(line: bytes):
    """The record on a newline-terminated last line, or None when it is torn or unreadable."""
    rec = _record(line[:-1]) if line.endswith(b"\n") else None
    return rec if _is_record(rec) else None


@contextmanager
def _locked(path: Path, flags: int, lock: int):
    fd = os.open(path, flags, 0o640)
    try:
        fcntl.flock(fd, lock)
        yield fd
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _tail(fd: int) -> tuple[bytes, int] | None:
    """The last line (with its newline, if any) and its byte offset; None for an empty file."""
    pos = os.fstat(fd).st_size
    data = b""
    while pos > 0:
        step = min(pos, 8192)
        pos -= step
        data = os.pread(fd, step, pos) + data
        cut = data.rfind(b"\n", 0, len(data) - 1)  # ignore the final newline itself
        if cut >= 0:
            return data[cut + 1:], pos + cut + 1
    return (data, 0) if data else None


def _last_record(fd: int, path: Path) -> dict | None:
    """The last record, or None for an empty log; refuses a torn or unreadable last line."""
    tail = _tail(fd)
    if tail is None:
        return None
    line, offset = tail
    rec = _complete_record(line)
    if rec is None:
        lineno = os.pread(fd, offset, 0).count(b"\n") + 1
        what = "is not a valid audit record" if line.endswith(b"\n") else "is torn (no newline)"
        raise OperationalError(f"audit log {path}: line {lineno} {what}; refusing to chain onto "
                               f"it. Run `fedquery site audit verify`; {_REPAIR_HINT}")
    return rec


def _fsync_dir(path: Path) -> None:
    """Make the creation of ``path`` (or of a new sibling) durable."""
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def head(path) -> tuple[int, str] | None:
    """``(seq, hash)`` of the last record, or None for a missing or empty log.

    Reads the last line only (no chain verification).  Export it periodically to somewhere the
    site cannot rewrite; ``verify(path, expect_head=hash)`` then detects a truncated tail.
    """
    path = Path(path)
    if not path.exists():
        return None
    with _locked(path, os.O_RDONLY, fcntl.LOCK_SH) as fd:
        rec = _last_record(fd, path)
    return None if rec is None else (rec["seq"], rec["hash"])


class AuditLog:
    """Append-only, hash-chained audit log in the JSON-lines file ``path``."""

    def __init__(self, path) -> None:
        self.path = Path(path)

    def append(self, event: dict) -> dict:
        """Write one record (``seq``, ``ts``, the event fields, ``prev``, ``hash``); return it.

        Raises ValueError for a key outside :data:`ALLOWED_KEYS`, TypeError for a non-JSON
        value, OperationalError when the last line is torn or the write fails.
        """
        _check_event(event)
        with _locked(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, fcntl.LOCK_EX) as fd:
            last = _last_record(fd, self.path)
            record = {**event, "seq": 0 if last is None else last["seq"] + 1, "ts": _utc_now(),
                      "prev": GENESIS if last is None else last["hash"]}
            record["hash"] = _digest(record)
            line = _canonical(record)
            self._write(fd, (line + "\n").encode("ascii"))
        if last is None:
            _fsync_dir(self.path)
        return json.loads(line)  # exactly what was written (tuples became lists)

    def _write(self, fd: int, data: bytes) -> None:
        """One ``os.write`` + ``fsync``; on failure, cut the file back so no torn line stays."""
        start = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(f"short write ({written} of {len(data)} bytes)")
            os.fsync(fd)
        except OSError as exc:
            os.ftruncate(fd, start)
            raise OperationalError(f"audit log {self.path}: write failed: {exc}") from exc

    def repair_truncated_tail(self) -> Path | None:
        """Operator action after a crash: move a torn last line to ``<path>.torn-<timestamp>``.

        Only the last line is touched, and only when it lacks its newline or is not a JSON
        object; the valid prefix stays in place and appends work again.  Returns the file the
        fragment was moved to, or None when the tail was intact.  Other damage (a bad line in
        the middle) is not repaired: it is evidence, reported by :func:`verify`.
        """
        if not self.path.exists():
            return None
        with _locked(self.path, os.O_RDWR | os.O_APPEND, fcntl.LOCK_EX) as fd:
            tail = _tail(fd)
            if tail is None or _complete_record(tail[0]) is not None:
                return None
            fragment, offset = tail
            stamp = _utc_now().replace(":", "").replace("-", "")
            torn = self.path.with_name(f"{self.path.name}.torn-{stamp}")
            with open(torn, "xb") as fh:  # never overwrite an earlier fragment
                fh.write(fragment)
                fh.flush()
                os.fsync(fh.fileno())
            os.ftruncate(fd, offset)
            os.fsync(fd)
        _fsync_dir(self.path)
        return torn


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify`; ``problems`` name the 1-based line and what is wrong."""

    ok: bool
    records: int
    problems: list[str] = field(default_factory=list)
    path: str = ""
    exists: bool = True
    head: tuple[int, str] | None = None


def _check_line(no: int, raw: bytes, rec: dict, expect: tuple[int, str, int]) -> list[str]:
    seq, prev, prev_no = expect
    problems = []
    if rec["hash"] != _digest(rec):
        problems.append(f"line {no}: hash mismatch (record modified)")
    elif raw.decode("utf-8") != _canonical(rec):
        problems.append(f"line {no}: not in canonical form (record modified)")
    if rec["seq"] != seq:
        problems.append(f"line {no}: seq {rec['seq']}, expected {seq} "
                        "(record deleted, inserted or reordered)")
    if rec["prev"] != prev:
        problems.append(f"line {no}: prev does not match line {prev_no} "
                        "(record deleted or reordered)" if prev_no else
                        f"line {no}: prev is not the genesis hash (first records removed)")
    return problems


def verify(path, expect_head: str | None = None) -> VerifyResult:
    """Recompute every hash and check the ``prev`` links and ``seq`` continuity.

    Limits, honestly: the chain proves that no record *before the last one* was modified,
    deleted, inserted or reordered.  Removing records from the end (or replacing the whole
    file by a shorter, re-hashed chain) leaves a valid chain and cannot be detected from the
    file alone.  Operators should export :func:`head` periodically to a place the site cannot
    rewrite; ``expect_head`` then requires a record with that hash to still be in the chain
    (records appended after the export are fine).  A missing file verifies as ok with 0
    records and ``exists=False`` unless ``expect_head`` is given.
    """
    path = Path(path)
    if not path.exists():
        gone = [] if expect_head is None else [f"log missing; expected head {expect_head}"]
        return VerifyResult(not gone, 0, gone, str(path), exists=False)
    with _locked(path, os.O_RDONLY, fcntl.LOCK_SH) as fd:
        lines = os.pread(fd, os.fstat(fd).st_size, 0).split(b"\n")
    fragment = lines.pop()  # b"" when the file ends with a newline
    problems, hashes, last, records = [], set(), None, 0
    expect = (0, GENESIS, 0)
    for no, raw in enumerate(lines, 1):
        rec = _record(raw)
        if not _is_record(rec):
            problems.append(f"line {no}: " + ("not valid JSON" if rec is None else
                                              "not an audit record (no seq, prev or hash)"))
            continue
        problems += _check_line(no, raw, rec, expect)
        records, last = records + 1, (rec["seq"], rec["hash"])
        hashes.add(rec["hash"])
        expect = (rec["seq"] + 1, rec["hash"], no)
    if fragment:
        problems.append(f"line {len(lines) + 1}: torn last line (no newline: crash mid-write?)")
    if expect_head is not None and expect_head not in hashes:
        problems.append(f"expected head {expect_head} is not in the log "
                        "(records removed from the end, or the log was replaced)")
    return VerifyResult(not problems, records, problems, str(path), head=last)


def verify_command_output(result: VerifyResult) -> tuple[int, str]:
    """Exit code (0 ok, 1 tampered or damaged) and human text for ``fedquery site audit verify``."""
    if result.ok and not result.exists:
        return 0, f"OK: {result.path} does not exist (0 records)"
    if result.ok:
        where = "" if result.head is None else f"; head seq {result.head[0]} {result.head[1]}"
        return 0, f"OK: {result.path}: {result.records} records, hash chain intact{where}"
    lines = [f"FAILED: {result.path}: {len(result.problems)} problem(s), "
             f"{result.records} records read"] + [f"  {p}" for p in result.problems]
    if any("torn last line" in p for p in result.problems):
        lines.append(f"hint: {_REPAIR_HINT}")
    return 1, "\n".join(lines)
