"""A site's differential privacy: its bounds, its budget ledger, its noise cache.

The contract for every noisy answer: look in the cache (an equal query, however written, gets
the same noisy answer at no cost) → reserve the query's ρ in the ledger (refused when the
analyst's budget cannot cover it) → run the bounded fragment → add OpenDP noise → commit the
spend → store in the cache → release.  Anything failing before the commit rolls the
reservation back; a process killed in between leaves a reservation that the ledger reclaims,
and nothing was released.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fedquery.errors import ConfigError, PolicyViolation
from fedquery.ir import Bounding, QueryRequest, RuleHit, SiteReply
from fedquery.policy.contributions import bounding_of, with_row_cap
from fedquery.policy.ledger import BudgetLedger
from fedquery.policy.model import Policy
from fedquery.protect.disclosure import protect_site_cells
from fedquery.protect.keys import site_secret
from fedquery.plan.bounding import KEY_UNITS
from fedquery.protect.noise import (DEFAULT_DELTA, add_noise, budget_rho, epsilon_of,
                                    plan_noise, threshold_keys)
from fedquery.transport import codec


DELTA_ACCOUNT = "\x1fdelta"  # ledger account (analyst + this) for threshold δ spends


class SitePrivacy:
    def __init__(self, site: str, policy: Policy, state_dir: str | Path | None) -> None:
        if state_dir is None:
            raise ConfigError(f"site {site!r}: its policy adds {policy.noise.mechanism} noise, "
                              "so it needs a state directory for its budget ledger "
                              "(--state-dir)", key="state_dir")
        state = Path(state_dir)
        state.mkdir(parents=True, exist_ok=True)
        self.site = site
        self.policy = policy
        self.noise = policy.noise
        self.delta = self.noise.delta or DEFAULT_DELTA
        self.bounding = bounding_of(policy, site_secret(state / "site.key"))
        self.ledger = BudgetLedger(state / "ledger.sqlite")

    # -- settings and budget -----------------------------------------------------------------

    def bounding_for(self, settings) -> Bounding:
        """The contribution bounds one query runs under: the policy's, with the row caps
        lowered to the analyst's ``max_rows_per_unit`` if asked."""
        return with_row_cap(self.bounding, settings.get("max_rows_per_unit"))

    def epsilon_delta(self, request: QueryRequest) -> tuple[float, float | None]:
        limit = self.noise.max_epsilon_per_query
        epsilon = float(request.settings.get("epsilon", limit if limit is not None else 1.0))
        if limit is not None and epsilon > limit + 1e-12:
            raise PolicyViolation(
                f"refused by the policy of {self.site}:\n  R-EPSILON at {self.site}: a query "
                f"may spend at most epsilon {limit:g} here, {epsilon:g} was asked (hint: SET "
                f"epsilon = {limit:g} or less)",
                rules=(RuleHit("R-EPSILON", self.site, "epsilon",
                               f"at most {limit:g} per query", f"SET epsilon = {limit:g}"),))
        delta = request.settings.get("delta", self.noise.delta)
        if delta is not None and float(delta) > self.delta * (1 + 1e-12):
            raise PolicyViolation(
                f"refused by the policy of {self.site}:\n  R-DELTA at {self.site}: a query may "
                f"use delta at most {self.delta:g} here (hint: SET delta = {self.delta:g} or "
                "less)",
                rules=(RuleHit("R-DELTA", self.site, "delta", f"at most {self.delta:g}",
                               f"SET delta = {self.delta:g}"),))
        return epsilon, (float(delta) if delta is not None else None)

    def budget_rho(self) -> float:
        epsilon = self.noise.budget_epsilon
        return float("inf") if epsilon is None else budget_rho(epsilon, self.delta)

    def budget(self, analyst: str) -> dict:
        total = self.budget_rho()
        spent, held = self.ledger.usage(analyst)
        remaining = max(0.0, total - spent - held)
        epsilon_spent = epsilon_of(spent, self.delta)
        return {"analyst": analyst, "site": self.site, "mechanism": self.noise.mechanism,
                "delta": self.delta, "rho_spent": spent, "rho_remaining": remaining,
                "epsilon_budget": self.noise.budget_epsilon,
                "epsilon_spent": epsilon_spent,
                "epsilon_remaining": None if remaining == float("inf") else (
                    epsilon_of(total, self.delta) - epsilon_spent)}

    # -- answering -----------------------------------------------------------------------------

    def answer(self, request: QueryRequest, prepared, execute, data_version: str) -> SiteReply:
        epsilon, delta = self.epsilon_delta(request)
        plan = prepared.plan
        noise = plan_noise(plan.fragment.partials, plan.fragment.row_cap,
                           self.noise.mechanism, epsilon, delta or self.delta,
                           plan.fragment.threshold)
        key = hashlib.sha256("\n".join([
            prepared.canonical, self.policy.content_hash, self.noise.mechanism,
            repr(epsilon), repr(delta), repr(plan.fragment.row_cap),
            data_version]).encode()).hexdigest()
        cached = self.ledger.cache_get(key)
        if cached is not None:
            reply = codec.decode_reply(cached)
            return SiteReply(reply.site, plan.fingerprint, reply.partials, reply.suppressed,
                             reply.meta + (("cached", True), ("rho_charged", 0.0),
                                           self.remaining_entry(request.analyst)))
        query_id = request.query_id or key
        reservations = [self.ledger.reserve(request.analyst, noise.rho,
                                            budget_rho=self.budget_rho(), query_id=query_id)]
        if noise.keys is not None:  # the threshold's failure probability has its own budget
            try:
                reservations.append(self.ledger.reserve(
                    request.analyst + DELTA_ACCOUNT, noise.keys.delta,
                    budget_rho=self.delta, query_id=query_id))
            except BaseException:
                self.ledger.rollback(reservations[0])
                raise
        try:
            raw = execute(plan.fragment.sql)
            noisy = add_noise(raw, noise)
            if noise.keys is not None:
                noisy = threshold_keys(noisy, plan.fragment.group_columns, KEY_UNITS,
                                       noise.keys)
            meta = (("mechanism", noise.mechanism), ("epsilon", epsilon), ("delta", delta),
                    ("rho", noise.rho), ("epsilon_spent", self._shown_epsilon(noise)),
                    ("noise", json.loads(json.dumps(
                        [[p.name, p.scale, p.fixed_point] for p in noise.partials]))),
                    ("bounds", [[p.name, *p.arg_bounds] for p in plan.fragment.partials
                                if p.arg_bounds]))
            # Under noise, cells are judged on their noisy counts at the coordinator: the
            # site adds only the (unset) check columns every reply carries.
            flagged, _ = protect_site_cells(noisy, plan.fragment.group_columns,
                                            tuple(p.name for p in plan.fragment.partials), None)
            reply = SiteReply(self.site, plan.fingerprint, flagged, 0, meta)
        except BaseException:
            # The fragment touched the data, so even a failure depends on it: it is charged
            # like an answer (otherwise failing queries would be free yes/no oracles).
            for reservation in reservations:
                self.ledger.commit(reservation)
            raise
        # the spend and the answer it paid for, in one durable transaction
        encoded = codec.encode_reply(reply)
        stored = self.ledger.commit_and_cache(reservations, key, encoded)
        # first writer wins: everyone sees one answer (ours, unless another got there first)
        released = reply if stored == encoded else codec.decode_reply(stored)
        return SiteReply(released.site, plan.fingerprint, released.partials,
                         released.suppressed, released.meta + (
                             ("cached", False), ("rho_charged", noise.rho),
                             self.remaining_entry(request.analyst)))

    def remaining_entry(self, analyst: str) -> tuple[str, float | None]:
        """The analyst's ε left here after this query (None: no budget limit)."""
        return ("epsilon_remaining", self.budget(analyst)["epsilon_remaining"])

    def explain(self, request: QueryRequest, prepared) -> dict:
        """What the query would cost here and how precise it would be — no data, no budget."""
        epsilon, delta = self.epsilon_delta(request)
        plan = prepared.plan
        noise = plan_noise(plan.fragment.partials, plan.fragment.row_cap,
                           self.noise.mechanism, epsilon, delta or self.delta,
                           plan.fragment.threshold)
        return {"mechanism": noise.mechanism, "epsilon": self._shown_epsilon(noise),
                "delta": delta, "rho": noise.rho, "row_cap": plan.fragment.row_cap,
                "noise": [[p.name, p.scale, p.fixed_point, p.sensitivity]
                          for p in noise.partials],
                "budget": self.budget(request.analyst)}

    def shown_epsilon_of(self, rho: float, delta: float | None) -> float:
        """The ε at δ a user reads for a zCDP charge of ``rho``."""
        return epsilon_of(rho, delta or self.delta)

    def _shown_epsilon(self, noise) -> float:
        """The ε a user reads for this query: the asked ε under pure DP, else OpenDP's
        conversion of the charged ρ at δ."""
        return noise.epsilon if noise.mechanism == "laplace" else epsilon_of(
            noise.rho, noise.delta or self.delta)

    def close(self) -> None:
        self.ledger.close()
