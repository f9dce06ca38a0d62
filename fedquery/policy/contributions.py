"""The contribution bounds a policy declares, as the planner's differential-privacy input."""

from __future__ import annotations

from dataclasses import replace

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


def with_row_cap(bounding: Bounding, cap: int | None) -> Bounding:
    """``bounding`` with every table's row cap lowered to ``cap`` (the analyst's
    ``SET max_rows_per_unit``); a cap never rises above the policy's, and a table the policy
    leaves uncapped stays uncapped (and so refused under noise).

    >>> b = Bounding(row_caps=(("labs", 12), ("patients", 1)))
    >>> with_row_cap(b, 2).row_caps
    (('labs', 2), ('patients', 1))
    """
    if cap is None:
        return bounding
    return replace(bounding, row_caps=tuple((t, min(c, int(cap))) for t, c in bounding.row_caps))
