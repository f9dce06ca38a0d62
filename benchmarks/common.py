"""Shared helpers of the benchmarks: timing, tables, CSVs, the cached demo federations.

Every benchmark module keeps its own ``main(argv)``; this module only holds what several of
them need, so that they measure the same way:

* **timing**: ``median`` of wall-clock milliseconds (``time.perf_counter``) after a warm-up;
  modes that are compared are interleaved run by run, so machine noise hits them alike;
* **data**: demo federations are generated once and cached (DuckDB files, like
  ``fedquery.demo.showcase.ensure_demo_data``) under ``--data-dir``, by default
  ``benchmarks/.data`` (git-ignored), together with one pooled DuckDB file holding every
  site's rows: the baseline reads a DuckDB file exactly as the sites do;
* **cold noise**: a site answers a repeated noisy query from its noise cache (no data
  touched, no budget spent).  The benchmarks measure *cold noise* instead — the site runs the
  fragment, draws fresh OpenDP noise and commits the spend to its ledger — by giving each run
  its own δ (``SET delta``, a fresh noise-cache key).  Under the demo's Laplace policies δ
  does not enter the noise calibration, so the calibration cache (one OpenDP binary search
  per scale) stays warm, as it does for an analyst who keeps the default ε; varying ε instead
  would re-run that search on every query (~140 ms per partial, see the README's profile).
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import datetime as dt
import importlib.metadata
import itertools
import math
import os
import platform
import re
import shutil
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("FEDQUERY_BENCH_DATA", ROOT / "benchmarks" / ".data"))
DEFAULT_OUT = ROOT / "benchmarks" / "results"
TABLES = ("patients", "diagnoses", "labs", "treatments", "outcomes")
UNITS = {t: "patient_id" for t in TABLES}
SEED = 7
BENCH_BUDGET_EPSILON = 10_000.0  # per analyst and site: the runs would exhaust the demo's 10-20
DEMO_DELTA = 1e-7  # the demo policies' δ
SITE_TIMEOUT_S = 3600.0  # the demo's 30 s per-site deadline is too short at 10M patients

# -- timing -------------------------------------------------------------------------------------


def timed_ms(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def interleaved(runs: dict[str, Callable[[], Callable[[], object]]], repeat: int,
                fewer: dict[str, int] | None = None) -> dict[str, float]:
    """Median ms per mode.  ``runs[mode]()`` prepares one run (untimed, e.g. a fresh δ) and
    returns the function to time; one warm-up of each mode, then ``repeat`` rounds that run
    every mode once, so machine noise hits all modes alike.  ``fewer``: modes that take part
    in only their first N rounds (slow modes at large sizes)."""
    fewer = fewer or {}
    times: dict[str, list[float]] = {mode: [] for mode in runs}
    for prepare in runs.values():
        prepare()()
    for round_ in range(repeat):
        for mode, prepare in runs.items():
            if round_ < fewer.get(mode, repeat):
                fn = prepare()
                times[mode].append(timed_ms(fn))
    return {mode: median(values) for mode, values in times.items()}


_fresh = itertools.count(1)


def fresh_delta() -> float:
    """A δ just below the demo policies' 1e-7, different on every call: a fresh noise-cache
    key without changing the noise (Laplace ignores δ)."""
    return DEMO_DELTA * (1 - next(_fresh) * 1e-9)


def cold_noise(conn) -> None:
    """Make ``conn``'s next query miss every site's noise cache (see the module docstring)."""
    conn.cursor().execute(f"SET delta = {fresh_delta()!r}")


# -- output ---------------------------------------------------------------------------------------


def machine() -> dict:
    import duckdb
    import pyarrow

    versions = {"python": platform.python_version(), "duckdb": duckdb.__version__,
                "pyarrow": pyarrow.__version__}
    for name in ("opendp", "sqlglot", "tenseal"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {"date": dt.date.today().isoformat(), "machine": platform.machine(),
            "cores": os.cpu_count(), "system": platform.system(), **versions}


def machine_line() -> str:
    m = machine()
    return (f"{m['date']}, {m['cores']}-core {m['machine']} {m['system']}, Python {m['python']}, "
            f"DuckDB {m['duckdb']}, pyarrow {m['pyarrow']}, OpenDP {m.get('opendp', '?')}, "
            f"sqlglot {m.get('sqlglot', '?')}")


def markdown(headers: Sequence[str], rows: Iterable[Sequence]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def ms(value: float) -> str:
    if math.isnan(value):
        return "–"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def ratio(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2f}×"


# -- demo federations -------------------------------------------------------------------------


def demo_dir(data_dir: Path, sites: int, per_site: int, seed: int = SEED) -> Path:
    return Path(data_dir) / f"demo-{sites}x{per_site}-seed{seed}"


def demo_federation(data_dir: Path, sites: int, per_site: int, seed: int = SEED, *,
                    fresh_state: bool = True) -> Path:
    """A demo federation (``fedquery demo init``) over cached data, ready for fresh state:
    the demo policies with the analyst budget raised to BENCH_BUDGET_EPSILON (nothing else
    changed), the per-site deadline raised to SITE_TIMEOUT_S, earlier runs' site state
    (ledgers, noise caches) removed unless not ``fresh_state``.  Returns the federation
    file.  Two benchmarks must not run on the same federation directory at once (the second
    would remove the first's site state)."""
    from fedquery.demo.federation import init_demo

    directory = demo_dir(data_dir, sites, per_site, seed)
    federation = init_demo(directory, sites=sites, patients=per_site, seed=seed,
                           timeout=SITE_TIMEOUT_S)
    for policy in sorted((directory / "policies").glob("*.yaml")):
        text = policy.read_text()
        patched, n = re.subn(r"(?m)^  budget: \{epsilon: [0-9.e+]+\}",
                             f"  budget: {{epsilon: {BENCH_BUDGET_EPSILON:g}}}", text)
        if n != 1:
            raise RuntimeError(f"{policy}: no budget line to raise")
        policy.write_text(patched)
    if fresh_state:  # the site processes' ledgers and noise caches of earlier runs
        shutil.rmtree(directory / "state", ignore_errors=True)
    return federation


class DemoSetup(NamedTuple):
    """A benchmark's demo federation: its file, directory, loaded federation and the sites'
    DuckDB files."""

    file: Path
    directory: Path
    federation: object
    paths: dict[str, Path]


def demo_setup(data_dir: Path, sites: int, per_site: int, **options) -> DemoSetup:
    """``demo_federation`` (same ``options``), loaded, with its sites' files."""
    from fedquery.transport.federation import load_federation

    file = demo_federation(data_dir, sites, per_site, **options)
    federation = load_federation(file)
    return DemoSetup(file, file.parent, federation, site_paths(file.parent, federation))


def site_paths(directory: Path, federation) -> dict[str, Path]:
    return {s.name: directory / "data" / f"{s.name}.duckdb" for s in federation.sites}


def pooled_file(directory: Path, paths: dict[str, Path]) -> Path:
    """``directory/data/pooled.duckdb``: per table, the UNION ALL of every site's rows
    (written once; rewritten when the site files are newer)."""
    import duckdb

    target = directory / "data" / "pooled.duckdb"
    newest = max(p.stat().st_mtime for p in paths.values())
    if target.exists() and target.stat().st_mtime > newest:
        return target
    tmp = target.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    try:
        for i, path in enumerate(paths.values()):
            con.execute(f"ATTACH '{path}' AS s{i} (READ_ONLY)")
        for table in TABLES:
            union = " UNION ALL ".join(f"SELECT * FROM s{i}.{table}" for i in range(len(paths)))
            con.execute(f'CREATE TABLE "{table}" AS {union}')
        con.execute("CHECKPOINT")
    finally:
        con.close()
    os.replace(tmp, target)
    return target


def pooled_connection(directory: Path, paths: dict[str, Path]):
    import duckdb

    return duckdb.connect(str(pooled_file(directory, paths)), read_only=True)


def in_process_dp(directory: Path, federation, state: Path):
    """The federation in this process: each site built from the connector and policy files
    its ``fedquery site serve`` process reads (``build_site_service``), behind the in-process
    transport, with the federation file's defaults."""
    from fedquery.dbapi import Connection
    from fedquery.engine import Engine
    from fedquery.site.runner import build_site_service
    from fedquery.transport.inprocess import InProcessClient

    clients = [InProcessClient(build_site_service(
        directory / "connectors" / f"{site.name}.yaml",
        directory / "policies" / f"{site.name}.yaml", state / site.name))
        for site in federation.sites]
    engine = Engine(clients, timeout=federation.timeout,
                    on_site_failure=federation.on_site_failure, min_sites=federation.min_sites)
    return Connection(engine, user=federation.user)


def in_process_open(paths: dict[str, Path]):
    """The same DuckDB files under the built-in ``open`` policy: exact answers, minimum cell
    1, no noise — the federation's own cost without privacy."""
    from fedquery.dbapi import Connection
    from fedquery.engine import Engine
    from fedquery.site.adapter import DuckDBAdapter
    from fedquery.site.service import SiteService
    from fedquery.transport.inprocess import InProcessClient

    clients = [InProcessClient(SiteService(site, DuckDBAdapter.from_duckdb_file(path, TABLES),
                                           "open", UNITS)) for site, path in paths.items()]
    return Connection(Engine(clients), user="bench")


def start_sites(processes, federation, wait: float = 120.0, attempts: int = 3) -> None:
    """Start every site of ``federation`` as a ``fedquery site serve`` process, in parallel
    (each start waits for its own port file).

    The ports were picked when the federation was written, possibly long ago: a site that
    cannot start (its port taken meanwhile, by anything) is started again on a port free now,
    up to ``attempts`` times, and ``federation.yaml`` (in ``processes.directory``) is updated
    with the ports the sites listen on; connect after this returns."""
    from fedquery.demo.federation import free_port
    from fedquery.errors import OperationalError

    def start(name: str, port: int) -> tuple[str, int, int]:
        first = port
        for attempt in range(attempts):
            try:
                processes.start(name, port, wait=wait)
                return name, first, port
            except OperationalError:
                if attempt == attempts - 1:
                    raise
                port = free_port()
        raise AssertionError("unreachable")

    with cf.ThreadPoolExecutor(max_workers=len(federation.sites)) as pool:
        started = [future.result() for future in [
            pool.submit(start, site.name, int(site.endpoint.rsplit(":", 1)[1]))
            for site in federation.sites]]
    moved = [(name, old, new) for name, old, new in started if new != old]
    if moved:
        path = processes.directory / "federation.yaml"
        text = path.read_text()
        for name, old, new in moved:
            text, n = re.subn(rf"(\n\s*{re.escape(name)}:\s*{{endpoint:\s*grpc\+tls://"
                              rf"127\.0\.0\.1:){old}\b", rf"\g<1>{new}", text)
            if n != 1:
                raise RuntimeError(f"cannot update {name}'s port in {path}")
        path.write_text(text)


def run_query(conn, sql: str) -> list[tuple]:
    return conn.cursor().execute(sql).fetchall()


def quiet_logs() -> None:
    """Benchmarks print tables, not the library's INFO lines."""
    import logging

    logging.getLogger("fedquery").setLevel(logging.WARNING)
