"""Run every benchmark: ``python -m benchmarks`` (full sizes) or ``--quick`` (a smoke run).

    python -m benchmarks [--quick] [--only overhead,planner,...] [--skip ...]
                         [--out benchmarks/results] [--data-dir benchmarks/.data]
                         [--patients 100000 1000000 10000000] [--repeat 5]
                         [--sites-patients 1000000] [--sites 2 8 32] [--flight-sites 8]
                         [--tpch-sf 1] [--accuracy-runs 200] [--pg-dsn URI]

Each benchmark is its own module with its own ``main(argv)`` (``python -m benchmarks.NAME
--help``); this runner calls them one after another in this process, with the sizes given
here, each under a ``## <title>`` heading, and prints what ran, failed or was skipped.  Each
benchmark prints its Markdown table(s) and writes its CSV under ``--out``.

``--quick`` runs every benchmark at tiny sizes (a few thousand patients, TPC-H SF 0.01, 2
runs per point, 2 and 4 sites, the overhead without site processes — Flight is exercised by
``sites`` and ``flight_latency``) in about a minute; CI runs it
(tests/benchmarks/test_quick.py) so that the benchmarks never rot.  Its numbers mean
nothing.

The full run takes about 15 minutes on 2 cores (plus ~4 minutes the first time, to generate
and cache the 10-million-patient demo data and TPC-H SF 1 under ``--data-dir``) and stays
within a few GiB of memory; ``--patients 100000 1000000`` leaves the largest size out.

The accuracy plot of a full run goes to ``benchmarks/accuracy.png`` (beside the README); a
quick run writes it under ``--out``.  ``benchmarks.pushdown`` needs a PostgreSQL server: it
runs when ``--pg-dsn`` is given (or ``$FEDQUERY_TEST_PG_DSN`` is set) and the server
answers, and is skipped otherwise.  ``benchmarks.secure`` (end-to-end secure aggregation) is
run with its own defaults (or ``--quick``) and is skipped, with a message, if it is absent.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import importlib.util
import inspect
import os
import sys
import time
import traceback
from pathlib import Path

from benchmarks import common

ORDER = ("overhead", "planner", "accuracy", "sites", "tpch", "flight_latency", "secure",
         "pushdown")
TITLES = {
    "overhead": "Federation overhead",
    "planner": "Planner cost",
    "accuracy": "Accuracy of differential privacy",
    "sites": "Scale in sites",
    "tpch": "TPC-H",
    "flight_latency": "Sites over Arrow Flight",
    "secure": "Secure aggregation",
    "pushdown": "PostgreSQL pushdown",
}


class Skip(Exception):
    """A benchmark that cannot run here (a missing module or server)."""


def _pg_dsn(args) -> str:
    dsn = args.pg_dsn or os.environ.get("FEDQUERY_TEST_PG_DSN")
    if not dsn:
        raise Skip("needs PostgreSQL: give --pg-dsn (or set FEDQUERY_TEST_PG_DSN)")
    try:
        import psycopg

        with psycopg.connect(dsn, connect_timeout=3):
            pass
    except Exception as err:  # noqa: BLE001 - any failure to connect means: skip
        raise Skip(f"PostgreSQL at --pg-dsn does not answer ({type(err).__name__})") from None
    return dsn


def arguments(name: str, args) -> list[str]:
    """The argv the runner gives benchmark ``name``."""
    out, data = str(args.out), str(args.data_dir)
    q = args.quick
    if name == "overhead":
        return ["--patients", *map(str, args.patients or ([3000] if q else
                                                          [100_000, 1_000_000, 10_000_000])),
                "--repeat", str(args.repeat or (1 if q else 5)), "--data-dir", data,
                "--out", out] + (["--no-flight"] if q else [])
    if name == "planner":
        return ["--repeat", str(args.repeat or (1 if q else 5)), "--out", out] + (
            ["--limit", "12"] if q else [])
    if name == "accuracy":
        plot = args.out / "accuracy.png" if q else common.ROOT / "benchmarks" / "accuracy.png"
        return ["--runs", str(args.accuracy_runs or (2 if q else 200)),
                "--patients", "2000" if q else "20000", "--out", out, "--plot", str(plot)]
    if name == "sites":
        return ["--patients", str(args.sites_patients or (2000 if q else 1_000_000)),
                "--sites", *map(str, args.sites or ([2, 4] if q else [2, 8, 32])),
                "--flight-sites", *map(str, args.flight_sites if args.flight_sites is not None
                                       else ([2] if q else [8])),
                "--repeat", str(args.repeat or (1 if q else 5)), "--data-dir", data,
                "--out", out]
    if name == "tpch":
        return ["--sf", args.tpch_sf or ("0.01" if q else "1"),
                "--repeat", str(args.repeat or (1 if q else 3)), "--data-dir", data,
                "--out", out]
    if name == "flight_latency":
        return (["--patients", "1000", "--repeat", "3", "--threads", "2", "--queries", "8"]
                if q else []) + ["--out", out]
    if name == "secure":
        return (["--quick"] if q else []) + ["--csv", str(args.out / "secure.csv")]
    if name == "pushdown":
        return ["--dsn", _pg_dsn(args)] + (["--sf", "0.01", "--repeat", "1"] if q else [])
    raise ValueError(name)


def _module(name: str):
    full = f"benchmarks.{name}"
    if importlib.util.find_spec(full) is None:
        raise Skip(f"benchmarks/{name}.py is not there (yet)")
    return importlib.import_module(full)


def run_one(name: str, args) -> tuple[str, float, str]:
    """(status, seconds, note) of one benchmark; its output goes to stdout."""
    started = time.perf_counter()
    try:
        argv = arguments(name, args)
        module = _module(name)
        print(f"$ python -m benchmarks.{name} {' '.join(argv)}\n", flush=True)
        try:
            if inspect.signature(module.main).parameters:
                result = module.main(argv)
            else:  # a main() that reads sys.argv itself
                saved, sys.argv = sys.argv, [f"benchmarks.{name}", *argv]
                try:
                    result = module.main()
                finally:
                    sys.argv = saved
        except SystemExit as exit_:
            result = exit_.code
        if isinstance(result, int) and not isinstance(result, bool) and result != 0:
            return "failed", time.perf_counter() - started, f"exit status {result}"
        return "ok", time.perf_counter() - started, ""
    except Skip as skip:
        print(f"skipped: {skip}")
        return "skipped", time.perf_counter() - started, str(skip)
    except Exception as err:  # noqa: BLE001 - one broken benchmark must not stop the others
        traceback.print_exc(file=sys.stdout)
        return "failed", time.perf_counter() - started, f"{type(err).__name__}: {err}"
    finally:
        sys.stdout.flush()
        gc.collect()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Every benchmark: " + ", ".join(ORDER))
    parser.add_argument("--quick", action="store_true",
                        help="every benchmark at tiny sizes: a smoke run (~1 minute)")
    parser.add_argument("--only", default="", help="comma-separated benchmarks to run")
    parser.add_argument("--skip", default="", help="comma-separated benchmarks to leave out")
    parser.add_argument("--out", type=Path, default=common.DEFAULT_OUT,
                        help="directory for the CSVs (default benchmarks/results, git-ignored)")
    parser.add_argument("--data-dir", type=Path, default=common.DEFAULT_DATA,
                        help="cache of generated data (default benchmarks/.data, git-ignored)")
    parser.add_argument("--patients", type=int, nargs="+",
                        help="overhead: patients in all, per size (100000 1000000 10000000)")
    parser.add_argument("--repeat", type=int, help="timed runs per point (median)")
    parser.add_argument("--sites-patients", type=int,
                        help="sites: patients in all (1000000)")
    parser.add_argument("--sites", type=int, nargs="+", help="sites: numbers of sites (2 8 32)")
    parser.add_argument("--flight-sites", type=int, nargs="*",
                        help="sites: numbers of sites also run over Flight (8)")
    parser.add_argument("--tpch-sf", help="TPC-H scale factor (1)")
    parser.add_argument("--accuracy-runs", type=int, help="accuracy: runs per point (200)")
    parser.add_argument("--pg-dsn", help="PostgreSQL for benchmarks.pushdown")
    args = parser.parse_args(argv)
    only = [n for n in args.only.split(",") if n]
    skip = {n for n in args.skip.split(",") if n}
    unknown = (set(only) | skip) - set(ORDER)
    if unknown:
        parser.error(f"unknown benchmarks {sorted(unknown)}; choose from {', '.join(ORDER)}")
    names = [n for n in (only or ORDER) if n not in skip]
    args.out.mkdir(parents=True, exist_ok=True)
    quick = " (--quick: tiny sizes, the numbers mean nothing)" if args.quick else ""
    print(f"# fedquery benchmarks{quick}\n")
    print(f"{common.machine_line()}\n", flush=True)
    common.quiet_logs()
    results = []
    started = time.perf_counter()
    for name in names:
        print(f"\n## {TITLES[name]} (benchmarks.{name})\n", flush=True)
        status, seconds, note = run_one(name, args)
        results.append((name, status, seconds, note))
        print(f"\n[{name}: {status} in {seconds:.1f} s]", flush=True)
    print("\n## Summary\n")
    print(common.markdown(("benchmark", "status", "seconds", "note"),
                          [(n, s, f"{t:.1f}", note) for n, s, t, note in results]))
    print(f"\nall in {time.perf_counter() - started:.1f} s; CSVs in {args.out}")
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    return 1 if any(s == "failed" for _, s, _, _ in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
