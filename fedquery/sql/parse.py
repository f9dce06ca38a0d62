"""Parse SQL text with sqlglot (DuckDB dialect) into one statement, with readable errors.

>>> parse_statement("SELECT COUNT(*) FROM patients").sql()
'SELECT COUNT(*) FROM patients'
>>> parse_statement("SELECT a FROM t WHERE")
Traceback (most recent call last):
...
fedquery.errors.SqlParseError: syntax error near 'WHERE': the WHERE clause is incomplete (line 1, column 17)
  SELECT a FROM t WHERE
                  ^^^^^
"""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from fedquery.errors import SqlParseError

DIALECT = "duckdb"

_CLASS_RE = re.compile(r"<class 'sqlglot\.expressions(?:\.\w+)*\.(\w+)'>")
_MISSING_RE = re.compile(r"Required keyword: '(\w+)' missing for (\w+)")


def excerpt(sql: str, line: int, column: int, width: int = 1) -> str:
    """The offending line of ``sql`` with carets under ``column`` (both 1-based)."""
    lines = sql.splitlines() or [""]
    text = lines[min(max(line, 1), len(lines)) - 1]
    caret = " " * (max(column, 1) - 1) + "^" * max(width, 1)
    return f"  {text}\n  {caret}"


def _friendly(description: str) -> str:
    description = _CLASS_RE.sub(r"\1", description)
    missing = _MISSING_RE.search(description)
    if missing:
        node = missing.group(2)
        if missing.group(1) == "this" and node in {"Where", "Having", "Group", "Order", "Limit"}:
            return f"the {node.upper() if node != 'Group' else 'GROUP BY'} clause is incomplete"
        return f"an operand is missing in {node}"
    if description.startswith("Invalid expression / Unexpected token"):
        return "unexpected token"
    return description[:1].lower() + description[1:]


def _from_parse_error(sql: str, err: ParseError) -> SqlParseError:
    info = err.errors[0] if err.errors else {}
    highlight = info.get("highlight") or ""
    line = info.get("line") or 1
    end_col = info.get("col") or 1
    start_col = max(end_col - len(highlight) + 1, 1)
    near = f" near {highlight!r}" if highlight else ""
    message = f"syntax error{near}: {_friendly(info.get('description', str(err)))}"
    return SqlParseError(message, line=line, column=start_col,
                         excerpt=excerpt(sql, line, start_col, len(highlight)))


def _from_token_error(sql: str, err: TokenError) -> SqlParseError:
    # sqlglot reports "Error tokenizing '<context>'"; locate the unterminated quote.
    for quote in ("'", '"'):
        if sql.count(quote) % 2 == 1:
            pos = sql.rfind(quote)
            line = sql.count("\n", 0, pos) + 1
            column = pos - (sql.rfind("\n", 0, pos) + 1) + 1
            kind = "string literal" if quote == "'" else "quoted identifier"
            return SqlParseError(f"syntax error: unterminated {kind}", line=line, column=column,
                                 excerpt=excerpt(sql, line, column))
    return SqlParseError(f"syntax error: {err}")


def parse_statement(sql: str) -> exp.Expression:
    """Parse exactly one SQL statement; raise :class:`SqlParseError` with position otherwise."""
    if not isinstance(sql, str):
        raise SqlParseError(f"SQL must be a string, not {type(sql).__name__}")
    try:
        statements = [s for s in sqlglot.parse(sql, read=DIALECT) if s is not None]
    except ParseError as err:
        raise _from_parse_error(sql, err) from None
    except TokenError as err:
        raise _from_token_error(sql, err) from None
    if not statements:
        raise SqlParseError("empty query: write a SELECT statement")
    if len(statements) > 1:
        raise SqlParseError(f"expected one statement, got {len(statements)}: "
                            "send statements one at a time")
    return statements[0]
