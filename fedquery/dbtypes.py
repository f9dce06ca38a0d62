"""PEP 249 type objects and constructors.

``cursor.description`` gives each column's DuckDB type name as its type code; the type objects
compare equal to the names of their family, as PEP 249 asks:

>>> NUMBER == "BIGINT", NUMBER == "DECIMAL(38,2)", STRING == "VARCHAR", DATETIME == "DATE"
(True, True, True, True)
>>> Date(2026, 1, 1)
datetime.date(2026, 1, 1)
"""

from __future__ import annotations

import datetime as _dt
import time as _time


class DBAPITypeObject:
    """Equal to every DuckDB type name of one family (``DECIMAL(p,s)`` by its prefix)."""

    def __init__(self, *names: str) -> None:
        self.names = frozenset(names)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DBAPITypeObject):
            return self.names == other.names
        if not isinstance(other, str):
            return NotImplemented
        return other.upper().split("(")[0] in self.names

    def __hash__(self) -> int:
        return hash(self.names)

    def __repr__(self) -> str:
        return f"DBAPITypeObject({', '.join(sorted(self.names))})"


STRING = DBAPITypeObject("VARCHAR", "TEXT", "STRING", "CHAR", "UUID", "ENUM")
BINARY = DBAPITypeObject("BLOB", "BYTEA", "VARBINARY", "BIT")
NUMBER = DBAPITypeObject("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT",
                         "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE",
                         "DECIMAL", "BOOLEAN")
DATETIME = DBAPITypeObject("DATE", "TIME", "TIMESTAMP", "TIMESTAMP WITH TIME ZONE",
                           "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS", "INTERVAL")
ROWID = DBAPITypeObject()  # fedquery never releases row identifiers

Date = _dt.date
Time = _dt.time
Timestamp = _dt.datetime


def DateFromTicks(ticks: float) -> _dt.date:  # noqa: N802 - PEP 249 name
    return Date(*_time.localtime(ticks)[:3])


def TimeFromTicks(ticks: float) -> _dt.time:  # noqa: N802 - PEP 249 name
    return Time(*_time.localtime(ticks)[3:6])


def TimestampFromTicks(ticks: float) -> _dt.datetime:  # noqa: N802 - PEP 249 name
    return Timestamp(*_time.localtime(ticks)[:6])


def Binary(value: bytes) -> bytes:  # noqa: N802 - PEP 249 name
    return bytes(value)
