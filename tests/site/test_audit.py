"""The site audit log: hash chain, tamper detection, torn tails, concurrent appends."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import re
import threading
from pathlib import Path

import pytest

from fedquery.errors import OperationalError
from fedquery.site.audit import (GENESIS, AuditLog, VerifyResult, head, verify,
                                 verify_command_output)


def event(i: int) -> dict:
    return {"event": "query", "site": "hospital_a", "analyst": "alice", "query_id": f"q{i}",
            "decision": "allowed" if i % 3 else "refused", "rules": [{"id": "R1", "ok": True}],
            "policy_hash": "ab" * 32, "epsilon": 0.5, "ms": i}


def write_log(path: Path, n: int) -> list[dict]:
    log = AuditLog(path)
    return [log.append(event(i)) for i in range(n)]


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def put_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(lines))


@pytest.fixture
def log100(tmp_path) -> Path:
    path = tmp_path / "audit.jsonl"
    write_log(path, 100)
    return path


def test_record_format_and_chain(tmp_path):
    path = tmp_path / "audit.jsonl"
    first, second = write_log(path, 2)
    raw = lines_of(path)
    assert [json.loads(line) for line in raw] == [first, second]
    assert raw[0] == json.dumps(first, sort_keys=True, separators=(",", ":")) + "\n"
    assert (first["seq"], first["prev"], second["seq"], second["prev"]) == \
        (0, GENESIS, 1, first["hash"])
    body = {k: v for k, v in second.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    assert second["hash"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", first["ts"])
    assert first["rules"] == [{"id": "R1", "ok": True}] and first["decision"] == "refused"


def test_chain_of_100_verifies(log100):
    result = verify(log100)
    assert result.ok and result.records == 100 and result.problems == []
    assert result.head == head(log100) == (99, json.loads(lines_of(log100)[-1])["hash"])
    code, text = verify_command_output(result)
    assert code == 0 and text.startswith(f"OK: {log100}: 100 records, hash chain intact")


def test_modified_field_reports_exact_line(log100):
    lines = lines_of(log100)
    rec = json.loads(lines[6])
    rec["decision"] = "allowed" if rec["decision"] == "refused" else "refused"
    lines[6] = json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n"
    put_lines(log100, lines)
    result = verify(log100)
    assert not result.ok and result.records == 100
    assert result.problems == ["line 7: hash mismatch (record modified)"]


def test_modified_record_with_recomputed_hash_breaks_next_link(log100):
    lines = lines_of(log100)
    rec = json.loads(lines[6])
    rec["analyst"] = "mallory"
    body = {k: v for k, v in rec.items() if k != "hash"}
    rec["hash"] = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    lines[6] = json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n"
    put_lines(log100, lines)
    assert verify(log100).problems == [
        "line 8: prev does not match line 7 (record deleted or reordered)"]


def test_whitespace_edit_is_not_canonical(log100):
    lines = lines_of(log100)
    lines[3] = json.dumps(json.loads(lines[3]), sort_keys=True) + "\n"
    put_lines(log100, lines)
    assert verify(log100).problems == ["line 4: not in canonical form (record modified)"]


def test_deleted_middle_line(log100):
    lines = lines_of(log100)
    del lines[8]
    put_lines(log100, lines)
    result = verify(log100)
    assert not result.ok and result.records == 99
    assert result.problems == [
        "line 9: seq 9, expected 8 (record deleted, inserted or reordered)",
        "line 9: prev does not match line 8 (record deleted or reordered)"]


def test_deleted_first_line(log100):
    put_lines(log100, lines_of(log100)[1:])
    problems = verify(log100).problems
    assert problems == ["line 1: seq 1, expected 0 (record deleted, inserted or reordered)",
                        "line 1: prev is not the genesis hash (first records removed)"]


def test_reordered_lines(log100):
    lines = lines_of(log100)
    lines[4], lines[5] = lines[5], lines[4]
    put_lines(log100, lines)
    problems = verify(log100).problems
    assert "line 5: prev does not match line 4 (record deleted or reordered)" in problems
    assert "line 6: prev does not match line 5 (record deleted or reordered)" in problems
    assert "line 7: prev does not match line 6 (record deleted or reordered)" in problems
    assert all(re.match(r"line [567]: ", p) for p in problems)


def test_forged_line_with_wrong_prev(log100):
    forged = {**event(100), "seq": 100, "ts": "2030-01-01T00:00:00.000000Z", "prev": "f" * 64}
    body = json.dumps(forged, sort_keys=True, separators=(",", ":"))
    forged["hash"] = hashlib.sha256(body.encode()).hexdigest()
    with log100.open("a") as fh:
        fh.write(json.dumps(forged, sort_keys=True, separators=(",", ":")) + "\n")
    result = verify(log100)
    assert result.records == 101
    assert result.problems == [
        "line 101: prev does not match line 100 (record deleted or reordered)"]


def test_invalid_json_line_in_the_middle(log100):
    lines = lines_of(log100)
    lines[11] = "{not json\n"
    lines[20] = "{\"seq\": \"x\"}\n"
    put_lines(log100, lines)
    problems = verify(log100).problems
    assert problems[0] == "line 12: not valid JSON"
    assert "line 13: prev does not match line 11 (record deleted or reordered)" in problems
    assert "line 21: not an audit record (no seq, prev or hash)" in problems


def test_torn_tail_refused_reported_and_repaired(tmp_path):
    path = tmp_path / "audit.jsonl"
    records = write_log(path, 5)
    good = path.read_bytes()
    fragment = b'{"decision":"allowed","event":"query","hash":"ab'
    path.write_bytes(good + fragment)
    log = AuditLog(path)
    with pytest.raises(OperationalError, match=rf"{re.escape(str(path))}: line 6 is torn"):
        log.append(event(5))
    with pytest.raises(OperationalError, match="line 6 is torn"):
        head(path)
    assert path.read_bytes() == good + fragment  # nothing chained onto the fragment
    result = verify(path)
    assert not result.ok and result.records == 5
    assert result.problems == ["line 6: torn last line (no newline: crash mid-write?)"]
    code, text = verify_command_output(result)
    assert code == 1 and "repair_truncated_tail" in text

    moved = log.repair_truncated_tail()
    assert moved.name.startswith("audit.jsonl.torn-") and moved.read_bytes() == fragment
    assert path.read_bytes() == good
    assert log.repair_truncated_tail() is None  # idempotent
    rec = log.append(event(5))
    assert rec["seq"] == 5 and rec["prev"] == records[-1]["hash"]
    assert verify(path).ok and verify(path).records == 6


def test_complete_but_unterminated_last_line_is_torn(tmp_path):
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    path.write_bytes(path.read_bytes()[:-1])  # the crash hit just before the newline
    with pytest.raises(OperationalError, match="line 3 is torn"):
        AuditLog(path).append(event(3))
    assert verify(path).problems == ["line 3: torn last line (no newline: crash mid-write?)"]


def test_invalid_last_line_refused_and_repaired(tmp_path):
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    with path.open("a") as fh:
        fh.write("garbage\n")
    log = AuditLog(path)
    with pytest.raises(OperationalError, match="line 4 is not a valid audit record"):
        log.append(event(3))
    assert verify(path).problems == ["line 4: not valid JSON"]
    assert log.repair_truncated_tail().read_text() == "garbage\n"
    assert log.append(event(3))["seq"] == 3 and verify(path).ok


def test_repair_leaves_an_intact_log_alone(log100):
    before = log100.read_bytes()
    assert AuditLog(log100).repair_truncated_tail() is None
    assert log100.read_bytes() == before


def _append_many(path: str, start: int, count: int) -> None:
    log = AuditLog(path)
    for i in range(start, start + count):
        log.append(event(i))


def test_concurrent_processes(tmp_path):
    path = tmp_path / "audit.jsonl"
    events = [event(i) for i in range(200)]
    ctx = multiprocessing.get_context("spawn")  # the test module is not importable by children
    with ctx.Pool(4) as pool:
        pool.map(AuditLog(path).append, events, chunksize=50)  # 4 processes x 50 appends
        pool.close()
        pool.join()
    result = verify(path)
    assert result.ok and result.records == 200, result.problems
    ids = sorted(json.loads(line)["query_id"] for line in lines_of(path))
    assert ids == sorted(e["query_id"] for e in events)


def test_concurrent_threads(tmp_path):
    path = tmp_path / "audit.jsonl"
    threads = [threading.Thread(target=_append_many, args=(str(path), 25 * t, 25))
               for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = verify(path)
    assert result.ok and result.records == 200, result.problems
    assert [json.loads(line)["seq"] for line in lines_of(path)] == list(range(200))


def test_disallowed_key_rejected(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    with pytest.raises(ValueError, match="'patient_name' is not an allowed audit field"):
        log.append({"event": "query", "patient_name": "Jane Doe"})
    with pytest.raises(ValueError, match="'seq' is not an allowed"):
        log.append({"event": "query", "seq": 5})
    with pytest.raises(TypeError, match=r"rules\[0\]: object is not a JSON value"):
        log.append({"event": "query", "rules": [object()]})
    with pytest.raises(ValueError, match="not a finite number"):
        log.append({"epsilon": float("nan")})
    with pytest.raises(TypeError, match="must be a dict"):
        log.append([("event", "query")])
    assert not path.exists() or path.read_bytes() == b""


def test_sql_text_is_allowed(tmp_path):
    path = tmp_path / "audit.jsonl"
    rec = AuditLog(path).append({"event": "query", "sql": "SELECT count(*) FROM patients — é",
                                 "sql_sha256": "0" * 64, "groups": 3, "suppressed": 1,
                                 "sites": ["a", "b"], "delta": None, "rho": 0.1, "mode": "dp",
                                 "fingerprint": "x", "error": None})
    assert json.loads(lines_of(path)[0]) == rec
    assert verify(path).ok


def test_expect_head(log100):
    lines = lines_of(log100)
    anchor = json.loads(lines[-1])["hash"]
    assert verify(log100, expect_head=anchor).ok
    AuditLog(log100).append(event(100))  # the log grew after the anchor was exported: fine
    assert verify(log100, expect_head=anchor).ok
    put_lines(log100, lines[:90])  # tail truncated: the chain alone still verifies
    assert verify(log100).ok
    result = verify(log100, expect_head=anchor)
    assert not result.ok
    assert result.problems == [f"expected head {anchor} is not in the log "
                               "(records removed from the end, or the log was replaced)"]


def test_empty_and_missing_files(tmp_path):
    missing = tmp_path / "nope.jsonl"
    result = verify(missing)
    assert result == VerifyResult(True, 0, [], str(missing), exists=False, head=None)
    assert verify_command_output(result) == (0, f"OK: {missing} does not exist (0 records)")
    assert not verify(missing, expect_head="ab" * 32).ok
    assert head(missing) is None
    empty = tmp_path / "empty.jsonl"
    empty.touch()
    result = verify(empty)
    assert result.ok and result.exists and result.records == 0 and head(empty) is None
    assert AuditLog(empty).append(event(0))["prev"] == GENESIS


def test_verify_command_output_on_tampered_log(log100):
    lines = lines_of(log100)
    del lines[40]
    put_lines(log100, lines)
    code, text = verify_command_output(verify(log100))
    assert code == 1
    assert text.splitlines() == [
        f"FAILED: {log100}: 2 problem(s), 99 records read",
        "  line 41: seq 41, expected 40 (record deleted, inserted or reordered)",
        "  line 41: prev does not match line 40 (record deleted or reordered)"]
