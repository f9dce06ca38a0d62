"""Where a federated query's time goes: cProfile of the coordinator and of every site.

    python -m benchmarks.profile [--patients 100000] [--query avg_where] [--runs 20]
                                 [--new-sql] [--exact] [--top 15]

The federation of ``benchmarks.overhead`` (the demo data over 3 in-process sites under the
demo policies, budget raised), one of its queries, ``--runs`` times with cold noise (a fresh
noise-cache key per run; ``--new-sql`` also a distinct trailing comment, so every plan cache
misses; ``--exact`` the ``open`` policy instead).  cProfile only sees the thread it runs in,
so the coordinator (the calling thread) and every site call (the dispatcher's threads: each
``InProcessClient.query``, which includes the wire codec both ways) get profilers of their
own; their statistics are summed over the runs.

Prints the median wall time per query, per-site time (the median of one site's call) and the
coordinator's own time (its wall time minus the wait for the sites), then the site time by
component (own time of the functions, grouped by library: OpenDP, SQLite ledger, DuckDB,
sqlglot, Arrow, …) and the functions with the largest cumulative time on both sides.
Machine-readable: ``profile.csv`` under ``--out`` (component, side, ms per query).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from benchmarks import common
from benchmarks.overhead import QUERIES

COMPONENTS = (  # (name, test on (filename, function name)); the first match wins
    ("OpenDP (calibration, noise, ε/ρ conversions)", lambda f, n: "/opendp/" in f),
    ("SQLite budget ledger and noise cache", lambda f, n: "sqlite3" in n or f.endswith(
        "policy/ledger.py")),
    ("file system (fsync, fstat, open)", lambda f, n: any(
        k in n for k in ("posix.fsync", "posix.fstat", "posix.stat", "io.open", "posix.open"))),
    ("DuckDB (fragment, combine, post-process)", lambda f, n: "/duckdb/" in f or "duckdb" in n),
    ("sqlglot (parse, qualify, plan, canonical text)", lambda f, n: "/sqlglot/" in f),
    ("Arrow (IPC codec, tables, compute)", lambda f, n: "/pyarrow/" in f or "pyarrow" in n
        or f.endswith("transport/codec.py")),
    ("threads, locks and queues", lambda f, n: "_thread" in n or f.endswith((
        "threading.py", "concurrent/futures/_base.py", "concurrent/futures/thread.py",
        "queue.py"))),
    ("copy / dataclasses / json", lambda f, n: f.endswith(("copy.py", "dataclasses.py"))
        or "/json/" in f),
    ("fedquery (own code)", lambda f, n: "/fedquery/" in f),
    ("other Python", lambda f, n: True),
)


def component(key: tuple) -> str:
    filename, _, name = key
    for label, test in COMPONENTS:
        if test(filename, name):
            return label
    return "other Python"


class SiteProfiles:
    """Profiles every ``client.query`` call in whatever thread runs it."""

    def __init__(self) -> None:
        self.stats: pstats.Stats | None = None
        self.calls: list[float] = []
        self._lock = threading.Lock()

    def wrap(self, client) -> None:
        inner = client.query

        def query(*args, **kwargs):
            profile = cProfile.Profile()
            started = time.perf_counter()
            profile.enable()
            try:
                return inner(*args, **kwargs)
            finally:
                profile.disable()
                elapsed = (time.perf_counter() - started) * 1000
                with self._lock:
                    self.calls.append(elapsed)
                    if self.stats is None:
                        self.stats = pstats.Stats(profile, stream=io.StringIO())
                    else:
                        self.stats.add(profile)

        client.query = query


def by_component(stats: pstats.Stats, per: int) -> dict[str, float]:
    """Own time (ms) per component, divided by ``per``."""
    totals: dict[str, float] = {}
    for key, (_, _, tottime, _, _) in stats.stats.items():
        label = component(key)
        totals[label] = totals.get(label, 0.0) + tottime * 1000 / per
    return totals


def top_functions(stats: pstats.Stats, per: int, n: int, prefix: str) -> list[tuple]:
    rows = []
    for (filename, line, name), (_, calls, tottime, cumtime, _) in stats.stats.items():
        if prefix in filename:
            short = filename.split(prefix, 1)[1]
            rows.append((f"{prefix.strip('/')}/{short}:{line} {name}", calls / per,
                         tottime * 1000 / per, cumtime * 1000 / per))
    return sorted(rows, key=lambda r: -r[3])[:n]


def run(patients: int, query: str, runs: int, new_sql: bool, exact: bool,
        data_dir: Path) -> dict:
    per_site = patients // 3
    # fresh_state=False: the in-process sites keep their state in a temporary directory
    _, directory, federation, paths = common.demo_setup(data_dir, 3, per_site,
                                                        fresh_state=False)
    state = tempfile.TemporaryDirectory(prefix="fedquery-bench-state-")
    conn = (common.in_process_open(paths) if exact else
            common.in_process_dp(directory, federation, Path(state.name)))
    sites = SiteProfiles()
    for client in conn.engine.clients:
        sites.wrap(client)
    sql = QUERIES[query]
    coordinator = cProfile.Profile()
    walls = []
    try:
        for i in range(-2, runs):  # two warm-ups: caches, calibration, buffer pool
            if not exact:
                common.cold_noise(conn)
            text = f"{sql} -- profile run {i}" if new_sql else sql
            if i < 0:
                common.run_query(conn, text)
                sites.calls.clear()
                sites.stats = None
                continue
            started = time.perf_counter()
            coordinator.enable()
            try:
                common.run_query(conn, text)
            finally:
                coordinator.disable()
            walls.append((time.perf_counter() - started) * 1000)
    finally:
        conn.close()
        state.cleanup()
    coord = pstats.Stats(coordinator, stream=io.StringIO())
    waited = sum(tt for (f, _, n), (_, _, tt, _, _) in coord.stats.items()
                 if "acquire" in n and "_thread" in n) * 1000 / runs
    return {"walls": walls, "site_calls": sites.calls, "sites": sites.stats,
            "coordinator": coord, "waited_ms": waited, "runs": runs,
            "site_count": len(federation.sites), "patients": per_site * 3}


def _operators(node: dict, out: list) -> None:
    info = node.get("extra_info") or {}
    text = json.dumps(info).lower()
    name = node.get("name") or node.get("operator_name") or "?"
    if name == "PROJECTION" and "md5(" in text:
        name = "PROJECTION (md5 row hash for the row cap)"
    elif name == "FILTER" and "row_number" in text:
        name = "FILTER (row cap: ROW_NUMBER() <= cap)"
    out.append((name, float(node.get("timing") or node.get("operator_timing") or 0.0),
                int(node.get("operator_cardinality") or node.get("intermediate_rows") or 0)))
    for child in node.get("children", []):
        _operators(child, out)


class _Connection:
    """A DuckDB connection as ``UnitRowStats`` reads it (data that does not change here)."""

    def __init__(self, con) -> None:
        self._con = con

    def execute(self, sql: str):
        return self._con.sql(sql).to_arrow_table()

    def data_version(self) -> str:
        return "profiled"


def fragment_profile(patients: int, query: str, data_dir: Path, site_index: int = 0) -> list:
    """DuckDB's own profile (JSON) of one site's fragment: the bounded DP fragment the site
    runs under the demo policy vs the exact fragment under the open policy, on that site's
    DuckDB file.  Returns (label, wall ms, [(operator, seconds, rows)])."""
    import duckdb

    from fedquery.demo.showcase import demo_policy_path, ensure_demo_data
    from fedquery.ir import Requirements
    from fedquery.plan import plan_query
    from fedquery.policy.contributions import bounding_of
    from fedquery.policy.load import load_policy
    from fedquery.site.unit_stats import UnitRowStats
    from fedquery.sql import analyze

    paths = ensure_demo_data(common.demo_dir(data_dir, 3, patients // 3), 3, patients // 3,
                             common.SEED)
    site, path = list(paths.items())[site_index]
    policy = load_policy(demo_policy_path(site_index), resolve_secrets=False)
    con = duckdb.connect(str(path), read_only=True)
    schema = {t: {c.lower(): typ for c, typ, *_ in con.execute(f'DESCRIBE "{t}"').fetchall()}
              for t in common.TABLES}
    analyzed = analyze(QUERIES[query], schema)
    bounding = bounding_of(policy, "profile-key")
    # the site's own counts of rows per unit (site.unit_stats), on this connection (a site
    # adapter would lock the configuration that profiling needs)
    _, observed = UnitRowStats(_Connection(con), common.UNITS,
                               [t for t, _ in bounding.row_caps]).current()
    fragments = {
        "DP as the site runs it (counts within the caps: no row cap)": plan_query(
            analyzed, common.UNITS, policy.requirements(),
            replace(bounding, observed_rows=observed),
            public_domains=bounding.domains).fragment.sql,
        "DP with the row cap (data over a cap)": plan_query(
            analyzed, common.UNITS, policy.requirements(), bounding,
            public_domains=bounding.domains).fragment.sql,
        "exact (open policy)": plan_query(analyzed, common.UNITS, Requirements()).fragment.sql,
        "the query itself": QUERIES[query]}
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "profile.json"
        for label, sql in fragments.items():
            con.execute(sql).fetchall()  # warm the buffer pool
            con.execute("SET enable_profiling = 'json'")
            con.execute(f"SET profiling_output = '{target}'")
            started = time.perf_counter()
            con.execute(sql).fetchall()
            wall = (time.perf_counter() - started) * 1000
            con.execute("SET enable_profiling = 'no_output'")
            ops: list = []
            for root in json.loads(target.read_text()).get("children", []) or json.loads(
                    target.read_text()).get("operator", []):
                _operators(root, ops)
            out.append((label, wall, ops))
    con.close()
    return site, out


def print_fragment_profile(patients: int, query: str, data_dir: Path, top: int) -> None:
    site, profiles = fragment_profile(patients, query, data_dir)
    print(f"`{QUERIES[query]}` at {site} ({patients // 3:,} of {patients:,} patients), one "
          "run after a warm-up, DuckDB's JSON profile (operator time summed by operator):\n")
    rows = []
    for label, wall, ops in profiles:
        totals: dict[str, float] = {}
        for name, seconds, _ in ops:
            totals[name] = totals.get(name, 0.0) + seconds
        total = sum(totals.values()) or 1.0
        parts = ", ".join(f"{name} {seconds * 1000:,.0f} ms ({100 * seconds / total:.0f} %)"
                          for name, seconds in sorted(totals.items(), key=lambda x: -x[1])[:top]
                          if seconds * 1000 >= 0.5)
        rows.append((label, f"{wall:,.0f}", parts))
    print(common.markdown(("fragment", "wall ms", "largest operators"), rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=100_000, help="patients in all")
    parser.add_argument("--query", default="avg_where", choices=sorted(QUERIES))
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--new-sql", action="store_true", help="a new SQL text every run")
    parser.add_argument("--exact", action="store_true", help="the open policy (no noise)")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--fragment", action="store_true",
                        help="instead: DuckDB's operator profile of one site's DP fragment vs "
                             "its exact fragment (where the time goes at scale)")
    parser.add_argument("--data-dir", type=Path, default=common.DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=common.DEFAULT_OUT)
    args = parser.parse_args(argv)
    common.quiet_logs()
    if args.fragment:
        print_fragment_profile(args.patients, args.query, args.data_dir, min(args.top, 6))
        return 0
    r = run(args.patients, args.query, args.runs, args.new_sql, args.exact, args.data_dir)
    runs, k = r["runs"], r["site_count"]
    wall = common.median(r["walls"])
    site_call = common.median(r["site_calls"])
    coordinator_own = (sum(tt for (_, _, tt, _, _) in r["coordinator"].stats.values()) * 1000
                       / runs - r["waited_ms"])
    mode = ("exact (open policy)" if args.exact else "DP (demo policies), cold noise") + (
        ", new SQL text every run" if args.new_sql else ", plan cached")
    print(f"`{QUERIES[args.query]}`\n{k} in-process sites x {r['patients'] // k:,} patients, "
          f"{mode}; {runs} profiled runs.\n")
    print(f"median wall {wall:.1f} ms per query; one site's call (codec both ways included): "
          f"median {site_call:.1f} ms; the coordinator's own work ~{coordinator_own:.1f} ms; "
          f"the sites' calls add up to {sum(r['site_calls']) / runs:.1f} ms per query (they "
          "share one GIL in-process).\n")
    site_parts = by_component(r["sites"], runs * k)
    coord_parts = by_component(r["coordinator"], runs)
    coord_parts.pop("threads, locks and queues", None)  # the wait for the sites
    labels = [label for label, _ in COMPONENTS]
    print("Own time by component, ms per query (site: per site call, profiled):\n")
    print(common.markdown(("component", "one site", "coordinator"), [
        (label, f"{site_parts.get(label, 0):.1f}", f"{coord_parts.get(label, 0):.1f}")
        for label in labels if site_parts.get(label, 0) + coord_parts.get(label, 0) >= 0.05]
        + [("**total**", f"{sum(site_parts.values()):.1f}",
            f"{sum(coord_parts.values()):.1f}")]))
    for side, stats, per in (("one site", r["sites"], runs * k),
                             ("coordinator", r["coordinator"], runs)):
        print(f"\nLargest cumulative time, {side} (fedquery functions; ms per query):\n")
        print(common.markdown(("function", "calls", "own ms", "cumulative ms"), [
            (name, f"{calls:g}", f"{own:.2f}", f"{cum:.1f}")
            for name, calls, own, cum in top_functions(stats, per, args.top, "/fedquery/")]))
        print(f"\nLargest cumulative time, {side} (library functions; ms per query):\n")
        rows = []
        for prefix in ("/opendp/", "/duckdb/", "/sqlglot/", "/pyarrow/"):
            rows += top_functions(stats, per, 3, prefix)
        builtins = [(name, calls / per, tt * 1000 / per, ct * 1000 / per)
                    for (f, _, name), (_, calls, tt, ct, _) in stats.stats.items()
                    if f == "~" and "acquire" not in name]
        rows += sorted(builtins, key=lambda x: -x[3])[:5]
        print(common.markdown(("function", "calls", "own ms", "cumulative ms"), [
            (name, f"{calls:g}", f"{own:.2f}", f"{cum:.1f}")
            for name, calls, own, cum in sorted(rows, key=lambda x: -x[3])[:args.top]]))
    rows = [{"side": "site", "component": c, "ms_per_query": round(v, 3)}
            for c, v in site_parts.items()]
    rows += [{"side": "coordinator", "component": c, "ms_per_query": round(v, 3)}
             for c, v in coord_parts.items()]
    rows.append({"side": "wall", "component": "median", "ms_per_query": round(wall, 3)})
    path = common.write_csv(args.out / "profile.csv", rows)
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
