"""Federation overhead: a federated query in-process vs DuckDB on the pooled data.

    python -m benchmarks.overhead --patients 1000000 --sites 3 --repeat 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import duckdb

from fedquery.demo.generate import write_federation
from fedquery.demo.showcase import TABLES
from fedquery.engine import Engine
from fedquery.site.adapter import DuckDBAdapter
from fedquery.site.service import SiteService
from fedquery.transport.inprocess import InProcessClient

QUERIES = {
    "count_avg_by_region_sex":
        "SELECT region, sex, COUNT(*), AVG(bmi) FROM patients GROUP BY ALL",
}


def _median_ms(fn, repeat: int) -> float:
    fn(-1)  # warm-up
    times = []
    for i in range(repeat):
        started = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def run(patients: int, sites: int, repeat: int, directory: Path) -> list[dict]:
    per_site = patients // sites
    paths = write_federation(directory, sites, per_site, seed=7)
    engine = Engine([InProcessClient(SiteService(
        s, DuckDBAdapter.from_duckdb_file(p, TABLES), "open",
        {t: "patient_id" for t in TABLES})) for s, p in paths.items()])
    pooled = duckdb.connect()
    for i, path in enumerate(paths.values()):
        pooled.execute(f"ATTACH '{path}' AS s{i} (READ_ONLY)")
    for table in TABLES:
        union = " UNION ALL ".join(f"SELECT * FROM s{i}.{table}" for i in range(len(paths)))
        pooled.execute(f"CREATE TABLE {table} AS {union}")
    results = []
    for name, sql in QUERIES.items():
        warm = _median_ms(lambda i: engine.execute(sql, analyst="bench"), repeat)
        # A distinct trailing comment per run defeats every plan/schema cache: a cold query.
        cold = _median_ms(lambda i: engine.execute(f"{sql} -- run {i}", analyst="bench"),
                          repeat)
        base = _median_ms(lambda i: pooled.sql(sql).to_arrow_table(), repeat)
        results.append({"query": name, "patients": patients, "sites": sites,
                        "federated_ms": warm, "cold_ms": cold, "pooled_ms": base,
                        "ratio": warm / base, "cold_ratio": cold / base})
    engine.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1_000_000)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(args.patients, args.sites, args.repeat, Path(tmp))
    print("| query | patients | sites | pooled DuckDB ms | federated ms (plan cached) | ratio "
          "| federated ms (cold) | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['query']} | {r['patients']:,} | {r['sites']} | {r['pooled_ms']:.1f} | "
              f"{r['federated_ms']:.1f} | {r['ratio']:.2f}× | {r['cold_ms']:.1f} | "
              f"{r['cold_ratio']:.2f}× |")


if __name__ == "__main__":
    main()
