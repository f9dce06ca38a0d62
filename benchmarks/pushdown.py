"""PostgreSQL site: the TPC-H Q1 fragment pushed down vs pulling lineitem into DuckDB.

    python -m benchmarks.pushdown [--sf 0.1] [--repeat 5] [--dsn postgresql://...]

Generates TPC-H ``lineitem`` at scale factor ``--sf`` with tpchgen-cli, loads it into a fresh
schema of the PostgreSQL server (``--dsn``, default ``$FEDQUERY_TEST_PG_DSN`` or
``postgresql://postgres@127.0.0.1:5432/test``; the schema is dropped at the end) and times, as
a site would run it:

* **pushdown**: the Q1 fragment rendered for PostgreSQL and run inside it; only the 4 groups'
  partials come back (``PostgresAdapter.execute``, Arrow through ADBC);
* **pull, then aggregate in DuckDB**: the rows Q1 needs (its 7 columns, its WHERE applied in
  PostgreSQL — the best case for pulling) or all of ``lineitem``, fetched as Arrow and
  aggregated by the same fragment in DuckDB at the site;

each through both candidate drivers — ADBC's PostgreSQL driver (libpq, binary COPY straight
into Arrow) and psycopg 3 (binary COPY decoded to Python values, then Arrow).  Times are
measured on direct connections; one more run of each goes through a loopback relay that
counts the bytes the server sends ("bytes from PostgreSQL": everything that left the database
for that run, protocol included).  Prints a Markdown table: median of ``--repeat`` runs after
a warm-up, ratio to the ADBC pushdown.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from fedquery.plan.prepare import Preparer
from fedquery.site.engines.postgres import (
    PgSource,
    PostgresAdapter,
    _conform,
    driver_version,
    load_tables,
)

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
Q1 = (Path(__file__).resolve().parents[1] / "tests" / "tpch" / "queries" / "q01.sql")
Q1_COLUMNS = ("l_returnflag", "l_linestatus", "l_quantity", "l_extendedprice", "l_discount",
              "l_tax", "l_shipdate")
Q1_WHERE = "l_shipdate <= DATE '1998-12-01' - INTERVAL '90 days'"


class CountingRelay:
    """127.0.0.1:<port> → the server, counting the bytes the server sends (loopback only)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.from_server = 0
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True),
                             daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                if count:
                    with self.lock:
                        self.from_server += len(data)
                dst.sendall(data)
        except OSError:
            pass

    def counted(self) -> int:
        time.sleep(0.05)  # let the pump threads finish forwarding
        with self.lock:
            return self.from_server

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            for s in self.sockets:
                s.close()


def _via(dsn: str, port: int) -> str:
    split = urllib.parse.urlsplit(dsn)
    auth = split.netloc.rsplit("@", 1)[0] + "@" if "@" in split.netloc else ""
    return urllib.parse.urlunsplit(split._replace(netloc=f"{auth}127.0.0.1:{port}"))


def _lineitem(sf: str, directory: Path) -> pa.Table:
    exe = Path(sys.executable).parent / "tpchgen-cli"
    subprocess.run([str(exe) if exe.exists() else "tpchgen-cli", "parquet", "-s", sf,
                    "-o", str(directory), "--tables", "lineitem", "--quiet", "--no-progress"],
                   check=True)
    return pq.read_table(directory / "lineitem.parquet")


def _q1_fragment(table: pa.Table) -> str:
    con = duckdb.connect()
    con.register("lineitem", table.slice(0, 0))
    schema = {"lineitem": {r[0]: r[1] for r in con.execute("DESCRIBE lineitem").fetchall()}}
    con.close()
    return Preparer(schema).prepare(Q1.read_text()).plan.fragment.sql


def _aggregate_in_duckdb(rows: pa.Table, fragment: str, schema: pa.Schema) -> pa.Table:
    """The pulled rows, typed as the site's catalog says (NUMERIC arrives as text through
    ADBC), aggregated by the fragment in an in-memory DuckDB."""
    rows = _conform(rows, pa.schema([schema.field(n) for n in rows.column_names]))
    con = duckdb.connect()
    con.register("lineitem", rows)
    out = con.sql(fragment).to_arrow_table()
    con.close()
    return out


# -- psycopg 3: binary COPY decoded to Python values, then Arrow ---------------------------------

def _psycopg_fetch(conn, sql: str) -> pa.Table:
    with conn.cursor() as cur:
        cur.execute(f"SELECT * FROM ({sql}) AS q LIMIT 0")
        names = [d.name for d in cur.description]
        oids = [d.type_code for d in cur.description]
        columns: list[list] = [[] for _ in names]
        with cur.copy(f"COPY ({sql}) TO STDOUT (FORMAT BINARY)") as copy:
            copy.set_types(oids)
            for row in copy.rows():
                for column, value in zip(columns, row):
                    column.append(value)
    conn.rollback()
    return pa.table(dict(zip(names, columns)))


