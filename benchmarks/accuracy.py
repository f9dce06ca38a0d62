"""Accuracy of differentially private answers: plain (noise per site) and secure (noise
shares) aggregation vs OpenDP central DP on the pooled data, at ε ∈ {0.1, 0.5, 1, 2}.

    python -m benchmarks.accuracy [--runs 200] [--patients 20000] [--epsilon 0.1 0.5 1 2]
                                  [--honest 3] [--plot benchmarks/accuracy.png]

The 3-site demo data (``generate_federation_tables(3, patients, seed=42)``, ``patients`` per
site) under the demo policies (``policies/hospital_*.yaml``, Laplace), and

    SELECT sex, COUNT(*) AS n, SUM(bmi) AS total_bmi, AVG(bmi) AS mean_bmi
    FROM patients GROUP BY sex

asked ``runs`` times per ε with fresh noise, in three ways:

* **plain**: every site adds discrete Laplace noise to its own partials (COUNT(*), SUM(bmi),
  COUNT(bmi), ε/3 each) and the coordinator sums three noisy vectors.  Each run misses the
  sites' noise caches through a fresh δ (``SET delta``; Laplace noise does not depend on δ);
* **secure**: the same policies with ``aggregation: secure`` and ``honest_sites`` =
  ``--honest`` (default 3: every site honest), through ``local_federation(secure=True)``
  (in-process key holder, BFV encryption, pairwise masks): every site adds a discrete
  Gaussian noise *share* sized so that the shares of ``honest_sites`` sites meet the ρ plain
  mode charges (Kairouz–Liu–Steinke), and only the sum is decrypted;
* **central**: the same bounded partials computed on the pooled rows (the site's own bounded
  fragment: row cap, bmi clamped to [10, 70], fixed point) and one OpenDP draw on the
  pooled vector — ``make_laplace`` at the same ε split (**central Laplace**, the baseline of
  the ratios), and ``make_gaussian`` at the same per-partial ρ = (ε/3)²/2 that the secure
  shares meet (**central Gaussian**, the reference secure aggregation should reach) — with
  the coordinator's post-processing (counts ≥ 0, sums within [n·lo, n·hi]).

Errors are per released cell (F and M; the empty NULL cell that the public domain of ``sex``
also releases has no relative error and is left out): mean absolute error over cells and runs
against DuckDB's exact answer on the pooled data, and mean relative error |error| / |exact|.
For the measurement the policies are changed, and the output says so: ``min_cell_count`` = 1,
``budget`` = ε 1e4 per analyst, ``max_epsilon_per_query`` ≥ the largest ε.  Writes
``accuracy.csv`` under ``--out`` and the plot of error vs ε per mode to ``--plot``.
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import opendp.prelude as dp
import pyarrow as pa

from benchmarks import common
from fedquery.demo.generate import generate_federation_tables
from fedquery.plan.planner import plan_query
from fedquery.policy.load import load_policy
from fedquery.protect.noise import calibrate_scale, plan_noise
from fedquery.protect.secure import plan_shares
from fedquery.site.adapter import DuckDBAdapter
from fedquery.site.privacy import bounding_of
from fedquery.sql import analyze
from fedquery.testing import local_federation, pooled_connection

dp.enable_features("contrib")

ROOT = common.ROOT
QUERY = ("SELECT sex, COUNT(*) AS n, SUM(bmi) AS total_bmi, AVG(bmi) AS mean_bmi "
         "FROM patients GROUP BY sex")
CELLS = ("F", "M")
AGGREGATES = ("count", "sum", "mean")
LABELS = {"count": "COUNT(*)", "sum": "SUM(bmi)", "mean": "AVG(bmi)"}
EPSILONS = (0.1, 0.5, 1.0, 2.0)
BUDGET_EPSILON = 1e4
SITES = 3
MODES = ("central_laplace", "central_gaussian", "plain", "secure")


# -- expected ratios ----------------------------------------------------------------------------


def _mae_of_pmf(pmf: np.ndarray) -> float:
    xs = np.arange(len(pmf)) - len(pmf) // 2
    return float((np.abs(xs) * pmf).sum() / pmf.sum())


def _discrete_laplace(scale: float) -> np.ndarray:
    k = int(40 * scale) + 10
    q = math.exp(-1 / scale)
    return q ** np.abs(np.arange(-k, k + 1))


def _discrete_gaussian(sigma: float) -> np.ndarray:
    k = int(12 * sigma) + 10
    x = np.arange(-k, k + 1)
    return np.exp(-x * x / (2 * sigma * sigma))


def _convolved_mae(pmf: np.ndarray, n: int) -> float:
    pmf = pmf / pmf.sum()
    total = pmf
    for _ in range(n - 1):
        total = np.convolve(total, pmf)
    return _mae_of_pmf(total)


EXACT_LIMIT = 60.0  # above this scale the ratio E|noise| / scale has converged (< 1e-4)


@functools.cache
def mae_laplace(scale: float, n: int = 1) -> float:
    """E|sum of ``n`` discrete Laplace(scale)| (exact convolution up to EXACT_LIMIT; above,
    the exact value at EXACT_LIMIT scaled: the ratio to the scale has converged)."""
    if scale > EXACT_LIMIT:
        return mae_laplace(EXACT_LIMIT, n) * scale / EXACT_LIMIT
    return _convolved_mae(_discrete_laplace(scale), n)


@functools.cache
def mae_gaussian(sigma: float, n: int = 1) -> float:
    """E|sum of ``n`` discrete Gaussians N_Z(0, σ²)| (exact up to EXACT_LIMIT, else the
    continuous σ√n·√(2/π))."""
    if sigma > EXACT_LIMIT:
        return sigma * math.sqrt(n) * math.sqrt(2 / math.pi)
    return _convolved_mae(_discrete_gaussian(sigma), n)


def expected_ratio(scale: float, sites: int = SITES) -> float:
    """Plain / central Laplace for one partial: E|sum of the sites' noises| / E|one|."""
    return mae_laplace(scale, sites) / mae_laplace(scale)


