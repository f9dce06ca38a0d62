"""Query parameters bound through the syntax tree, never by string formatting: a value always
becomes one literal node, so ``"x' OR 1=1 --"`` is a string, not SQL.

>>> bind_parameters("SELECT COUNT(*) FROM t WHERE a = ? AND b > ?", ("x' OR 1=1 --", 3))
"SELECT COUNT(*) FROM t WHERE a = 'x'' OR 1=1 --' AND b > 3"
>>> bind_parameters("SELECT COUNT(*) FROM t WHERE a = :name", {"name": "F"})
"SELECT COUNT(*) FROM t WHERE a = 'F'"
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Mapping, Sequence

from sqlglot import exp

from fedquery.errors import DataError, ProgrammingError
from fedquery.sql.parse import DIALECT, parse_statement

_TYPES = (str, int, float, bool, type(None), dt.date, dt.datetime, dt.time, decimal.Decimal)


def _literal(value) -> exp.Expression:
    if not isinstance(value, _TYPES):
        raise DataError(f"a parameter of type {type(value).__name__} cannot be bound; use a "
                        "string, number, boolean, date, time, timestamp, Decimal or None")
    return exp.convert(value)


def bind_parameters(sql: str, parameters: Sequence | Mapping) -> str:
    """``sql`` with every ``?`` (qmark, in order) or ``:name`` (named) replaced by a literal."""
    statement = parse_statement(sql)
    placeholders = list(statement.find_all(exp.Placeholder))
    named = [p for p in placeholders if p.args.get("this")]
    if isinstance(parameters, Mapping):
        if len(named) != len(placeholders):
            raise ProgrammingError("named parameters need :name placeholders, not ?")
        missing = sorted({p.name for p in named} - set(parameters))
        if missing:
            raise ProgrammingError(f"no value for parameter(s): {', '.join(missing)}")
        for placeholder in named:
            placeholder.replace(_literal(parameters[placeholder.name]))
    else:
        if named:
            raise ProgrammingError("positional parameters need ? placeholders, not :name")
        values = list(parameters)
        if len(values) != len(placeholders):
            raise ProgrammingError(f"the query has {len(placeholders)} ? placeholder(s) but "
                                   f"{len(values)} parameter(s) were given")
        for placeholder, value in zip(placeholders, values):
            placeholder.replace(_literal(value))
    return statement.sql(DIALECT)
