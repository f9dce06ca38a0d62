"""Engine adapters: DuckDB (files, in-memory) and PostgreSQL (pushdown).  The interface is
:class:`~fedquery.site.engines.base.EngineAdapter`; ``connectors/README.md`` says what a Trino
or Spark SQL adapter would need."""

from fedquery.site.engines.base import EngineAdapter
from fedquery.site.engines.duckdb import DuckDBAdapter

__all__ = ["DuckDBAdapter", "EngineAdapter", "PostgresAdapter"]


def __getattr__(name: str):
    if name == "PostgresAdapter":  # imported on use: a DuckDB-only site needs no driver
        from fedquery.site.engines.postgres import PostgresAdapter
        return PostgresAdapter
    raise AttributeError(name)
