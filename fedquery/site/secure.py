"""A site's answer in a secure-aggregation round: slots → noise shares → mask → encryption →
signature, so that the partials leave the site only as ciphertexts nobody can read alone.

The site derives everything itself from the analyst's SQL and its own policy (planned with
the stricter of its requirements and the round's, so every site lays out the same slots),
takes the key holder's public context only from the key holder (pinned by fingerprint per
epoch), and charges its own ledger before the fragment runs.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pyarrow as pa

from fedquery.errors import (
    InternalError,
    NotSupportedError,
    PolicyViolation,
    StaleEpoch,
)
from fedquery.ir import (
    QueryRequest,
    Requirements,
    RuleHit,
    SecureLayout,
    SiteReply,
    SlotColumn,
)
from fedquery.protect import he
from fedquery.protect.secure import add_shares, plan_shares, seal
from fedquery.protect.signing import requirements_json
from fedquery.protect.slots import (
    NOT_NULL,
    PRESENT,
    check_own_range,
    encode,
    layout_to_json,
)

log = logging.getLogger(__name__)


@dataclass
class SecureSiteConfig:
    """What a site needs to take part in secure aggregation."""

    key_holder: object  # a KeyHolderClient: public_context(profile) → (epoch, blob, fp)
    mask_key: object  # this site's X25519 private key
    signing_key: object  # this site's Ed25519 private key
    peer_mask_keys: Mapping[str, bytes]  # every site's published X25519 public key
    _contexts: dict = field(default_factory=dict, repr=False)

    def context(self, profile: str, epoch: int) -> he.PublicContext:
        """The key holder's public context of ``epoch``, checked against its fingerprint."""
        cached = self._contexts.get(profile)
        if cached is not None and cached[0] == epoch:
            return cached[1]
        current, blob, fingerprint = self.key_holder.public_context(profile)
        if current != epoch:
            raise StaleEpoch(f"the round is for key epoch {epoch} but the key holder is at "
                             f"epoch {current}; the coordinator must start a new round")
        context = he.load_public_context(blob, fingerprint)
        self._contexts[profile] = (epoch, context)
        return context


def _refuse(site: str, message: str) -> PolicyViolation:
    return PolicyViolation(f"refused by the policy of {site}:\n  R-SECURE at {site}: {message}",
                           rules=(RuleHit("R-SECURE", site, "aggregation", message, ""),))


def layout_for(plan, raw_schema: pa.Schema, shares) -> SecureLayout:
    """The slot layout of ``plan`` at this site (identical at every site for one round)."""
    fragment = plan.fragment
    columns = []
    for partial in fragment.partials:
        field_ = raw_schema.field(partial.name)
        if shares is not None:
            columns.append(SlotColumn(partial.name, partial.fixed_point or 1))
        elif pa.types.is_decimal(field_.type):
            columns.append(SlotColumn(partial.name, 10 ** field_.type.scale,
                                      field_.type.scale))
        elif pa.types.is_integer(field_.type) or pa.types.is_boolean(field_.type):
            columns.append(SlotColumn(partial.name))
        else:
            raise NotSupportedError(
                f"secure aggregation sums exact integers, and {partial.sql} is "
                f"{field_.type}: CAST it to DECIMAL(p, s) (or give its columns bounds and "
                "noise in the policy, which encodes them in fixed point)")
    if shares is None:  # exact mode: a sum over no values is NULL, as in plain mode
        columns += [SlotColumn(NOT_NULL + p.name) for p in fragment.partials
                    if p.kind in ("sum", "sumsq")]
    checks = None
    if shares is None and fragment.checks is not None:
        checks = fragment.checks
        names = list(checks.contributors) + [c for pair in checks.dominant for c in pair]
        columns += [SlotColumn(n) for n in dict.fromkeys(names)]
    if shares is None:  # under noise every site reports every group: nothing to count
        columns.append(SlotColumn(PRESENT))
    wide = any(p.kind == "sumsq" for p in fragment.partials)
    profile = he.WIDE if wide else he.STANDARD
    return SecureLayout(group_columns=tuple(fragment.group_columns),
                        groups=tuple(plan.secure_groups or ((),)), columns=tuple(columns),
                        checks=checks, profile=profile.name, bound=profile.max_abs_total,
                        noise_sigma=max((p.sigma for p in shares.partials), default=0.0)
                        if shares is not None else 0.0)


