"""Coverage of the reported 95 % intervals, over thousands of releases with known truth.

Two levels, both with OpenDP's CSPRNG (there is no seed, so these are statistical tests):

* **protect level** — exactly what the engine uses (``plan_noise`` → ``add_noise`` per site →
  sum → ``half_width``), 4 000 releases per configuration;
* **engine level** — through ``local_federation`` (1 or 3 sites): each query is a GROUP BY over
  250 public keys, so one query releases 250 independent COUNT cells and 250 SUM cells (the
  noise of every element of a partial vector is independent).  12 queries per configuration →
  3 000 releases of COUNT and 3 000 of SUM.  To get fresh noise despite the noise cache, each
  query asks ε + i·1e-9 (a different cache key).

Tolerances: **two-sided 95 % ± 2 %** where the interval is (nearly) exact — one site at a noise
scale where the discrete distribution is close to continuous, or several sites with Gaussian
noise (variances add).  **One-sided ≥ 93 %** where it is conservative by construction: several
sites with Laplace noise (union bound over the sites at α/k each) and discrete accuracy at
small scales.  With n = 3 000–4 000 the standard error is ≤ 0.4 %, so ± 2 % is ≥ 5 standard
errors: a failure is a miscalibration, not bad luck.
"""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from fedquery.protect.noise import add_noise, half_width, plan_noise

TWO_SIDED = (0.93, 0.97)
ONE_SIDED = 0.93


def assert_coverage(hits: int, n: int, two_sided: bool, what: str) -> None:
    rate = hits / n
    print(f"{what}: coverage {rate:.4f} over {n}")  # shown with pytest -rP
    if two_sided:
        assert TWO_SIDED[0] <= rate <= TWO_SIDED[1], f"{what}: coverage {rate:.4f} over {n}"
    else:
        assert rate >= ONE_SIDED, f"{what}: coverage {rate:.4f} over {n}"


# --- protect level ------------------------------------------------------------------------------

N_PROTECT = 4000


@pytest.mark.parametrize("mechanism,sites,epsilon,cap,two_sided", [
    ("laplace", 1, 0.1, 3, True),     # count scale 30, sum scale 30 000 (fixed point)
    ("gaussian", 1, 0.5, 3, True),
    ("gaussian", 3, 0.5, 3, True),    # variances add: nearly exact
    ("gaussian", 2, 0.25, 1, True),
    ("laplace", 3, 0.1, 3, False),    # union bound over 3 sites: conservative
    ("laplace", 2, 0.5, 1, False),
    ("laplace", 1, 2.0, 1, False),    # scale 1 (count): discrete accuracy, conservative
    ("gaussian", 1, 4.0, 1, False),   # small-scale discrete Gaussian: conservative
])
@pytest.mark.parametrize("shape", ["count", "sum"])
def test_protect_level_coverage(shape, mechanism, sites, epsilon, cap, two_sided,
                                make_bounding, dp_plan):
    sql = "SELECT COUNT(*) FROM t" if shape == "count" else "SELECT SUM(x) FROM t"
    plan = dp_plan(sql, make_bounding(cap=cap), mechanism)
    delta = 1e-6 if mechanism == "gaussian" else None
    noise = plan_noise(plan.fragment.partials, plan.fragment.row_cap, mechanism, epsilon, delta)
    [pn] = noise.partials
    rng = random.Random(5)
    # per release and site, an exact partial (fixed-point integers for sums)
    exact = [[rng.randrange(0, 1000 if shape == "count" else 1_000_000)
              for _ in range(N_PROTECT)] for _ in range(sites)]
    truth = [sum(col) / pn.fixed_point for col in zip(*exact)]
    combined = [0.0] * N_PROTECT
    for site in exact:
        noisy = add_noise(pa.table({pn.name: pa.array(site, pa.int64())}), noise)[pn.name]
        combined = [c + v for c, v in zip(combined, noisy.to_pylist())]
    width = half_width([(mechanism, pn.scale)] * sites) / pn.fixed_point
    assert width > 0
    hits = sum(abs(c - t) <= width + 1e-9 for c, t in zip(combined, truth))
    assert_coverage(hits, N_PROTECT, two_sided,
                    f"{shape} {mechanism} x{sites} eps={epsilon} scale={pn.scale:g}")


# --- engine level -------------------------------------------------------------------------------

KEYS = tuple(f"k{i:03d}" for i in range(250))
UNITS_PER_KEY = 200
QUERIES = 12
EPSILON = 0.25


