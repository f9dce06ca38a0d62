"""Secure aggregation through the engine: end-to-end latency and bytes, secure vs plain.

    python -m benchmarks.secure --groups 4096 --aggregates 3 --sites 10 50
                                [--rows-per-site 20000] [--runs 5] [--serial-runs 2]
                                [--modes exact dp] [--csv out.csv] [--quick]

Issue 7's acceptance measurement.  For each number of sites, ``local_federation`` builds that
many in-process sites over one synthetic table ``t(pid, g, x, y, …)`` (``g`` uniform over a
public domain of ``--groups`` values, listed in the policy; the value columns are integers)
and runs ``SELECT g, COUNT(*), SUM(x), SUM(y) FROM t GROUP BY g`` (``--aggregates`` = 1 +
the number of SUMs) twice over the same data in the same process: with the policy's
``aggregation: plain`` (the baseline) and ``aggregation: secure`` (key holder, masks, BFV,
signatures).  Two policies:

- ``exact``: no noise, minimum cell 1, no dominance rule;
- ``dp``: Gaussian noise (δ = 1e-6, ε = 1 per query, no budget limit), bounds on the value
  columns and ``max_rows_per_unit: 1``.  Plain mode adds OpenDP noise at each site; secure
  mode adds an OpenDP discrete-Gaussian noise share at each site (h = 1 honest site).  The
  plain sites' noise cache is bypassed (its lookups miss), so both modes draw fresh noise
  every run.

Timed runs alternate plain and secure (after one warm-up of each), median of ``--runs``.
Sites answer concurrently in the dispatcher's thread pool; as they all live in this process,
Python's GIL serialises much of their CPU work, so the end-to-end latency is roughly what one
machine hosting every site would see.  A second, serial pass (``--serial-runs``, a one-worker
dispatcher pool: one site at a time) times each site alone — the per-site critical path that
sites in separate processes/machines would see — and the breakdown is taken from it: timers
wrapped around the library's functions in this process (the library code is unchanged).

Bytes per site are the Arrow IPC reply (``fedquery.transport.codec.encode_reply``) as a site
sends it, plain vs secure, and the ciphertext bytes inside the secure reply.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import csv
import functools
import logging
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa

VALUE_NAMES = ("x", "y", "z", "u", "v", "w")
SEED = 7
EPSILON = 1.0
DELTA = 1e-6
X_MAX = 100  # value columns are integers in [0, X_MAX · 10^i]

# -- timers wrapped around library functions --------------------------------------------------

# (component, where the function is looked up, attribute).  Every call is timed; a call made
# while a site answers is charged to that site.
SITE_COMPONENTS = {
    "site.total": ("fedquery.site.service", "SiteService", "query"),
    "site.plan": ("fedquery.site.service", "SiteService", "_prepare"),
    "site.policy": ("fedquery.site.service", None, "decide"),
    "site.fragment": ("fedquery.site.engines.duckdb", "DuckDBAdapter", "execute"),
    "site.encode": ("fedquery.site.secure", None, "encode"),
    "site.range_check": ("fedquery.site.secure", None, "check_own_range"),
    "site.share_plan": ("fedquery.site.secure", None, "plan_shares"),
    "site.noise_shares": ("fedquery.site.secure", None, "add_shares"),
    "site.seal": ("fedquery.site.secure", None, "seal"),
    "site.mask": ("fedquery.protect.masks", None, "mask"),
    "site.mask_apply": ("fedquery.protect.masks", None, "apply"),
    "site.encrypt": ("fedquery.protect.he", None, "encrypt"),
    "site.sign": ("fedquery.protect.signing", None, "sign"),
    "site.plain_noise_plan": ("fedquery.site.privacy", None, "plan_noise"),
    "site.plain_noise": ("fedquery.site.privacy", None, "add_noise"),
    "site.plain_cells": ("fedquery.site.service", None, "protect_site_cells"),
}
OTHER_COMPONENTS = {
    "wire.site": ("fedquery.transport.inprocess", "InProcessClient", "query"),
    "coord.gather": ("fedquery.coordinator.dispatch", "Dispatcher", "gather"),
    "coord.round": ("fedquery.engine", None, "run_secure"),  # engine's own reference
    "he.add": ("fedquery.protect.he", None, "add"),  # coordinator sum or key holder re-sum
    "kh.wire": ("fedquery.keyholder.client", "InProcessKeyHolderClient", "release"),
    "kh.release": ("fedquery.keyholder.service", "KeyHolderService", "release"),
    "kh.verify": ("fedquery.protect.signing", None, "verify"),
    "kh.decrypt": ("fedquery.protect.he", "KeyHolderKeys", "decrypt"),
    "kh.decode": ("fedquery.protect.slots", None, "decode"),
    "kh.checks": ("fedquery.keyholder.service", None, "protect_secure_cells"),
    "kh.state_burn": ("fedquery.keyholder.service", "KeyHolderService", "_burn"),
    "kh.state_outcome": ("fedquery.keyholder.service", "KeyHolderService", "_outcome"),
    "kh.state_meta": ("fedquery.keyholder.service", "KeyHolderService", "_set_meta"),
    "coord.combine": ("fedquery.coordinator.combine", "Combiner", "combine"),
    "coord.release": ("fedquery.engine", None, "protect_release"),
    "coord.post": ("fedquery.coordinator.combine", "Combiner", "post_process"),
}


class Recorder:
    """Collects (component, site, inclusive s, exclusive s) of every timed call while
    ``active``; exclusive time leaves out the timed calls made inside it."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str | None, float, float]] = []
        self.replies: list = []
        self.active = False
        self.keep_replies = False
        self._local = threading.local()

    def take(self) -> list[tuple[str, str | None, float, float]]:
        events, self.events = self.events, []
        return events