# -- policies and the central baseline --------------------------------------------------------


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


class Central:
    """Central DP on the pooled data with the sites' bounds, split and post-processing."""

    def __init__(self, pooled_patients: pa.Table, policy, schema: dict) -> None:
        bounding = bounding_of(policy, "central-baseline-key")
        self.plan = plan_query(analyze(QUERY, schema), {"patients": "patient_id"},
                               policy.requirements(), bounding)
        adapter = DuckDBAdapter.from_arrow({"patients": pooled_patients})
        try:
            raw = adapter.execute(self.plan.fragment.sql)
        finally:
            adapter.close()
        self.keys = raw.column("g_0").to_pylist()
        self.partials = self.plan.fragment.partials
        self.exact = {p.name: [int(v) for v in raw.column(p.name).to_pylist()]
                      for p in self.partials}
        by_kind = {(p.kind, p.argument): p.name for p in self.partials}
        self.count_star = by_kind[("count", "")]
        self.total = next(n for (k, _), n in by_kind.items() if k == "sum")
        self.count_bmi = next(n for (k, a), n in by_kind.items() if k == "count" and a)
        self.bounds = next(p.arg_bounds for p in self.partials if p.kind == "sum")
        secure = plan_query(analyze(QUERY, schema), {"patients": "patient_id"},
                            replace(policy.requirements(), aggregation="secure"), bounding,
                            public_domains=bounding.domains)
        self.slots = len(secure.secure_groups)  # the dimension of the secure noise vector
        self._measurements: dict = {}

    def noise_plan(self, epsilon: float):
        return plan_noise(self.partials, self.plan.fragment.row_cap, "laplace", epsilon, None)

    def share_plan(self, epsilon: float, honest: int):
        return plan_shares(self.partials, self.plan.fragment.row_cap, "laplace", epsilon,
                           common.DEMO_DELTA, honest, self.slots)

    def gaussian_sigmas(self, epsilon: float) -> dict[str, float]:
        """Central discrete Gaussian σ per partial at the ρ each secure share plan meets."""
        plain = self.noise_plan(epsilon)
        rho = plain.rho / len(plain.partials)
        return {p.name: calibrate_scale("gaussian", p.sensitivity, rho) for p in plain.partials}

    def _measurement(self, mechanism: str, scale: float):
        key = (mechanism, scale)
        if key not in self._measurements:
            domain = dp.vector_domain(dp.atom_domain(T="i64"))
            self._measurements[key] = (
                dp.m.make_laplace(domain, dp.l1_distance(T="i64"), scale=scale)
                if mechanism == "laplace" else
                dp.m.make_gaussian(domain, dp.l2_distance(T="i64"), scale=scale))
        return self._measurements[key]

    def release(self, mechanism: str, scales: dict[str, float]) -> dict:
        """{sex: (count, sum, mean)} of one central release with ``scales`` per partial."""
        noisy = {}
        for p in self.partials:
            values = self._measurement(mechanism, scales[p.name])(self.exact[p.name])
            noisy[p.name] = [v / p.fixed_point for v in values]
        lo, hi = self.bounds
        out = {}
        for i, key in enumerate(self.keys):
            n = max(noisy[self.count_star][i], 0.0)
            m = max(noisy[self.count_bmi][i], 0.0)
            s = min(max(noisy[self.total][i], m * lo), m * hi)
            out[key] = (n, s, s / m if m else None)
        return out


