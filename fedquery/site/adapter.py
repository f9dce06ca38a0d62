"""Compatibility name: the engine adapters live in :mod:`fedquery.site.engines`."""

from fedquery.site.engines.duckdb import DuckDBAdapter

__all__ = ["DuckDBAdapter"]
