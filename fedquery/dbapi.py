"""PEP 249 connection and cursor over an :class:`~fedquery.engine.Engine`, Arrow-native.

Rows are built on top of the released Arrow table; ``fetch_arrow_table()`` and ``fetch_df()``
return it directly.  Vendor extensions are prefixed ``fq_``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from fedquery import errors
from fedquery.errors import InterfaceError, NotSupportedError
from fedquery.ir import Release, Report, Settings
from fedquery.sql.params import bind_parameters
from fedquery.sql.session import apply_session_statement


def _duckdb_type(field: pa.Field) -> str:
    return (field.metadata or {}).get(b"duckdb_type", str(field.type).encode()).decode()


def _column_values(field: pa.Field, column: pa.ChunkedArray) -> list:
    values = column.to_pylist()
    if _duckdb_type(field) in ("HUGEINT", "UHUGEINT"):  # travels as decimal128(38, 0)
        values = [None if v is None else int(v) for v in values]
    return values


class _Closeable:
    closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.closed = True

    def _check_open(self) -> None:
        if self.closed:
            raise InterfaceError(f"{type(self).__name__.lower()} is closed")


class Connection(_Closeable):
    # PEP 249 optional extension: the module's exception classes as connection attributes
    Warning = errors.Warning
    Error = errors.Error
    InterfaceError = errors.InterfaceError
    DatabaseError = errors.DatabaseError
    DataError = errors.DataError
    OperationalError = errors.OperationalError
    IntegrityError = errors.IntegrityError
    InternalError = errors.InternalError
    ProgrammingError = errors.ProgrammingError
    NotSupportedError = errors.NotSupportedError

    def __init__(self, engine, *, user: str = "analyst") -> None:
        self.engine = engine
        self.user = user
        self.settings = Settings()

    def cursor(self) -> Cursor:
        self._check_open()
        return Cursor(self)

    def commit(self) -> None:
        """A no-op: fedquery is read-only, there is never anything to commit."""
        self._check_open()

    def rollback(self) -> None:
        raise NotSupportedError("fedquery is read-only: there are no transactions to roll back")

    def close(self) -> None:
        if not self.closed:
            self.engine.close()
        super().close()


class Cursor(_Closeable):
    arraysize = 1

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._release: Release | None = None
        self._rows: list[tuple] | None = None
        self._pos = 0

    # -- execution ---------------------------------------------------------------------------

    def execute(self, operation: str, parameters: Any = None, *,
                progress: Callable[[int, int], None] | None = None) -> Cursor:
        """Run ``operation``; ``progress(answered, total)`` (an extension) is called as sites
        answer."""
        self._check_open()
        self.connection._check_open()
        self._release, self._rows, self._pos = None, None, 0  # a failure leaves no result
        if parameters is not None:
            operation = bind_parameters(operation, parameters)
        settings = apply_session_statement(operation, self.connection.settings)
        if settings is not None:  # SET / RESET: changes the session, returns no result set
            self.connection.settings = settings
            return self
        self._release = self.connection.engine.execute(
            operation, analyst=self.connection.user, settings=self.connection.settings,
            progress=progress)
        self._rows = None
        self._pos = 0
        return self

    # -- results -------------------------------------------------------------------------------

    def _table(self) -> pa.Table:
        self._check_open()
        if self._release is None:
            raise InterfaceError("no result set: execute() a query first (SET, RESET and "
                                 "failed statements produce none)")
        return self._release.table

    def _materialise(self) -> list[tuple]:
        self._check_open()
        if self._rows is None:
            table = self._table()
            columns = [_column_values(f, c) for f, c in zip(table.schema, table.columns)]
            self._rows = list(zip(*columns)) if columns else []
        return self._rows

    @property
    def description(self):
        if self._release is None:
            return None
        return [(f.name, _duckdb_type(f), None, None, None, None, f.nullable)
                for f in self._release.table.schema]

    @property
    def rowcount(self) -> int:
        return -1 if self._release is None else self._release.table.num_rows

    @property
    def fq_report(self) -> Report | None:
        return None if self._release is None else self._release.report

    def fetchone(self) -> tuple | None:
        rows = self._materialise()
        if self._pos >= len(rows):
            return None
        self._pos += 1
        return rows[self._pos - 1]

    def fetchmany(self, size: int | None = None) -> list[tuple]:
        rows = self._materialise()
        size = self.arraysize if size is None else size
        out = rows[self._pos:self._pos + size]
        self._pos += len(out)
        return out

    def fetchall(self) -> list[tuple]:
        rows = self._materialise()
        out = rows[self._pos:]
        self._pos = len(rows)
        return out

    def __iter__(self) -> Iterator[tuple]:
        while (row := self.fetchone()) is not None:
            yield row

    def executemany(self, operation: str, seq_of_parameters) -> Cursor:
        """Run ``operation`` once per parameter set; the last result stays on the cursor."""
        for parameters in seq_of_parameters:
            self.execute(operation, parameters)
        return self

    def setinputsizes(self, sizes) -> None:
        """Accepted and ignored (PEP 249): parameters are bound as typed literals."""

    def setoutputsize(self, size, column=None) -> None:
        """Accepted and ignored (PEP 249): results arrive whole, as Arrow."""

    setoutputsizes = setoutputsize  # the name this method had before it followed PEP 249

    def callproc(self, procname, parameters=None):
        raise NotSupportedError("fedquery has no stored procedures: run a SELECT instead")

    def nextset(self) -> None:
        """There is only ever one result set: None, or InterfaceError without one (PEP 249)."""
        self._table()

    def close(self) -> None:
        self._release, self._rows, self._pos = None, None, 0
        super().close()

    def fq_explain(self, operation: str) -> dict:
        """What ``operation`` would do at every site (decision, ε cost, expected ± widths),
        without running it or spending budget."""
        self._check_open()
        return self.connection.engine.explain(operation, analyst=self.connection.user,
                                              settings=self.connection.settings)

    def fq_budget(self) -> list[dict]:
        """The analyst's remaining budget at every site."""
        self._check_open()
        return self.connection.engine.budget(self.connection.user)

    def fetch_arrow_table(self) -> pa.Table:
        return self._table()

    def fetch_record_batch(self) -> pa.RecordBatchReader:
        """The result as a stream of Arrow record batches (ADBC style)."""
        return pa.RecordBatchReader.from_batches(self._table().schema,
                                                 self._table().to_batches())

    def fetch_df(self):
        return self._table().to_pandas()


def connect(federation: str | os.PathLike[str], *, user: str | None = None,
            token: str | None = None, timeout: float | None = None,
            on_site_failure: str | None = None) -> Connection:
    """Connect to the sites of a federation file over Arrow Flight (TLS, bearer token).

    The analyst's name and token come from the file's ``credentials`` unless ``user=`` /
    ``token=`` are given; ``timeout`` and ``on_site_failure`` override the file's defaults.
    """
    from fedquery.engine import Engine
    from fedquery.transport.federation import key_holder_client, load_federation, site_clients

    fed = load_federation(federation)
    name = user or fed.user
    if not name:
        raise InterfaceError(f"{fed.path}: no analyst name: add credentials.user or pass user=")
    clients = site_clients(fed, token or fed.token or "", timeout)
    key_holder = None
    try:
        if fed.key_holder is not None:
            key_holder = key_holder_client(fed)
        engine = Engine(clients, timeout=timeout if timeout is not None else fed.timeout,
                        on_site_failure=on_site_failure or fed.on_site_failure,
                        min_sites=fed.min_sites, key_holder=key_holder)
    except BaseException:
        for client in clients:
            client.close()
        if key_holder is not None:
            key_holder.close()
        raise
    return Connection(engine, user=name)
