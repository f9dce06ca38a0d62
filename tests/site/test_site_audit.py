"""Every decision a site makes, allowed or refused, is in its hash-chained audit log."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from fedquery.errors import PolicyViolation
from fedquery.ir import QueryRequest
from fedquery.policy.model import ColumnPolicy, Disclosure, Policy, TablePolicy
from fedquery.site.adapter import DuckDBAdapter
from fedquery.site.audit import verify
from fedquery.site.service import SiteService

POLICY = Policy(name="p", site="a", disclosure=Disclosure(min_cell_count=2, dominance=None),
                tables={"t": TablePolicy(privacy_unit="pid", columns={
                    "pid": ColumnPolicy(role="identifier"), "g": ColumnPolicy(domain=("x",)),
                    "secret": ColumnPolicy(role="hidden")})})


def test_allowed_and_refused_queries_are_audited_without_values(tmp_path):
    table = pa.table({"pid": ["p1", "p2", "p3"], "g": ["x", "x", "x"],
                      "secret": ["alpha", "beta", "gamma"]})
    log = tmp_path / "audit.jsonl"
    site = SiteService("a", DuckDBAdapter.from_arrow({"t": table}), POLICY,
                       {"t": "pid"}, audit_path=log)
    site.query(QueryRequest("SELECT g, COUNT(*) FROM t GROUP BY g", "alice", query_id="q1"))
    with pytest.raises(PolicyViolation):
        site.query(QueryRequest("SELECT secret, COUNT(*) FROM t GROUP BY secret", "alice",
                                query_id="q2"))
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["decision"] for r in records] == ["released", "refused"]
    assert records[1]["rules"] == ["R-HIDDEN"]
    assert records[0]["policy_hash"] == POLICY.content_hash
    assert all(v not in log.read_text() for v in ("alpha", "beta", "gamma", "p1", "p2"))
    result = verify(log)
    assert result.ok and result.records == 2
