"""Smoke test of the secure-aggregation benchmark (``python -m benchmarks.secure --quick``):
it runs in-process through the real engine and prints its three tables with a row per
configuration."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "secure.py"


def _load(name: str, path: Path):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_quick_secure_benchmark_prints_every_configuration(capsys, tmp_path):
    bench = _load("_fedquery_benchmarks_secure", BENCHMARK)
    from fedquery.policy.ledger import BudgetLedger
    from fedquery.protect import he

    encrypt, cache_get = he.encrypt, BudgetLedger.cache_get
    started = time.perf_counter()
    results = bench.main(["--quick", "--csv", str(tmp_path / "out.csv")])
    assert time.perf_counter() - started < 30
    out = capsys.readouterr().out

    rows = [line for line in out.splitlines() if line.startswith("| 64 | 3 | 500 |")]
    # the latency/bytes table, the site breakdown and the coordinator/key holder table,
    # each with an exact and a DP row
    assert len(rows) == 6, out
    assert sum(r.startswith("| 64 | 3 | 500 | exact |") for r in rows) == 3
    assert sum(r.startswith("| 64 | 3 | 500 | dp |") for r in rows) == 3
    assert "| groups | sites | rows/site | noise | plain ms | secure ms | ratio |" in out
    assert "× standard" in rows[0] and "GIL" in out

    assert [(r["sites"], r["mode"]) for r in results] == [(3, "exact"), (3, "dp")]
    for r in results:
        assert r["plain_ms"] > 0 and r["secure_ms"] > 0
        assert r["ciphertexts"] == 1 and r["ciphertext_bytes"] > r["plain_reply_bytes"]
        assert r["secure_site.encrypt_ms"] > 0 and r["secure_kh.release_ms"] > 0
        assert r["secure_coord.sum_ms"] > 0
        # the round is timed (the engine's own reference to run_secure is wrapped)
        assert r["secure_coord.round_ms"] > 0 and r["secure_coord.other_ms"] >= 0
    assert results[1]["secure_site.noise_shares_ms"] > 0  # DP: noise shares drawn
    assert (tmp_path / "out.csv").read_text().count("\n") == 3
    # the timers and the bypassed noise cache are gone again
    assert he.encrypt is encrypt and BudgetLedger.cache_get is cache_get
