"""Planner cost: parse, check, decide and plan every query of the equivalence corpus.

    python -m benchmarks.planner [--repeat 5] [--corpus tests/equivalence/corpus.sql] [--limit N]

What a cold query costs before any data is touched, stage by stage, with no cache in the way
(the functions below are called directly; the ``Preparer``'s memo and the coordinator's
schema memo are bypassed):

* **parse**: ``fedquery.sql.parse_statement`` (sqlglot);
* **analyze**: ``fedquery.sql.analyze`` — parse, statement kind, qualify against the demo
  schema, supported-subset check (includes the parse);
* **decide**: ``fedquery.policy.decide`` against the demo policy of hospital_a, as a site
  checks every query (refusals are measured too: deciding is the work);
* **plan, exact**: ``fedquery.plan.plan_query`` with no bounds, as the coordinator (and every
  site) plans under the ``open`` policy;
* **plan, DP**: ``plan_query`` with hospital_a's requirements and contribution bounds, as a
  site plans under the demo policy (bounded, fixed-point partials; a query the policy cannot
  bound fails here and is counted, not timed);
* **typing**: the coordinator's ``DESCRIBE`` of the analyst's SQL on an empty copy of the
  catalog (DuckDB's binder gives the result's names and types).

Per query, the median of ``--repeat`` runs of each stage; the table gives, per stage, the
median, 90th percentile and maximum over the corpus in microseconds, and the slowest
queries.  Writes ``planner.csv`` (one row per query) under ``--out``.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from benchmarks import common

CORPUS = common.ROOT / "tests" / "equivalence" / "corpus.sql"
_HEADER = re.compile(r"^-- name:\s*(\w+)\s*;\s*ordered:\s*(true|false)\s*$")
STAGES = ("parse", "analyze", "decide", "plan_exact", "plan_dp", "typing")


def load_corpus(path: Path) -> list[tuple[str, str]]:
    """(name, sql) per ``-- name:`` header of the corpus file (comment lines dropped)."""
    out, name, lines = [], None, []
    for line in path.read_text(encoding="utf-8").splitlines() + ["-- name: _end ; ordered: false"]:
        match = _HEADER.match(line)
        if match:
            if name and "".join(lines).strip():
                out.append((name, "\n".join(lines).strip().rstrip(";").strip()))
            name, lines = match.group(1), []
        elif not line.lstrip().startswith("--"):
            lines.append(line)
    return out


def _demo_catalog():
    """Schema and catalog of the demo tables (types as DuckDB reports them)."""
    from fedquery.catalog import Catalog
    from fedquery.demo.generate import generate_site_tables
    from fedquery.ir import SiteCatalog
    from fedquery.site.adapter import DuckDBAdapter

    adapter = DuckDBAdapter.from_arrow(generate_site_tables("hospital_a", 50, seed=1))
    try:
        tables = tuple(adapter.describe())
    finally:
        adapter.close()
    schema = {t.name: {c.name.lower(): c.type for c in t.columns} for t in tables}
    return schema, Catalog.build([SiteCatalog("hospital_a", tables)])


def _time_us(fn, repeat: int) -> float:
    fn()  # warm-up (imports, sqlglot's tries)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1e6)
    return common.median(times)


def run(repeat: int, corpus: Path, limit: int = 0) -> list[dict]:
    from fedquery.coordinator.combine import Combiner
    from fedquery.ir import Requirements
    from fedquery.plan import plan_query
    from fedquery.policy import decide
    from fedquery.policy.contributions import bounding_of
    from fedquery.policy.load import load_policy
    from fedquery.sql import analyze, parse_statement

    schema, catalog = _demo_catalog()
    policy = load_policy(common.ROOT / "policies" / "hospital_a.yaml", resolve_secrets=False)
    units = dict(common.UNITS)
    requirements = policy.requirements()
    bounding = bounding_of(policy, "planner-benchmark-key")
    domains = bounding.domains
    combiner = Combiner(catalog)
    counter = iter(range(10**9))
    rows = []
    queries = load_corpus(corpus)
    for name, sql in queries[:limit] if limit else queries:
        row = {"query": name, "repeat": repeat}
        query = analyze(sql, schema)
        row["parse_us"] = _time_us(lambda sql=sql: parse_statement(sql), repeat)
        row["analyze_us"] = _time_us(lambda sql=sql: analyze(sql, schema), repeat)
        decision = decide(query, policy, "hospital_a", units)
        row["allowed"] = decision.allowed
        row["decide_us"] = _time_us(
            lambda query=query: decide(query, policy, "hospital_a", units), repeat)
        row["plan_exact_us"] = _time_us(
            lambda query=query: plan_query(query, units, Requirements()), repeat)
        try:
            plan_query(query, units, requirements, bounding, public_domains=domains)
        except Exception as err:  # noqa: BLE001 - a query the policy cannot bound
            row["plan_dp_us"] = float("nan")
            row["plan_dp_error"] = type(err).__name__
        else:
            row["plan_dp_us"] = _time_us(lambda query=query: plan_query(
                query, units, requirements, bounding, public_domains=domains), repeat)
            row["plan_dp_error"] = ""
        # a distinct trailing comment per call: the coordinator's schema memo never hits
        row["typing_us"] = _time_us(
            lambda sql=sql: combiner.result_schema(f"{sql} -- {next(counter)}"), repeat)
        rows.append(row)
    return rows


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(int(q * len(values)), len(values) - 1)]


def markdown(rows: list[dict]) -> tuple[str, str]:
    labels = {"parse": "parse", "analyze": "analyze (parse + qualify + check)",
              "decide": "decide (demo policy)", "plan_exact": "plan, exact",
              "plan_dp": "plan, DP (demo bounds)", "typing": "typing (DuckDB DESCRIBE)"}
    out = []
    for stage in STAGES:
        values = [r[f"{stage}_us"] for r in rows if r[f"{stage}_us"] == r[f"{stage}_us"]]
        if not values:
            continue
        slowest = max((r for r in rows if r[f"{stage}_us"] == r[f"{stage}_us"]),
                      key=lambda r: r[f"{stage}_us"])
        out.append((labels[stage], len(values), f"{common.median(values):,.0f}",
                    f"{_percentile(values, 0.9):,.0f}", f"{max(values):,.0f}",
                    slowest["query"]))
    site = [r["analyze_us"] + r["decide_us"] + r["plan_dp_us"] for r in rows
            if r["plan_dp_us"] == r["plan_dp_us"]]
    coordinator = [r["analyze_us"] + r["plan_exact_us"] + r["typing_us"] for r in rows]
    out.append(("**coordinator, cold: analyze + plan + typing**", len(coordinator),
                f"{common.median(coordinator):,.0f}", f"{_percentile(coordinator, 0.9):,.0f}",
                f"{max(coordinator):,.0f}", ""))
    site = site or [float("nan")]
    out.append(("**site, cold: analyze + decide + plan DP**", len(site),
                f"{common.median(site):,.0f}", f"{_percentile(site, 0.9):,.0f}",
                f"{max(site):,.0f}", ""))
    table = common.markdown(("stage", "queries", "median µs", "p90 µs", "max µs",
                             "slowest query"), out)
    worst = sorted((r for r in rows if r["plan_dp_us"] == r["plan_dp_us"]),
                   key=lambda r: -r["plan_dp_us"])[:5]
    slow = common.markdown(("query", "analyze µs", "plan exact µs", "plan DP µs"), [
        (r["query"], f"{r['analyze_us']:,.0f}", f"{r['plan_exact_us']:,.0f}",
         f"{r['plan_dp_us']:,.0f}") for r in worst])
    return table, slow


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per query and stage")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--limit", type=int, default=0,
                        help="only the first N corpus queries (0: all)")
    parser.add_argument("--out", type=Path, default=common.DEFAULT_OUT)
    args = parser.parse_args(argv)
    common.quiet_logs()
    started = time.perf_counter()
    rows = run(args.repeat, args.corpus, args.limit)
    failed = [r for r in rows if r["plan_dp_error"]]
    refused = sum(not r["allowed"] for r in rows)
    print(f"{len(rows)} corpus queries ({args.corpus.name}), median of {args.repeat} runs per "
          f"query and stage, in {time.perf_counter() - started:.1f} s; hospital_a's policy "
          f"refuses {refused} of them (decide is timed all the same), and {len(failed)} "
          "cannot be planned under its bounds (not timed for plan, DP).\n")
    table, slow = markdown(rows)
    print(table)
    print("\nSlowest to plan under DP:\n")
    print(slow)
    path = common.write_csv(args.out / "planner.csv", rows)
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