def _timed(recorder: Recorder, component: str, fn):
    """``fn`` wrapped: its wall time is recorded; site entry points set the current site."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not recorder.active:
            return fn(*args, **kwargs)
        local = recorder._local
        previous_site = getattr(local, "site", None)
        previous_kh = getattr(local, "key_holder", False)
        stack = local.__dict__.setdefault("stack", [])
        name = component
        if component == "site.total":
            local.site = args[0].name
        elif component == "kh.release":
            local.key_holder = True
        elif component == "he.add":
            name = "kh.resum" if previous_kh else "coord.sum"
        stack.append(0.0)
        started = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - started
            inner = stack.pop()
            if stack:
                stack[-1] += elapsed
            local.site, local.key_holder = previous_site, previous_kh
        site = args[0].name if component in ("site.total", "wire.site") else previous_site
        recorder.events.append((name, site, elapsed, elapsed - inner))
        if component == "wire.site" and recorder.keep_replies:
            recorder.replies.append(result)
        return result

    return wrapper


@contextlib.contextmanager
def instrumented(recorder: Recorder):
    """Wrap the library functions of :data:`SITE_COMPONENTS` and :data:`OTHER_COMPONENTS` with
    timers for the duration of the block (restored afterwards)."""
    import importlib

    restore = []
    try:
        for component, (module_name, owner_name, attr) in {**SITE_COMPONENTS,
                                                           **OTHER_COMPONENTS}.items():
            module = importlib.import_module(module_name)
            owner = getattr(module, owner_name) if owner_name else module
            had_own = attr in vars(owner)
            original = vars(owner)[attr] if had_own else getattr(owner, attr)
            if isinstance(original, property):
                replacement = property(_timed(recorder, component, original.fget))
            else:
                replacement = _timed(recorder, component, original)
            setattr(owner, attr, replacement)
            restore.append((owner, attr, original, had_own))
        # Every run must draw fresh noise: a plain site's noise cache (an equal query gets
        # the cached noisy answer) always misses, so every run does a new query's work (its
        # store then keeps the first answer); the calibration caches (keyed by ε) stay warm,
        # as at a long-running site.
        from fedquery.policy.ledger import BudgetLedger
        had_own = "cache_get" in vars(BudgetLedger)
        restore.append((BudgetLedger, "cache_get", vars(BudgetLedger)["cache_get"], had_own))
        BudgetLedger.cache_get = lambda self, key: None
        yield recorder
    finally:
        for owner, attr, original, had_own in reversed(restore):
            if had_own:
                setattr(owner, attr, original)
            else:
                delattr(owner, attr)


# -- the federation ---------------------------------------------------------------------------

def group_keys(groups: int) -> tuple[str, ...]:
    width = len(str(max(groups - 1, 0)))
    return tuple(f"g{i:0{width}d}" for i in range(groups))


def value_columns(aggregates: int) -> list[str]:
    count = aggregates - 1
    return [VALUE_NAMES[i] if i < len(VALUE_NAMES) else f"v{i}" for i in range(count)]


def query_sql(aggregates: int) -> str:
    sums = "".join(f", SUM({c})" for c in value_columns(aggregates))
    return f"SELECT g, COUNT(*){sums} FROM t GROUP BY g"


def make_sites(n_sites: int, groups: int, aggregates: int, rows: int) -> dict:
    rng = np.random.default_rng(SEED)
    keys = np.array(group_keys(groups))
    values = value_columns(aggregates)
    sites = {}
    for s in range(n_sites):
        columns = {"pid": pa.array(np.arange(s * rows, (s + 1) * rows, dtype=np.int64)),
                   "g": pa.array(keys[rng.integers(0, groups, rows)])}
        for i, name in enumerate(values):
            columns[name] = pa.array(rng.integers(0, X_MAX * 10 ** i + 1, rows,
                                                  dtype=np.int64))
        sites[f"site_{s:03d}"] = {"t": pa.table(columns)}
    return sites


def make_policy(mode: str, groups: int, aggregates: int):
    from fedquery.policy.model import (
        ColumnPolicy,
        Disclosure,
        Noise,
        Policy,
        TablePolicy,
    )

    dp = mode == "dp"
    columns = {"pid": ColumnPolicy(role="identifier"),
               "g": ColumnPolicy(domain=group_keys(groups))}
    for i, name in enumerate(value_columns(aggregates)):
        columns[name] = ColumnPolicy(bounds=(0, X_MAX * 10 ** i) if dp else None)
    return Policy(
        name=f"bench-{mode}", disclosure=Disclosure(min_cell_count=1, dominance=None),
        noise=Noise(mechanism="gaussian", max_epsilon_per_query=None, delta=DELTA,
                    budget_epsilon=None) if dp else Noise(),
        tables={"t": TablePolicy(privacy_unit="pid", max_rows_per_unit=1 if dp else None,
                                 columns=columns)})


class _OneAtATime:
    """A dispatcher pool that runs each site's call to completion before the next starts."""

    def __init__(self) -> None:
        self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-serial")

    def submit(self, fn, *args):
        return self._pool.submit(fn, *args)

    def shutdown(self, **kwargs) -> None:
        self._pool.shutdown(**kwargs)


