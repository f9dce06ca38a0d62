"""Rule: lay out the slots of a secure-aggregation round.

Under ``aggregation: secure`` a site's partials leave it only as encrypted, masked integer
vectors whose slots are fixed in advance: every group key must come from a public domain (a
policy ``domain``, or a CASE with literal labels), so that which slots exist never depends
on the data, and every partial must be a sum (MIN and MAX cannot be added under
encryption).  The rule records the key tuples (NULL included) in slot order.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

from fedquery.errors import NotSupportedError
from fedquery.ir import Bounding
from fedquery.plan.bounding import DIALECT, KeyDomains
from fedquery.plan.state import PlanState

# The most groups one round may carry: 16 BFV ciphertexts of the wide profile per aggregate.
MAX_GROUPS = 16 * 8192


def lay_out_slots(state: PlanState) -> PlanState:
    if state.requirements.aggregation != "secure":
        return state
    for partial in state.partials:
        if partial.kind in ("min", "max"):
            raise NotSupportedError(
                f"{partial.kind.upper()} cannot be computed under secure aggregation: "
                "encrypted partials can only be added; use a GROUP BY over bands instead")
    bounding = state.bounding or Bounding(domains=tuple(state.public_domains))
    domains = KeyDomains(replace(state, bounding=bounding))
    values = []
    for key in state.group_keys:
        keys = domains.key_values(key)
        if keys is None:
            raise NotSupportedError(
                f"secure aggregation needs every GROUP BY key to have a public domain, and "
                f"{key.sql(DIALECT)} has none: the keys would come from the data; declare a "
                "`domain:` for the column in the policy, or group by a CASE with literal "
                "labels")
        values.append(keys)
    groups = tuple(itertools.product(*values))
    if len(groups) > MAX_GROUPS:
        raise NotSupportedError(f"secure aggregation of {len(groups):,} groups exceeds the "
                                f"limit of {MAX_GROUPS:,}; group by fewer or coarser keys")
    return replace(state, secure_groups=groups)