def answer_secure(site: str, config: SecureSiteConfig, request: QueryRequest, prepared,
                  own: Requirements, honest_sites: int,
                  execute: Callable[[str], pa.Table], privacy=None) -> SiteReply:
    """This site's encrypted contribution to one round (``privacy``: its SitePrivacy when
    the policy adds noise — the ledger is charged before the fragment runs)."""
    round_ = request.secure
    participants = tuple(sorted(round_.participants))
    if site not in participants:
        raise _refuse(site, "this site is not among the round's participants")
    if len(participants) < 2:
        raise _refuse(site, "secure aggregation needs at least two participating sites")
    plan = prepared.plan
    if plan.secure_groups is None:
        raise InternalError("the plan has no secure slot layout")
    shares = None
    meta: list = []
    reservations = []
    if privacy is not None:
        if len(participants) < honest_sites:
            raise _refuse(site, f"the policy assumes {honest_sites} honest sites, the round "
                                f"has only {len(participants)} participants")
        epsilon, delta = privacy.epsilon_delta(request)
        shares = plan_shares(plan.fragment.partials, plan.fragment.row_cap,
                             privacy.noise.mechanism, epsilon, delta or privacy.delta,
                             honest_sites, len(plan.secure_groups))
        reservations.append(privacy.ledger.reserve(
            request.analyst, shares.rho, budget_rho=privacy.budget_rho(),
            query_id=request.query_id))
    try:
        raw = execute(plan.fragment.sql)
        layout = layout_for(plan, raw.schema, shares)
        slots = encode(raw, layout, present="all" if shares is not None else "rows")
        if shares is not None:
            slots = add_shares(slots, layout, shares)
        check_own_range(slots, layout, len(participants))
        context = config.context(layout.profile, round_.epoch)
        ciphertexts, signature = seal(
            slots, layout, site=site, query_id=request.query_id, participants=participants,
            mask_key=config.mask_key, peer_mask_keys=config.peer_mask_keys, context=context,
            signing_key=config.signing_key, requirements=own)
    except BaseException:
        for reservation in reservations:  # the fragment may have run: charged (see privacy)
            privacy.ledger.commit(reservation)
        raise
    for reservation in reservations:
        privacy.ledger.commit(reservation)
    meta.append(("secure", {
        "layout": layout_to_json(layout), "signature": base64.b64encode(signature).decode(),
        "fingerprint": context.fingerprint, "requirements": requirements_json(own),
        "epoch": round_.epoch}))
    if shares is not None:
        meta += [("mechanism", "gaussian"), ("epsilon", shares.epsilon),
                 ("delta", shares.delta), ("rho", shares.rho),
                 ("epsilon_spent", privacy.shown_epsilon_of(shares.rho, shares.delta)),
                 ("noise", [[p.name, p.sigma, p.fixed_point] for p in shares.partials]),
                 ("bounds", [[p.name, *p.arg_bounds] for p in plan.fragment.partials
                             if p.arg_bounds]),
                 ("cached", False), ("rho_charged", shares.rho),
                 privacy.remaining_entry(request.analyst)]
    table = pa.table({"ciphertext": pa.array(ciphertexts, pa.binary())})
    log.info("site=%s query_id=%s secure contribution: %d ciphertexts, %d bytes", site,
             request.query_id, len(ciphertexts), sum(len(c) for c in ciphertexts))
    return SiteReply(site=site, fingerprint=plan.fingerprint, partials=table, suppressed=0,
                     meta=tuple(meta))


def explain_secure(privacy, request: QueryRequest, prepared, honest_sites: int) -> dict:
    """What a secure round of the query would cost here and the noise share this site would
    add — without data or budget (``noise`` entries as plain mode's: name, σ, fixed point,
    sensitivity; the coordinator adds the shares' variances)."""
    plan = prepared.plan
    epsilon, delta = privacy.epsilon_delta(request)
    groups = len(plan.secure_groups or ((),))
    shares = plan_shares(plan.fragment.partials, plan.fragment.row_cap,
                         privacy.noise.mechanism, epsilon, delta or privacy.delta,
                         honest_sites, groups)
    return {"mechanism": "gaussian", "epsilon": privacy.shown_epsilon_of(shares.rho, delta),
            "delta": delta, "rho": shares.rho, "row_cap": plan.fragment.row_cap,
            "noise": [[p.name, p.sigma, p.fixed_point, p.sensitivity]
                      for p in shares.partials],
            "budget": privacy.budget(request.analyst), "aggregation": "secure",
            "honest_sites": honest_sites}


def require_secure_support(site: str, config: SecureSiteConfig | None) -> None:
    if config is None:
        raise NotSupportedError(
            f"site {site!r} requires secure aggregation but has no key holder and keys "
            "configured (site serve --federation with a key_holder section)")
