"""Scale in sites: the same total data over 2, 8 and 32 in-process sites (and 8 over Flight).

    python -m benchmarks.sites [--patients 1000000] [--sites 2 8 32] [--flight-sites 8]
                               [--repeat 5] [--data-dir benchmarks/.data]

For each number of sites K, ``--patients`` demo patients in all are split evenly over K
hospitals (``fedquery demo init``: the demo profiles and policies cycle over the sites; the
budget is raised as in ``benchmarks.overhead``), cached under ``--data-dir`` with their
pooled DuckDB file.  Three queries of ``benchmarks.overhead`` are timed, interleaved run by
run after a warm-up: pooled DuckDB, the K sites in-process under the demo policies (DP, cold
noise: every run a fresh noise-cache key) and under the ``open`` policy (exact), and, for
K in ``--flight-sites``, the K sites as ``fedquery site serve`` processes over loopback TLS
Flight (DP, cold noise).  Prints the median ms, the ratio to pooled DuckDB and the growth
against the smallest K, and writes ``sites.csv`` under ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

from benchmarks import common
from benchmarks.overhead import QUERIES

SCALE_QUERIES = ("count_by_group", "avg_where", "site_local_join")


def run_sites(k: int, patients: int, repeat: int, data_dir: Path, flight: bool,
              queries: tuple[str, ...], log=print) -> list[dict]:
    import fedquery
    from fedquery.demo.launcher import SiteProcesses
    per_site = patients // k
    started = time.perf_counter()
    federation_file, directory, federation, paths = common.demo_setup(data_dir, k, per_site)
    pooled = common.pooled_connection(directory, paths)
    log(f"  {k} x {per_site:,} patients ready in {time.perf_counter() - started:.1f} s")
    rows = []
    with contextlib.ExitStack() as stack:
        stack.callback(pooled.close)
        state = Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix="fedquery-bench-state-")))
        dp = stack.enter_context(common.in_process_dp(directory, federation, state))
        exact = stack.enter_context(common.in_process_open(paths))
        flight_conn = None
        if flight:
            started = time.perf_counter()
            processes = stack.enter_context(SiteProcesses(directory))
            common.start_sites(processes, federation)
            flight_conn = stack.enter_context(fedquery.connect(federation_file))
            log(f"  {k} site processes up in {time.perf_counter() - started:.1f} s")

        def cold(conn, sql):
            common.cold_noise(conn)
            return lambda: common.run_query(conn, sql)

        for name in queries:
            sql = QUERIES[name]
            runs = {"pooled": lambda sql=sql: (lambda: pooled.execute(sql).fetchall()),
                    "dp": lambda sql=sql: cold(dp, sql),
                    "exact": lambda sql=sql: (lambda: common.run_query(exact, sql))}
            if flight_conn is not None:
                runs["flight"] = lambda sql=sql: cold(flight_conn, sql)
            med = common.interleaved(runs, repeat)
            for mode, label in (("dp", "in-process, DP"), ("exact", "in-process, exact"),
                                ("flight", "Flight, DP")):
                if mode in med:
                    rows.append({"sites": k, "patients": per_site * k, "query": name,
                                 "transport": label, "pooled_ms": round(med["pooled"], 3),
                                 "federated_ms": round(med[mode], 3),
                                 "ratio": round(med[mode] / med["pooled"], 4),
                                 "repeat": repeat})
            log(f"  {name}: pooled {common.ms(med['pooled'])} ms, DP {common.ms(med['dp'])} ms"
                + (f", Flight DP {common.ms(med['flight'])} ms" if "flight" in med else ""))
    return rows


def markdown(rows: list[dict]) -> str:
    smallest = min(r["sites"] for r in rows)
    base = {(r["query"], r["transport"]): r["federated_ms"] for r in rows
            if r["sites"] == smallest}
    for r in rows:  # Flight only at more sites: its growth against in-process DP
        base.setdefault((r["query"], "Flight, DP"), base.get((r["query"], "in-process, DP")))
    ordered = sorted(rows, key=lambda r: (r["query"], r["transport"] != "in-process, DP",
                                          r["transport"], r["sites"]))
    return common.markdown(
        ("query", "transport", "sites", "patients", "pooled DuckDB ms", "federated ms",
         "ratio", f"growth vs {smallest} sites"),
        [(r["query"], r["transport"], r["sites"], f"{r['patients']:,}",
          common.ms(r["pooled_ms"]), common.ms(r["federated_ms"]), common.ratio(r["ratio"]),
          common.ratio(r["federated_ms"] / base[(r["query"], r["transport"])])
          if base.get((r["query"], r["transport"])) else "–")
         for r in ordered])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=1_000_000, help="patients in all")
    parser.add_argument("--sites", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--flight-sites", type=int, nargs="*", default=[8],
                        help="numbers of sites also run as site processes over Flight")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--queries", default=",".join(SCALE_QUERIES))
    parser.add_argument("--data-dir", type=Path, default=common.DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=common.DEFAULT_OUT)
    args = parser.parse_args(argv)
    common.quiet_logs()
    queries = tuple(args.queries.split(","))
    rows = []
    for k in sorted(set(args.sites) | set(args.flight_sites)):
        print(f"sites: {k} sites, {args.patients:,} patients in all", flush=True)
        rows += run_sites(k, args.patients, args.repeat, args.data_dir,
                          k in args.flight_sites, queries)
    print(f"\nMedian of {args.repeat} runs after a warm-up; ratio = federated / pooled DuckDB "
          "on the same data; growth = federated ms / the same at the fewest sites (Flight: "
          "against in-process DP at the fewest sites).\n")
    print(markdown(rows))
    path = common.write_csv(args.out / "sites.csv", rows)
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
