"""Completion for the SQL shell: a pure function of the text, the cursor and the catalog the
federation's policies release.

Context decides what is offered: tables after FROM/JOIN, the columns of the tables in FROM (or
of one alias after ``alias.``) in SELECT, WHERE, GROUP BY, HAVING, ORDER BY and ON, with the
supported functions and the keywords; statement keywords at the start; backslash commands and
their arguments after ``\\``.

>>> catalog = {"patients": {"age": "INTEGER", "sex": "VARCHAR"}, "labs": {"value": "DOUBLE"}}
>>> [s.text for s in complete("SELECT a", catalog)]
['age', 'avg', 'abs', 'as', 'and', 'asc']
>>> [s.text for s in complete("SELECT p. FROM patients p", catalog, cursor=9)]
['age', 'sex']
>>> [s.text for s in complete("select count(*) from la", catalog)]
['labs']
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fedquery.sql.support import SUPPORTED_AGGREGATES

Catalog = Mapping[str, Mapping[str, str]]  # table → column → type

STATEMENT_KEYWORDS = ("SELECT", "WITH", "SET", "RESET")
CLAUSE_KEYWORDS = (
    "FROM", "WHERE", "GROUP BY", "GROUP BY ALL", "HAVING", "ORDER BY", "LIMIT", "OFFSET",
    "JOIN", "LEFT JOIN", "INNER JOIN", "ON", "USING", "AS", "AND", "OR", "NOT", "IN", "IS",
    "NULL", "EXISTS", "BETWEEN", "LIKE", "ILIKE", "CASE", "WHEN", "THEN", "ELSE", "END",
    "DISTINCT", "FILTER", "ASC", "DESC", "NULLS FIRST", "NULLS LAST", "UNION ALL", "TRUE",
    "FALSE", "CAST", "INTERVAL", "DATE",
)
AFTER_TABLE_KEYWORDS = (
    "AS", "JOIN", "LEFT JOIN", "INNER JOIN", "USING", "ON", "WHERE", "GROUP BY", "GROUP BY ALL",
    "HAVING", "ORDER BY", "LIMIT",
)
SCALAR_FUNCTIONS = (
    "ABS", "CEIL", "FLOOR", "ROUND", "SQRT", "LN", "LOG10", "POWER", "LEAST", "GREATEST",
    "COALESCE", "NULLIF", "LOWER", "UPPER", "LENGTH", "SUBSTRING", "TRIM", "CONCAT",
    "STARTS_WITH", "CONTAINS", "REGEXP_MATCHES", "DATE_TRUNC", "DATE_PART", "DATE_DIFF",
    "EXTRACT", "YEAR", "MONTH", "DAY", "STRFTIME", "STRPTIME", "MAKE_DATE", "TRY_CAST",
)
AGGREGATE_FUNCTIONS = tuple(sorted(set(SUPPORTED_AGGREGATES.values()) | {"STDDEV", "VARIANCE"}))
FUNCTIONS = AGGREGATE_FUNCTIONS + SCALAR_FUNCTIONS

# Keywords after which the shell offers columns (and functions) of the tables in FROM.
_EXPRESSION_CLAUSES = {"select", "where", "by", "having", "on", "and", "or", "not", "when",
                       "then", "else", "case", "distinct", "in", "between", "like", "is",
                       "filter", "using"}
_TABLE_CLAUSES = {"from", "join"}
_CLAUSES = _EXPRESSION_CLAUSES | _TABLE_CLAUSES | {"group", "order", "limit", "offset"}
_TOKEN = re.compile(r"""'(?:[^']|'')*'?|"(?:[^"]|"")*"?|--[^\n]*|/\*.*?(?:\*/|$)|\w+|\S""",
                    re.DOTALL)
_WORD = re.compile(r"(?:([A-Za-z_]\w*|\"[^\"]+\")\.)?(\w*)$")
_NOT_ALIAS = {"where", "group", "order", "having", "limit", "join", "left", "right", "inner",
              "full", "cross", "natural", "on", "using", "union", "offset", "as", "qualify",
              "window"}
_ENDS_FROM = {"select", "where", "group", "order", "having", "limit", "on", "using", "union",
              "offset", "qualify", "window", "(", ")"}


@dataclass(frozen=True)
class Suggestion:
    text: str
    kind: str  # "keyword" | "function" | "table" | "column" | "command" | "value"
    start: int  # where the replaced word starts, relative to the cursor (≤ 0)
    meta: str = ""


def tokens(sql: str) -> list[str]:
    """SQL tokens without comments; an unterminated string or comment ends the text."""
    return [t for t in _TOKEN.findall(sql) if not t.startswith(("--", "/*"))]


def current_statement(text: str) -> tuple[str, int]:
    """The statement the cursor is in (text after the last ``;`` outside strings and
    comments) and its offset in ``text``."""
    start = 0
    for match in _TOKEN.finditer(text):
        if match.group() == ";":
            start = match.end()
    return text[start:], start


def split_statements(text: str) -> list[str]:
    """The statements of ``text``, split on ``;`` outside strings and comments (a statement
    of comments only is dropped).

    >>> split_statements("SELECT 1; SELECT ';' -- a; comment\\n;")
    ['SELECT 1', "SELECT ';' -- a; comment"]
    """
    pieces, start = [], 0
    for match in _TOKEN.finditer(text):
        if match.group() == ";":
            pieces.append(text[start:match.start()])
            start = match.end()
    pieces.append(text[start:])
    return [p.strip() for p in pieces if tokens(p)]


