"""TPC-H test data: a pooled copy plus N sites co-partitioned by orderkey.

Layout under ``<root>/tpch-sf<SF>/<tpchgen-version>/``::

    pooled/<table>.parquet        all 8 tables, unpartitioned (the DuckDB baseline)
    site1/<table>.parquet ...     orders + lineitem: one orderkey partition each;
                                  nation, region, part, supplier, partsupp, customer: replicated
    layout.json                   how the partitions were made (see below) and row counts

``orders`` and ``lineitem`` come from ``tpchgen-cli --parts N --part i``.  tpchgen splits both
tables into contiguous orderkey ranges and generates every order together with its line items,
so part *i* of ``lineitem`` holds exactly the line items of part *i* of ``orders``: the parts are
co-partitioned by orderkey (checked on every generation with DuckDB).  Should a tpchgen version
ever stop doing that, the sites are instead cut from the pooled files by ``orderkey % N`` in
DuckDB; ``layout.json`` records which of the two was used (``"partitioning"``).

Generation is idempotent and safe under concurrent callers (pytest-xdist workers): an
``fcntl`` lock serialises generators, and each generator writes into a private temporary
directory that is renamed into place atomically, so a reader never sees a half-written cache.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

TABLES = ("region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem")
PARTITIONED = {"orders": "o_orderkey", "lineitem": "l_orderkey"}
REPLICATED = tuple(t for t in TABLES if t not in PARTITIONED)
DEFAULT_SCALE_FACTOR = "0.01"
DEFAULT_SITES = 3


def tpchgen_executable() -> str:
    """``tpchgen-cli`` next to the running interpreter (virtualenv), else on PATH."""
    candidate = Path(sys.executable).parent / "tpchgen-cli"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("tpchgen-cli")
    if found is None:
        raise RuntimeError("tpchgen-cli not found: install the test extras "
                           "(pip install -e '.[test]')")
    return found


def tpchgen_version(exe: str | None = None) -> str:
    out = subprocess.run([exe or tpchgen_executable(), "--version"], check=True,
                         capture_output=True, text=True).stdout.strip()
    # "tpchgen-cli 4.0.0" -> "tpchgen-cli-4.0.0"
    return out.replace(" ", "-") or "tpchgen-cli-unknown"


def site_names(n_sites: int = DEFAULT_SITES) -> list[str]:
    return [f"site{i}" for i in range(1, n_sites + 1)]


def _run_tpchgen(exe: str, out: Path, scale_factor: str, *extra: str) -> None:
    cmd = [exe, "parquet", "-s", scale_factor, "-o", str(out), "--quiet", "--no-progress",
           *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")


def _sql_path(p: Path) -> str:
    return "'" + str(p).replace("'", "''") + "'"


def check_copartitioned(site_dirs: list[Path]) -> list[str]:
    """Problems (empty when fine) with orders/lineitem being co-partitioned by orderkey."""
    problems: list[str] = []
    con = duckdb.connect()
    try:
        for d in site_dirs:
            o, li = _sql_path(d / "orders.parquet"), _sql_path(d / "lineitem.parquet")
            (orphans,) = con.execute(
                f"SELECT count(*) FROM read_parquet({li}) "
                f"WHERE l_orderkey NOT IN (SELECT o_orderkey FROM read_parquet({o}))").fetchone()
            if orphans:
                problems.append(f"{d.name}: {orphans} lineitem rows whose order is elsewhere")
        # every orderkey in exactly one site
        orders = ", ".join(_sql_path(d / "orders.parquet") for d in site_dirs)
        (dups,) = con.execute(
            f"SELECT count(*) FROM (SELECT o_orderkey FROM read_parquet([{orders}]) "
            f"GROUP BY o_orderkey HAVING count(*) > 1)").fetchone()
        if dups:
            problems.append(f"{dups} orderkeys appear at more than one site")
    finally:
        con.close()
    return problems


def _check_union_equals_pooled(pooled: Path, site_dirs: list[Path]) -> None:
    con = duckdb.connect()
    try:
        for table in PARTITIONED:
            parts = ", ".join(_sql_path(d / f"{table}.parquet") for d in site_dirs)
            whole = _sql_path(pooled / f"{table}.parquet")
            for a, b in ((f"read_parquet([{parts}])", f"read_parquet({whole})"),
                         (f"read_parquet({whole})", f"read_parquet([{parts}])")):
                (diff,) = con.execute(
                    f"SELECT count(*) FROM (SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b})"
                ).fetchone()
                if diff:
                    raise RuntimeError(f"{table}: union of the sites differs from the pooled "
                                       f"table ({diff} rows)")
    finally:
        con.close()


def _partition_by_modulo(pooled: Path, site_dirs: list[Path]) -> None:
    con = duckdb.connect()
    try:
        n = len(site_dirs)
        for table, key in PARTITIONED.items():
            src = _sql_path(pooled / f"{table}.parquet")
            for i, d in enumerate(site_dirs):
                dst = _sql_path(d / f"{table}.parquet")
                con.execute(f"COPY (SELECT * FROM read_parquet({src}) WHERE {key} % {n} = {i} "
                            f"ORDER BY {key}) TO {dst} (FORMAT parquet)")
    finally:
        con.close()


def _generate(target: Path, exe: str, scale_factor: str, n_sites: int) -> dict:
    started = time.perf_counter()
    pooled = target / "pooled"
    _run_tpchgen(exe, pooled, scale_factor)
    sites = [target / name for name in site_names(n_sites)]
    parts_dir = target / "_parts"
    for i in range(1, n_sites + 1):
        _run_tpchgen(exe, parts_dir, scale_factor, "--parts", str(n_sites), "--part", str(i),
                     *[arg for t in PARTITIONED for arg in ("-T", t)])
    for i, d in enumerate(sites, start=1):
        d.mkdir()
        for table in PARTITIONED:
            os.replace(parts_dir / table / f"{table}.{i}.parquet", d / f"{table}.parquet")
        for table in REPLICATED:
            shutil.copyfile(pooled / f"{table}.parquet", d / f"{table}.parquet")
    shutil.rmtree(parts_dir)

    problems = check_copartitioned(sites)
    partitioning = "tpchgen --parts (contiguous orderkey ranges)"
    if problems:
        _partition_by_modulo(pooled, sites)
        still = check_copartitioned(sites)
        if still:
            raise RuntimeError(f"could not co-partition TPC-H by orderkey: {still}")
        partitioning = f"orderkey % {n_sites} in DuckDB (tpchgen parts: {problems})"
    _check_union_equals_pooled(pooled, sites)

    con = duckdb.connect()
    try:
        rows = {
            d.name: {t: con.execute(f"SELECT count(*) FROM read_parquet("
                                    f"{_sql_path(d / f'{t}.parquet')})").fetchone()[0]
                     for t in TABLES}
            for d in [pooled, *sites]
        }
    finally:
        con.close()
    return {
        "scale_factor": scale_factor,
        "tpchgen": tpchgen_version(exe),
        "sites": [d.name for d in sites],
        "partitioning": partitioning,
        "generation_seconds": round(time.perf_counter() - started, 3),
        "rows": rows,
    }


def ensure_tpch(root: Path, scale_factor: str = DEFAULT_SCALE_FACTOR,
                n_sites: int = DEFAULT_SITES) -> Path:
    """Return the cache directory for (scale factor, tpchgen version), generating it if needed."""
    exe = tpchgen_executable()
    base = Path(root) / f"tpch-sf{scale_factor}"
    final = base / tpchgen_version(exe) / f"{n_sites}-sites"
    if (final / "layout.json").is_file():
        return final
    base.mkdir(parents=True, exist_ok=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if (final / "layout.json").is_file():
                return final  # another worker finished while we waited
            # We hold the lock, so nobody else is generating: temporary directories left
            # behind by a killed run, and a directory without its manifest, are debris.
            for stale in final.parent.glob(".tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            if final.exists():
                shutil.rmtree(final)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
            try:
                layout = _generate(tmp, exe, scale_factor, n_sites)
                (tmp / "layout.json").write_text(json.dumps(layout, indent=2) + "\n")
                os.rename(tmp, final)  # atomic; fails if another process beat us to it
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                if (final / "layout.json").is_file():
                    return final
                raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return final


def load_layout(data_dir: Path) -> dict:
    return json.loads((Path(data_dir) / "layout.json").read_text())
