"""Federation overhead: 8 queries federated (in-process and over TLS Flight) vs pooled DuckDB.

    python -m benchmarks.overhead [--patients 100000 1000000 10000000] [--sites 3]
                                  [--repeat 5] [--data-dir benchmarks/.data] [--no-flight]

For each size, the demo data (``fedquery.demo.generate``, seed 7; ``patients`` in all, split
evenly over ``--sites`` hospitals) is generated once and cached as DuckDB files under
``--data-dir``, with a pooled DuckDB file holding every site's rows.  The federation is the
one ``fedquery demo init`` writes: the stewards' demo policies (Laplace noise, minimum cells,
dominance, ε 0.5 per query) with one change — each analyst's budget is raised to ε 10,000 so
that the runs do not exhaust it — and ``min_sites: 2``.  Each query is timed, interleaved run
by run after one warm-up of each:

* **pooled DuckDB**: the query on the pooled file in this process (the baseline);
* **in-process, DP**: the demo sites in this process (connector and policy files as the site
  processes read them), *cold noise* — every run a fresh noise-cache key (``SET delta``), so
  each site runs its fragment, draws OpenDP noise and commits the spend to its ledger; the
  SQL text is the same, so the coordinator's and the sites' plan caches are warm;
* **in-process, DP, new SQL**: as above, with a distinct trailing comment per run, which
  defeats every plan and schema cache: an analyst's first run of a new query;
* **Flight, DP**: the sites as ``fedquery site serve`` processes over loopback TLS Arrow
  Flight (bearer tokens), cold noise;
* **in-process, exact**: the same DuckDB files under the built-in ``open`` policy (no noise,
  minimum cell 1), plan cached: the federation's cost without privacy.

Before timing, the exact federated answer of every query is checked against pooled DuckDB.
Prints a Markdown table (median ms and ratio to pooled DuckDB per query and size), the
per-size summary and the targets, and writes ``overhead.csv`` under ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import tempfile
import time
from pathlib import Path

from benchmarks import common

QUERIES = {
    "count_by_group":
        "SELECT region, sex, COUNT(*) AS n FROM patients GROUP BY region, sex",
    "avg_where":
        "SELECT sex, AVG(bmi) AS mean_bmi FROM patients "
        "WHERE age >= 18 AND smoker = 'current' GROUP BY sex",
    "site_local_join":
        "SELECT p.region, AVG(l.value) AS mean_hba1c FROM labs l JOIN patients p "
        "USING (patient_id) WHERE l.test_name = 'HbA1c' GROUP BY p.region",
    "variance":
        "SELECT sex, VAR_SAMP(bmi) AS var_bmi, STDDEV_SAMP(bmi) AS sd_bmi FROM patients "
        "GROUP BY sex",
    "case_band":
        "SELECT sex, CASE WHEN age < 40 THEN '18-39' WHEN age < 65 THEN '40-64' ELSE '65+' "
        "END AS age_band, COUNT(*) AS n FROM patients WHERE age >= 18 GROUP BY ALL",
    "having_order_limit":
        "SELECT icd10_chapter, COUNT(*) AS n FROM diagnoses GROUP BY icd10_chapter "
        "HAVING COUNT(*) > 1000 ORDER BY n DESC, icd10_chapter LIMIT 5",
    "labs_scan":
        "SELECT test_name, COUNT(*) AS n, AVG(value) AS mean_value FROM labs "
        "GROUP BY test_name",
    "mortality_join":
        "SELECT p.smoker, SUM(o.death) AS deaths, AVG(o.followup_days) AS mean_followup "
        "FROM outcomes o JOIN patients p USING (patient_id) GROUP BY p.smoker",
}

MODES = ("pooled", "dp", "dp_cached", "dp_new_sql", "flight", "exact")
TARGET_RATIO = 1.5
TARGET_FIXED_MS = 20.0


def _check_exact(open_conn, pooled, queries: dict[str, str]) -> None:
    from fedquery.testing import assert_results_equal

    for name, sql in queries.items():
        assert_results_equal(common.run_query(open_conn, sql), pooled.execute(sql).fetchall(),
                             rel=1e-6, abs_tol=1e-9, context=name)


def run_size(patients: int, sites: int, repeat: int, data_dir: Path, flight: bool,
             queries: dict[str, str], new_sql: bool = True, modes: tuple = MODES,
             log=print) -> list[dict]:
    import fedquery
    from fedquery.demo.launcher import SiteProcesses
    from fedquery.transport.federation import load_federation

    per_site = patients // sites
    started = time.perf_counter()
    federation_file = common.demo_federation(data_dir, sites, per_site)
    directory = federation_file.parent
    federation = load_federation(federation_file)
    paths = common.site_paths(directory, federation)
    pooled = common.pooled_connection(directory, paths)
    log(f"  {sites} x {per_site:,} patients ready in {time.perf_counter() - started:.1f} s "
        f"({directory})")
    counter = itertools.count()
    rows = []
    with contextlib.ExitStack() as stack:
        stack.callback(pooled.close)
        state = Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix="fedquery-bench-state-")))
        dp = stack.enter_context(common.in_process_dp(directory, federation, state))
        exact = stack.enter_context(common.in_process_open(paths))
        flight_conn = None
        if flight and "flight" in modes:
            processes = stack.enter_context(SiteProcesses(directory))
            common.start_sites(processes, federation)
            flight_conn = stack.enter_context(fedquery.connect(federation_file))
        _check_exact(exact, pooled, queries)

        def cold(conn, sql):
            common.cold_noise(conn)
            return lambda: common.run_query(conn, sql)

        def cached(conn, sql):
            conn.cursor().execute("RESET delta")  # the key of the warm-up's answer
            return lambda: common.run_query(conn, sql)

        for name, sql in queries.items():
            runs = {
                "pooled": lambda sql=sql: (lambda: pooled.execute(sql).fetchall()),
                "dp": lambda sql=sql: cold(dp, sql),
                "dp_cached": lambda sql=sql: cached(dp, sql),
                "exact": lambda sql=sql: (lambda: common.run_query(exact, sql)),
            }
            if new_sql:
                runs["dp_new_sql"] = lambda sql=sql: cold(dp, f"{sql} -- run {next(counter)}")
            if flight_conn is not None:
                runs["flight"] = lambda sql=sql: cold(flight_conn, sql)
            runs = {mode: run for mode, run in runs.items() if mode in modes}
            measured = common.interleaved(runs, repeat)
            med = {mode: measured.get(mode, float("nan")) for mode in MODES}
            row = {"query": name, "patients": per_site * sites, "sites": sites,
                   "repeat": repeat}
            for mode in MODES:
                row[f"{mode}_ms"] = round(med[mode], 3)
                if mode != "pooled":
                    row[f"{mode}_ratio"] = round(med[mode] / med["pooled"], 4)
                    row[f"{mode}_overhead_ms"] = round(med[mode] - med["pooled"], 3)
            rows.append(row)
            log(f"  {name}: pooled {common.ms(med['pooled'])} ms, in-process DP "
                f"{common.ms(med['dp'])} ms, Flight DP {common.ms(med['flight'])} ms")
    return rows


def markdown(rows: list[dict]) -> str:
    headers = ("query", "patients", "pooled DuckDB ms", "in-process DP ms", "ratio",
               "Flight DP ms", "ratio", "in-process exact ms", "ratio",
               "DP, noise-cache hit ms", "DP, new SQL ms")
    return common.markdown(headers, [
        (r["query"], f"{r['patients']:,}", common.ms(r["pooled_ms"]),
         common.ms(r["dp_ms"]), common.ratio(r["dp_ratio"]),
         common.ms(r["flight_ms"]), common.ratio(r["flight_ratio"]),
         common.ms(r["exact_ms"]), common.ratio(r["exact_ratio"]),
         common.ms(r["dp_cached_ms"]), common.ms(r["dp_new_sql_ms"])) for r in rows])


def summary(rows: list[dict]) -> tuple[str, list[str]]:
    """Per size: the median and largest ratio over the queries, and the median overhead in
    ms; the targets' verdicts."""
    out, verdicts = [], []
    sizes = sorted({r["patients"] for r in rows})
    for size in sizes:
        these = [r for r in rows if r["patients"] == size]
        cells = [f"{size:,}"]
        for mode in ("dp", "flight", "exact", "dp_cached", "dp_new_sql"):
            ratios = [r[f"{mode}_ratio"] for r in these]
            over = [r[f"{mode}_overhead_ms"] for r in these]
            if any(v != v for v in ratios):  # not measured (--no-flight)
                cells.append("–")
                continue
            cells.append(f"{common.ratio(common.median(ratios))} / {common.ratio(max(ratios))}"
                         f" / {common.ms(common.median(over))} ms")
        out.append(cells)
    table = common.markdown(("patients", "in-process DP", "Flight DP", "in-process exact",
                             "DP, noise-cache hit", "DP, new SQL"), out)
    largest, smallest = max(sizes), min(sizes)
    for mode, label in (("dp", "in-process DP"), ("flight", "Flight DP")):
        big = [r[f"{mode}_ratio"] for r in rows if r["patients"] == largest]
        small = [r[f"{mode}_overhead_ms"] for r in rows if r["patients"] == smallest]
        if any(v != v for v in big + small):  # not measured (--no-flight)
            continue
        worst = max(big)
        verdicts.append(f"{label}: ratio <= {TARGET_RATIO}x at {largest:,} patients: "
                        f"{'met' if worst <= TARGET_RATIO else 'NOT met'} (median "
                        f"{common.ratio(common.median(big))}, worst {common.ratio(worst)})")
        verdicts.append(f"{label}: fixed overhead < {TARGET_FIXED_MS:g} ms per query at "
                        f"{smallest:,} patients: "
                        f"{'met' if common.median(small) < TARGET_FIXED_MS else 'NOT met'} "
                        f"(median {common.ms(common.median(small))} ms, worst "
                        f"{common.ms(max(small))} ms)")
    return table, verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, nargs="+",
                        default=[100_000, 1_000_000, 10_000_000],
                        help="patients in all, one run per size")
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per mode (median)")
    parser.add_argument("--queries", default=None,
                        help=f"comma-separated subset of: {', '.join(QUERIES)}")
    parser.add_argument("--no-flight", action="store_true", help="skip the site processes")
    parser.add_argument("--large", type=int, default=5_000_000,
                        help="sizes from this many patients on are 'large': --large-repeat "
                             "timed runs, and no new-SQL mode (its extra cost is the fixed "
                             "planning cost measured at the smaller sizes)")
    parser.add_argument("--large-repeat", type=int, default=1)
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma-separated subset of: {', '.join(MODES)}")
    parser.add_argument("--data-dir", type=Path, default=common.DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=common.DEFAULT_OUT)
    parser.add_argument("--report", type=Path, nargs="+", metavar="CSV",
                        help="measure nothing: print the tables of earlier runs' CSVs")
    args = parser.parse_args(argv)
    if args.report:
        report([row for path in args.report for row in read_rows(path)])
        return 0
    queries = QUERIES if not args.queries else {
        q: QUERIES[q] for q in args.queries.split(",")}
    common.quiet_logs()
    rows = []
    for patients in args.patients:
        large = patients >= args.large
        repeat = args.large_repeat if large else args.repeat
        print(f"overhead: {patients:,} patients over {args.sites} sites, {repeat} timed "
              "run(s) per mode", flush=True)
        rows += run_size(patients, args.sites, repeat, args.data_dir, not args.no_flight,
                         queries, new_sql=not large,
                         modes=("pooled", *args.modes.split(",")))
        common.write_csv(args.out / "overhead.csv", rows)  # what is done survives a crash
    report(rows)
    path = common.write_csv(args.out / "overhead.csv", rows)
    print(f"\nwritten: {path}")
    return 0


def read_rows(path: Path) -> list[dict]:
    import csv

    def value(text: str):
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text

    with open(path, newline="") as handle:
        return [{k: value(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def report(rows: list[dict]) -> None:
    repeats = sorted({(r["patients"], r["repeat"]) for r in rows})
    print("\nMedian of " + ", ".join(f"{n} at {p:,}" for p, n in repeats) + " timed runs "
          "after a warm-up; ratio = federated / pooled DuckDB; DP = the demo policies "
          "(Laplace, epsilon 0.5), cold noise unless noted.\n")
    print(markdown(rows))
    table, verdicts = summary(rows)
    print("\nPer size: median ratio / largest ratio / median overhead (federated - pooled) "
          "over the queries\n")
    print(table)
    print("\nTargets:")
    for verdict in verdicts:
        print(f"  - {verdict}")


if __name__ == "__main__":
    raise SystemExit(main())
