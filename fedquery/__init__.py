"""fedquery: privacy-preserving federated SQL for health research networks.

This package is also a PEP 249 (DB-API 2.0) module: ``fedquery.connect(...)``.
"""

from fedquery.errors import (  # noqa: F401  (re-exported: PEP 249 module surface)
    BudgetExhausted,
    CatalogError,
    ConfigError,
    DatabaseError,
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    PolicyViolation,
    ProgrammingError,
    SiteError,
    SiteUnavailable,
    SqlParseError,
    Warning,
)

from fedquery.dbapi import Connection, Cursor, connect  # noqa: E402,F401
from fedquery.dbtypes import (  # noqa: E402,F401  (PEP 249 type objects and constructors)
    BINARY,
    DATETIME,
    NUMBER,
    ROWID,
    STRING,
    Binary,
    Date,
    DateFromTicks,
    Time,
    TimeFromTicks,
    Timestamp,
    TimestampFromTicks,
)

__version__ = "0.1.0"

apilevel = "2.0"
threadsafety = 1  # threads may share the module, not connections
paramstyle = "qmark"  # also "named" (:name): both bound through the syntax tree
