"""The contribution bounds a policy declares, as the planner's differential-privacy input."""

from __future__ import annotations

from fedquery.ir import Bounding
from fedquery.policy.model import Policy


def bounding_of(policy: Policy, hash_key: str) -> Bounding:
    """Row caps (``max_rows_per_unit``), column bounds and public domains of ``policy``;
    ``hash_key`` is the site's secret for ordering rows when capping."""
    caps, bounds, domains = [], [], []
    for table, entry in (policy.tables or {}).items():
        if entry.max_rows_per_unit is not None:
            caps.append((table, entry.max_rows_per_unit))
        for column, spec in entry.columns.items():
            if spec.bounds is not None:
                bounds.append(((table, column), tuple(spec.bounds)))
            if spec.domain is not None:
                domains.append(((table, column), tuple(spec.domain)))
    return Bounding(row_caps=tuple(caps), column_bounds=tuple(bounds), domains=tuple(domains),
                    hash_key=hash_key)
