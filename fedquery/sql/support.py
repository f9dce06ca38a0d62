"""The supported SQL subset: what a federation can answer exactly from per-site partials.

``check_supported`` walks a parsed statement and raises :class:`NotSupportedError` naming the
construct (and, where one exists, the supported alternative) for anything outside the subset.

>>> from fedquery.sql.parse import parse_statement
>>> check_supported(parse_statement("SELECT region, COUNT(*) FROM patients GROUP BY region"))
>>> check_supported(parse_statement("SELECT MEDIAN(age) FROM patients"))
Traceback (most recent call last):
...
fedquery.errors.NotSupportedError: MEDIAN cannot be computed exactly from per-site partials; use AVG, or a GROUP BY over bands to approximate the distribution
"""

from __future__ import annotations

from sqlglot import exp

from fedquery.errors import NotSupportedError

# Aggregates the planner decomposes into additive partials.
SUPPORTED_AGGREGATES: dict[type[exp.Expression], str] = {
    exp.Count: "COUNT",
    exp.CountIf: "COUNT_IF",
    exp.Sum: "SUM",
    exp.Avg: "AVG",
    exp.Min: "MIN",
    exp.Max: "MAX",
    exp.Variance: "VAR_SAMP",
    exp.VariancePop: "VAR_POP",
    exp.Stddev: "STDDEV_SAMP",
    exp.StddevSamp: "STDDEV_SAMP",
    exp.StddevPop: "STDDEV_POP",
}

# DuckDB aggregate functions that sqlglot may parse as anonymous functions, with the
# alternative a user should write.  MEAN is a plain alias of AVG and is rewritten.
_AGGREGATE_ALTERNATIVES: dict[str, str] = {
    "median": "use AVG, or a GROUP BY over bands to approximate the distribution",
    "quantile": "use a GROUP BY over bands (binned counts) instead",
    "quantile_cont": "use a GROUP BY over bands (binned counts) instead",
    "quantile_disc": "use a GROUP BY over bands (binned counts) instead",
    "approx_quantile": "use a GROUP BY over bands (binned counts) instead",
    "reservoir_quantile": "use a GROUP BY over bands (binned counts) instead",
    "percentile_cont": "use a GROUP BY over bands (binned counts) instead",
    "percentile_disc": "use a GROUP BY over bands (binned counts) instead",
    "mode": "use COUNT(*) with GROUP BY and ORDER BY the count",
    "mad": "use STDDEV_SAMP",
    "approx_count_distinct": "use COUNT(DISTINCT <privacy unit>)",
}
DUCKDB_AGGREGATES = frozenset("""
any_value approx_count_distinct approx_quantile approx_top_k arbitrary arg_max arg_max_null
arg_max_nulls_last arg_min arg_min_null arg_min_nulls_last argmax argmin array_agg avg bit_and
bit_or bit_xor bitstring_agg bool_and bool_or combine_aggr corr count count_if count_star
countif covar_pop covar_samp decimal_average entropy favg first fsum group_concat histogram
histogram_exact kahan_sum kurtosis kurtosis_pop last list listagg lttb mad max max_by mean median
min min_by mode product quantile quantile_cont quantile_disc regr_avgx regr_avgy regr_count
regr_intercept regr_r2 regr_slope regr_sxx regr_sxy regr_syy reservoir_quantile sem skewness
stddev stddev_pop stddev_samp string_agg sum sum_no_overflow sumkahan var_pop var_samp variance
percentile_cont percentile_disc
""".split())

# Functions that read the site's configuration, catalog or files rather than its data.
_SYSTEM_FUNCTIONS = frozenset({
    "current_setting", "getvariable", "current_database", "current_schema", "current_schemas",
    "current_user", "current_role", "session_user", "user", "version", "pragma_version",
    "getenv", "glob", "read_text", "read_blob", "read_csv", "read_csv_auto", "read_parquet",
    "read_json", "read_json_auto", "read_ndjson", "parquet_scan", "sniff_csv", "query",
    "query_table", "txid_current", "pg_typeof",
    # raise an error chosen by the query: a data-dependent error is an exact oracle
    "error"})
