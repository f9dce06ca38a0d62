"""The site service: everything a site does with one analyst request.

A site trusts nobody: it receives the analyst's original SQL, parses and qualifies it against
its own catalog, checks it against its own policy, plans its own fragment, runs it on its own
data and protects the result before anything leaves.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from fedquery.errors import Error, InternalError
from fedquery.ir import (ColumnInfo, QueryRequest, Requirements, RuleHit, SiteCatalog,
                         SiteReply, TableInfo)
from fedquery.plan.prepare import Preparer
from fedquery.policy import Policy, decide, refusal, resolve_policy, strictest
from fedquery.policy.contributions import bounding_of
from fedquery.protect.disclosure import protect_site_cells
from fedquery.site.audit import AuditLog
from fedquery.site.privacy import SitePrivacy
from fedquery.site.secure import answer_secure, explain_secure, require_secure_support
from fedquery.site.unit_stats import UnitRowStats

log = logging.getLogger(__name__)


class SiteService:
    def __init__(self, name: str, adapter, policy: str | Policy = "open",
                 privacy_units: Mapping[str, str] | None = None,
                 audit_path: str | Path | None = None,
                 state_dir: str | Path | None = None, secure=None) -> None:
        """``state_dir`` holds the site's audit log, budget ledger and secret key (needed
        when the policy adds noise); ``audit_path`` overrides where the audit log goes;
        ``secure`` (a :class:`~fedquery.site.secure.SecureSiteConfig`) lets the site take
        part in secure-aggregation rounds."""
        self.name = name
        self.state_dir = Path(state_dir) if state_dir is not None else None
        if audit_path is None and state_dir is not None:
            Path(state_dir).mkdir(parents=True, exist_ok=True)
            audit_path = Path(state_dir) / "audit.jsonl"
        self.audit = AuditLog(audit_path) if audit_path is not None else None
        self.adapter = adapter
        self.policy = resolve_policy(policy)
        self.privacy = (SitePrivacy(name, self.policy, state_dir)
                        if self.policy.noise.mechanism != "none" else None)
        units = {k.lower(): v.lower() for k, v in (privacy_units or {}).items()}
        self._tables = tuple(
            TableInfo(t.name.lower(), t.columns, units.get(t.name.lower()))
            for t in adapter.describe())
        self._units = {t.name: t.privacy_unit for t in self._tables if t.privacy_unit}
        self.secure = secure
        self._unit_stats = (
            UnitRowStats(adapter, self._units, (t for t, _ in self.privacy.bounding.row_caps))
            if self.privacy is not None and getattr(adapter, "exact_data_version", False)
            else None)
        self._preparer = Preparer({t.name: {c.name.lower(): c.type for c in t.columns}
                                   for t in self._tables}, self._units,
                                  self.policy.requirements(),
                                  self.privacy.bounding if self.privacy else None,
                                  public_domains=bounding_of(self.policy, "").domains)

    def catalog(self) -> SiteCatalog:
        """The tables and columns this site's policy releases — nothing else (hidden and
        unlisted columns are not even named)."""
        released = []
        for table in self._tables:
            entry = self.policy.table(table.name)
            if entry is None:
                continue
            columns = tuple(
                ColumnInfo(c.name, c.type, role=col.role, domain=col.domain,
                           bounds=col.bounds, uses=tuple(sorted(col.uses)),
                           aggregates=None if col.aggregates is None
                           else tuple(sorted(col.aggregates)))
                for c in table.columns if (col := self.policy.column(
                    table.name, c.name)) is not None and col.role != "hidden")
            released.append(TableInfo(table.name, columns, table.privacy_unit))
        return SiteCatalog(self.name, tuple(released), self.policy.requirements())

    def health(self) -> dict:
        return {"site": self.name, "status": "ok", "tables": len(self._tables)}

    def query(self, request: QueryRequest) -> SiteReply:
        """Answer one request; every outcome, allowed or refused, goes to the audit log."""
        started = time.perf_counter()
        record = {"event": "query", "site": self.name, "analyst": request.analyst,
                  "query_id": request.query_id, "sql": request.sql,
                  "sql_sha256": hashlib.sha256(request.sql.encode()).hexdigest(),
                  "policy_hash": self.policy.content_hash}
        try:
            reply = self._answer(request)
        except Error as err:
            rules = [h.rule for h in getattr(err, "rules", ())]
            self._audit(record, started, decision="refused", rules=rules,
                        error=type(err).__name__)
            raise
        except Exception as err:
            self._audit(record, started, decision="failed", error=type(err).__name__)
            raise
        self._audit(record, started, decision="released", groups=reply.partials.num_rows,
                    suppressed=reply.suppressed, fingerprint=reply.fingerprint)
        return reply

    def _audit(self, record: dict, started: float, **fields) -> None:
        if self.audit is not None:
            self.audit.append({**record, **fields,
                               "ms": round((time.perf_counter() - started) * 1000, 1)})

    def _prepare(self, request: QueryRequest, observed: tuple = ()):
        """Parse and plan the analyst's SQL with this site's bounds (tightened by the
        analyst's ``SET max_rows_per_unit`` under noise; ``observed``: the units' row counts
        of ``site.unit_stats``, for the data the fragment will read)."""
        bounding = (self.privacy.bounding_for(request.settings)
                    if self.privacy is not None else None)
        if bounding is not None and observed:
            bounding = replace(bounding, observed_rows=observed)
        return self._preparer.prepare(request.sql, bounding, self._round_requirements(request))

    def _prepare_to_run(self, request: QueryRequest):
        """(prepared, execute) for answering: under noise, the plan uses the units' row
        counts where the engine can vouch for them, and ``execute`` checks that the data is
        still the data they were counted on — if not, it runs the fragment with the row cap
        instead (the counts may no longer hold)."""
        stats = self._unit_stats.current() if self._unit_stats is not None else None
        if stats is None:
            return self._prepare(request), self.adapter.execute
        version, observed = stats
        prepared = self._prepare(request, observed)

        def execute(sql: str):
            raw = self.adapter.execute(sql)
            if self.adapter.data_version() == version:
                return raw
            log.info("site=%s event=data_changed_during_query: running the fragment again "
                     "with the row cap", self.name)
            return self.adapter.execute(self._prepare(request).plan.fragment.sql)
        return prepared, execute

    def _round_requirements(self, request: QueryRequest) -> Requirements | None:
        """In a secure round: the stricter of the round's requirements and this site's own
        (so that every site lays out the same slots, and none below its own policy)."""
        if request.secure is None:
            return None
        return strictest([self.policy.requirements(), request.secure.requirements])

    def _answer(self, request: QueryRequest) -> SiteReply:
        started = time.perf_counter()
        prepared, execute = self._prepare_to_run(request)
        decision = decide(prepared.query, self.policy, self.name, self._units)
        if not decision.allowed:
            raise refusal(decision.fired)
        plan = prepared.plan
        if request.fingerprint and request.fingerprint != plan.fingerprint:
            raise InternalError(f"site {self.name!r} derived a different plan than the "
                                "coordinator (its catalog differs); refusing to answer")
        if request.secure is not None:
            require_secure_support(self.name, self.secure)
            return answer_secure(self.name, self.secure, request, prepared,
                                 self.policy.requirements(), self.policy.honest_sites,
                                 execute, self.privacy)
        if self.policy.aggregation == "secure":
            raise refusal((RuleHit(
                "R-SECURE", self.name, "aggregation", "the policy releases partials only "
                "through secure aggregation, and the request is not a secure round",
                "query through a federation with a key holder"),))
        if self.privacy is not None:
            return self.privacy.answer(request, prepared, execute,
                                       self.adapter.data_version())
        fragment = plan.fragment
        raw = self.adapter.execute(fragment.sql)
        partials, suppressed = protect_site_cells(
            raw, fragment.group_columns, tuple(p.name for p in fragment.partials),
            fragment.checks)
        log.info("site=%s query_id=%s analyst=%s groups=%d suppressed=%d ms=%.1f", self.name,
                 request.query_id, request.analyst, partials.num_rows, suppressed,
                 (time.perf_counter() - started) * 1000)
        return SiteReply(site=self.name, fingerprint=plan.fingerprint, partials=partials,
                         suppressed=suppressed)

    def explain(self, request: QueryRequest) -> dict:
        """This site's decision on a query and, under noise, its ε cost and noise scales —
        without touching the data or the budget."""
        prepared = self._prepare(request)
        decision = decide(prepared.query, self.policy, self.name, self._units)
        out = {"site": self.name, "allowed": decision.allowed,
               "rules": [[h.rule, h.subject, h.message, h.hint] for h in decision.fired],
               "min_cell_count": self.policy.disclosure.min_cell_count,
               "dominance": list(self.policy.disclosure.dominance or ()),
               "mechanism": self.policy.noise.mechanism}
        if decision.allowed and self.privacy is not None:
            if self.policy.aggregation == "secure":
                out.update(explain_secure(self.privacy, request, prepared,
                                          self.policy.honest_sites))
            else:
                out.update(self.privacy.explain(request, prepared))
        return out

    def budget(self, analyst: str) -> dict:
        """The analyst's budget at this site (no noise: nothing is spent)."""
        if self.privacy is None:
            return {"analyst": analyst, "site": self.name, "mechanism": "none"}
        return self.privacy.budget(analyst)

    def close(self) -> None:
        if self.privacy is not None:
            self.privacy.close()
        self.adapter.close()