@pytest.fixture(scope="module")
def coverage_data():
    """Per key 200 units with one row each, x in [0, 10] with two decimals, dealt over 3
    sites; exact per-key truth (COUNT, SUM in cents)."""
    rng = random.Random(11)
    rows = [(i * 1000 + u, key, rng.randrange(0, 1001) / 100, rng.randrange(3))
            for i, key in enumerate(KEYS) for u in range(UNITS_PER_KEY)]
    truth = {}
    for _, key, x, _site in rows:
        n, cents = truth.get(key, (0, 0))
        truth[key] = (n + 1, cents + round(x * 100))
    return rows, truth


def engine_coverage(federation, make_policy, coverage_data, mechanism, sites, tmp_path):
    rows, truth = coverage_data
    tables = {}
    for s in range(sites):
        part = [r for r in rows if r[3] % sites == s]
        tables[f"s{s}"] = pa.table({
            "pid": pa.array([r[0] for r in part], pa.int64()),
            "g": pa.array([r[1] for r in part], pa.string()),
            "x": pa.array([r[2] for r in part], pa.float64()),
            "y": pa.array([0] * len(part), pa.int64())})
    policy = make_policy(mechanism, cap=1, domain=KEYS, delta=1e-6, budget=1e4)
    conn = federation(tables, policy, state_dir=tmp_path / f"{mechanism}{sites}")
    cur = conn.cursor()
    hits = {"count": 0, "sum": 0}
    n = 0
    seen = set()
    for i in range(QUERIES):
        cur.execute(f"SET epsilon = {EPSILON + i * 1e-9!r}")
        cur.execute("SELECT g, COUNT(*) AS n, SUM(x) AS s FROM t GROUP BY g")
        report = cur.fq_report
        assert report.cached_sites == () and len(report.epsilon_spent) == sites
        result = cur.fetchall()
        assert len(result) == len(KEYS) + 1 and len(report.intervals) == len(result)
        seen.add(tuple(result))
        for (key, count, total), (key_iv, count_iv, sum_iv) in zip(result, report.intervals):
            assert key_iv is None  # group keys are exact
            if key is None:
                continue  # the NULL key: truth 0, its count clamped at 0 (trivially covered)
            n += 1
            true_n, cents = truth[key]
            assert count_iv[0] <= count <= count_iv[1] and sum_iv[0] <= total <= sum_iv[1]
            hits["count"] += count_iv[0] <= true_n <= count_iv[1]
            hits["sum"] += sum_iv[0] - 1e-6 <= cents / 100 <= sum_iv[1] + 1e-6
    assert len(seen) == QUERIES  # fresh noise for every query
    return hits, n


@pytest.mark.parametrize("mechanism,sites,two_sided", [
    ("laplace", 1, True),
    ("gaussian", 1, True),
    ("gaussian", 3, True),
    ("laplace", 3, False),  # union bound over the sites
])
def test_engine_level_coverage(mechanism, sites, two_sided, federation, make_policy,
                               coverage_data, tmp_path):
    hits, n = engine_coverage(federation, make_policy, coverage_data, mechanism, sites,
                              tmp_path)
    assert n == QUERIES * len(KEYS) >= 1000
    for shape in ("count", "sum"):
        assert_coverage(hits[shape], n, two_sided, f"engine {shape} {mechanism} x{sites}")


def test_engine_level_avg_interval_is_conservative(federation, make_policy, coverage_data,
                                                   tmp_path):
    """AVG's interval is propagated from SUM's and COUNT's (interval arithmetic): it must
    cover at least as often as both of them jointly (≥ 1 − 2α by the union bound)."""
    rows, truth = coverage_data
    table = pa.table({"pid": pa.array([r[0] for r in rows], pa.int64()),
                      "g": pa.array([r[1] for r in rows], pa.string()),
                      "x": pa.array([r[2] for r in rows], pa.float64()),
                      "y": pa.array([0] * len(rows), pa.int64())})
    conn = federation({"s0": table}, make_policy("laplace", cap=1, domain=KEYS, budget=1e4))
    cur = conn.cursor()
    hits = n = 0
    for i in range(4):
        cur.execute(f"SET epsilon = {1.0 - i * 1e-9!r}")
        cur.execute("SELECT g, AVG(x) AS a FROM t GROUP BY g")
        for (key, avg), (_, iv) in zip(cur.fetchall(), cur.fq_report.intervals):
            if key is None:
                continue
            true_n, cents = truth[key]
            n += 1
            hits += iv is not None and iv[0] - 1e-9 <= cents / 100 / true_n <= iv[1] + 1e-9
    assert n == 4 * len(KEYS)
    assert_coverage(hits, n, False, "engine avg laplace x1")
