"""Render a planner fragment (DuckDB dialect) as PostgreSQL that computes what DuckDB would.

Pure: no IO, no driver.  sqlglot transpiles the fragment's AST once; this module then corrects
every place where PostgreSQL's semantics differ from DuckDB's (each has a test in
``tests/postgres/test_render.py``):

=========================== ====================================== =================================
construct                   DuckDB                                 rendered for PostgreSQL as
=========================== ====================================== =================================
``a / b``                   always DOUBLE; ``x / 0`` is ±inf / NaN ``a`` cast to DOUBLE PRECISION,
                                                                   ``a * 'Infinity'`` when ``b = 0``
``a // b`` (integers)       integer division, truncating           ``a / b`` on the integers
``ROUND(x)`` on DOUBLE      half away from zero (PG rounds a       ``TRUNC(x) + SIGN(x)`` when
                            double half to even)                   ``|x - TRUNC(x)| >= 0.5``
``ROUND(x, n)`` on DOUBLE   rounds the exact binary value          refused (PG has no such
                                                                   function; numeric is inexact)
``CAST(x AS VARCHAR)``,     ``25.0``, ``1e+16``, ``nan``, ``inf``  a CASE giving DuckDB's text (the
DOUBLE ``x``                                                       keyed-hash row cap hashes it)
``CAST(x AS VARCHAR)``,     the type's scale (``1.50``)            cast to ``NUMERIC(p,s)`` first
DECIMAL(p,s) ``x``
``x LIKE p`` / ``ILIKE``    no escape character                    ``... ESCAPE ''``
``CAST(int AS BOOLEAN)``    any integer type                       ``int <> 0``
``CAST(bool AS BIGINT)``    any integer type                       via ``INTEGER``
``SUM(bool)``, ``MIN/MAX``  allowed                                ``SUM(CAST(b AS INTEGER))``,
of booleans                                                        ``BOOL_AND`` / ``BOOL_OR``
``year(d)``, ``EXTRACT``    BIGINT (``second``: whole seconds,     ``CAST(EXTRACT(...) AS BIGINT)``
                            ``epoch``: DOUBLE)                     (``FLOOR`` for seconds)
``date_trunc(u, DATE)``     TIMESTAMP                              the DATE cast to TIMESTAMP first
                                                                   (PG would give TIMESTAMPTZ)
``POWER/SQRT/LN/EXP``       DOUBLE                                 arguments cast to DOUBLE
``HUGEINT``, ``UBIGINT``... DuckDB-only types                      ``NUMERIC(38,0)``, ...
``VARCHAR(n)``              length ignored                         ``TEXT``
text comparison, MIN/MAX    byte order                             columns read ``COLLATE "C"``
                                                                   unless already byte-ordered
NULL ordering               NULLS LAST                             explicit (sqlglot)
``QUALIFY``                 supported                              a subquery (sqlglot)
``FROM (SELECT ...)``       alias optional                         an alias added
=========================== ====================================== =================================

Everything else must be on an allow-list of node types whose meaning is the same in both
engines; a fragment holding anything else (an unknown function, ``TRY_CAST``, a ``substring``
with a computed start, ...) is refused with :class:`NotSupportedError` naming it, rather than
answered differently.  The result is parsed again and must be one read-only SELECT reading
only the connector's tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.scope import traverse_scope

from fedquery.errors import NotSupportedError, ProgrammingError
from fedquery.site.engines.base import PLANNER_DIALECT, parse_single_select

DIALECT = "postgres"
T = exp.DataType.Type

_INTEGERS = {T.TINYINT, T.SMALLINT, T.INT, T.BIGINT, T.INT128, T.UTINYINT, T.USMALLINT,
             T.UINT, T.UBIGINT, T.UINT128}
_FLOATS = {T.DOUBLE, T.FLOAT}
_TEMPORAL = {T.DATE, T.DATETIME, T.TIMESTAMP, T.TIMESTAMPTZ, T.TIMESTAMPLTZ, T.TIME,
             T.TIMETZ, T.INTERVAL}
_TEXT = {T.VARCHAR, T.TEXT, T.CHAR, T.NCHAR, T.NVARCHAR}

#: DuckDB cast targets → the PostgreSQL type holding the same values.
_CAST_TARGETS = {
    T.BOOLEAN: "BOOLEAN", T.TINYINT: "SMALLINT", T.UTINYINT: "SMALLINT", T.SMALLINT: "SMALLINT",
    T.USMALLINT: "INTEGER", T.INT: "INTEGER", T.UINT: "BIGINT", T.BIGINT: "BIGINT",
    T.UBIGINT: "NUMERIC(20, 0)", T.INT128: "NUMERIC(38, 0)", T.UINT128: "NUMERIC(39, 0)",
    T.FLOAT: "REAL", T.DOUBLE: "DOUBLE PRECISION", T.VARCHAR: "TEXT", T.TEXT: "TEXT",
    T.CHAR: "TEXT", T.DATE: "DATE", T.TIMESTAMP: "TIMESTAMP", T.DATETIME: "TIMESTAMP",
    T.TIMESTAMPTZ: "TIMESTAMPTZ", T.TIME: "TIME", T.INTERVAL: "INTERVAL",
}

#: Federation (DuckDB) result types → the PostgreSQL type the fragment's outputs are cast to.
_RESULT_TYPES = {
    "BOOLEAN": "BOOLEAN", "TINYINT": "SMALLINT", "UTINYINT": "SMALLINT", "SMALLINT": "SMALLINT",
    "USMALLINT": "INTEGER", "INTEGER": "INTEGER", "UINTEGER": "BIGINT", "BIGINT": "BIGINT",
    "UBIGINT": "NUMERIC(20, 0)", "HUGEINT": "NUMERIC(38, 0)", "UHUGEINT": "NUMERIC(39, 0)",
    "FLOAT": "REAL", "DOUBLE": "DOUBLE PRECISION", "VARCHAR": "TEXT", "DATE": "DATE",
    "TIMESTAMP": "TIMESTAMP", "TIMESTAMP WITH TIME ZONE": "TIMESTAMPTZ", "TIME": "TIME",
    "INTERVAL": "INTERVAL", "BLOB": "BYTEA",
}

#: EXTRACT parts (DuckDB spelling → PostgreSQL field) that give the same BIGINT in both.
_EXTRACT_PARTS = {
    "year": "year", "month": "month", "day": "day", "quarter": "quarter", "dow": "dow",
    "dayofweek": "dow", "weekday": "dow", "isodow": "isodow", "doy": "doy",
    "dayofyear": "doy", "week": "week", "weekofyear": "week", "hour": "hour",
    "minute": "minute", "decade": "decade", "century": "century", "millennium": "millennium",
    "isoyear": "isoyear", "yearofweek": "isoyear",
}
_PART_FUNCTIONS = {exp.Year: "year", exp.Month: "month", exp.Day: "day",
                   exp.Quarter: "quarter", exp.DayOfWeek: "dow", exp.DayOfYear: "doy",
                   exp.WeekOfYear: "week", exp.Week: "week"}
_TRUNC_UNITS = {"year", "quarter", "month", "week", "day", "hour", "minute", "second"}
_DIFF_UNITS = {"day", "month", "year"}

#: Node types whose meaning is the same in both engines (after the rewrites above).
_ALLOWED = frozenset({
    # query structure
    exp.Select, exp.From, exp.Join, exp.Where, exp.Group, exp.Having, exp.With, exp.CTE,
    exp.Subquery, exp.Union, exp.Alias, exp.TableAlias, exp.Table, exp.Column, exp.Identifier,
    exp.Star, exp.Values, exp.Tuple, exp.Window, exp.Order, exp.Ordered, exp.Filter,
    exp.Distinct, exp.Qualify, exp.Paren, exp.Literal, exp.Null, exp.Boolean, exp.Interval,
    exp.Var, exp.DataType, exp.DataTypeParam, exp.Collate,
    # predicates and operators
    exp.And, exp.Or, exp.Not, exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE,
    exp.NullSafeEQ, exp.NullSafeNEQ, exp.Is, exp.In, exp.Exists, exp.Between, exp.Like,
    exp.ILike, exp.Escape, exp.Add, exp.Sub, exp.Mul, exp.Div, exp.IntDiv, exp.Mod, exp.Neg,
    exp.Case, exp.If, exp.Cast, exp.Coalesce, exp.Nullif,
    # functions
    exp.Count, exp.CountIf, exp.Sum, exp.Min, exp.Max, exp.RowNumber, exp.Abs, exp.Sign,
    exp.Floor, exp.Ceil, exp.Round, exp.Sqrt, exp.Ln, exp.Exp, exp.Pow, exp.Greatest,
    exp.Least, exp.MD5, exp.ConcatWs, exp.Concat, exp.DPipe, exp.Length, exp.Substring,
    exp.Extract, exp.DateTrunc, exp.TimestampTrunc, exp.DateDiff, *_PART_FUNCTIONS,
})
_ANONYMOUS = {"date_part", "datepart"}  # DuckDB spellings of EXTRACT, rewritten below

#: Function names the rendered PostgreSQL may hold when parsed back (anything else: refused).
_PG_ANONYMOUS = frozenset({"md5", "concat_ws", "trunc", "sign", "div", "age", "bool_and",
                           "bool_or"})


@dataclass(frozen=True)
class PgTable:
    """One connector table as the renderer sees it.

    ``name`` is the table's name in PostgreSQL; ``types`` maps each offered column (lower
    case, as fragments name it) to its federation type; ``reads`` gives, for columns that are
    not read as they are, the PostgreSQL expression to read instead (a cast to DOUBLE
    PRECISION for unconstrained NUMERIC, ``COLLATE "C"`` for text in a locale collation, a
    case-preserving name...)."""

    name: str
    types: Mapping[str, str]
    reads: Mapping[str, str] = field(default_factory=dict)
    columns: Mapping[str, str] = field(default_factory=dict)  # lower-case name → PG name


def _refuse(what: str) -> NotSupportedError:
    return NotSupportedError(f"{what} cannot be evaluated exactly as DuckDB would on this "
                             "site's PostgreSQL database, so the site does not run it")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _pg(sql: str) -> exp.Expression:
    return sqlglot.parse_one(sql, read=DIALECT)


def _type_of(node: exp.Expression):
    typ = getattr(node, "type", None)
    return typ.this if isinstance(typ, exp.DataType) else None


def _dtype(sql: str) -> exp.DataType:
    return exp.DataType.build(sql, dialect=DIALECT)


def _cast(node: exp.Expression, to: str) -> exp.Cast:
    return exp.Cast(this=node, to=_dtype(to))


def _double(node: exp.Expression) -> exp.Cast:
    return _cast(node, "DOUBLE PRECISION")


def _literal_int(node) -> int | None:
    if isinstance(node, exp.Literal) and not node.is_string and node.this.isdigit():
        return int(node.this)
    return None


def _unit(node) -> str | None:
    unit = node.args.get("unit")
    if unit is None:
        return None
    return (unit.name if isinstance(unit, exp.Var | exp.Literal) else unit.sql()).lower()


# -- the corrections --------------------------------------------------------------------------

def _round_half_away(x: exp.Expression) -> exp.Expression:
    """ROUND(x) as DuckDB computes it for doubles (std::round), exactly: the fraction
    ``x - TRUNC(x)`` of a double is itself exact."""
    def c():
        return x.copy()
    trunc = exp.Anonymous(this="TRUNC", expressions=[c()])
    frac = exp.Abs(this=exp.Paren(this=exp.Sub(this=c(), expression=trunc.copy())))
    return exp.Paren(this=exp.Case(
        ifs=[exp.If(this=exp.GTE(this=frac, expression=exp.Literal.number("0.5")),
                    true=exp.Add(this=trunc.copy(),
                                 expression=exp.Anonymous(this="SIGN", expressions=[c()])))],
        default=trunc.copy()))


def _double_text(x: exp.Expression) -> exp.Expression:
    """CAST(double AS VARCHAR) with DuckDB's text: shortest round-trip digits, ``.0`` on whole
    numbers below 1e16, ``nan``/``inf``/``-inf``.  (PostgreSQL's own text agrees otherwise,
    except for non-whole numbers in [1e15, 1e16) — [1e6, 1e16) for a REAL — which it writes
    with an exponent; only the rows a contribution cap keeps could then differ.)"""
    v = x.sql(DIALECT)
    return _pg(
        f"(CASE WHEN ({v}) IS NULL THEN NULL "
        f"WHEN ({v}) = CAST('NaN' AS DOUBLE PRECISION) THEN 'nan' "
        f"WHEN ({v}) = CAST('Infinity' AS DOUBLE PRECISION) THEN 'inf' "
        f"WHEN ({v}) = CAST('-Infinity' AS DOUBLE PRECISION) THEN '-inf' "
        f"WHEN ({v}) = 0 THEN CASE WHEN CAST(({v}) AS TEXT) = '-0' THEN '-0.0' ELSE '0.0' END "
        f"WHEN ({v}) = TRUNC({v}) AND ABS({v}) < 1e16 "
        f"THEN CAST(CAST(({v}) AS BIGINT) AS TEXT) || '.0' "
        f"ELSE CAST(({v}) AS TEXT) END)")


def _rewrite_cast(node: exp.Cast) -> exp.Expression:
    target = node.to.this
    source = _type_of(node.this)
    if target == T.DECIMAL:
        return node
    if target not in _CAST_TARGETS:
        raise _refuse(f"a cast to {node.to.sql(PLANNER_DIALECT)}")
    if target in _TEXT:
        if source in _FLOATS:
            return _double_text(node.this)
        if source == T.DECIMAL and node.this.type.expressions and isinstance(
                node.this, exp.Column | exp.Cast):
            # a column's declared scale (a computed NUMERIC keeps PostgreSQL's scale, which
            # follows the same rules as DuckDB's: max for +/-, the sum for *)
            return _cast(exp.Cast(this=node.this, to=node.this.type.copy()), "TEXT")
        return _cast(node.this, "TEXT")
    if target == T.BOOLEAN and source in _INTEGERS:
        return exp.Paren(this=exp.NEQ(this=node.this, expression=exp.Literal.number(0)))
    if target in _INTEGERS and target != T.INT and source == T.BOOLEAN:
        return _cast(_cast(node.this, "INTEGER"), _CAST_TARGETS[target])
    return _cast(node.this, _CAST_TARGETS[target])


def _rewrite_round(node: exp.Round) -> exp.Expression:
    x, digits = node.this, node.args.get("decimals")
    source = _type_of(x)
    if source in _INTEGERS or source == T.DECIMAL:
        if digits is not None and _literal_int(digits) is None:
            raise _refuse(f"ROUND with a computed or negative precision ({node.sql()})")
        return node  # integers and NUMERIC: PostgreSQL also rounds half away from zero
    if digits is None or _literal_int(digits) == 0:
        return _round_half_away(x)
    # DuckDB rounds the double's exact binary value to n digits (ROUND(2.675, 2) = 2.67);
    # PostgreSQL can neither round a double to digits nor convert one to NUMERIC exactly.
    raise _refuse(f"ROUND of a DOUBLE to decimal places ({node.sql(PLANNER_DIALECT)}); "
                  "ROUND(x) or ROUND(CAST(x AS DECIMAL(18, 6)), n) can be")


def _rewrite_div(node: exp.Div) -> exp.Expression:
    if _type_of(node.this) in _TEMPORAL or _type_of(node.expression) in _TEMPORAL:
        return node  # interval / number: the same in both
    a, b = node.this, node.expression
    zero = exp.EQ(this=b.copy(), expression=exp.Literal.number(0))
    infinite = exp.Mul(this=_double(a.copy()), expression=_cast(exp.Literal.string("Infinity"),
                                                               "DOUBLE PRECISION"))
    return exp.Paren(this=exp.Case(ifs=[exp.If(this=zero, true=infinite)],
                                   default=exp.Div(this=_double(a), expression=b, typed=True)))


def _rewrite_extract(part: str, arg: exp.Expression) -> exp.Expression:
    part = part.lower()
    field_ = exp.Var(this=part.upper())
    if part in _EXTRACT_PARTS:
        field_ = exp.Var(this=_EXTRACT_PARTS[part].upper())
        return _cast(exp.Extract(this=field_, expression=arg), "BIGINT")
    if part in ("second", "seconds"):  # DuckDB: whole seconds
        return _cast(exp.Floor(this=exp.Extract(this=exp.Var(this="SECOND"), expression=arg)),
                     "BIGINT")
    if part == "epoch":
        return _double(exp.Extract(this=exp.Var(this="EPOCH"), expression=arg))
    raise _refuse(f"EXTRACT({part.upper()} ...)")


def _rewrite(node: exp.Expression, ctes: set[str], tables: Mapping[str, PgTable],
             schema: str, derived: list) -> exp.Expression:
    if isinstance(node, exp.Anonymous):
        name = node.name.lower()
        part = node.expressions[0] if node.expressions else None
        if name in _ANONYMOUS and len(node.expressions) == 2 and isinstance(
                part, exp.Literal) and part.is_string:
            return _rewrite_extract(part.this, node.expressions[1])
        raise _refuse(f"the function {node.name}()")
    if type(node) not in _ALLOWED:
        what = (f"{node.sql_name()}()" if isinstance(node, exp.Func)
                else (node.key or type(node).__name__).upper())
        raise _refuse(what)
    if type(node) in _PART_FUNCTIONS:
        return _rewrite_extract(_PART_FUNCTIONS[type(node)], node.this)
    if isinstance(node, exp.Extract):
        return _rewrite_extract(node.this.name, node.expression)
    if isinstance(node, exp.Cast):
        return _rewrite_cast(node)
    if isinstance(node, exp.Round):
        return _rewrite_round(node)
    if isinstance(node, exp.Div):
        return _rewrite_div(node)
    if isinstance(node, exp.IntDiv):
        types = {_type_of(node.this), _type_of(node.expression)}
        if types <= _INTEGERS:
            return exp.Paren(this=exp.Div(this=node.this, expression=node.expression,
                                          typed=True))
        if types - _INTEGERS - {None, T.UNKNOWN}:
            raise _refuse(f"integer division of non-integers ({node.sql(PLANNER_DIALECT)})")
        return node  # DIV(a, b): PostgreSQL's truncating integer quotient
    if isinstance(node, exp.Mod):
        if _type_of(node.this) in _FLOATS or _type_of(node.expression) in _FLOATS:
            raise _refuse(f"the remainder of a DOUBLE ({node.sql(PLANNER_DIALECT)})")
        return node
    if isinstance(node, exp.Like | exp.ILike) and not isinstance(node.parent, exp.Escape):
        return exp.Escape(this=node, expression=exp.Literal.string(""))
    if isinstance(node, exp.Sum) and _type_of(node.this) == T.BOOLEAN:
        node.set("this", _cast(node.this, "INTEGER"))
        return node
    if isinstance(node, exp.Min | exp.Max) and _type_of(node.this) == T.BOOLEAN:
        name = "BOOL_AND" if isinstance(node, exp.Min) else "BOOL_OR"
        return exp.Anonymous(this=name, expressions=[node.this])
    if isinstance(node, exp.Sqrt | exp.Ln | exp.Exp):
        node.set("this", _double(node.this))
        return node
    if isinstance(node, exp.Pow):
        node.set("this", _double(node.this))
        node.set("expression", _double(node.expression))
        return node
    if isinstance(node, exp.Substring):
        start, length = node.args.get("start"), node.args.get("length")
        if (start is None or (_literal_int(start) or 0) < 1
                or (length is not None and _literal_int(length) is None)):
            raise _refuse(f"substring with a computed, zero or negative start or length "
                          f"({node.sql(PLANNER_DIALECT)})")
        return node
    if isinstance(node, exp.DateTrunc | exp.TimestampTrunc):
        if _unit(node) not in _TRUNC_UNITS:
            raise _refuse(f"date_trunc('{_unit(node)}', ...)")
        if _type_of(node.this) == T.DATE:
            node.set("this", _cast(node.this, "TIMESTAMP"))
        return node
    if isinstance(node, exp.DateDiff):
        if _unit(node) not in _DIFF_UNITS:
            raise _refuse(f"date_diff('{_unit(node)}', ...)")
        return node
    if isinstance(node, exp.Table):
        return _rewrite_table(node, ctes, tables, schema)
    if isinstance(node, exp.Subquery) and not node.alias and isinstance(
            node.parent, exp.From | exp.Join):
        # PostgreSQL (before 16) needs an alias on every derived table
        derived.append(node)
        node.set("alias", exp.TableAlias(this=exp.to_identifier(f"__derived_{len(derived)}",
                                                                quoted=True)))
    return node


def _rewrite_table(node: exp.Table, ctes: set[str], tables: Mapping[str, PgTable],
                   schema: str) -> exp.Expression:
    name = node.name.lower()
    if node.args.get("db") or node.args.get("catalog"):
        raise ProgrammingError("the site refuses the fragment: it names a qualified table")
    if name in ctes:
        return node
    table = tables.get(name)
    if table is None:
        raise ProgrammingError(f"the site refuses the fragment: it reads {node.name!r}, "
                               "which is not one of the connector's tables")
    alias = node.alias or node.name
    if not table.reads:
        return exp.Table(this=exp.to_identifier(table.name, quoted=True),
                         db=exp.to_identifier(schema, quoted=True),
                         alias=exp.TableAlias(this=exp.to_identifier(alias, quoted=True)))
    columns = ", ".join(f"{table.reads.get(col, _quote(table.columns.get(col, col)))} AS "
                        f"{_quote(col)}" for col in table.types)
    inner = _pg(f"SELECT {columns} FROM {_quote(schema)}.{_quote(table.name)}")
    return exp.Subquery(this=inner,
                        alias=exp.TableAlias(this=exp.to_identifier(alias, quoted=True)))


def render(sql: str, tables: Mapping[str, PgTable], schema: str,
           output: Sequence[tuple[str, str]] | None = None) -> str:
    """``sql`` (a planner fragment, DuckDB dialect) as one read-only PostgreSQL SELECT.

    ``tables`` maps each connector table (lower case) to its :class:`PgTable`; ``schema`` is
    the PostgreSQL schema holding them; ``output`` gives the fragment's (name, DuckDB type)
    result columns, to which the rendered query casts its outputs."""
    ast = parse_single_select(sql, PLANNER_DIALECT)
    ctes = {cte.alias_or_name.lower() for cte in ast.find_all(exp.CTE)}
    _qualify_base_columns(ast, tables, ctes)
    annotate_types(ast, schema={name: dict(t.types) for name, t in tables.items()},
                   dialect=PLANNER_DIALECT)
    derived: list = []
    for node in reversed(list(ast.walk(bfs=False))):  # children before their parents
        parent, key, index = node.parent, node.arg_key, node.index
        new = _rewrite(node, ctes, tables, schema, derived)
        if new is not node:
            if parent is None:
                ast = new
            else:
                parent.set(key, new, index)
    if output:
        ast = _cast_outputs(ast, output)
    rendered = ast.sql(dialect=DIALECT, comments=False)
    check_rendered(rendered, ctes, {t.name for t in tables.values()}, schema)
    return rendered


def _qualify_base_columns(ast: exp.Expression, tables: Mapping[str, PgTable],
                          ctes: set[str]) -> None:
    """Name the table of an unqualified column when exactly one table of its scope has it
    (what DuckDB's binder does), so that its type is known to the rewrites.  Planner
    fragments qualify the analyst's columns already; its own helper columns stay as they
    are."""
    for scope in traverse_scope(ast):
        aliases = {p.alias_or_name.lower() for p in scope.expression.expressions} if isinstance(
            scope.expression, exp.Select) else set()
        for column in scope.unqualified_columns:
            name = column.name.lower()
            if name in aliases:
                continue
            owners = []
            for alias, source in scope.selected_sources.items():
                node = source[1] if isinstance(source, tuple) else source
                if isinstance(node, exp.Table) and node.name.lower() not in ctes:
                    table = tables.get(node.name.lower())
                    if table is not None and name in table.types:
                        owners.append(alias)
                else:
                    owners.append(None)  # a derived table may have it too: leave it
            if len(owners) == 1 and owners[0] is not None:
                column.set("table", exp.to_identifier(owners[0], quoted=True))


def _cast_outputs(ast: exp.Expression, output: Sequence[tuple[str, str]]) -> exp.Expression:
    """``SELECT CAST(c AS <DuckDB's type in PostgreSQL>) AS c, ... FROM (<fragment>)``: the
    database returns exactly the fragment's DuckDB types (``year()`` → BIGINT, not NUMERIC;
    ``SUM(bigint)`` → NUMERIC(38,0) as DuckDB's HUGEINT)."""
    names = [name for name, _ in output]
    if len(set(names)) != len(names):
        return ast
    projections = []
    for name, duck_type in output:
        upper = duck_type.upper()
        pg_type = _RESULT_TYPES.get(upper)
        if pg_type is None and upper.startswith("DECIMAL("):
            pg_type = "NUMERIC" + upper[len("DECIMAL"):]
        column = exp.column(name, table="__fragment", quoted=True)
        if pg_type is None:
            if upper != '"NULL"' and upper != "NULL":
                raise _refuse(f"a result column of type {duck_type}")
            projections.append(exp.alias_(column, name, quoted=True))
            continue
        projections.append(exp.alias_(_cast(column, pg_type), name, quoted=True))
    return exp.select(*projections).from_(exp.Subquery(
        this=ast, alias=exp.TableAlias(this=exp.to_identifier("__fragment", quoted=True))))


def check_rendered(sql: str, ctes: set[str], tables: set[str], schema: str) -> exp.Expression:
    """The rendered SQL, parsed back: one read-only SELECT, reading only ``schema``'s
    ``tables`` (and the fragment's own CTEs), calling only known functions."""
    ast = parse_single_select(sql, DIALECT, "rendered fragment")
    for node in ast.walk():
        if isinstance(node, exp.Table):
            db = node.args.get("db")
            if db is None and node.name.lower() in ctes:
                continue
            if db is None or db.name != schema or node.name not in tables or node.args.get(
                    "catalog"):
                raise ProgrammingError("the site refuses the rendered fragment: it reads "
                                       f"{node.sql(DIALECT)}, not one of the connector's "
                                       "tables")
        elif isinstance(node, exp.Anonymous) and node.name.lower() not in _PG_ANONYMOUS:
            raise ProgrammingError("the site refuses the rendered fragment: it calls "
                                   f"{node.name}()")
    return ast