# -- the measurement ----------------------------------------------------------------------------


def _federated(conn, epsilon: float, runs: int, fresh_delta: bool) -> list[dict]:
    cur = conn.cursor()
    cur.execute(f"SET epsilon = {epsilon!r}")
    answers = []
    for _ in range(runs):
        if fresh_delta:
            common.cold_noise(conn)
        cur.execute(QUERY)
        report = cur.fq_report
        assert not report.cached_sites, report
        answers.append({sex: (n, s, avg) for sex, n, s, avg in cur.fetchall()
                        if sex in CELLS})
    return answers


def run(runs: int, patients: int, epsilons: tuple[float, ...], honest: int,
        log=print) -> tuple[list[dict], dict]:
    sites = generate_federation_tables(SITES, patients, seed=42)
    policies, changes = demo_policies(max(epsilons))
    secure_policies = {s: replace(p, honest_sites=honest) for s, p in policies.items()}
    data = {site: {"patients": tables["patients"]} for site, tables in sites.items()}
    pooled = pooled_connection(data)
    exact = {sex: (n, s, avg) for sex, n, s, avg in pooled.execute(
        "SELECT sex, COUNT(*), SUM(bmi), AVG(bmi) FROM patients GROUP BY sex").fetchall()
        if sex in CELLS}
    schema = {"patients": {name.lower(): typ for name, typ, *_ in
                           pooled.execute("DESCRIBE patients").fetchall()}}
    pooled.close()
    first_policy = policies[min(policies)]
    central = Central(pa.concat_tables([t["patients"] for t in data.values()]), first_policy,
                      schema)
    answers: dict[tuple[str, float], list[dict]] = {}
    elapsed = {}
    for mode, secure, pols in (("plain", False, policies), ("secure", True, secure_policies)):
        started = time.perf_counter()
        conn = local_federation(data, pols, privacy_units={"patients": "patient_id"},
                                secure=secure)
        try:
            for epsilon in epsilons:
                answers[(mode, epsilon)] = _federated(conn, epsilon, runs, not secure)
        finally:
            conn.close()
        elapsed[mode] = time.perf_counter() - started
        log(f"  {mode}: {len(epsilons) * runs} queries in {elapsed[mode]:.1f} s")
    scales = {}
    for epsilon in epsilons:
        laplace = {p.name: p.scale for p in central.noise_plan(epsilon).partials}
        gaussian = central.gaussian_sigmas(epsilon)
        shares = {p.name: p.sigma for p in central.share_plan(epsilon, honest).partials}
        scales[epsilon] = (laplace, gaussian, shares)
        answers[("central_laplace", epsilon)] = [central.release("laplace", laplace)
                                                 for _ in range(runs)]
        answers[("central_gaussian", epsilon)] = [central.release("gaussian", gaussian)
                                                  for _ in range(runs)]

    names = {"count": central.count_star, "sum": central.total, "mean": central.total}
    rows = []
    for epsilon in epsilons:
        laplace, gaussian, shares = scales[epsilon]
        for index, aggregate in enumerate(AGGREGATES):
            row = {"epsilon": epsilon, "aggregate": LABELS[aggregate], "runs": runs,
                   "patients_per_site": patients, "sites": SITES, "honest_sites": honest}
            for mode in MODES:
                absolute, relative = [], []
                for answer in answers[(mode, epsilon)]:
                    for sex in CELLS:
                        value, truth = answer[sex][index], exact[sex][index]
                        error = math.nan if value is None else abs(value - truth)
                        absolute.append(error)
                        relative.append(error / abs(truth))
                row[f"{mode}_mae"] = statistics.fmean(absolute)
                row[f"{mode}_se"] = statistics.stdev(absolute) / math.sqrt(len(absolute))
                row[f"{mode}_rel"] = statistics.fmean(relative)
            for mode in ("central_gaussian", "plain", "secure"):
                row[f"{mode}_ratio"] = row[f"{mode}_mae"] / row["central_laplace_mae"]
            row["secure_vs_gaussian"] = row["secure_mae"] / row["central_gaussian_mae"]
            # AVG's error follows its SUM's noise (the count's is relatively tiny)
            name = names[aggregate]
            fp = next(p.fixed_point for p in central.partials if p.name == name)
            b, sigma, share = laplace[name], gaussian[name], shares[name]
            row["plain_expected"] = expected_ratio(b)
            row["secure_expected"] = mae_gaussian(share, SITES) / mae_laplace(b)
            row["secure_vs_gaussian_expected"] = mae_gaussian(share, SITES) / mae_gaussian(sigma)
            row["laplace_scale"] = b / fp
            row["gaussian_sigma"] = sigma / fp
            row["share_sigma"] = share / fp
            rows.append(row)
    meta = {"changes": changes, "elapsed": elapsed, "exact": exact}
    return rows, meta


