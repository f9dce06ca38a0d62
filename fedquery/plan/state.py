"""The planner's working state, threaded through the rules of ``planner.RULES``."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp

from fedquery.ir import Bounding, CellChecks, Partial, Requirements


@dataclass(frozen=True)
class AggregateUse:
    """One distinct aggregate of the query and how it is rebuilt from combined partials."""

    key: str  # SQL text of the aggregate (with its FILTER), used to find it again
    name: str  # upper-case aggregate name, e.g. "AVG"
    combined: exp.Expression  # expression over the combined ``c_*`` columns


@dataclass(frozen=True)
class PlanState:
    query: exp.Select
    privacy_units: dict[str, str] = field(default_factory=dict)  # table → unit column
    requirements: Requirements = Requirements()
    bounding: Bounding | None = None  # set at a site whose policy asks for noise
    group_keys: tuple[exp.Expression, ...] = ()
    aggregates: tuple[AggregateUse, ...] = ()
    partials: tuple[Partial, ...] = ()
    fragment_sql: str = ""
    checks: CellChecks | None = None
    row_cap: int = 0
    threshold: bool = False  # group keys without a public domain: released by threshold
    combine_sql: str = ""
    post_sql: str = ""
    post_interval_sql: str = ""  # the same, with every output's 95 % interval ends
    # outputs computed from aggregates (withheld when their row is suppressed), not group keys
    aggregate_outputs: tuple[int, ...] = ()
    # secure aggregation: public domains of the group keys' columns (from the policy, or the
    # catalog at the coordinator), and the key tuples of the slot layout they give
    public_domains: tuple = ()
    secure_groups: tuple[tuple, ...] | None = None
    notes: tuple[str, ...] = ()

    @property
    def group_names(self) -> tuple[str, ...]:
        return tuple(f"g_{i}" for i in range(len(self.group_keys)))
