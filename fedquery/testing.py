"""Helpers for testing federations: in-process sites, the pooled baseline, result comparison.

``local_federation`` runs exactly the site code path a real site runs, with in-process
transport, so equivalence tests exercise the whole engine.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

TableLike = Any  # pyarrow.Table | pandas.DataFrame


def _to_arrow(table: TableLike) -> pa.Table:
    if isinstance(table, pa.Table):
        return table
    if isinstance(table, pa.RecordBatch):
        return pa.Table.from_batches([table])
    # pandas.DataFrame (imported lazily: pandas is optional for this path)
    return pa.Table.from_pandas(table, preserve_index=False)


def local_federation(sites: Mapping[str, Mapping[str, TableLike]], policy: Any = "open", *,
                     privacy_units: Mapping[str, str] | None = None, user: str = "analyst",
                     state_dir: str | os.PathLike | None = None, secure: bool = False,
                     **engine_options: Any):
    """A DB-API connection over in-process sites built from ``{site: {table: data}}``.

    ``policy`` is a built-in policy name, a Policy, or ``{site: policy}``.  ``privacy_units``
    maps table name → privacy-unit column (used for ``COUNT(DISTINCT unit)`` and bounding).
    ``state_dir`` holds each site's audit log, budget ledger and key (``state_dir/<site>``);
    by default a new temporary directory.  ``secure=True`` adds a key holder (under
    ``state_dir/keyholder``), gives every site its mask and signing keys, and makes every
    policy ask for secure aggregation.

    >>> import pyarrow as pa
    >>> t = pa.table({"x": [1, 2, 3]})
    >>> conn = local_federation({"a": {"t": t}, "b": {"t": t}})
    >>> conn.cursor().execute("SELECT COUNT(*) AS n, SUM(x) AS s FROM t").fetchall()
    [(6, 12)]
    """
    from fedquery.dbapi import Connection
    from fedquery.engine import Engine
    from fedquery.policy import resolve_policy
    from fedquery.site.adapter import DuckDBAdapter
    from fedquery.site.service import SiteService
    from fedquery.transport.inprocess import InProcessClient

    clients = []
    root = Path(state_dir) if state_dir is not None else None
    if secure and root is None:
        root = Path(tempfile.mkdtemp(prefix="fedquery-sites-"))  # the key holder's keys
    configs, key_holder = (_secure_configs(list(sites), root) if secure else ({}, None))
    for name, tables in sites.items():
        adapter = DuckDBAdapter.from_arrow({t: _to_arrow(d) for t, d in tables.items()})
        site_policy = resolve_policy(policy.get(name, "open") if isinstance(policy, Mapping)
                                     else policy)
        if secure:
            site_policy = replace(site_policy, aggregation="secure")
        if root is None and site_policy.noise.mechanism != "none":
            root = Path(tempfile.mkdtemp(prefix="fedquery-sites-"))  # a budget ledger is needed
        service = SiteService(name, adapter, policy=site_policy,
                              privacy_units=dict(privacy_units or {}),
                              state_dir=root / name if root is not None else None,
                              secure=configs.get(name))
        clients.append(InProcessClient(service))
    engine = Engine(clients, key_holder=key_holder, **engine_options)
    return Connection(engine, user=user)


def _secure_configs(names: list[str], root: Path):
    """Mask and signing keys for every site, an in-process key holder that knows the sites'
    signing keys, and each site's view of it."""
    from fedquery.keyholder.client import InProcessKeyHolderClient
    from fedquery.keyholder.service import KeyHolderService
    from fedquery.protect import masks, signing
    from fedquery.site.secure import SecureSiteConfig

    mask_keys = {n: masks.generate_private_key() for n in names}
    signing_keys = {n: signing.generate_private_key() for n in names}
    raw = {n: k.public_key().public_bytes_raw() for n, k in mask_keys.items()}
    service = KeyHolderService(root / "keyholder", {
        n: k.public_key().public_bytes_raw() for n, k in signing_keys.items()})
    configs = {n: SecureSiteConfig(InProcessKeyHolderClient(service), mask_keys[n],
                                   signing_keys[n], raw) for n in names}
    return configs, InProcessKeyHolderClient(service, close_service=True)


def pooled_connection(sites: Mapping[str, Mapping[str, TableLike]]) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB holding, per table name, the UNION ALL of every site's rows."""
    con = duckdb.connect()
    by_table: dict[str, list[pa.Table]] = {}
    for tables in sites.values():
        for name, data in tables.items():
            by_table.setdefault(name, []).append(_to_arrow(data))
    for name, parts in by_table.items():
        pooled = pa.concat_tables(parts, promote_options="permissive")
        con.register("__pool_tmp", pooled)
        con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM __pool_tmp')
        con.unregister("__pool_tmp")
    return con


# ---------------------------------------------------------------------------------------------
# Comparing results


def _norm(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, _dt.datetime | _dt.date | _dt.time | str | bytes) or value is None:
        return value
    return value


def _values_equal(a: Any, b: Any, rel: float, abs_tol: float) -> bool:
    a, b = _norm(a), _norm(b)
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        if not isinstance(a, int | float) or not isinstance(b, int | float):
            return False
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=rel, abs_tol=abs_tol)
    return a == b


def _sort_key(row: tuple) -> tuple:
    out = []
    for v in row:
        v = _norm(v)
        if v is None:
            out.append((0, ""))
        elif isinstance(v, float):
            out.append((1, round(v, 6)))
        elif isinstance(v, int):
            out.append((1, v))
        else:
            out.append((2, str(v)))
    return tuple(out)


def assert_results_equal(federated: list[tuple], pooled: list[tuple], *, ordered: bool = False,
                         rel: float = 1e-9, abs_tol: float = 1e-9, context: str = "") -> None:
    """Assert two result sets are equal: integers exact, floats within ``rel``, NULLs equal.

    With ``ordered=False`` both sides are sorted first (use it when ORDER BY does not fix the
    order).
    """
    where = f" [{context}]" if context else ""
    if len(federated) != len(pooled):
        raise AssertionError(f"row count differs{where}: federated {len(federated)} vs "
                             f"pooled {len(pooled)}\nfederated: {federated[:5]}\n"
                             f"pooled: {pooled[:5]}")
    if not ordered:
        federated = sorted(federated, key=_sort_key)
        pooled = sorted(pooled, key=_sort_key)
    for i, (f, p) in enumerate(zip(federated, pooled)):
        if len(f) != len(p):
            raise AssertionError(f"row {i} width differs{where}: {f} vs {p}")
        for j, (a, b) in enumerate(zip(f, p)):
            if not _values_equal(a, b, rel, abs_tol):
                raise AssertionError(f"row {i} column {j} differs{where}: federated {a!r} vs "
                                     f"pooled {b!r}\nfederated row: {f}\npooled row: {p}")