def _fmt(value: float) -> str:
    if value == 0 or math.isnan(value):
        return f"{value:g}"
    digits = max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:,.{digits}f}"


def markdown(rows: list[dict]) -> str:
    headers = ("ε", "aggregate", "central Laplace MAE (rel.)", "plain MAE (rel.)",
               "plain ratio (expected)", "secure MAE (rel.)", "secure ratio (expected)",
               "secure / central Gaussian (expected)")
    return common.markdown(headers, [(
        f"{r['epsilon']:g}", r["aggregate"],
        f"{_fmt(r['central_laplace_mae'])} ({r['central_laplace_rel']:.1e})",
        f"{_fmt(r['plain_mae'])} ({r['plain_rel']:.1e})",
        f"{r['plain_ratio']:.2f}× ({r['plain_expected']:.2f}×)",
        f"{_fmt(r['secure_mae'])} ({r['secure_rel']:.1e})",
        f"{r['secure_ratio']:.2f}× ({r['secure_expected']:.2f}×)",
        f"{r['secure_vs_gaussian']:.2f}× ({r['secure_vs_gaussian_expected']:.2f}×)")
        for r in rows])


def plot(rows: list[dict], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), constrained_layout=True)
    styles = {"central_laplace": ("central DP, Laplace (OpenDP, pooled)", "k", "o", "-"),
              "central_gaussian": ("central DP, Gaussian at the same ρ", "0.5", "s", ":"),
              "plain": ("plain: Laplace noise per site", "tab:red", "^", "-"),
              "secure": ("secure: Gaussian noise shares", "tab:blue", "v", "--")}
    for ax, aggregate in zip(axes, AGGREGATES):
        these = sorted((r for r in rows if r["aggregate"] == LABELS[aggregate]),
                       key=lambda r: r["epsilon"])
        eps = [r["epsilon"] for r in these]
        for mode, (label, color, marker, line) in styles.items():
            ax.errorbar(eps, [r[f"{mode}_mae"] for r in these],
                        yerr=[1.96 * r[f"{mode}_se"] for r in these], label=label,
                        color=color, marker=marker, linestyle=line, capsize=2)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(eps, [f"{e:g}" for e in eps])
        ax.set_xlabel("ε per query")
        ax.set_ylabel("mean absolute error per cell")
        ax.set_title(LABELS[aggregate])
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="queries per mode and ε")
    parser.add_argument("--patients", type=int, default=20_000, help="patients per site")
    parser.add_argument("--epsilon", type=float, nargs="+", default=list(EPSILONS))
    parser.add_argument("--honest", type=int, default=SITES,
                        help="honest_sites of the secure policies (noise shares sized for it)")
    parser.add_argument("--out", type=Path, default=common.DEFAULT_OUT)
    parser.add_argument("--plot", type=Path, default=None,
                        help="PNG path (default: accuracy.png under --out)")
    args = parser.parse_args(argv)
    if args.runs < 2:
        parser.error("--runs must be at least 2 (standard errors)")
    common.quiet_logs()
    print(f"accuracy: {args.runs} runs per mode and epsilon", flush=True)
    rows, meta = run(args.runs, args.patients, tuple(args.epsilon), args.honest)
    print(f"\nQuery: {QUERY}")
    print(f"{SITES} sites x {args.patients:,} patients (demo data, seed 42), {args.runs} runs "
          f"per mode and epsilon with fresh noise; secure noise shares sized for "
          f"honest_sites = {args.honest}.  Policies changed for the measurement:")
    for change in meta["changes"]:
        print(f"  - {change}")
    print("\nMAE = mean absolute error per released cell (F, M) over the runs; rel. = mean "
          "|error| / |exact|; ratio = MAE / central Laplace MAE at the same epsilon; "
          "expected = from the noise scales (exact discrete convolutions).\n")
    print(markdown(rows))
    path = common.write_csv(args.out / "accuracy.csv", rows)
    picture = plot(rows, args.plot or args.out / "accuracy.png",
                   f"{SITES} sites × {args.patients:,} patients, {args.runs} runs per point "
                   f"(error bars: 95 %), {QUERY}")
    print(f"\nwritten: {path}, {picture}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
