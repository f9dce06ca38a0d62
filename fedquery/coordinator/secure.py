"""The coordinator's side of secure aggregation: announce a round, gather the sites' signed
ciphertexts, add them under the public context (it can never decrypt), and ask the key holder
to decrypt the federation-wide sum.

A round is all-or-nothing: if a participant fails, its masks would leave the sum as noise,
so the coordinator either fails (``on_site_failure: fail``) or starts a new round — a new
query id, the sites that answered as participants, fresh masks and noise shares — never
"topping up" a round.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from dataclasses import dataclass

import pyarrow as pa

from fedquery.coordinator.dispatch import raise_for_failures
from fedquery.errors import InternalError, OperationalError, StaleEpoch
from fedquery.ir import (
    QueryRequest,
    Requirements,
    SecureReleaseRequest,
    SecureRound,
    SignedContribution,
    SiteReply,
)
from fedquery.protect import he
from fedquery.protect.slots import layout_digest, layout_from_json
from fedquery.transport.secure_codec import requirements_from_json

log = logging.getLogger(__name__)

MAX_ROUNDS = 3  # rounds restarted because keys rotated or a site dropped out


@dataclass(frozen=True)
class SecureOutcome:
    combined: pa.Table  # combined cells, checked by the key holder
    replies: tuple[SiteReply, ...]  # the sites of the round that was released
    failures: tuple[tuple[str, Exception], ...]  # sites left out of an earlier round
    rounds: int


def contribution_of(reply: SiteReply) -> tuple[SignedContribution, dict]:
    meta = dict(reply.meta).get("secure")
    if not isinstance(meta, dict):
        raise InternalError(f"site {reply.site!r} answered a secure round without a "
                            "secure contribution")
    ciphertexts = tuple(reply.partials.column("ciphertext").to_pylist())
    contribution = SignedContribution(
        site=reply.site, ciphertexts=ciphertexts,
        signature=base64.b64decode(meta["signature"]),
        requirements=requirements_from_json(json.loads(meta["requirements"])),
        context_fingerprint=meta["fingerprint"])
    return contribution, meta


def run_secure(dispatcher, key_holder, request: QueryRequest, participants: tuple[str, ...],
               requirements: Requirements, timeout: float | None, on_site_failure: str,
               min_sites: int, progress=None) -> SecureOutcome:
    """Rounds until one completes with every participant, or fail."""
    failures: list[tuple[str, Exception]] = []
    rounds = 0
    participants = tuple(sorted(participants))
    while True:
        rounds += 1
        epoch, _, _ = key_holder.public_context("standard")
        query_id = uuid.uuid4().hex
        round_request = QueryRequest(
            sql=request.sql, analyst=request.analyst, settings=request.settings,
            query_id=query_id, fingerprint=request.fingerprint,
            secure=SecureRound(participants, requirements, epoch))
        gathered = dispatcher.gather(round_request, timeout, progress,
                                     only=set(participants))
        stale = [e for _, e in gathered.failures if isinstance(e, StaleEpoch)]
        if stale and rounds < MAX_ROUNDS:
            log.info("secure round %s: keys rotated meanwhile; new round", query_id)
            continue  # the key holder rotated its keys meanwhile: a new round
        if not gathered.failures:
            outcome = _release(key_holder, query_id, participants, epoch, gathered, failures,
                               rounds)
            if outcome is not None:
                return outcome
            if rounds < MAX_ROUNDS:
                continue
            raise StaleEpoch("the key holder kept rotating its keys; try again")
        failures += list(gathered.failures)
        answered = tuple(sorted(r.site for r in gathered.replies))
        refusals = [e for _, e in gathered.failures if not isinstance(e, OperationalError)]
        if on_site_failure != "partial" or refusals or len(answered) < max(min_sites, 2):
            raise_for_failures(gathered)
        log.warning("secure round %s: %d of %d sites answered; new round with fresh masks",
                    query_id, len(answered), len(participants))
        participants = answered


def _release(key_holder, query_id, participants, epoch, gathered, failures,
             rounds) -> SecureOutcome | None:
    """The key holder's release of one complete round (None: its epoch went stale)."""
    replies = tuple(sorted(gathered.replies, key=lambda r: r.site))
    contributions, metas = zip(*(contribution_of(r) for r in replies))
    layout = layout_from_json(metas[0]["layout"])
    digest = layout_digest(layout)
    for meta, reply in zip(metas, replies):
        if layout_digest(layout_from_json(meta["layout"])) != digest:
            raise InternalError(f"site {reply.site!r} laid out its slots differently from "
                                f"{replies[0].site!r} (their catalogs or policies differ); "
                                "nothing was decrypted")
    _, blob, fingerprint = key_holder.public_context(layout.profile)
    context = he.load_public_context(blob, fingerprint)
    summed = he.add(context, [list(c.ciphertexts) for c in contributions])
    try:
        combined, _ = key_holder.release(SecureReleaseRequest(
            query_id=query_id, participants=participants, epoch=epoch, layout=layout,
            contributions=tuple(contributions), summed=tuple(summed)))
    except StaleEpoch:
        return None
    if not layout.noise_sigma:
        # exact mode: a group no site has is not a row of the answer (as in plain mode)
        combined = combined.filter(pa.compute.greater(combined["__sites"], 0))
    return SecureOutcome(combined, replies, tuple(failures), rounds)
