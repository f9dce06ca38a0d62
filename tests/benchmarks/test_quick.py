"""The benchmarks' smoke run: ``python -m benchmarks --quick`` runs every benchmark at tiny
sizes, so that they never rot.  Its numbers mean nothing; what is checked is that every
benchmark runs to the end, prints its Markdown table and writes its CSV."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# benchmark → (a line of its table's header, the CSV it writes)
TABLES = {
    "overhead": ("| query | patients | pooled DuckDB ms | in-process DP ms | ratio |",
                 "overhead.csv"),
    "planner": ("| stage | queries | median µs | p90 µs | max µs | slowest query |",
                "planner.csv"),
    "accuracy": ("| ε | aggregate | central Laplace MAE (rel.) | plain MAE (rel.) |",
                 "accuracy.csv"),
    "sites": ("| query | transport | sites | patients | pooled DuckDB ms |", "sites.csv"),
    "tpch": ("| query | result rows | pooled DuckDB ms | federated ms | ratio |", "tpch.csv"),
    "flight_latency": ("| sites | transport | median ms | ratio |", "flight_latency.csv"),
    "secure": ("| groups | sites | rows/site | noise | plain ms | secure ms | ratio |", "secure.csv"),
}


@pytest.mark.slow
def test_quick_run_prints_every_benchmarks_table(tmp_path):
    env = dict(os.environ)
    env.pop("FEDQUERY_TEST_PG_DSN", None)  # benchmarks.pushdown needs a server: skipped here
    out, data = tmp_path / "out", tmp_path / "data"
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out), "--data-dir",
         str(data)], check=False, cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=270)
    elapsed = time.perf_counter() - started
    tail = f"\n--- stdout (end) ---\n{proc.stdout[-6000:]}\n--- stderr (end) ---\n" \
           f"{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"exit status {proc.returncode}{tail}"

    expected = dict(TABLES)
    if not (ROOT / "benchmarks" / "secure.py").exists():
        expected.pop("secure")  # the runner skips it with a message
    for name, (header, csv_name) in expected.items():
        assert f"(benchmarks.{name})" in proc.stdout, f"{name} did not run{tail}"
        assert header in proc.stdout, f"{name} printed no table{tail}"
        assert (out / csv_name).stat().st_size > 0, f"{name} wrote no {csv_name}"
        assert f"| {name} | ok |" in proc.stdout, f"{name} did not succeed{tail}"
    assert "| pushdown | skipped |" in proc.stdout
    assert (out / "accuracy.png").read_bytes().startswith(b"\x89PNG")
    print(f"python -m benchmarks --quick: {elapsed:.1f} s")
