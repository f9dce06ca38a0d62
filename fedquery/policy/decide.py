"""Decisions: may this site answer this query, under which requirements?"""

from __future__ import annotations

from collections.abc import Iterable

from sqlglot import exp

from fedquery.errors import PolicyViolation
from fedquery.ir import Decision, Requirements, RuleHit
from fedquery.policy.enforce import enforce
from fedquery.policy.model import Policy


def decide(query: exp.Expression, policy: Policy, site: str,
           privacy_units: dict[str, str] | None = None) -> Decision:
    """Check a qualified query against ``policy``; the Decision lists the rules that fired."""
    fired = enforce(query, policy, site, privacy_units) + _unavailable(policy, site)
    return Decision(allowed=not fired, requirements=policy.requirements(), fired=fired,
                    policy_hash=policy.content_hash)


# Protection this version cannot provide yet.  A site whose policy asks for it refuses every
# query rather than answer without the protection its steward required (fail closed).
_AVAILABLE_NOISE = ("none", "laplace", "gaussian")
_AVAILABLE_AGGREGATION = ("plain", "secure")


def _unavailable(policy: Policy, site: str) -> tuple[RuleHit, ...]:
    hits = []
    if policy.noise.mechanism not in _AVAILABLE_NOISE:
        hits.append(RuleHit("R-PROTECTION-UNAVAILABLE", site, "noise",
                            f"the policy requires {policy.noise.mechanism} noise, which this "
                            "fedquery version cannot provide yet",
                            "the site's operator must upgrade fedquery or the steward change "
                            "noise.mechanism"))
    if policy.aggregation not in _AVAILABLE_AGGREGATION:
        hits.append(RuleHit("R-PROTECTION-UNAVAILABLE", site, "aggregation",
                            f"the policy requires {policy.aggregation} aggregation, which this "
                            "fedquery version cannot provide yet",
                            "the site's operator must upgrade fedquery or the steward change "
                            "aggregation"))
    return tuple(hits)


def refusal(hits: tuple[RuleHit, ...]) -> PolicyViolation:
    """One readable PolicyViolation listing every rule that fired (no data values in it)."""
    hits = tuple(sorted(hits, key=lambda h: (h.site, h.rule, h.subject)))
    lines = [f"{h.rule} at {h.site}: {h.message}" + (f" (hint: {h.hint})" if h.hint else "")
             for h in hits]
    sites = sorted({h.site for h in hits})
    head = f"refused by the policy of {', '.join(sites)}"
    return PolicyViolation(head + ":\n  " + "\n  ".join(lines), rules=hits)


# Pure DP (laplace) is stricter than approximate DP (gaussian), which is stricter than none.
_NOISE_ORDER = {"none": 0, "gaussian": 1, "laplace": 2}


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
        zero_cells_disclosive=any(r.zero_cells_disclosive for r in reqs),
    )
