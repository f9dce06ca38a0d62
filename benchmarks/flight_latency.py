"""Flight overhead: a small GROUP BY over 3 loopback TLS site processes vs the same in-process.

    python -m benchmarks.flight_latency [--patients 20000] [--repeat 20] [--threads 4]
                                        [--queries 100] [--out benchmarks/results]

Writes a demo federation (3 hospitals × ``--patients``) in a temporary directory, starts its
sites as separate ``fedquery site serve`` processes (TLS, bearer tokens) and builds an
in-process engine over the same DuckDB files and policies.  Prints a Markdown table with the
median latency of each (after a warm-up) and their ratio, then the wall time of ``--queries``
queries from ``--threads`` client threads over Flight, each thread with its own
``fedquery.connect``; writes ``flight_latency.csv`` under ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from benchmarks import common

SQL = "SELECT region, sex, COUNT(*) FROM patients GROUP BY ALL"


def _concurrent(federation: Path, threads: int, queries: int) -> dict:
    import fedquery

    per_thread = queries // threads
    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    ready = threading.Barrier(threads + 1)

    def client() -> None:
        try:
            conn = fedquery.connect(federation)
        except BaseException as err:  # noqa: BLE001 - reported below
            with lock:
                errors.append(err)
            ready.abort()
            return
        with conn:
            conn.cursor().execute(SQL)  # warm this client's channels before the clock starts
            ready.wait()
            mine = []
            for _ in range(per_thread):
                started = time.perf_counter()
                try:
                    conn.cursor().execute(SQL).fetchall()
                except BaseException as err:  # noqa: BLE001 - reported below
                    with lock:
                        errors.append(err)
                    return
                mine.append((time.perf_counter() - started) * 1000)
            with lock:
                latencies.extend(mine)

    workers = [threading.Thread(target=client, name=f"client-{i}") for i in range(threads)]
    for worker in workers:
        worker.start()
    ready.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} concurrent queries failed; first: {errors[0]!r}")
    latencies.sort()
    return {"threads": threads, "queries": len(latencies), "wall_s": wall,
            "qps": len(latencies) / wall, "median_ms": statistics.median(latencies),
            "p95_ms": latencies[max(int(0.95 * len(latencies)) - 1, 0)]}


def _in_process(directory: Path, federation):
    """The same federation in this process: each site built from the connector and policy files
    its ``fedquery site serve`` process reads, behind the in-process transport, with the
    federation file's defaults (min_sites matters: it suppresses cells from too few sites)."""
    from fedquery.dbapi import Connection
    from fedquery.engine import Engine
    from fedquery.site.runner import build_site_service
    from fedquery.transport.inprocess import InProcessClient

    clients = [InProcessClient(build_site_service(
        directory / "connectors" / f"{site.name}.yaml",
        directory / "policies" / f"{site.name}.yaml",
        directory / "bench-in-process" / site.name)) for site in federation.sites]
    engine = Engine(clients, timeout=federation.timeout,
                    on_site_failure=federation.on_site_failure, min_sites=federation.min_sites)
    return Connection(engine, user=federation.user)


def run(directory: Path, patients: int, repeat: int, threads: int, queries: int) -> dict:
    import fedquery
    from fedquery.demo.federation import init_demo
    from fedquery.demo.launcher import SiteProcesses
    from fedquery.transport.federation import load_federation

    federation_file = init_demo(directory, sites=3, patients=patients, seed=7)
    federation = load_federation(federation_file)
    result = {"patients": patients, "sites": len(federation.sites), "repeat": repeat}
    with SiteProcesses(directory) as processes:
        common.start_sites(processes, federation)  # in parallel
        with fedquery.connect(federation_file) as flight_conn, \
                _in_process(directory, federation) as local_conn:
            flight_rows = flight_conn.cursor().execute(SQL).fetchall()
            local_rows = local_conn.cursor().execute(SQL).fetchall()
            # same groups (and, without noise, the same counts) both ways
            noisy = not flight_conn.cursor().execute(SQL).fq_report.mode.endswith("/none")
            if Counter(r[:2] for r in flight_rows) != Counter(r[:2] for r in local_rows) or (
                    not noisy and Counter(flight_rows) != Counter(local_rows)):
                raise RuntimeError("Flight and in-process answers differ: "
                                   f"{flight_rows[:3]} vs {local_rows[:3]}")
            result["groups"] = len(flight_rows)
            result["mode"] = "noisy (repeats answered from the noise cache)" if noisy else "exact"
            # warmed up above; interleave the timed runs so machine noise hits both alike
            flight_ms: list[float] = []
            local_ms: list[float] = []
            for _ in range(repeat):
                for conn, out in ((flight_conn, flight_ms), (local_conn, local_ms)):
                    started = time.perf_counter()
                    conn.cursor().execute(SQL).fetchall()
                    out.append((time.perf_counter() - started) * 1000)
            result["flight_ms"] = statistics.median(flight_ms)
            result["local_ms"] = statistics.median(local_ms)
        result["concurrent"] = _concurrent(federation_file, threads, queries)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=20_000, help="patients per hospital")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs of each (median)")
    parser.add_argument("--threads", type=int, default=4, help="concurrent client threads")
    parser.add_argument("--queries", type=int, default=100,
                        help="concurrent queries in all (split evenly across the threads)")
    parser.add_argument("--out", type=Path, default=common.DEFAULT_OUT,
                        help="directory for flight_latency.csv")
    args = parser.parse_args(argv)
    if args.queries % args.threads:
        parser.error("--queries must be a multiple of --threads")
    with tempfile.TemporaryDirectory(prefix="fedquery-flight-bench-") as tmp:
        r = run(Path(tmp), args.patients, args.repeat, args.threads, args.queries)
    c = r["concurrent"]
    print(f"`{SQL}` ({r['groups']} groups, {r['mode']}), 3 hospitals × {r['patients']:,} "
          f"patients, median of {r['repeat']} after a warm-up\n")
    print("| sites | transport | median ms | ratio |")
    print("|---|---|---|---|")
    print(f"| {r['sites']} | in-process | {r['local_ms']:.1f} | 1.00× |")
    print(f"| {r['sites']} | Arrow Flight, loopback TLS, site processes | "
          f"{r['flight_ms']:.1f} | {r['flight_ms'] / r['local_ms']:.2f}× |")
    print(f"\n{c['queries']} concurrent queries over Flight from {c['threads']} client threads "
          f"(each its own fedquery.connect): {c['wall_s']:.2f} s wall, {c['qps']:.1f} "
          f"queries/s; per-query median {c['median_ms']:.1f} ms, p95 {c['p95_ms']:.1f} ms")
    path = common.write_csv(args.out / "flight_latency.csv", [{
        "patients_per_site": r["patients"], "sites": r["sites"], "groups": r["groups"],
        "mode": r["mode"], "repeat": r["repeat"], "in_process_ms": round(r["local_ms"], 3),
        "flight_ms": round(r["flight_ms"], 3), "ratio": round(r["flight_ms"] / r["local_ms"], 4),
        **{f"concurrent_{k}": round(v, 4) if isinstance(v, float) else v
           for k, v in c.items()}}])
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
