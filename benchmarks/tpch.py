"""TPC-H: the federated single-round subset over 3 co-partitioned sites vs pooled DuckDB.

    python -m benchmarks.tpch [--sf 1] [--sites 3] [--repeat 3] [--data-dir benchmarks/.data]

The data is what the test suite uses (``tests/tpch/tpch_data.py``): ``tpchgen-cli`` at scale
factor ``--sf``, ``orders`` and ``lineitem`` co-partitioned by orderkey over the sites, the
other six tables replicated at every site; generated once and cached under ``--data-dir``.
The queries are the test suite's (``tests/tpch/queries``: Q1, Q4, Q5, Q6, Q7, Q8, Q9, Q12,
Q14, Q19 with the specification's validation parameters).

Both sides hold the data in memory: each site loads its Parquet files into its own in-memory
DuckDB (``local_federation``, policy ``open``: exact answers, minimum cell 1 — TPC-H has no
privacy unit), and the baseline loads the pooled files into one in-memory DuckDB.  Each
federated answer is first checked against the pooled one; then, interleaved run by run after
a warm-up: pooled DuckDB, federated (plan cached), and federated with a distinct trailing
comment per run (new SQL: every plan and schema cache missed).  Writes ``tpch.csv`` under
``--out``.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import itertools
import sys
import time
from pathlib import Path

from benchmarks import common

QUERY_DIR = common.ROOT / "tests" / "tpch" / "queries"
ORDERED = {"q05": False}  # ORDER BY revenue only: ties could come in any order


def tpch_data():
    """``tests/tpch/tpch_data.py`` (tests/ is no package: loaded by path)."""
    name = "_fedquery_tests_tpch_data"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, common.ROOT / "tests" / "tpch" / "tpch_data.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def run(sf: str, sites: int, repeat: int, data_dir: Path, log=print) -> tuple[list[dict], dict]:
    import duckdb
    import pyarrow.parquet as pq

    from fedquery.testing import assert_results_equal, local_federation

    helper = tpch_data()
    started = time.perf_counter()
    directory = helper.ensure_tpch(Path(data_dir), sf, sites)
    layout = helper.load_layout(directory)
    log(f"  TPC-H SF {sf} over {sites} sites ready in {time.perf_counter() - started:.1f} s "
        f"({directory})")
    started = time.perf_counter()
    site_tables = {site: {t: pq.read_table(directory / site / f"{t}.parquet")
                          for t in helper.TABLES} for site in layout["sites"]}
    conn = local_federation(site_tables)
    del site_tables
    gc.collect()
    pooled = duckdb.connect()
    for t in helper.TABLES:
        path = str(directory / "pooled" / f"{t}.parquet").replace("'", "''")
        pooled.execute(f"CREATE TABLE {t} AS SELECT * FROM read_parquet('{path}')")
    log(f"  loaded into DuckDB in {time.perf_counter() - started:.1f} s")
    counter = itertools.count()
    rows = []
    try:
        for path in sorted(QUERY_DIR.glob("q*.sql")):
            name, sql = path.stem, path.read_text().strip().rstrip(";")
            expected = pooled.execute(sql).fetchall()
            got = common.run_query(conn, sql)
            assert_results_equal(got, expected, ordered=ORDERED.get(name, True), rel=1e-9,
                                 context=name)
            med = common.interleaved({
                "pooled": lambda sql=sql: (lambda: pooled.execute(sql).fetchall()),
                "federated": lambda sql=sql: (lambda: common.run_query(conn, sql)),
                "new_sql": lambda sql=sql: _new_text(conn, f"{sql}\n-- run {next(counter)}"),
            }, repeat)
            rows.append({"query": name, "sf": sf, "sites": sites, "rows": len(expected),
                         "pooled_ms": round(med["pooled"], 3),
                         "federated_ms": round(med["federated"], 3),
                         "ratio": round(med["federated"] / med["pooled"], 4),
                         "new_sql_ms": round(med["new_sql"], 3),
                         "new_sql_ratio": round(med["new_sql"] / med["pooled"], 4),
                         "repeat": repeat})
            log(f"  {name}: pooled {common.ms(med['pooled'])} ms, federated "
                f"{common.ms(med['federated'])} ms")
    finally:
        conn.close()
        pooled.close()
    return rows, layout


def _new_text(conn, sql: str):
    """The run of a query text nobody has seen (a distinct comment): every cache misses."""
    return lambda: common.run_query(conn, sql)


def markdown(rows: list[dict]) -> str:
    body = [(r["query"].upper(), r["rows"], common.ms(r["pooled_ms"]),
             common.ms(r["federated_ms"]), common.ratio(r["ratio"]),
             common.ms(r["new_sql_ms"]), common.ratio(r["new_sql_ratio"])) for r in rows]
    body.append(("**median**", "", "", "", common.ratio(common.median(r["ratio"] for r in rows)),
                 "", common.ratio(common.median(r["new_sql_ratio"] for r in rows))))
    return common.markdown(("query", "result rows", "pooled DuckDB ms", "federated ms",
                            "ratio", "federated, new SQL ms", "ratio"), body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sf", default="1", help="TPC-H scale factor (tpchgen-cli -s)")
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=common.DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=common.DEFAULT_OUT)
    args = parser.parse_args(argv)
    common.quiet_logs()
    print(f"tpch: SF {args.sf}, {args.sites} sites", flush=True)
    rows, layout = run(args.sf, args.sites, args.repeat, args.data_dir)
    lineitem = layout["rows"]["pooled"]["lineitem"]
    print(f"\nTPC-H SF {args.sf} ({lineitem:,} lineitem rows; {layout['tpchgen']}), "
          f"{args.sites} sites co-partitioned by orderkey ({layout['partitioning']}), "
          f"in-memory DuckDB on both sides; median of {args.repeat} runs after a warm-up; "
          "every federated answer equals pooled DuckDB's.\n")
    print(markdown(rows))
    path = common.write_csv(args.out / "tpch.csv", rows)
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
