"""Text → (qualified query, plan), memoised: planning is pure, so the same SQL against the
same catalog always gives the same plan, and repeated queries skip sqlglot entirely.

>>> p = Preparer({"t": {"x": "INTEGER"}})
>>> p.prepare("SELECT SUM(x) FROM t") is p.prepare("SELECT SUM(x) FROM t")
True
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from sqlglot import exp

from fedquery.ir import Bounding, FederatedPlan, Requirements
from fedquery.plan.canonical import canonical_text
from fedquery.plan.planner import plan_query
from fedquery.sql import analyze
from fedquery.sql.lineage import BaseColumn, base_columns_of_query
from fedquery.sql.qualify import Schema


@dataclass(frozen=True)
class Prepared:
    query: exp.Expression  # qualified AST; treat as read-only
    plan: FederatedPlan
    base_columns: frozenset[BaseColumn]

    @functools.cached_property
    def canonical(self) -> str:
        """The query's canonical text (``plan.canonical``): computed once per prepared
        query, as the memo keeps it, not once per run."""
        return canonical_text(self.query)


class Preparer:
    def __init__(self, schema: Schema, privacy_units: Mapping[str, str] | None = None,
                 requirements: Requirements = Requirements(), bounding: Bounding | None = None,
                 maxsize: int = 512, public_domains: tuple = ()) -> None:
        """``public_domains`` ((table, column) → values) lay out secure-aggregation slots
        when ``requirements`` ask for secure aggregation."""
        self._requirements = requirements
        self._bounding = bounding
        self._domains = tuple(public_domains)
        self._schema = schema
        self._units = dict(privacy_units or {})
        self._cache: OrderedDict[tuple, Prepared] = OrderedDict()
        self._maxsize = maxsize
        self._lock = threading.Lock()

    def prepare(self, sql: str, bounding: Bounding | None = None,
                requirements: Requirements | None = None) -> Prepared:
        """``bounding`` and ``requirements`` override the preparer's for this query (a site
        applying the analyst's tighter row cap, or the stricter requirements of a secure
        round)."""
        bounding = bounding or self._bounding
        requirements = requirements or self._requirements
        key = (sql, bounding, requirements)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        query = analyze(sql, self._schema)
        prepared = Prepared(query, plan_query(query, self._units, requirements, bounding,
                                              public_domains=self._domains),
                            frozenset(base_columns_of_query(query)))
        with self._lock:
            self._cache[key] = prepared
            while len(self._cache) > self._maxsize:
                self._cache.popitem(last=False)
        return prepared
