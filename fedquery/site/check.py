"""Cross-check a policy against the data a site's connector opens: every table and column
the policy names exists, bounds sit on numeric columns and domains match the column's type."""

from __future__ import annotations

from fedquery.policy.model import Policy

_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE",
            "DECIMAL", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT")


def _is_numeric(duckdb_type: str) -> bool:
    return duckdb_type.upper().startswith(_NUMERIC)


def check_policy_against_data(policy: Policy, adapter, privacy_units: dict[str, str]) -> list[str]:
    """Problems (errors) found comparing ``policy`` with the site's actual tables."""
    problems = []
    actual = {t.name.lower(): {c.name.lower(): c.type for c in t.columns}
              for t in adapter.describe()}
    for table, entry in (policy.tables or {}).items():
        columns = actual.get(table)
        if columns is None:
            problems.append(f"tables.{table}: the site's data has no table {table!r} (it has: "
                            f"{', '.join(sorted(actual)) or 'none'})")
            continue
        unit = entry.privacy_unit
        if unit and privacy_units.get(table, unit).lower() != unit.lower():
            problems.append(f"tables.{table}.privacy_unit: {unit!r} differs from the "
                            f"connector's {privacy_units[table]!r}")
        for col, spec in entry.columns.items():
            typ = columns.get(col)
            where = f"tables.{table}.columns.{col}"
            if typ is None:
                problems.append(f"{where}: table {table!r} has no column {col!r}")
                continue
            if spec.bounds is not None and not _is_numeric(typ):
                problems.append(f"{where}.bounds: column is {typ}, bounds need a number")
            if spec.domain is not None:
                numeric_domain = all(isinstance(v, int | float) and not isinstance(v, bool)
                                     for v in spec.domain)
                if numeric_domain != _is_numeric(typ):
                    kind = "numbers" if numeric_domain else "strings"
                    problems.append(f"{where}.domain: domain values are {kind} but the "
                                    f"column is {typ}")
    return problems
