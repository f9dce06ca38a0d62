"""The federation catalog: the virtual union of the sites' tables.

A table is queryable when every participating site has it; a column is queryable when every
site has it with compatible types (integers widen, integers and decimals widen to the wider
numeric type).  Anything else is kept with the reason, so that a query touching it gets an
error naming the site and the column.

>>> from fedquery.ir import ColumnInfo, SiteCatalog, TableInfo
>>> a = SiteCatalog("a", (TableInfo("t", (ColumnInfo("x", "INTEGER"),)),))
>>> b = SiteCatalog("b", (TableInfo("t", (ColumnInfo("x", "BIGINT"),)),))
>>> Catalog.build([a, b]).schema()
{'t': {'x': 'BIGINT'}}
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from fedquery.errors import CatalogError
from fedquery.ir import SiteCatalog

_INT_RANK = {"TINYINT": 1, "SMALLINT": 2, "INTEGER": 3, "BIGINT": 4, "HUGEINT": 5,
             "UTINYINT": 1, "USMALLINT": 2, "UINTEGER": 3, "UBIGINT": 4}
_FLOAT_RANK = {"FLOAT": 1, "DOUBLE": 2}
_DECIMAL_RE = re.compile(r"DECIMAL\((\d+),\s*(\d+)\)")


def unify_types(types: Iterable[str]) -> str | None:
    """The common type of ``types``, or None if they are not compatible."""
    distinct = sorted({t.upper() for t in types})
    if len(distinct) == 1:
        return distinct[0]
    if all(t in _INT_RANK for t in distinct):
        return max(distinct, key=_INT_RANK.__getitem__)
    if all(t in _INT_RANK or t in _FLOAT_RANK for t in distinct):
        return "DOUBLE"
    decimals = [_DECIMAL_RE.fullmatch(t) for t in distinct]
    if all(m or t in _INT_RANK for m, t in zip(decimals, distinct)):
        scale = max(int(m.group(2)) for m in decimals if m)
        whole = max([int(m.group(1)) - int(m.group(2)) for m in decimals if m] + [19])
        return f"DECIMAL({min(whole + scale, 38)},{scale})"
    return None


@dataclass(frozen=True)
class FederatedTable:
    name: str
    columns: dict[str, str]  # usable column → unified type
    problems: dict[str, str] = field(default_factory=dict)  # column → why it is unusable
    missing_at: tuple[str, ...] = ()  # sites that do not have the table
    privacy_unit: str | None = None


@dataclass(frozen=True)
class Catalog:
    tables: dict[str, FederatedTable]
    sites: tuple[str, ...]

    @classmethod
    def build(cls, site_catalogs: Sequence[SiteCatalog]) -> Catalog:
        sites = tuple(c.site for c in site_catalogs)
        per_table: dict[str, dict[str, dict[str, str]]] = {}  # table → site → col → type
        units: dict[str, set[str]] = {}
        for cat in site_catalogs:
            for table in cat.tables:
                name = table.name.lower()
                per_table.setdefault(name, {})[cat.site] = {
                    c.name.lower(): c.type for c in table.columns}
                if table.privacy_unit:
                    units.setdefault(name, set()).add(table.privacy_unit.lower())
        tables = {}
        for name, by_site in per_table.items():
            missing = tuple(s for s in sites if s not in by_site)
            columns, problems = {}, {}
            all_columns = sorted({c for cols in by_site.values() for c in cols})
            for col in all_columns:
                absent = [s for s in by_site if col not in by_site[s]]
                if absent:
                    problems[col] = f"column {name}.{col} is missing at site {absent[0]!r}"
                    continue
                types = {s: by_site[s][col] for s in by_site}
                unified = unify_types(types.values())
                if unified is None:
                    detail = ", ".join(f"{t} at {s!r}" for s, t in types.items())
                    problems[col] = f"column {name}.{col} has incompatible types: {detail}"
                else:
                    columns[col] = unified
            unit_set = units.get(name, set())
            unit = next(iter(unit_set)) if len(unit_set) == 1 else None
            tables[name] = FederatedTable(name, columns, problems, missing, unit)
        return cls(tables, sites)

    def schema(self) -> dict[str, dict[str, str]]:
        """Table → column → type, including unusable columns (so errors can name them)."""
        out = {}
        for name, table in self.tables.items():
            cols = dict(table.columns)
            for col in table.problems:
                cols.setdefault(col, "VARCHAR")
            out[name] = cols
        return out

    def check_usable(self, tables: Iterable[str], columns: Iterable[tuple[str, str]]) -> None:
        """Raise CatalogError if a referenced table or column is not usable everywhere."""
        for name in sorted(set(tables)):
            table = self.tables.get(name)
            if table is None:
                raise CatalogError(f"unknown table {name!r}")
            if table.missing_at:
                raise CatalogError(f"table {name!r} is not available at site "
                                   f"{table.missing_at[0]!r}, so it cannot be queried across "
                                   "the federation")
        for table_name, col in sorted(set(columns)):
            table = self.tables.get(table_name)
            if table is not None and col in table.problems:
                raise CatalogError(table.problems[col])

    def privacy_unit(self, table: str) -> str | None:
        entry = self.tables.get(table.lower())
        return entry.privacy_unit if entry else None
