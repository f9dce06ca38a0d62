"""The equivalence corpus: each query in corpus.sql, federated == DuckDB on the pooled data.

corpus.sql holds one query per ``-- name: <id> ; ordered: true|false`` header.  For each query
three properties are checked separately, so that a failure says which one broke:

* values: same rows (integers exact, floats within 1e-9 relative, NULLs equal), in the same
  order when the query is ``ordered``;
* column names: ``cursor.description`` names equal DuckDB's;
* value types: per column, the same kind of Python value (int, float, date, timestamp, str).

The corpus itself is checked too: enough queries, every construct present, and each query
gives the same answer on the pooled data whatever the physical row order (so that
``ordered: true`` is honest and no result depends on chance).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest

from fedquery.testing import assert_results_equal, pooled_connection

CORPUS_PATH = Path(__file__).with_name("corpus.sql")
MIN_QUERIES = 70

_HEADER = re.compile(r"^-- name:\s*(?P<name>[A-Za-z0-9_]+)\s*;\s*ordered:\s*(?P<ordered>true|false)\s*$")


@dataclass(frozen=True)
class CorpusQuery:
    name: str
    ordered: bool
    sql: str
    line: int  # line of the header in corpus.sql


def load_corpus(path: Path = CORPUS_PATH) -> list[CorpusQuery]:
    """Split corpus.sql on its ``-- name:`` headers.  Comment lines inside a body are dropped."""
    queries: list[CorpusQuery] = []
    current: dict | None = None
    body: list[str] = []

    def flush() -> None:
        if current is None:
            return
        sql = "\n".join(body).strip()
        if sql.endswith(";"):
            sql = sql[:-1].rstrip()
        if not sql:
            raise ValueError(f"{path.name}:{current['line']}: query {current['name']!r} is empty")
        if ";" in sql:
            raise ValueError(f"{path.name}:{current['line']}: query {current['name']!r} holds "
                             "more than one statement")
        queries.append(CorpusQuery(current["name"], current["ordered"], sql, current["line"]))

    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        m = _HEADER.match(line)
        if m:
            flush()
            current = {"name": m["name"], "ordered": m["ordered"] == "true", "line": lineno}
            body = []
        elif line.startswith("-- name:"):
            raise ValueError(f"{path.name}:{lineno}: malformed header {line!r}")
        elif current is not None and not line.lstrip().startswith("--"):
            body.append(line)
    flush()
    names = [q.name for q in queries]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{path.name}: duplicate query names {dupes}")
    return queries


CORPUS = load_corpus()
BY_NAME = {q.name: q for q in CORPUS}
IDS = [q.name for q in CORPUS]

#: Constructs that must each appear in at least one query, so coverage cannot silently shrink.
REQUIRED_CONSTRUCTS = {
    "COUNT(*)": r"COUNT\(\*\)",
    "COUNT(column)": r"COUNT\((?!\*|DISTINCT)[a-z_.]+\)",
    "COUNT(DISTINCT patient_id)": r"COUNT\(DISTINCT (\w+\.)?patient_id\)",
    "COUNT(DISTINCT) through a join": r"COUNT\(DISTINCT [\s\S]*\bJOIN\b",
    "SUM": r"\bSUM\(",
    "AVG": r"\bAVG\(",
    "MIN": r"\bMIN\(",
    "MAX": r"\bMAX\(",
    "VAR_SAMP": r"\bVAR_SAMP\(",
    "VAR_POP": r"\bVAR_POP\(",
    "STDDEV_SAMP": r"\bSTDDEV_SAMP\(",
    "STDDEV_POP": r"\bSTDDEV_POP\(",
    "VARIANCE alias": r"\bVARIANCE\(",
    "STDDEV alias": r"\bSTDDEV\(",
    "SUM(CASE ...)": r"SUM\(CASE WHEN",
    "SUM(a * b)": r"SUM\(\w+ \* \w+\)",
    "AVG(x * 2 + 1)": r"AVG\(\w+ \* 2 \+ 1\)",
    "rate over aggregates": r"100\.0 \* SUM\([\w.]+\) / COUNT\(\*\)",
    "SUM(x) / COUNT(*)": r"SUM\(\w+\) / COUNT\(\*\)",
    "ROUND(AVG(...))": r"ROUND\(AVG\(",
    "FILTER (WHERE": r"FILTER \(WHERE",
    "WHERE": r"\bWHERE\b",
    "AND": r"\bAND\b",
    "OR": r"\bOR\b",
    "NOT": r"\bNOT \(",
    "IN list": r"\bIN \('",
    "NOT IN list": r"\bNOT IN \('",
    "BETWEEN": r"\bBETWEEN\b",
    "LIKE": r"\bLIKE '",
    "IS NULL": r"\bIS NULL\b",
    "IS NOT NULL": r"\bIS NOT NULL\b",
    "DATE literal": r"DATE '\d{4}-\d\d-\d\d'",
    "GROUP BY": r"\bGROUP BY\b",
    "GROUP BY CASE": r"GROUP BY [\w,\s]*CASE WHEN",
    "GROUP BY year()": r"GROUP BY year\(",
    "EXTRACT": r"\bEXTRACT\(",
    "date_trunc": r"\bdate_trunc\(",
    "GROUP BY ordinals": r"GROUP BY 1, 2\b",
    "GROUP BY ALL": r"GROUP BY ALL\b",
    "GROUP BY alias": r"GROUP BY age_band\b",
    "HAVING": r"\bHAVING\b",
    "HAVING aggregate not selected": r"HAVING AVG\(",
    "ORDER BY": r"\bORDER BY\b",
    "ORDER BY DESC": r"\bDESC\b",
    "ORDER BY ordinal": r"ORDER BY \d",
    "NULLS FIRST": r"\bNULLS FIRST\b",
    "NULLS LAST": r"\bNULLS LAST\b",
    "LIMIT": r"\bLIMIT \d",
    "OFFSET": r"\bOFFSET \d",
    "JOIN ... USING": r"\bJOIN \w+( \w+)? USING \(patient_id\)",
    "JOIN ... ON": r"\bJOIN \w+ (AS )?\w+ ON\b",
    "LEFT JOIN": r"\bLEFT JOIN\b",
    "three-table join": r"\bJOIN\b[\s\S]*\bJOIN\b[\s\S]*\bGROUP BY\b",
    "FROM subquery": r"FROM \(SELECT",
    "CTE": r"^WITH ",
    "IN (SELECT": r"\bIN \(SELECT patient_id FROM",
    "EXISTS": r"\bEXISTS \(SELECT",
    "NOT EXISTS": r"\bNOT EXISTS \(SELECT",
    "empty input": r"WHERE 1 = 0",
    "global aggregate": r"\ASELECT (?:(?!GROUP BY)[\s\S])*\Z",
}


# ---------------------------------------------------------------------------------------------
# The corpus itself


def test_corpus_size():
    assert len(CORPUS) >= MIN_QUERIES, f"corpus.sql has only {len(CORPUS)} queries"


@pytest.mark.parametrize("construct", list(REQUIRED_CONSTRUCTS))
def test_corpus_covers_construct(construct):
    pattern = re.compile(REQUIRED_CONSTRUCTS[construct], re.IGNORECASE | re.MULTILINE)
    hits = [q.name for q in CORPUS if pattern.search(q.sql)]
    assert hits, f"no corpus query uses {construct} (pattern {pattern.pattern!r})"


def test_corpus_has_ordered_and_unordered_queries():
    assert sum(q.ordered for q in CORPUS) >= 10
    assert sum(not q.ordered for q in CORPUS) >= 40


@pytest.fixture(scope="module")
def reversed_pooled(sites):
    """The pooled data with every table's rows (and the sites) in reverse order."""
    flipped = {
        name: {t: tbl.take(pa.array(range(tbl.num_rows - 1, -1, -1))) for t, tbl in tables.items()}
        for name, tables in reversed(list(sites.items()))
    }
    con = pooled_connection(flipped)
    yield con
    con.close()


