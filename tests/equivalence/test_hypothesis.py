"""Hypothesis-generated aggregate queries: federated == DuckDB on the pooled data.

The strategy writes queries an analyst could write against the demo schema:

* FROM one table, or ``patients p [LEFT] JOIN <other> ON <other>.patient_id = p.patient_id``;
* 0-2 group keys: categorical columns, CASE bands over numeric columns, ``year(<date>)``;
  referenced in GROUP BY by expression, by alias or by ordinal;
* 1-4 aggregates: COUNT(*), COUNT(col), COUNT(DISTINCT patient_id), SUM, AVG, MIN, MAX,
  VAR_SAMP, VAR_POP, STDDEV_SAMP, STDDEV_POP, SUM(CASE WHEN ... THEN 1 ELSE 0 END),
  AVG(CASE WHEN ... THEN x END), aggregates with FILTER (WHERE ...), and rates such as
  ``100.0 * SUM(...) / COUNT(*)``;
* an optional WHERE of 1-3 random predicates (comparisons, IN, BETWEEN, IS [NOT] NULL, dates,
  NOT) joined by AND/OR, with literals drawn from the data's own domains;
* an optional ``HAVING COUNT(*) > k``; an optional ORDER BY every group key plus LIMIT.

Variances are generated only over columns whose mean is not large against their spread (the
engine rebuilds them from count, sum and sum of squares), see ``VARIANCE_COLUMNS``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedquery.testing import assert_results_equal

ALIASES = {"patients": "p", "diagnoses": "d", "labs": "l", "treatments": "t", "outcomes": "o"}

#: column -> kind, per table (patient_id excluded: it is the privacy unit / identifier).
SCHEMA: dict[str, dict[str, str]] = {
    "patients": {"sex": "cat", "region": "cat", "smoker": "cat", "age": "int",
                 "birth_year": "int", "bmi": "float"},
    "diagnoses": {"icd10_code": "cat", "icd10_chapter": "cat", "diagnosis_date": "date"},
    "labs": {"test_name": "cat", "unit": "cat", "value": "float", "lab_date": "date"},
    "treatments": {"atc_code": "cat", "atc_group": "cat", "start_date": "date",
                   "end_date": "date"},
    "outcomes": {"followup_days": "int", "death": "int"},
}

#: Columns VAR_*/STDDEV_* may be applied to: mean/sd is small for each (no catastrophic
#: cancellation in sum-of-squares arithmetic).
VARIANCE_COLUMNS = {"age", "birth_year", "bmi", "value", "followup_days", "death"}

#: Categorical columns with too many values to be a useful group key.
HIGH_CARDINALITY = {"icd10_code", "atc_code"}

SIMPLE_AGGREGATES = ("SUM", "AVG", "MIN", "MAX")
VARIANCE_AGGREGATES = ("VAR_SAMP", "VAR_POP", "STDDEV_SAMP", "STDDEV_POP", "VARIANCE", "STDDEV")


@dataclass(frozen=True)
class Column:
    table: str
    name: str
    kind: str  # cat | int | float | date

    @property
    def ref(self) -> str:
        return f"{ALIASES[self.table]}.{self.name}"


@dataclass(frozen=True)
class Generated:
    sql: str
    ordered: bool


# ---------------------------------------------------------------------------------------------
# Domains of literals, taken from the pooled data


@pytest.fixture(scope="module")
def domains(pooled) -> dict[str, list]:
    """column -> sorted list of candidate literals (every category; quantiles of numbers/dates)."""
    out: dict[str, list] = {}
    for table, cols in SCHEMA.items():
        for name, kind in cols.items():
            if kind == "cat":
                rows = pooled.execute(
                    f'SELECT DISTINCT "{name}" FROM "{table}" WHERE "{name}" IS NOT NULL '
                    f'ORDER BY 1').fetchall()
                out[name] = [r[0] for r in rows]
            else:
                qs = [0.02, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 0.98]
                expr = ", ".join(f"quantile_disc(\"{name}\", {q})" for q in qs)
                row = pooled.execute(f'SELECT {expr} FROM "{table}"').fetchone()
                out[name] = sorted({v for v in row if v is not None})
    return out


def _lit(value) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, dt.date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, float):
        return repr(round(value, 4))
    return str(value)


# ---------------------------------------------------------------------------------------------
# The strategy


def _predicate(draw, cols: list[Column], domains: dict[str, list], depth: int = 0) -> str:
    col = draw(st.sampled_from(cols))
    dom = domains[col.name]
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return f"{col.ref} IS {draw(st.sampled_from(['NULL', 'NOT NULL']))}"
    if choice == 1 and depth == 0:
        return f"NOT ({_predicate(draw, cols, domains, depth + 1)})"
    if col.kind == "cat":
        if choice <= 5:
            op = draw(st.sampled_from(["=", "<>"]))
            return f"{col.ref} {op} {_lit(draw(st.sampled_from(dom)))}"
        vals = draw(st.lists(st.sampled_from(dom), min_size=1, max_size=3, unique=True))
        neg = draw(st.sampled_from(["", "NOT "]))
        return f"{col.ref} {neg}IN ({', '.join(_lit(v) for v in vals)})"
    if choice <= 6:
        op = draw(st.sampled_from(["<", "<=", ">", ">=", "="]))
        return f"{col.ref} {op} {_lit(draw(st.sampled_from(dom)))}"
    lo, hi = sorted(draw(st.lists(st.sampled_from(dom), min_size=2, max_size=2)))
    return f"{col.ref} BETWEEN {_lit(lo)} AND {_lit(hi)}"


def _where(draw, cols: list[Column], domains: dict[str, list]) -> str:
    preds = [_predicate(draw, cols, domains) for _ in range(draw(st.sampled_from([1, 1, 2, 3])))]
    out = preds[0]
    for p in preds[1:]:
        conj = draw(st.sampled_from(["AND", "AND", "OR"]))
        out = f"({out} {conj} {p})" if conj == "OR" else f"{out} {conj} {p}"
    return out


def _group_key(draw, cols: list[Column], domains: dict[str, list]) -> str:
    cats = [c for c in cols if c.kind == "cat" and c.name not in HIGH_CARDINALITY]
    nums = [c for c in cols if c.kind in ("int", "float")]
    dates = [c for c in cols if c.kind == "date"]
    kinds = ["cat"] * 3 * bool(cats) + ["band"] * bool(nums) + ["year"] * bool(dates)
    kind = draw(st.sampled_from(kinds))
    if kind == "cat":
        return draw(st.sampled_from(cats)).ref
    if kind == "band":
        col = draw(st.sampled_from(nums))
        a, b = sorted(draw(st.lists(st.sampled_from(domains[col.name]), min_size=2, max_size=2,
                                    unique=True)))
        return (f"CASE WHEN {col.ref} < {_lit(a)} THEN 'low' WHEN {col.ref} < {_lit(b)} "
                f"THEN 'mid' ELSE 'high' END")
    return f"year({draw(st.sampled_from(dates)).ref})"


def _aggregate(draw, cols: list[Column], unit: str, domains: dict[str, list]) -> str:
    nums = [c for c in cols if c.kind in ("int", "float")]
    var_cols = [c for c in nums if c.name in VARIANCE_COLUMNS]
    ordered_cols = [c for c in cols if c.kind in ("int", "float", "date", "cat")]
    kinds = ["count_star", "count_col", "count_distinct_unit", "sum_case", "min_max"]
    if nums:
        kinds += ["simple", "simple", "avg_case", "filter", "rate"]
    if var_cols:
        kinds += ["variance"]
    kind = draw(st.sampled_from(kinds))
    if kind == "count_star":
        return "COUNT(*)"
    if kind == "count_col":
        return f"COUNT({draw(st.sampled_from(cols)).ref})"
    if kind == "count_distinct_unit":
        return f"COUNT(DISTINCT {unit})"
    if kind == "sum_case":
        return f"SUM(CASE WHEN {_predicate(draw, cols, domains)} THEN 1 ELSE 0 END)"
    if kind == "min_max":
        return f"{draw(st.sampled_from(['MIN', 'MAX']))}({draw(st.sampled_from(ordered_cols)).ref})"
    if kind == "simple":
        col = draw(st.sampled_from(nums))
        fn = draw(st.sampled_from(SIMPLE_AGGREGATES))
        arg = draw(st.sampled_from([col.ref, col.ref, f"{col.ref} * 2 + 1", f"{col.ref} * {col.ref}"]
                                   if col.kind == "int" else [col.ref, f"{col.ref} * 2 + 1"]))
        return f"{fn}({arg})"
    if kind == "avg_case":
        col = draw(st.sampled_from(nums))
        return f"AVG(CASE WHEN {_predicate(draw, cols, domains)} THEN {col.ref} END)"
    if kind == "filter":
        col = draw(st.sampled_from(nums))
        fn = draw(st.sampled_from(("COUNT", "SUM", "AVG")))
        return f"{fn}({col.ref}) FILTER (WHERE {_predicate(draw, cols, domains)})"
    if kind == "rate":
        col = draw(st.sampled_from(nums))
        return f"100.0 * SUM({col.ref}) / COUNT(*)"
    col = draw(st.sampled_from(var_cols))
    return f"{draw(st.sampled_from(VARIANCE_AGGREGATES))}({col.ref})"


@st.composite
def aggregate_queries(draw, domains: dict[str, list]) -> Generated:
    base = draw(st.sampled_from(list(SCHEMA)))
    if base == "patients" and draw(st.booleans()):
        other = draw(st.sampled_from([t for t in SCHEMA if t != "patients"]))
        join = draw(st.sampled_from(["JOIN", "JOIN", "LEFT JOIN"]))
        tables = ["patients", other]
        from_sql = (f"patients AS p {join} {other} AS {ALIASES[other]} "
                    f"ON {ALIASES[other]}.patient_id = p.patient_id")
    else:
        tables = [base]
        from_sql = f"{base} AS {ALIASES[base]}"
    cols = [Column(t, n, k) for t in tables for n, k in SCHEMA[t].items()]
    unit = f"{ALIASES[tables[0]]}.patient_id"

    keys: list[str] = []
    for _ in range(draw(st.integers(0, 2))):
        key = _group_key(draw, cols, domains)
        if key not in keys:
            keys.append(key)
    aggs = [_aggregate(draw, cols, unit, domains) for _ in range(draw(st.integers(1, 4)))]

    select = [f"{k} AS g{i + 1}" for i, k in enumerate(keys)]
    select += [f"{a} AS a{i + 1}" for i, a in enumerate(aggs)]
    sql = f"SELECT {', '.join(select)}\nFROM {from_sql}"
    if draw(st.booleans()):
        sql += f"\nWHERE {_where(draw, cols, domains)}"
    if keys:
        style = draw(st.sampled_from(["expr", "alias", "ordinal"]))
        refs = {"expr": keys, "alias": [f"g{i + 1}" for i in range(len(keys))],
                "ordinal": [str(i + 1) for i in range(len(keys))]}[style]
        sql += f"\nGROUP BY {', '.join(refs)}"
        if draw(st.integers(0, 3)) == 0:
            sql += f"\nHAVING COUNT(*) > {draw(st.integers(0, 40))}"
    ordered = False
    if draw(st.integers(0, 2)) == 0:
        if keys:
            dirs = [draw(st.sampled_from(["", " DESC", " NULLS FIRST", " DESC NULLS LAST"]))
                    for _ in keys]
            sql += "\nORDER BY " + ", ".join(f"g{i + 1}{d}" for i, d in enumerate(dirs))
        sql += f"\nLIMIT {draw(st.sampled_from([1, 2, 3, 5, 8, 20, 0]))}"
        ordered = True
    return Generated(sql, ordered)


# ---------------------------------------------------------------------------------------------
# The property


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_federated_equals_pooled(data, domains, fed_conn, pooled, run_federated, run_pooled):
    query = data.draw(aggregate_queries(domains), label="query")
    _, pooled_rows = run_pooled(pooled, query.sql)
    _, fed_rows = run_federated(fed_conn, query.sql)
    assert_results_equal(fed_rows, pooled_rows, ordered=query.ordered,
                         context=f"generated query:\n{query.sql}\n")


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_generated_queries_run_on_pooled_duckdb(data, domains, pooled, run_pooled):
    """The generator itself only writes SQL that DuckDB accepts (independent of the engine)."""
    query = data.draw(aggregate_queries(domains), label="query")
    run_pooled(pooled, query.sql)