# -- measuring --------------------------------------------------------------------------------

def _settings(mode: str):
    from fedquery.ir import Settings

    return Settings((("epsilon", EPSILON),)) if mode == "dp" else Settings()


def _sorted_rows(table: pa.Table) -> list[tuple]:
    return sorted((tuple(row.values()) for row in table.to_pylist()), key=repr)


def _per_run(events, exclusive: bool = False) -> tuple[dict, dict]:
    """(component → seconds for this run, summed over sites), (component → {site: seconds});
    inclusive times, or ``exclusive`` of the timed calls nested inside."""
    totals: dict[str, float] = defaultdict(float)
    per_site: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for name, site, inclusive, own in events:
        seconds = own if exclusive else inclusive
        totals[name] += seconds
        if site is not None:
            per_site[name][site] += seconds
    return totals, per_site


def _median(values) -> float:
    values = list(values)
    return statistics.median(values) if values else 0.0


def measure(sites: dict, mode: str, groups: int, aggregates: int, runs: int,
            serial_runs: int, recorder: Recorder, state: Path, *, warmup: bool = True,
            log=print) -> dict:
    """Plain and secure over the same ``sites``: medians and the secure breakdown."""
    from fedquery.testing import local_federation
    from fedquery.transport import codec

    sql = query_sql(aggregates)
    policy = make_policy(mode, groups, aggregates)
    n_sites = len(sites)
    conns = {
        "plain": local_federation(sites, policy=policy, privacy_units={"t": "pid"},
                                  state_dir=state / f"{mode}-{n_sites}-plain"),
        "secure": local_federation(sites, policy=policy, privacy_units={"t": "pid"},
                                   secure=True, state_dir=state / f"{mode}-{n_sites}-secure")}
    engines = {k: c.engine for k, c in conns.items()}
    rows: dict[str, int] = {}
    answers: dict[str, pa.Table] = {}

    def once(kind: str) -> tuple[float, list]:
        recorder.take()
        recorder.active = True
        started = time.perf_counter()
        try:
            release = engines[kind].execute(sql, analyst="bench", settings=_settings(mode))
        finally:
            elapsed = time.perf_counter() - started
            recorder.active = False
        rows[kind] = release.table.num_rows
        answers[kind] = release.table
        return elapsed, recorder.take()

    try:
        # warm-up (plans cached, public contexts fetched), keeping one set of replies to size;
        # without a warm-up (--quick) the replies of the first timed run are sized instead
        concurrent_ms: dict[str, list[float]] = {"plain": [], "secure": []}
        concurrent_events: dict[str, list] = {"plain": [], "secure": []}
        for kind in ("plain", "secure"):
            recorder.keep_replies, recorder.replies = True, []
            elapsed, events = once(kind)
            if not warmup:
                concurrent_ms[kind].append(elapsed * 1000)
                concurrent_events[kind].append(events)
            replies, recorder.keep_replies, recorder.replies = recorder.replies, False, []
            rows[f"{kind}_bytes"] = _median(len(codec.encode_reply(r)) for r in replies)
            if kind == "secure":
                rows["ciphertext_bytes"] = _median(
                    sum(len(c) for c in r.partials.column("ciphertext").to_pylist())
                    for r in replies)
                rows["ciphertexts"] = replies[0].partials.num_rows
                layout = dict(replies[0].meta)["secure"]["layout"]
                rows["slots"] = len(layout["groups"]) * len(layout["columns"])
                rows["profile"] = layout["profile"]
        if mode == "exact" and _sorted_rows(answers["plain"]) != _sorted_rows(answers["secure"]):
            raise RuntimeError("secure and plain answers differ in exact mode")

        for i in range(runs - (0 if warmup else 1)):
            for kind in (("plain", "secure") if i % 2 == 0 else ("secure", "plain")):
                elapsed, events = once(kind)
                concurrent_ms[kind].append(elapsed * 1000)
                concurrent_events[kind].append(events)
            log(f"  {n_sites} sites, {mode}: run {len(concurrent_ms['plain'])}/{runs}: plain "
                f"{concurrent_ms['plain'][-1]:.0f} ms, secure {concurrent_ms['secure'][-1]:.0f} ms")

        serial_ms: dict[str, list[float]] = {"plain": [], "secure": []}
        serial_events: dict[str, list] = {"plain": [], "secure": []}
        pools = {}
        for kind, engine in engines.items():
            pools[kind] = engine._dispatcher._pool
            engine._dispatcher._pool = _OneAtATime()
        try:
            for i in range(serial_runs):
                for kind in ("plain", "secure"):
                    elapsed, events = once(kind)
                    serial_ms[kind].append(elapsed * 1000)
                    serial_events[kind].append(events)
                log(f"  {n_sites} sites, {mode}: serial run {i + 1}/{serial_runs}: plain "
                    f"{serial_ms['plain'][-1]:.0f} ms, secure {serial_ms['secure'][-1]:.0f} ms")
        finally:
            for kind, engine in engines.items():
                engine._dispatcher._pool.shutdown(wait=True)
                engine._dispatcher._pool = pools[kind]
    finally:
        for conn in conns.values():
            conn.close()

    def site_median(events_by_run, component, exclusive=False) -> float:
        """Median over runs × sites of one site's time in ``component`` (ms)."""
        values = []
        for events in events_by_run:
            _, per_site = _per_run(events, exclusive)
            values += list(per_site.get(component, {}).values())
        return _median(values) * 1000

    def run_median(events_by_run, component) -> float:
        """Median over runs of the run's total time in ``component`` (ms)."""
        return _median(_per_run(events)[0].get(component, 0.0) for events in events_by_run) \
            * 1000

    def estimated_parallel(events_by_run, total_ms) -> float:
        """Serial end-to-end minus the sites' sequential time plus the slowest site: the
        latency if every site had its own machine (transport excluded)."""
        out = []
        for events, total in zip(events_by_run, total_ms):
            _, per_site = _per_run(events)
            wire = per_site.get("wire.site", {})
            out.append(total - 1000 * sum(wire.values()) + 1000 * max(wire.values()))
        return _median(out)

    result = {
        "sites": n_sites, "mode": mode, "groups": groups, "aggregates": aggregates,
        "rows_out_plain": rows["plain"], "rows_out_secure": rows["secure"],
        "profile": rows["profile"], "slots": rows["slots"], "ciphertexts": rows["ciphertexts"],
        "plain_reply_bytes": rows["plain_bytes"], "secure_reply_bytes": rows["secure_bytes"],
        "ciphertext_bytes": rows["ciphertext_bytes"],
        "plain_ms": _median(concurrent_ms["plain"]),
        "secure_ms": _median(concurrent_ms["secure"]),
        "plain_serial_ms": _median(serial_ms["plain"]),
        "secure_serial_ms": _median(serial_ms["secure"]),
        "plain_parallel_est_ms": estimated_parallel(serial_events["plain"], serial_ms["plain"]),
        "secure_parallel_est_ms": estimated_parallel(serial_events["secure"],
                                                     serial_ms["secure"]),
        "plain_site_ms": site_median(serial_events["plain"], "site.total"),
        "secure_site_ms": site_median(serial_events["secure"], "site.total"),
        "secure_site_concurrent_ms": site_median(concurrent_events["secure"], "site.total"),
        "plain_site_concurrent_ms": site_median(concurrent_events["plain"], "site.total"),
    }
    for component in SITE_COMPONENTS:
        if component != "site.total":
            result[f"secure_{component}_ms"] = site_median(serial_events["secure"], component)
            result[f"plain_{component}_ms"] = site_median(serial_events["plain"], component)
    for component in ("coord.sum", "kh.resum", "kh.wire", "kh.release", "kh.verify",
                      "kh.decrypt", "kh.decode", "kh.checks", "kh.state_burn",
                      "kh.state_outcome", "kh.state_meta", "coord.gather", "coord.round",
                      "coord.release", "coord.post"):
        result[f"secure_{component}_ms"] = run_median(concurrent_events["secure"], component)
    for component in ("coord.gather", "coord.combine", "coord.release", "coord.post"):
        result[f"plain_{component}_ms"] = run_median(concurrent_events["plain"], component)
    result["secure_kh.state_ms"] = sum(result[f"secure_kh.state_{k}_ms"]
                                       for k in ("burn", "outcome", "meta"))
    # the round outside the sites, the sum and the key holder: the public context loaded per
    # query, each reply's contribution and layout parsed (JSON) and digested
    result["secure_coord.other_ms"] = _median(
        _per_run(e)[0].get("coord.round", 0.0) - sum(
            _per_run(e)[0].get(c, 0.0) for c in ("coord.gather", "coord.sum", "kh.wire"))
        for e in concurrent_events["secure"]) * 1000
    # the policy check
    result["secure_site.policy_excl_ms"] = site_median(serial_events["secure"], "site.policy",
                                                       exclusive=True)
    # a site's time outside the components shown (planning — cached —, layout, range check,
    # the contribution's layout digest, requirements JSON, audit log, ledger)
    shown = ("fragment", "encode", "share_plan", "noise_shares", "mask",
             "mask_apply", "encrypt", "sign")
    others, codecs = [], []
    for events in serial_events["secure"]:
        per_site = _per_run(events)[1]
        policy = _per_run(events, exclusive=True)[1].get("site.policy", {})
        for site, total in per_site["site.total"].items():
            others.append(total - policy.get(site, 0.0) - sum(
                per_site.get(f"site.{c}", {}).get(site, 0.0) for c in shown))
            codecs.append(per_site["wire.site"][site] - total)
    result["secure_site.other_ms"] = _median(others) * 1000
    # the in-process transport: the site's reply through the wire codec, encoded and decoded
    result["secure_site.codec_ms"] = _median(codecs) * 1000
    return result