def _median_ms(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _cases(adapter: PostgresAdapter, pconn, fragment: str, types: pa.Schema, schema: str):
    """(method, driver, run) for one adapter (and psycopg connection, if any)."""
    rendered = adapter.render(fragment)
    qualified = f'"{schema}"."lineitem"'
    needed = f"SELECT {', '.join(Q1_COLUMNS)} FROM {qualified} WHERE {Q1_WHERE}"
    everything = f"SELECT * FROM {qualified}"
    push, pull, pull_all = ("pushdown: Q1 fragment in PostgreSQL",
                            "pull Q1's columns and rows, aggregate in DuckDB",
                            "pull all of lineitem, aggregate in DuckDB")
    cases = [
        (push, "ADBC", lambda: adapter.execute(fragment)),
        (pull, "ADBC", lambda: _aggregate_in_duckdb(adapter._fetch(needed), fragment, types)),
        (pull_all, "ADBC",
         lambda: _aggregate_in_duckdb(adapter._fetch(everything), fragment, types)),
    ]
    if pconn is not None:
        cases += [
            (push, "psycopg 3", lambda: _psycopg_fetch(pconn, rendered)),
            (pull, "psycopg 3",
             lambda: _aggregate_in_duckdb(_psycopg_fetch(pconn, needed), fragment, types)),
            (pull_all, "psycopg 3",
             lambda: _aggregate_in_duckdb(_psycopg_fetch(pconn, everything), fragment, types)),
        ]
    return cases


def run(sf: str, repeat: int, dsn: str) -> tuple[list[dict], dict]:
    """Times on direct connections; bytes counted on one more run through the relay (a
    Python relay would slow the large transfers down and flatter the pushdown)."""
    schema = f"fq_bench_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        lineitem = _lineitem(sf, Path(tmp))
    started = time.perf_counter()
    load_tables(dsn, schema, {"lineitem": lineitem})
    notes = {"rows": lineitem.num_rows, "load_s": time.perf_counter() - started,
             "adbc": driver_version(), "psycopg": None}
    try:
        import psycopg
        notes["psycopg"] = psycopg.__version__
    except ImportError:
        psycopg = None
    split = urllib.parse.urlsplit(dsn)
    relay = CountingRelay((split.hostname or "127.0.0.1", split.port or 5432))
    fragment, types = _q1_fragment(lineitem), lineitem.schema
    opened = []

    def site(conninfo: str):
        adapter = PostgresAdapter.connect(PgSource(conninfo, schema, "--dsn",
                                                   statement_timeout_s=600), ("lineitem",),
                                          site="bench")
        pconn = (psycopg.connect(conninfo, options="-c default_transaction_read_only=on")
                 if psycopg is not None else None)
        opened.extend([adapter, pconn])
        return _cases(adapter, pconn, fragment, types, schema)

    results = []
    try:
        direct, relayed = site(dsn), site(_via(dsn, relay.port))
        baseline = None
        for (method, driver, fn), (_, _, counted) in zip(direct, relayed):
            ms = _median_ms(fn, repeat)
            before = relay.counted()
            counted()
            sent = relay.counted() - before
            baseline = baseline or ms
            results.append({"method": method, "driver": driver, "ms": ms,
                            "ratio": ms / baseline, "bytes": sent})
    finally:
        for thing in opened:
            if thing is not None:
                thing.close()
        relay.close()
        from adbc_driver_postgresql import dbapi
        with dbapi.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return results, notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sf", default="0.1", help="TPC-H scale factor (default 0.1)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dsn", default=os.environ.get("FEDQUERY_TEST_PG_DSN", DEFAULT_DSN),
                        help="a postgresql:// URI of a role that may create a schema")
    args = parser.parse_args()
    logging.getLogger("fedquery").setLevel(logging.ERROR)  # the bench role may write: known
    rows, notes = run(args.sf, args.repeat, args.dsn)
    print(f"TPC-H SF {args.sf}: {notes['rows']:,} lineitem rows (loaded in "
          f"{notes['load_s']:.1f} s); ADBC PostgreSQL driver {notes['adbc']}, psycopg "
          f"{notes['psycopg'] or 'not installed'}; median of {args.repeat}\n")
    print("| method | driver | median ms | ratio | bytes from PostgreSQL |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['driver']} | {r['ms']:.1f} | {r['ratio']:.1f}× | "
              f"{r['bytes']:,} |")


if __name__ == "__main__":
    main()
