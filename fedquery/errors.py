"""One exception tree for fedquery, with PEP 249 names at the top.

Code that catches a PEP 249 class also catches the domain errors below it:
``except ProgrammingError`` catches :class:`PolicyViolation` and :class:`SqlParseError`,
``except OperationalError`` catches :class:`BudgetExhausted` and :class:`SiteUnavailable`.

This module imports nothing from fedquery.
"""

from __future__ import annotations


class Warning(Exception):  # noqa: A001 - PEP 249 name
    """Important warnings (PEP 249)."""


class Error(Exception):
    """Root of every fedquery error (PEP 249)."""


class InterfaceError(Error):
    """Misuse of the client interface: a closed cursor, a missing result set."""


class DatabaseError(Error):
    """Errors related to the federation rather than to the client interface."""


class DataError(DatabaseError):
    """A value cannot be processed: bad parameter type, overflow of an encoding."""


class OperationalError(DatabaseError):
    """The federation could not answer: a site is down, a budget is spent, a timeout."""


class IntegrityError(DatabaseError):
    """Relational integrity; fedquery is read-only, so this is never raised by queries."""


class InternalError(DatabaseError):
    """A bug in fedquery, or a site reply that breaks the protocol."""


class ProgrammingError(DatabaseError):
    """The query is wrong: syntax, unknown table or column, or refused by a policy."""


class NotSupportedError(DatabaseError):
    """The query is valid SQL but cannot be answered exactly by a federation."""


# ---------------------------------------------------------------------------------------------
# Domain errors


class SqlParseError(ProgrammingError):
    """SQL text that does not parse.  Carries ``line``, ``column`` (1-based) and an excerpt."""

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None,
                 excerpt: str | None = None) -> None:
        self.line = line
        self.column = column
        self.excerpt = excerpt
        text = message
        if line is not None and column is not None:
            text = f"{message} (line {line}, column {column})"
        if excerpt:
            text = f"{text}\n{excerpt}"
        super().__init__(text)
        self.message = message


class CatalogError(ProgrammingError):
    """A table or column is unknown or not compatible across the participating sites."""


class ConfigError(InterfaceError):
    """A connector, policy or federation file is invalid.  Names the file and the key."""

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        self.path = path
        self.key = key
        super().__init__(message)


class PolicyViolation(ProgrammingError):
    """A site policy refuses the query.  ``rules`` lists (rule id, site, subject, hint)."""

    def __init__(self, message: str, *, rules: tuple = ()) -> None:
        self.rules = tuple(rules)
        super().__init__(message)


class BudgetExhausted(OperationalError):
    """The analyst's privacy budget at a site cannot cover the query."""


class StaleEpoch(OperationalError):
    """A secure-aggregation round was encrypted under a key epoch that is no longer the key
    holder's current one (keys rotate per epoch and after any failed check): the coordinator
    starts a new round with a new query id."""


class SiteError(OperationalError):
    """A site failed to answer (refusal, malformed reply, internal error).  Names the site."""

    def __init__(self, site: str, cause: str) -> None:
        self.site = site
        self.cause = cause
        super().__init__(f"site {site!r}: {cause}")


class SiteUnavailable(SiteError):
    """A site could not be reached or did not answer before its deadline."""
