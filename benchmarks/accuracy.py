"""Accuracy of differentially private answers: per-site noise vs central DP on pooled data.

    python -m benchmarks.accuracy [--runs 200] [--patients 20000] [--epsilon 1.0]

The 3-site demo data (``generate_federation_tables(3, patients, seed=42)``, ``patients`` per
site) under the demo policies (``policies/hospital_*.yaml``, laplace), and the issue's query

    SELECT sex, COUNT(*), AVG(bmi) FROM patients GROUP BY sex

at ε per site, ``runs`` times with fresh noise (the run's ε is ε − i·1e-9, a different noise
cache key each run).  Mean absolute error per cell (COUNT and AVG, F and M) against the exact
answer of DuckDB on the pooled data, next to **central DP**: the same query on the pooled
data, with the same contribution bounds (the site's own bounded fragment, run on the pooled
rows: row cap, bmi clamped to [10, 70], fixed point), the same split of ε over the partials as
``plan_noise`` makes for the federated plan, noise from OpenDP ``make_laplace`` on ``i64``
vectors, and the same post-processing (counts ≥ 0, sums within [n·lo, n·hi]).  In plain
aggregation each site adds that noise to its own partials and the coordinator sums three of
them, so the federated error of a sum is ≈ √3 (Gaussian: exactly; Laplace: about) times the
central error.

For the measurement the policies are changed, and the output says so: ``min_cell_count`` = 1
(no suppression), ``budget`` = ε 1e4 per analyst (the runs would exhaust the demo budget), and
``max_epsilon_per_query`` ≥ ε (hospital_b allows 0.5 per query).  Results also go to
``benchmarks/results/accuracy.csv``.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import time
from dataclasses import replace
from pathlib import Path

import duckdb
import opendp.prelude as dp
import pyarrow as pa

from fedquery.demo.generate import generate_federation_tables
from fedquery.plan.planner import plan_query
from fedquery.policy.load import load_policy
from fedquery.protect.noise import plan_noise
from fedquery.site.adapter import DuckDBAdapter
from fedquery.site.privacy import bounding_of
from fedquery.sql import analyze
from fedquery.testing import local_federation, pooled_connection

dp.enable_features("contrib")

ROOT = Path(__file__).resolve().parents[1]
QUERY = "SELECT sex, COUNT(*), AVG(bmi) FROM patients GROUP BY sex"
CELLS = ("F", "M")
BUDGET_EPSILON = 1e4


def expected_ratio(scale: float, sites: int = 3) -> float:
    """E|sum of ``sites`` discrete Laplace(scale)| / E|one| by exact convolution (scales above
    300 are computed at 300: the continuous limit, 1.875 for 3 sites, is reached by then)."""
    import numpy as np

    scale = min(scale, 300.0)
    k = int(40 * scale) + 10
    x = np.arange(-k, k + 1)
    q = math.exp(-1 / scale)
    pmf = (1 - q) / (1 + q) * q ** np.abs(x)
    total = pmf
    for _ in range(sites - 1):
        total = np.convolve(total, pmf)
    xs = np.arange(len(total)) - (len(total) // 2)
    return float((np.abs(xs) * total).sum() / (np.abs(x) * pmf).sum())


def demo_policies(epsilon: float) -> tuple[dict, list[str]]:
    """The demo policies, changed for the measurement; and what was changed."""
    policies, changes = {}, []
    for path in sorted((ROOT / "policies").glob("hospital_*.yaml")):
        policy = load_policy(path, resolve_secrets=False)
        noise = policy.noise
        limit = max(noise.max_epsilon_per_query or epsilon, epsilon)
        changes.append(f"{policy.site}: min_cell_count {policy.disclosure.min_cell_count} -> 1, "
                       f"budget epsilon {noise.budget_epsilon:g} -> {BUDGET_EPSILON:g}, "
                       f"max_epsilon_per_query {noise.max_epsilon_per_query:g} -> {limit:g} "
                       f"(mechanism {noise.mechanism}, delta {noise.delta:g})")
        policies[policy.site] = replace(
            policy, disclosure=replace(policy.disclosure, min_cell_count=1),
            noise=replace(noise, budget_epsilon=BUDGET_EPSILON, max_epsilon_per_query=limit))
    return policies, changes


def exact_answer(pooled: duckdb.DuckDBPyConnection) -> dict:
    return {sex: (n, avg) for sex, n, avg in pooled.execute(QUERY).fetchall()}


class Central:
    """Central DP on the pooled data with the sites' bounds, split and post-processing."""

    def __init__(self, pooled_patients: pa.Table, policy, schema: dict) -> None:
        units = {"patients": "patient_id"}
        bounding = bounding_of(policy, "central-baseline-key")
        self.plan = plan_query(analyze(QUERY, schema), units, policy.requirements(), bounding)
        adapter = DuckDBAdapter.from_arrow({"patients": pooled_patients})
        try:
            raw = adapter.execute(self.plan.fragment.sql)
        finally:
            adapter.close()
        self.keys = raw.column("g_0").to_pylist()
        self.partials = self.plan.fragment.partials
        self.exact = {p.name: [int(v) for v in raw.column(p.name).to_pylist()]
                      for p in self.partials}
        self.mechanism = policy.noise.mechanism
        self._measurements: dict[float, object] = {}

    def noise_plan(self, epsilon: float):
        return plan_noise(self.partials, self.plan.fragment.row_cap, self.mechanism, epsilon,
                          None)

    def _laplace(self, scale: float):
        if scale not in self._measurements:
            self._measurements[scale] = dp.m.make_laplace(
                dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64"), scale=scale)
        return self._measurements[scale]

    def release(self, epsilon: float) -> dict:
        """{sex: (count, avg)} of one central-DP release at ``epsilon``."""
        noisy = {}
        for p, pn in zip(self.partials, self.noise_plan(epsilon).partials):
            values = self._laplace(pn.scale)(self.exact[p.name])
            noisy[p.name] = [v / p.fixed_point for v in values]
        by_kind = {(p.kind, p.argument): p.name for p in self.partials}
        count_star = by_kind[("count", "")]
        total = next(n for (k, _), n in by_kind.items() if k == "sum")
        count_bmi = next(n for (k, a), n in by_kind.items() if k == "count" and a)
        lo, hi = next(p.arg_bounds for p in self.partials if p.kind == "sum")
        out = {}
        for i, key in enumerate(self.keys):
            n = max(noisy[count_star][i], 0.0)
            m = max(noisy[count_bmi][i], 0.0)
            s = min(max(noisy[total][i], m * lo), m * hi)
            out[key] = (n, s / m if m else None)
        return out


def run(runs: int, patients: int, epsilon: float) -> tuple[list[dict], dict]:
    sites = generate_federation_tables(3, patients, seed=42)
    policies, changes = demo_policies(epsilon)
    data = {site: {"patients": tables["patients"]} for site, tables in sites.items()}
    pooled = pooled_connection(data)
    exact = exact_answer(pooled)
    schema = {"patients": {name: typ for name, typ, *_ in
                           pooled.execute("DESCRIBE patients").fetchall()}}
    schema = {"patients": {k.lower(): v for k, v in schema["patients"].items()}}
    first_policy = policies[sorted(policies)[0]]
    central = Central(pa.concat_tables([t["patients"] for t in data.values()]), first_policy,
                      schema)

    conn = local_federation(data, policies, privacy_units={"patients": "patient_id"})
    cur = conn.cursor()
    errors = {(sex, agg, kind): [] for sex in CELLS for agg in ("count", "avg")
              for kind in ("federated", "central")}
    started = time.perf_counter()
    try:
        for i in range(runs):
            eps = epsilon - i * 1e-9
            cur.execute(f"SET epsilon = {eps!r}")
            cur.execute(QUERY)
            report = cur.fq_report
            assert not report.cached_sites and not report.suppressed_rows, report
            federated = {sex: (n, avg) for sex, n, avg in cur.fetchall()}
            for kind, answer in (("federated", federated), ("central", central.release(eps))):
                for sex in CELLS:
                    n, avg = answer[sex]
                    errors[(sex, "count", kind)].append(abs(n - exact[sex][0]))
                    errors[(sex, "avg", kind)].append(
                        math.nan if avg is None else abs(avg - exact[sex][1]))
    finally:
        conn.close()
    elapsed = time.perf_counter() - started

    split = central.noise_plan(epsilon)
    scales = {p.kind: pn.scale for p, pn in zip(central.partials, split.partials)}
    rows = []
    for sex in CELLS:
        for agg, index in (("count", 0), ("avg", 1)):
            fed, cen = errors[(sex, agg, "federated")], errors[(sex, agg, "central")]
            fed_mae, cen_mae = statistics.fmean(fed), statistics.fmean(cen)
            rows.append({
                "cell": sex, "aggregate": "COUNT(*)" if agg == "count" else "AVG(bmi)",
                "exact": exact[sex][index], "federated_mae": fed_mae,
                "federated_se": statistics.stdev(fed) / math.sqrt(len(fed)),
                "central_mae": cen_mae, "central_se": statistics.stdev(cen) / math.sqrt(len(cen)),
                "ratio": fed_mae / cen_mae,
                # AVG's error is the sum's noise over n: it follows the sum's noise
                "expected_ratio": expected_ratio(scales["count" if agg == "count" else "sum"]),
                "runs": runs, "patients_per_site": patients,
                "sites": 3, "epsilon": epsilon})
    meta = {"changes": changes, "elapsed_s": elapsed, "split": split,
            "partials": central.partials, "exact": exact}
    return rows, meta


def markdown(rows: list[dict]) -> str:
    lines = ["| cell | aggregate | exact | federated MAE (± s.e.) | central MAE (± s.e.) | "
             "ratio | expected ratio |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        exact = f"{r['exact']:,}" if isinstance(r["exact"], int) else f"{r['exact']:.4f}"
        digits = 2 if r["aggregate"].startswith("COUNT") else 5
        lines.append(f"| {r['cell']} | {r['aggregate']} | {exact} | "
                     f"{r['federated_mae']:.{digits}f} (± {r['federated_se']:.{digits}f}) | "
                     f"{r['central_mae']:.{digits}f} (± {r['central_se']:.{digits}f}) | "
                     f"{r['ratio']:.2f}× | {r['expected_ratio']:.2f}× |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--patients", type=int, default=20_000, help="patients per site")
    parser.add_argument("--epsilon", type=float, default=1.0, help="ε per query at each site")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" /
                        "accuracy.csv")
    args = parser.parse_args(argv)

    rows, meta = run(args.runs, args.patients, args.epsilon)
    print(f"Query: {QUERY}")
    print(f"3 sites x {args.patients:,} patients (demo data, seed 42), epsilon {args.epsilon:g} "
          f"per site, {args.runs} runs with fresh noise (run i asks epsilon - i*1e-9) in "
          f"{meta['elapsed_s']:.1f} s.")
    print("Policies changed for the measurement:")
    for change in meta["changes"]:
        print(f"  - {change}")
    print("Split of epsilon over the partials (plan_noise, the same at every site and for "
          "central DP):")
    for p, pn in zip(meta["partials"], meta["split"].partials):
        unit = f" (fixed point 1/{pn.fixed_point})" if pn.fixed_point > 1 else ""
        print(f"  - {p.sql} ({p.kind}): sensitivity {pn.sensitivity}, laplace scale "
              f"{pn.scale:g}{unit}")
    print("Central DP: the same bounded partials on the pooled rows, OpenDP make_laplace on "
          "i64, the same post-processing.  Exact answer: DuckDB on the pooled data.\n")
    print(markdown(rows))
    print("\nratio = federated MAE / central MAE.  Expected ratio: E|sum of 3 sites' noises| / "
          "E|one noise| for the partial's Laplace scale (exact convolution; AVG follows its "
          f"SUM's noise); for Gaussian noise it would be sqrt(3) = {math.sqrt(3):.2f}x.  With "
          f"{args.runs} runs an MAE has a standard error of ~{100 / math.sqrt(args.runs):.0f} "
          "% of itself, so ratios scatter around the expected value.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