_SYSTEM_PREFIXES = ("duckdb_", "pragma_", "pg_", "has_", "sqlite_")

# Functions whose value differs between runs or sites: a federated answer would be meaningless.
_NONDETERMINISTIC = frozenset({"random", "uuid", "gen_random_uuid", "setseed", "now",
                               "current_timestamp", "get_current_timestamp", "today"})


def aggregate_name(node: exp.Expression) -> str | None:
    """The upper-case aggregate name of ``node`` if it is an aggregate call, else None."""
    if isinstance(node, exp.AggFunc):
        return SUPPORTED_AGGREGATES.get(type(node)) or node.sql_name().upper()
    if isinstance(node, exp.Anonymous) and node.name.lower() in DUCKDB_AGGREGATES:
        return node.name.upper()
    return None


def is_aggregate(node: exp.Expression) -> bool:
    return aggregate_name(node) is not None


def contains_aggregate(node: exp.Expression) -> bool:
    """True if ``node`` contains an aggregate outside any nested subquery."""
    return any(is_aggregate(n) for n in walk_same_scope(node))


def walk_same_scope(node: exp.Expression):
    """Walk ``node`` without descending into nested SELECTs (subqueries have their own scope)."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        for child in current.iter_expressions():
            if isinstance(child, exp.Query | exp.Subquery):
                continue
            stack.append(child)


def _refuse(message: str) -> None:
    raise NotSupportedError(message)


def check_statement_kind(statement: exp.Expression) -> None:
    if isinstance(statement, exp.SetOperation):
        kind = type(statement).__name__.upper()
        _refuse(f"{kind} of aggregate queries is not supported: run each SELECT as its own "
                "query (a combination of released results could isolate individuals)")
    if not isinstance(statement, exp.Select):
        kind = statement.key.upper() if statement.key else type(statement).__name__.upper()
        _refuse(f"only SELECT queries are supported (got {kind}): fedquery is read-only")


def _check_function(node: exp.Expression) -> None:
    if isinstance(node, exp.Columns):
        _refuse("COLUMNS(...) selects columns by pattern at run time; name each column")
    if isinstance(node, exp.PositionalColumn):
        _refuse("positional column references (#n) are not supported; name each column")
    if isinstance(node, exp.TableColumn):
        _refuse(f"a whole row ({node.sql('duckdb')}) cannot be used as a value; name each "
                "column")
    if isinstance(node, exp.Anonymous | exp.Func):
        name = (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()
        if name in _SYSTEM_FUNCTIONS or name.startswith(_SYSTEM_PREFIXES):
            _refuse(f"{name}() reads the site's system, not the federation's data")
    if isinstance(node, exp.Window):
        _refuse("window functions (OVER ...) are not supported: they need rows from every "
                "site at once; use GROUP BY instead")
    if isinstance(node, exp.Qualify):
        _refuse("QUALIFY filters window functions, which are not supported")
    if isinstance(node, exp.Cube | exp.Rollup | exp.GroupingSets):
        _refuse("ROLLUP, CUBE and GROUPING SETS are not supported: run one query per grouping")
    if isinstance(node, exp.TableSample):
        _refuse("sampling (TABLESAMPLE / USING SAMPLE) is not supported: it is random per site")
    if isinstance(node, exp.Pivot):
        _refuse("PIVOT/UNPIVOT is not supported: use GROUP BY with several aggregates")
    if isinstance(node, exp.Rand) or (isinstance(node, exp.Anonymous)
                                      and node.name.lower() in _NONDETERMINISTIC):
        _refuse(f"{node.sql('duckdb')} is not deterministic, so sites would disagree")
    if isinstance(node, exp.CurrentTimestamp | exp.CurrentDate | exp.CurrentTime):
        _refuse(f"{node.sql('duckdb')} is not deterministic across sites; write a DATE literal")
    name = aggregate_name(node)
    if name is None:
        return
    lowered = name.lower()
    if lowered in _AGGREGATE_ALTERNATIVES:
        if lowered.startswith("percentile_"):  # sqlglot reads QUANTILE_* as PERCENTILE_*
            name = f"{name} (QUANTILE_{lowered.split('_')[1].upper()})"
        _refuse(f"{name} cannot be computed exactly from per-site partials; "
                f"{_AGGREGATE_ALTERNATIVES[lowered]}")
    if type(node) not in SUPPORTED_AGGREGATES and lowered != "mean":
        supported = ", ".join(sorted(set(SUPPORTED_AGGREGATES.values())))
        _refuse(f"aggregate {name} is not supported; supported aggregates: {supported}")
    if isinstance(node.this, exp.Distinct) and not isinstance(node, exp.Count):
        _refuse(f"{name}(DISTINCT ...) is not supported: DISTINCT values cannot be combined "
                "across sites; only COUNT(DISTINCT <privacy unit>) is")
    for child in node.iter_expressions():
        if contains_aggregate(child):
            _refuse(f"nested aggregates inside {name} are not supported")
    if isinstance(node.parent, exp.WithinGroup) or node.args.get("order"):
        _refuse(f"ordered aggregates ({name} ... ORDER BY / WITHIN GROUP) are not supported")


def _check_sources(select: exp.Select) -> None:
    for table in select.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            _refuse(f"only federation tables can be queried, not {table.sql('duckdb')}")
        if table.args.get("db") or table.args.get("catalog"):
            _refuse(f"qualified table names ({table.sql('duckdb')}) are not supported: "
                    "write the table name alone")


def _check_inner_query(query: exp.Expression, where: str) -> None:
    """A nested query must be row-level at each site: no aggregation, ordering or dedup."""
    if isinstance(query, exp.SetOperation):
        if query.args.get("distinct"):
            _refuse(f"UNION/INTERSECT/EXCEPT without ALL in {where} is not supported: "
                    "removing duplicates needs rows from every site; use UNION ALL")
        if not isinstance(query, exp.Union):
            _refuse(f"{type(query).__name__.upper()} in {where} is not supported; use UNION ALL")
        _check_inner_query(query.left, where)
        _check_inner_query(query.right, where)
        return
    if not isinstance(query, exp.Select):
        return
    if contains_aggregate(query) or query.args.get("group") or query.args.get("having"):
        _refuse(f"an aggregate inside {where} is not supported: it would need every site's "
                "rows before the outer query can run (a multi-round query); aggregate once, "
                "in the outer SELECT")
    if query.args.get("distinct"):
        _refuse(f"SELECT DISTINCT inside {where} is not supported: duplicates across sites "
                "cannot be removed without pooling rows")
    if query.args.get("limit") or query.args.get("offset") or query.args.get("order"):
        _refuse(f"ORDER BY / LIMIT inside {where} is not supported: it would pick rows "
                "differently at each site")


def check_supported(statement: exp.Expression) -> None:
    """Raise :class:`NotSupportedError` unless ``statement`` is in the supported subset."""
    check_statement_kind(statement)
    select = statement
    for node in select.walk():
        _check_function(node)
    _check_sources(select)
    # Nested queries: CTEs, FROM-subqueries, IN/EXISTS subqueries, scalar subqueries.
    for node in select.walk():
        if node is select or not isinstance(node, exp.Query):
            continue
        if isinstance(node.parent, exp.SetOperation):
            continue  # checked through its set operation
        where = "a CTE" if isinstance(node.parent, exp.CTE) else "a subquery"
        _check_inner_query(node, where)
    if select.args.get("from_") is None:
        _refuse("a query needs a FROM clause naming a federation table")
    clauses = [*select.expressions, select.args.get("having"), select.args.get("order")]
    if not any(c is not None and contains_aggregate(c) for c in clauses):
        _refuse("queries must aggregate (COUNT, SUM, AVG, ...): row-level results never leave "
                "a site; for example SELECT sex, COUNT(*) FROM patients GROUP BY sex")
    for projection in select.expressions:
        if isinstance(projection, exp.Star) or (isinstance(projection, exp.Column)
                                                and isinstance(projection.this, exp.Star)):
            _refuse("SELECT * returns rows; name the aggregates you need")
