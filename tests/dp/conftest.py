"""Fixtures for the differential-privacy suite (issue 5).

The suite runs with ``--import-mode=importlib`` and has no ``__init__.py``, so helpers shared by
several modules are fixtures: policies built in code, in-process federations whose state
(budget ledger, site key, noise cache) lives under ``tmp_path``, plans built with a site's
``Bounding``, and access to a site's ledger.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pyarrow as pa
import pytest

from fedquery.ir import Bounding, FederatedPlan, Requirements
from fedquery.plan.planner import plan_query
from fedquery.policy.model import (ColumnPolicy, Disclosure, Noise, Policy, TablePolicy)
from fedquery.sql import analyze

ANALYST = "analyst"

#: The schema every synthetic table ``t`` of this suite has (types as DuckDB reports them).
SCHEMA = {"t": {"pid": "BIGINT", "g": "VARCHAR", "x": "DOUBLE", "y": "BIGINT"}}


@pytest.fixture
def make_policy() -> Callable[..., Policy]:
    """``make_policy(mechanism, cap=, bounds=, domain=, max_epsilon=, delta=, budget=)``: a
    site policy over table ``t(pid identifier, g with a public domain, x bounded, y plain)``
    with minimum cell count 1 and no dominance rule, so that only noise protects."""
    def make(mechanism: str = "laplace", *, cap: int = 3,
             bounds: tuple[float, float] = (0.0, 10.0), domain: tuple = ("a", "b"),
             max_epsilon: float | None = 1.0, delta: float | None = 1e-7,
             budget: float | None = 1e4, name: str = "dp-test") -> Policy:
        return Policy(
            name=name, disclosure=Disclosure(min_cell_count=1, dominance=None),
            noise=Noise(mechanism=mechanism, max_epsilon_per_query=max_epsilon, delta=delta,
                        budget_epsilon=budget),
            tables={"t": TablePolicy(privacy_unit="pid", max_rows_per_unit=cap, columns={
                "pid": ColumnPolicy(role="identifier"),
                "g": ColumnPolicy(domain=tuple(domain)),
                "x": ColumnPolicy(bounds=tuple(bounds)),
                "y": ColumnPolicy()})})
    return make


@pytest.fixture
def make_table() -> Callable[..., pa.Table]:
    """``make_table(pid=[...], g=[...], x=[...], y=None)``: table ``t`` with :data:`SCHEMA`."""
    def make(pid, g, x, y=None) -> pa.Table:
        n = len(pid)
        return pa.table({"pid": pa.array(pid, pa.int64()), "g": pa.array(g, pa.string()),
                         "x": pa.array(x, pa.float64()),
                         "y": pa.array(list(range(n)) if y is None else y, pa.int64())})
    return make


@pytest.fixture
def federation(tmp_path) -> Callable[..., object]:
    """``federation({site: table_t}, policy_or_{site: policy}, state_dir=None)``: a DB-API
    connection over in-process sites (``local_federation``) with their state under
    ``tmp_path/state`` unless ``state_dir`` is given.  Closed at teardown."""
    from fedquery.testing import local_federation

    opened = []

    def make(sites: Mapping[str, pa.Table], policy, state_dir: Path | None = None, *,
             user: str = ANALYST, **options):
        policies = dict(policy) if isinstance(policy, Mapping) else {s: policy for s in sites}
        conn = local_federation({s: {"t": t} for s, t in sites.items()}, policy=policies,
                                privacy_units={"t": "pid"},
                                state_dir=state_dir or tmp_path / "state", user=user,
                                **options)
        opened.append(conn)
        return conn

    yield make
    for conn in opened:
        conn.close()


@pytest.fixture
def file_federation(tmp_path) -> Callable[..., object]:
    """``file_federation({site: duckdb_path}, policy, state_dir)``: like ``federation`` but
    every site reads a DuckDB file (``DuckDBAdapter.from_duckdb_file``), whose data version is
    the file's mtime and size: the noise cache survives a restart on unchanged data."""
    from fedquery.dbapi import Connection
    from fedquery.engine import Engine
    from fedquery.site.adapter import DuckDBAdapter
    from fedquery.site.service import SiteService
    from fedquery.transport.inprocess import InProcessClient

    opened = []

    def make(paths: Mapping[str, Path], policy, state_dir: Path):
        clients = []
        for site, path in paths.items():
            adapter = DuckDBAdapter.from_duckdb_file(path, ("t",))
            service = SiteService(site, adapter, policy=policy, privacy_units={"t": "pid"},
                                  state_dir=Path(state_dir) / site)
            clients.append(InProcessClient(service))
        conn = Connection(Engine(clients), user=ANALYST)
        opened.append(conn)
        return conn

    yield make
    for conn in opened:
        conn.close()


@pytest.fixture
def service() -> Callable[[object, str], object]:
    """``service(conn, site)``: the in-process SiteService behind a local federation."""
    def get(conn, site: str):
        for client in conn.engine.clients:
            if client.name == site:
                return client._service
        raise KeyError(site)
    return get


@pytest.fixture
def ledger_state(service) -> Callable[..., dict]:
    """``ledger_state(conn, analyst=ANALYST)``: ``{site: (spent rho, reserved rho)}``."""
    def get(conn, analyst: str = ANALYST) -> dict:
        out = {}
        for client in conn.engine.clients:
            ledger = service(conn, client.name).privacy.ledger
            out[client.name] = (ledger.spent(analyst), ledger.reserved(analyst))
        return out
    return get


@pytest.fixture
def make_bounding() -> Callable[..., Bounding]:
    """``make_bounding(cap=3, bounds=(0, 10), domain=("a", "b"), key="k")``: the Bounding a
    site with :func:`make_policy`'s policy would use (``bounding_of``), with hash key ``key``."""
    def make(cap: int = 3, bounds: tuple[float, float] = (0.0, 10.0),
             domain: tuple | None = ("a", "b"), key: str = "k") -> Bounding:
        domains = ((("t", "g"), tuple(domain)),) if domain is not None else ()
        return Bounding(row_caps=(("t", cap),), column_bounds=((("t", "x"), tuple(bounds)),),
                        domains=domains, hash_key=key)
    return make


@pytest.fixture
def dp_plan() -> Callable[..., FederatedPlan]:
    """``dp_plan(sql, bounding, mechanism="laplace")``: the plan a site builds under noise."""
    def make(sql: str, bounding: Bounding, mechanism: str = "laplace") -> FederatedPlan:
        return plan_query(analyze(sql, SCHEMA), {"t": "pid"}, Requirements(noise=mechanism),
                          bounding=bounding)
    return make


@pytest.fixture
def run_fragment() -> Callable[[FederatedPlan, pa.Table], list[dict]]:
    """``run_fragment(plan, table_t)``: the site's exact bounded partials (before noise), as
    a list of row dicts with integer values."""
    from fedquery.site.adapter import DuckDBAdapter

    def run(plan: FederatedPlan, table: pa.Table) -> list[dict]:
        adapter = DuckDBAdapter.from_arrow({"t": table})
        try:
            rows = adapter.execute(plan.fragment.sql).to_pylist()
        finally:
            adapter.close()
        names = {p.name for p in plan.fragment.partials}
        return [{k: (int(v) if k in names else v) for k, v in r.items()} for r in rows]
    return run