def sources(statement: str) -> dict[str, str]:
    """Alias (and table name) → table for every table named in a FROM or JOIN clause."""
    toks = tokens(statement)
    out: dict[str, str] = {}
    in_from = False
    i = 0
    while i < len(toks):
        low = toks[i].lower()
        if low in _TABLE_CLAUSES:
            in_from = True
        elif low in _ENDS_FROM:
            in_from = False
        if (in_from and (low in _TABLE_CLAUSES or low == ",") and i + 1 < len(toks)
                and _is_name(toks[i + 1])):
            name, j = _unquote(toks[i + 1]), i + 2
            while j + 1 < len(toks) and toks[j] == "." and _is_name(toks[j + 1]):
                name, j = _unquote(toks[j + 1]), j + 2  # schema.table → table
            alias = name
            if j < len(toks) and toks[j].lower() == "as":
                j += 1
            if j < len(toks) and _is_name(toks[j]) and toks[j].lower() not in _NOT_ALIAS:
                alias, j = _unquote(toks[j]), j + 1
            out[alias.lower()] = name.lower()
            out.setdefault(name.lower(), name.lower())
            i = j
            continue
        i += 1
    return out


def _is_name(token: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z_]\w*|\"[^\"]+\"", token))


def _unquote(name: str) -> str:
    return name[1:-1].replace('""', '"') if name.startswith('"') else name


def _matching(candidates, prefix: str, kind: str, meta=lambda c: "") -> list[Suggestion]:
    low = prefix.lower()
    return [Suggestion(c, kind, -len(prefix), meta(c)) for c in candidates
            if c.lower().startswith(low) and c.lower() != low]


def _cased(words, prefix: str) -> list[str]:
    """Keywords in the case the user types them in."""
    return [w.lower() for w in words] if prefix and prefix.islower() else list(words)


def complete_sql(statement: str, cursor: int, catalog: Catalog) -> list[Suggestion]:
    before = statement[:cursor]
    word = _WORD.search(before)
    qualifier, prefix = word.group(1), word.group(2)
    found = sources(statement)
    if qualifier is not None:
        table = found.get(_unquote(qualifier).lower(), _unquote(qualifier).lower())
        columns = catalog.get(table, {})
        return _matching(sorted(columns), prefix, "column", lambda c: columns[c])
    previous = tokens(before[:len(before) - len(prefix)])
    last = previous[-1].lower() if previous else None
    clause = next((t.lower() for t in reversed(previous) if t.lower() in _CLAUSES), None)
    if last is None:
        return _matching(_cased(STATEMENT_KEYWORDS, prefix), prefix, "keyword")
    if last in _TABLE_CLAUSES or (last == "," and clause in _TABLE_CLAUSES):
        return _matching(sorted(catalog), prefix, "table",
                         lambda t: f"{len(catalog[t])} columns")
    if clause in _TABLE_CLAUSES and last not in ("(", ","):
        return _matching(_cased(AFTER_TABLE_KEYWORDS, prefix), prefix, "keyword")
    tables = sorted(set(found.values()) & set(catalog)) or sorted(catalog)
    columns: dict[str, str] = {}
    for table in tables:
        for column, typ in catalog[table].items():
            columns.setdefault(column, typ)
    out = _matching(sorted(columns), prefix, "column", lambda c: columns[c])
    if clause in _EXPRESSION_CLAUSES or clause in ("by", None) or last in ("(", ","):
        out += _matching(_cased(FUNCTIONS, prefix), prefix, "function",
                         lambda f: "aggregate" if f.upper() in AGGREGATE_FUNCTIONS else "")
    if prefix:
        out += _matching(_cased(CLAUSE_KEYWORDS, prefix), prefix, "keyword")
    return out


def complete(text: str, catalog: Catalog, *, cursor: int | None = None,
             commands: Mapping[str, str | None] | None = None,
             sites: Sequence[str] = ()) -> list[Suggestion]:
    """Suggestions for the word at ``cursor`` (default: the end of ``text``).

    ``commands`` maps backslash command names to the kind of argument they take ("table",
    "site", "format", "sql", "file", "toggle" or None); ``sites`` are the federation's sites.
    """
    cursor = len(text) if cursor is None else cursor
    statement, offset = current_statement(text[:cursor])
    statement += text[cursor:].split(";", 1)[0]
    cursor -= offset
    stripped = statement.lstrip()
    lead = len(statement) - len(stripped)
    if not stripped.startswith("\\"):
        return complete_sql(statement, cursor, catalog)
    commands = commands or {}
    head, _, _ = stripped.partition(" ")
    if cursor <= lead + len(head):  # the command name itself
        return _matching(sorted(commands), stripped[:cursor - lead], "command")
    argument = commands.get(head)
    arg_start = lead + len(head) + 1
    typed = statement[arg_start:cursor]
    if argument == "sql":
        return complete_sql(statement[arg_start:], cursor - arg_start, catalog)
    if " " in typed.strip():
        return []
    choices = {"table": sorted(catalog), "site": list(sites),
               "format": ["table", "csv", "json", "markdown"],
               "toggle": ["on", "off"]}.get(argument or "", [])
    typed = typed.lstrip()
    return _matching(choices, typed, "value")