# -- output -----------------------------------------------------------------------------------

def _ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def tables(results: list[dict], args) -> str:
    lines = []
    add = lines.append
    add(f"`{query_sql(args.aggregates)}`: groups (+1 NULL key) × "
        f"{args.aggregates} aggregates, rows per site as given; exact = no "
        f"noise, min cell 1, no dominance; dp = Gaussian, ε = {EPSILON:g}, δ = {DELTA:g}, "
        "bounds, max_rows_per_unit 1.  Median of "
        f"{args.runs} concurrent runs (serial pass: median of {args.serial_runs}).")
    add("")
    add("| groups | sites | rows/site | noise | plain ms | secure ms | ratio | plain reply B/site "
        "| secure reply B/site | of which ciphertext | bytes ratio | secure est. ms, own "
        "machines | plain est. ms, own machines |")
    add("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        add(f"| {r['groups']:,} | {r['sites']} | {r['rows_per_site']:,} | {r['mode']} | "
            f"{_ms(r['plain_ms'])} | {_ms(r['secure_ms'])} | "
            f"{r['secure_ms'] / r['plain_ms']:.2f}× | {r['plain_reply_bytes']:,.0f} | "
            f"{r['secure_reply_bytes']:,.0f} | {r['ciphertext_bytes']:,.0f} "
            f"({r['ciphertexts']} × {r['profile']}, {r['slots']:,} slots) | "
            f"{r['secure_reply_bytes'] / r['plain_reply_bytes']:.1f}× | "
            f"{_ms(r['secure_parallel_est_ms'])} | {_ms(r['plain_parallel_est_ms'])} |")
    add("")
    add("Secure mode, one site alone (serial pass; median over sites × runs, ms): the "
        "critical path a site in its own process sees.")
    add("")
    add("| groups | sites | rows/site | noise | site total | concurrent (GIL) | policy check "
        "| fragment | encode | share plan | noise shares | mask | mask apply | encrypt | sign "
        "| other | reply codec | plain site total |")
    add("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        def s(c, r=r):
            return _ms(r[f"secure_site.{c}_ms"])
        add(f"| {r['groups']:,} | {r['sites']} | {r['rows_per_site']:,} | {r['mode']} | "
            f"{_ms(r['secure_site_ms'])} | "
            f"{_ms(r['secure_site_concurrent_ms'])} | {s('policy_excl')} | "
            f"{s('fragment')} | {s('encode')} | {s('share_plan')} | "
            f"{s('noise_shares')} | {s('mask')} | {s('mask_apply')} | {s('encrypt')} | "
            f"{s('sign')} | {s('other')} | {s('codec')} | {_ms(r['plain_site_ms'])} |")
    add("")
    add("Coordinator and key holder, secure mode (per query, median of the concurrent runs, "
        "ms):")
    add("")
    add("| groups | sites | rows/site | noise | sites phase (gather) | coordinator sum (he.add) | key holder "
        "release | verify | re-sum | decrypt | decode | cell checks | state (SQLite) "
        "| key holder incl. codec | coordinator other | release + post-process |")
    add("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        def k(c, r=r):
            return _ms(r[f"secure_{c}_ms"])
        add(f"| {r['groups']:,} | {r['sites']} | {r['rows_per_site']:,} | {r['mode']} | "
            f"{k('coord.gather')} | {k('coord.sum')} | "
            f"{k('kh.release')} | {k('kh.verify')} | {k('kh.resum')} | {k('kh.decrypt')} | "
            f"{k('kh.decode')} | {k('kh.checks')} | {k('kh.state')} | {k('kh.wire')} | "
            f"{k('coord.other')} | "
            f"{_ms(r['secure_coord.release_ms'] + r['secure_coord.post_ms'])} |")
    add("")
    add("All sites run in one Python process, answering concurrently in the dispatcher's "
        "thread pool: the GIL serialises much of their CPU work (and the machine has few "
        "cores), so the end-to-end latencies are those of one machine hosting every site.  "
        "'site total' is one site measured alone (the critical path with sites in separate "
        "processes); 'concurrent (GIL)' is one site's wall time in the concurrent runs; "
        "'own machines' estimates the latency with every site on its own machine (serial "
        "end-to-end − the sites' sequential time incl. reply codec + the slowest site).  "
        "'reply codec': the in-process transport encoding and decoding the reply (Arrow IPC); "
        "'key holder incl. codec': the release request and reply through the key holder's "
        "wire codec; 'release + post-process': the coordinator's noise summary (DP intervals) "
        "and final SQL.")
    return "\n".join(lines)


def write_csv(path: str, results: list[dict]) -> None:
    fields = list(results[0])
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for r in results:
            writer.writerow({k: (round(v, 3) if isinstance(v, float) else v)
                             for k, v in r.items()})


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 64, 1024, 4096])
    parser.add_argument("--aggregates", type=int, default=3,
                        help="COUNT(*) and aggregates − 1 SUMs")
    parser.add_argument("--sites", type=int, nargs="+", default=[3, 10, 50])
    parser.add_argument("--rows-per-site", type=int, default=20_000)
    parser.add_argument("--big", type=int, default=10_000_000,
                        help="also this many rows in all over 3 sites, at the most groups "
                             "(0: not)")
    parser.add_argument("--runs", type=int, default=5, help="timed concurrent runs (median)")
    parser.add_argument("--serial-runs", type=int, default=2,
                        help="timed runs with one site at a time (the breakdown)")
    parser.add_argument("--modes", nargs="+", choices=("exact", "dp"), default=["exact", "dp"])
    parser.add_argument("--csv", help="write every measurement to this CSV file")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, one run, no warm-up (a smoke test: 3 sites × 64 "
                        "groups × 500 rows)")
    parser.add_argument("--verbose", action="store_true", help="progress on stderr")
    args = parser.parse_args(argv)
    if args.quick:
        args.groups, args.sites, args.rows_per_site = [64], [3], 500
        args.runs, args.serial_runs, args.big = 1, 1, 0
    if args.aggregates < 1 or min(args.groups) < 1 or min(args.sites) < 2 or args.runs < 1 \
            or args.serial_runs < 1:
        parser.error("need --aggregates ≥ 1, --groups ≥ 1, --sites ≥ 2, --runs ≥ 1 and "
                     "--serial-runs ≥ 1")
    import sys

    def progress(message: str) -> None:
        if args.verbose:
            print(message, file=sys.stderr, flush=True)

    # the key holder logs every key rotation and release; keep the table readable
    logger = logging.getLogger("fedquery")
    level = logger.level
    logger.setLevel(logging.ERROR)
    recorder = Recorder()
    results = []
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(logger.setLevel, level)
        tmp = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="fedquery-secure-bench-"))
        cleanup.enter_context(instrumented(recorder))
        points = [(g, n, args.rows_per_site) for g in args.groups for n in args.sites]
        if args.big:
            points.append((max(args.groups), 3, -(-args.big // 3)))
        for groups, n_sites, per_site in points:
            sites = make_sites(n_sites, groups, args.aggregates, per_site)
            for mode in args.modes:
                progress(f"{groups} groups, {n_sites} sites x {per_site:,} rows, {mode} …")
                result = measure(sites, mode, groups, args.aggregates, args.runs,
                                 args.serial_runs, recorder, Path(tmp),
                                 warmup=not args.quick, log=progress)
                results.append({**result, "rows_per_site": per_site})
            del sites

    print(tables(results, args))
    if args.csv:
        write_csv(args.csv, results)
    return results


if __name__ == "__main__":
    main()