@pytest.mark.parametrize("name", IDS)
def test_corpus_query_is_deterministic_on_pooled(name, pooled, reversed_pooled, run_pooled):
    """Each query runs in plain DuckDB, and its answer does not depend on physical row order."""
    q = BY_NAME[name]
    names_a, rows_a = run_pooled(pooled, q.sql)
    names_b, rows_b = run_pooled(reversed_pooled, q.sql)
    assert names_a == names_b
    assert_results_equal(rows_b, rows_a, ordered=q.ordered, context=f"{name} (pooled vs reversed)")


# ---------------------------------------------------------------------------------------------
# Federated == pooled


@pytest.fixture(scope="session")
def corpus_results(fed_conn, pooled, run_federated, run_pooled):
    """Memoised (federated, pooled) results per query name; a federated error is re-raised."""
    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            q = BY_NAME[name]
            pooled_result = run_pooled(pooled, q.sql)
            try:
                cache[name] = ("ok", run_federated(fed_conn, q.sql), pooled_result)
            except Exception as exc:  # noqa: BLE001 - re-raised for every test of this query
                cache[name] = ("error", exc, pooled_result)
        status, fed, pool = cache[name]
        if status == "error":
            raise fed
        return fed, pool

    return get


@pytest.mark.parametrize("name", IDS)
def test_corpus_values(name, corpus_results):
    q = BY_NAME[name]
    (_, fed_rows), (_, pooled_rows) = corpus_results(name)
    assert_results_equal(fed_rows, pooled_rows, ordered=q.ordered,
                         context=f"{name} @ corpus.sql:{q.line}")


@pytest.mark.parametrize("name", IDS)
def test_corpus_column_names(name, corpus_results):
    (fed_names, _), (pooled_names, _) = corpus_results(name)
    assert fed_names == pooled_names, f"{name}: column names differ"


@pytest.mark.parametrize("name", IDS)
def test_corpus_value_types(name, corpus_results, column_kinds):
    (_, fed_rows), (_, pooled_rows) = corpus_results(name)
    fed_kinds, pooled_kinds = column_kinds(fed_rows), column_kinds(pooled_rows)
    assert fed_kinds == pooled_kinds, (f"{name}: Python value types per column differ: "
                                       f"federated {fed_kinds} vs pooled {pooled_kinds}")
