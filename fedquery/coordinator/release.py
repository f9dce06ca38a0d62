"""From combined partials to what may be released: the combined disclosure checks, the
post-processing of noisy values, and the 95 % half-width of every combined value.

Everything here is post-processing of what the sites released: it costs no privacy.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from fedquery.ir import FederatedPlan, Requirements, SiteReply
from fedquery.protect.disclosure import protect_combined_cells
from fedquery.protect.noise import clamp_combined, half_width


@dataclass(frozen=True)
class NoiseSummary:
    mechanisms: tuple[str, ...]  # per answering site, "none" when exact
    epsilon_spent: tuple[tuple[str, float], ...]  # per site: ε this query spent (0 if cached)
    cached: tuple[str, ...]  # sites that answered from their noise cache
    widths: dict  # partial name → 95 % half-width of its combined value
    remaining: tuple[tuple[str, float | None], ...] = ()  # per site: ε left after the query


def _meta(reply: SiteReply) -> dict:
    return dict(reply.meta)


def summarise(plan: FederatedPlan, replies: tuple[SiteReply, ...]) -> NoiseSummary:
    metas = {r.site: _meta(r) for r in replies}
    widths = {}
    for partial in plan.fragment.partials:
        noises, fixed_point = [], 1
        for meta in metas.values():
            for name, scale, fp in meta.get("noise", []):
                if name == partial.name:
                    noises.append((meta["mechanism"], float(scale)))
                    fixed_point = int(fp)
        widths[partial.name] = half_width(noises) / fixed_point if noises else 0.0
    spent = tuple((site, 0.0 if m.get("cached") else float(m.get("epsilon_spent", 0.0)))
                  for site, m in sorted(metas.items()) if "mechanism" in m)
    remaining = tuple((site, m["epsilon_remaining"]) for site, m in sorted(metas.items())
                      if "epsilon_remaining" in m)
    return NoiseSummary(tuple(m.get("mechanism", "none") for m in metas.values()), spent,
                        tuple(sorted(s for s, m in metas.items() if m.get("cached"))), widths,
                        remaining)


def _bounds(replies: tuple[SiteReply, ...]) -> dict[str, tuple[float, float]]:
    """Per partial, the union of the sites' clamps (each site clamped to its own)."""
    out: dict[str, tuple[float, float]] = {}
    for reply in replies:
        for name, lo, hi in _meta(reply).get("bounds", []):
            old = out.get(name)
            out[name] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
    return out


def protect_release(combined: pa.Table, plan: FederatedPlan, replies: tuple[SiteReply, ...],
                    requirements: Requirements, min_sites: int) -> tuple[pa.Table, NoiseSummary]:
    """Combined cells ready for post-processing: noisy values made feasible, small or
    incomplete cells suppressed, and a ``w_j`` half-width column per combined value."""
    summary = summarise(plan, replies)
    if summary.epsilon_spent:
        combined = clamp_combined(combined, plan.fragment.partials, _bounds(replies),
                                  requirements.min_cell_count)
    combined, _ = protect_combined_cells(combined, min_sites, requirements.min_cell_count)
    for partial in plan.fragment.partials:
        width = summary.widths.get(partial.name, 0.0)
        combined = combined.append_column("w_" + partial.name[2:],
                                          pa.array([width] * combined.num_rows, pa.float64()))
    return combined, summary


def expected_widths(plan: FederatedPlan, site_explains: list[dict]) -> list[dict]:
    """Per partial: its aggregate and the expected 95 % half-width of its combined value, from
    the noise every site would add (derived outputs propagate these, see plan/intervals.py)."""
    out = []
    for partial in plan.fragment.partials:
        noises, fixed_point = [], 1
        for site in site_explains:
            for name, scale, fp, _ in site.get("noise", []):
                if name == partial.name:
                    noises.append((site["mechanism"], float(scale)))
                    fixed_point = int(fp)
        out.append({"partial": partial.name, "kind": partial.kind, "aggregate": partial.sql,
                    "half_width": half_width(noises) / fixed_point if noises else 0.0})
    return out
