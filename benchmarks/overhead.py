"""Federation overhead: 8 queries federated (in-process and over TLS Flight) vs pooled DuckDB.

    python -m benchmarks.overhead [--patients 100000 1000000 10000000] [--sites 3]
                                  [--repeat 5] [--large 5000000] [--large-repeat 1]
                                  [--queries a,b] [--modes dp,flight,...] [--no-flight]
                                  [--data-dir benchmarks/.data] [--out benchmarks/results]
    python -m benchmarks.overhead --report overhead.csv [more.csv ...]

For each size, the demo data (``fedquery.demo.generate``, seed 7; ``patients`` in all, split
evenly over ``--sites`` hospitals) is generated once and cached as DuckDB files under
``--data-dir``, with a pooled DuckDB file holding every site's rows.  The federation is the
one ``fedquery demo init`` writes: the stewards' demo policies (Laplace noise, minimum cells,
dominance, ε 0.5 per query), ``min_sites: 2``, with two changes — each analyst's budget is
raised to ε 10,000 so that the runs do not exhaust it, and the per-site deadline to an hour.
Each query is timed, interleaved run by run after one warm-up of each mode:

* **pooled**: the query on the pooled DuckDB file in this process (the baseline);
* **dp**: the demo sites in this process (connector and policy files as the site processes
  read them), *cold noise* — every run a fresh noise-cache key (``SET delta``), so each site
  runs its bounded fragment, draws OpenDP noise and commits the spend to its ledger; the SQL
  text is the same, so the coordinator's and the sites' plan caches are warm;
* **dp_cached**: the same query answered from every site's noise cache (what a repeated
  question costs: no data touched, no budget spent);
* **dp_new_sql**: cold noise with a distinct trailing comment per run, which defeats every
  plan and schema cache: an analyst's first run of a new query;
* **flight**: the sites as ``fedquery site serve`` processes over loopback TLS Arrow Flight
  (bearer tokens), cold noise;
* **exact**: the same DuckDB files under the built-in ``open`` policy (no noise, minimum cell
  1), plan cached: the federation's own cost without privacy.

Before timing, the exact federated answer of every query is checked against pooled DuckDB.
Sizes from ``--large`` patients on get ``--large-repeat`` timed runs of the slow modes (dp,
flight; the others still ``--repeat``), no ``dp_new_sql`` (its
extra cost is the fixed planning cost measured at the smaller sizes) and the site processes
in a second pass after the in-process sites are closed, with that pass's own pooled baseline
(at 10M patients both sets of DuckDB instances at once exhaust 24 GiB).  Prints a Markdown
table (median ms and ratio to pooled DuckDB per query and size), the per-size summary and the
targets, and writes ``overhead.csv`` under ``--out`` (after every size).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
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


SLOW_MODES = ("dp", "dp_new_sql", "flight")  # they run the bounded fragment: slow at scale


def _measure(directory: Path, federation_file: Path, federation, paths: dict, queries: dict,
             repeat: int, modes: set[str], new_sql: bool,
             slow_repeat: int | None = None) -> dict[str, dict[str, float]]:
    """{query: {mode: median ms}} for ``modes``, interleaved run by run; only what those
    modes need is opened (and all of it closed again)."""
    import fedquery
    from fedquery.demo.launcher import SiteProcesses

    counter = itertools.count()
    out = {}
    with contextlib.ExitStack() as stack:
        pooled = common.pooled_connection(directory, paths)
        stack.callback(pooled.close)
        dp = exact = flight_conn = None
        if modes & {"dp", "dp_cached", "dp_new_sql"}:
            state = Path(stack.enter_context(tempfile.TemporaryDirectory(
                prefix="fedquery-bench-state-")))
            dp = stack.enter_context(common.in_process_dp(directory, federation, state))
        if "exact" in modes:
            exact = stack.enter_context(common.in_process_open(paths))
            _check_exact(exact, pooled, queries)
        if "flight" in modes:
            processes = stack.enter_context(SiteProcesses(directory))
            common.start_sites(processes, federation)
            flight_conn = stack.enter_context(fedquery.connect(federation_file))

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
                "dp_new_sql": lambda sql=sql: cold(dp, f"{sql} -- run {next(counter)}"),
                "flight": lambda sql=sql: cold(flight_conn, sql),
                "exact": lambda sql=sql: (lambda: common.run_query(exact, sql)),
            }
            wanted = modes - (set() if new_sql else {"dp_new_sql"})
            out[name] = common.interleaved(
                {mode: run for mode, run in runs.items() if mode in wanted}, repeat,
                fewer=None if slow_repeat is None else dict.fromkeys(SLOW_MODES, slow_repeat))
    return out


def run_size(patients: int, sites: int, repeat: int, data_dir: Path, flight: bool,
             queries: dict[str, str], new_sql: bool = True, modes: tuple = MODES,
             separate_flight: bool = False, slow_repeat: int | None = None,
             log=print) -> list[dict]:
    """One size.  ``separate_flight``: measure the site processes in a second pass, after the
    in-process sites are closed (each DuckDB instance keeps what it allocated, and at 10M
    patients the in-process sites and the site processes together exhaust 24 GiB); the
    Flight ratio is then taken against that pass's own pooled baseline."""
    per_site = patients // sites
    started = time.perf_counter()
    federation_file, directory, federation, paths = common.demo_setup(data_dir, sites, per_site)
    common.pooled_file(directory, paths)
    log(f"  {sites} x {per_site:,} patients ready in {time.perf_counter() - started:.1f} s "
        f"({directory})")
    modes = {"pooled", *modes} - (set() if flight else {"flight"})
    passes = [modes - {"flight"}, {"pooled", "flight"}] if (
        separate_flight and "flight" in modes) else [modes]
    measured = [_measure(directory, federation_file, federation, paths, queries, repeat,
                         these, new_sql, slow_repeat) for these in passes]
    rows = []
    for name in queries:
        med = {mode: measured[0][name].get(mode, float("nan")) for mode in MODES}
        row = {"query": name, "patients": per_site * sites, "sites": sites, "repeat": repeat,
               "slow_repeat": repeat if slow_repeat is None else slow_repeat}
        for mode in MODES:
            row[f"{mode}_ms"] = round(med[mode], 3)
            if mode != "pooled":
                row[f"{mode}_ratio"] = round(med[mode] / med["pooled"], 4)
                row[f"{mode}_overhead_ms"] = round(med[mode] - med["pooled"], 3)
        if len(measured) > 1:
            second = measured[1][name]
            row["flight_ms"] = round(second["flight"], 3)
            row["flight_ratio"] = round(second["flight"] / second["pooled"], 4)
            row["flight_overhead_ms"] = round(second["flight"] - second["pooled"], 3)
            row["flight_pooled_ms"] = round(second["pooled"], 3)
        rows.append(row)
        log(f"  {name}: pooled {common.ms(med['pooled'])} ms, in-process DP "
            f"{common.ms(med['dp'])} ms, Flight DP {common.ms(row['flight_ms'])} ms")
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
            if any(math.isnan(v) for v in ratios):  # not measured (--no-flight)
                cells.append("–")
                continue
            cells.append(f"{common.ratio(common.median(ratios))} / {common.ratio(max(ratios))}"
                         f" / {common.ms(common.median(over))} ms")
        out.append(cells)
    table = common.markdown(("patients", "in-process DP", "Flight DP", "in-process exact",
                             "DP, noise-cache hit", "DP, new SQL"), out)
    largest, smallest = max(sizes), min(sizes)
    for mode, label in (("dp", "in-process DP"), ("flight", "Flight DP"),
                        ("exact", "in-process exact (open policy, no DP)")):
        big = [r[f"{mode}_ratio"] for r in rows if r["patients"] == largest]
        small = [r[f"{mode}_overhead_ms"] for r in rows if r["patients"] == smallest]
        if any(math.isnan(v) for v in big + small):  # not measured (--no-flight)
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
                             "timed runs of DP and Flight, no new-SQL mode (its extra cost "
                             "is the fixed planning cost measured at the smaller sizes), and "
                             "the site processes in a second pass (memory)")
    parser.add_argument("--large-repeat", type=int, default=1,
                        help="timed runs of the DP and Flight modes at large sizes (the "
                             "other modes get --repeat)")
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
        slow = args.large_repeat if large else args.repeat
        print(f"overhead: {patients:,} patients over {args.sites} sites, {args.repeat} timed "
              f"runs per mode ({slow} of DP and Flight)", flush=True)
        rows += run_size(patients, args.sites, args.repeat, args.data_dir, not args.no_flight,
                         queries, new_sql=not large, modes=tuple(args.modes.split(",")),
                         separate_flight=large, slow_repeat=slow if large else None)
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
    repeats = sorted({(r["patients"], r["repeat"], r.get("slow_repeat", r["repeat"]))
                      for r in rows})
    print("\nMedian of " + ", ".join(
        f"{n} at {p:,}" + (f" ({k} of DP and Flight)" if k != n else "")
        for p, n, k in repeats) + " timed runs after a warm-up; ratio = federated / pooled "
          "DuckDB; DP = the demo policies (Laplace, epsilon 0.5), cold noise unless noted.\n")
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
