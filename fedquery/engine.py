"""The composition root: wires sql → plan → transport → coordinator for one federation.

Nothing here decides anything about SQL or privacy; each stage owns its decisions.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
import uuid
from collections.abc import Callable, Sequence

from fedquery.catalog import Catalog
from fedquery.coordinator.combine import Combiner
from fedquery.coordinator.dispatch import Dispatcher, Gathered, raise_for_failures
from fedquery.coordinator.secure import run_secure
from fedquery.errors import ConfigError, DatabaseError, OperationalError
from fedquery.ir import QueryRequest, Release, Report, Settings, SiteCatalog
from fedquery.plan.prepare import Preparer
from fedquery.policy import strictest
from fedquery.coordinator.release import expected_widths, protect_release

log = logging.getLogger(__name__)

ON_SITE_FAILURE = ("fail", "partial")


class Engine:
    """A federation of sites reachable through :class:`~fedquery.transport.SiteClient`s."""

    def __init__(self, clients: Sequence, *, timeout: float | None = 60.0,
                 on_site_failure: str = "fail", min_sites: int | None = None,
                 key_holder=None) -> None:
        """``key_holder`` (a KeyHolderClient) decrypts federation-wide sums when the sites'
        policies ask for secure aggregation."""
        if not clients:
            raise ConfigError("a federation needs at least one site")
        if on_site_failure not in ON_SITE_FAILURE:
            raise ConfigError(f"on_site_failure must be one of {ON_SITE_FAILURE}, not "
                              f"{on_site_failure!r}", key="on_site_failure")
        names = [c.name for c in clients]
        if len(set(names)) != len(names):
            raise ConfigError(f"site names must be unique, got {names}")
        self.clients = list(clients)
        self.key_holder = key_holder
        self.timeout = timeout
        self.on_site_failure = on_site_failure
        self._min_sites_option = min_sites or 1
        self._site_catalogs: dict[str, SiteCatalog] = {}
        self._refresh_catalog()
        self._dispatcher = Dispatcher(self.clients)

    def _refresh_catalog(self) -> None:
        """Ask every site whose catalog is unknown; rebuild the federation catalog if any
        answered.  With ``on_site_failure: fail`` every site must answer."""
        missing = [c for c in self.clients if c.name not in self._site_catalogs]
        if not missing:
            return
        failures = []
        with cf.ThreadPoolExecutor(max_workers=len(missing)) as pool:
            futures = {pool.submit(c.catalog): c for c in missing}
            for future, client in futures.items():
                try:
                    self._site_catalogs[client.name] = future.result()
                except DatabaseError as err:
                    failures.append(err)
        if failures and (self.on_site_failure == "fail" or not self._site_catalogs):
            raise failures[0]
        if len(failures) == len(missing):
            return
        catalogs = [self._site_catalogs[c.name] for c in self.clients
                    if c.name in self._site_catalogs]
        self.catalog = Catalog.build(catalogs)
        self.requirements = strictest(c.requirements for c in catalogs if c.requirements)
        self.min_sites = max(self._min_sites_option, self.requirements.min_sites)
        self.privacy_units = {name: t.privacy_unit for name, t in self.catalog.tables.items()
                              if t.privacy_unit}
        self._preparer = Preparer(self.catalog.schema(), self.privacy_units, self.requirements,
                                  public_domains=_shared_domains(catalogs))
        self._combiner = Combiner(self.catalog)

    def execute(self, sql: str, *, analyst: str, settings: Settings = Settings(),
                progress: Callable[[int, int], None] | None = None) -> Release:
        if len(self._site_catalogs) < len(self.clients):
            self._refresh_catalog()  # a site that was down at connect time may be back
        prepared = self._preparer.prepare(sql)
        plan = prepared.plan
        self.catalog.check_usable(plan.tables, prepared.base_columns)
        schema = self._combiner.result_schema(sql)
        settings = self._with_default_epsilon(settings)
        request = QueryRequest(sql=sql, analyst=analyst, settings=settings,
                               query_id=uuid.uuid4().hex, fingerprint=plan.fingerprint)
        log.debug("query %s planned: %d partials, %d group keys", request.query_id,
                  len(plan.fragment.partials), len(plan.fragment.group_columns))
        if self.requirements.aggregation == "secure":
            if self.key_holder is None:
                raise ConfigError("the sites' policies require secure aggregation, and this "
                                  "federation has no key holder: add a key_holder section to "
                                  "federation.yaml")
            outcome = run_secure(self._dispatcher, self.key_holder, request,
                                 tuple(c.name for c in self.clients), self.requirements,
                                 self.timeout, self.on_site_failure, self.min_sites, progress)
            replies, combined = outcome.replies, outcome.combined
            gathered = Gathered(replies, outcome.failures)
        else:
            gathered = self._dispatcher.gather(request, self.timeout, progress)
            self._check_enough_sites(gathered)
            replies = tuple(sorted(gathered.replies, key=lambda r: r.site))
            combined = self._combiner.combine(plan, [r.partials for r in replies])
        combined, noise = protect_release(combined, plan, replies, self.requirements,
                                          self.min_sites)
        table, suppressed, intervals = self._combiner.post_process(
            plan, combined, schema, intervals=bool(noise.epsilon_spent))
        report = Report(mode=f"{self.requirements.aggregation}/{self.requirements.noise}",
                        sites_answered=tuple(sorted(r.site for r in gathered.replies)),
                        sites_failed=tuple((s, str(e)) for s, e in gathered.failures),
                        suppressed_cells=len(suppressed), suppressed_rows=suppressed,
                        withheld_columns=plan.aggregate_outputs,
                        epsilon_spent=noise.epsilon_spent,
                        notes=plan.notes + _secure_notes(self.requirements, noise),
                        intervals=tuple(intervals) if noise.epsilon_spent else (),
                        cached_sites=noise.cached, budget_remaining=noise.remaining,
                        noise=tuple((p.sql, noise.widths.get(p.name, 0.0))
                                    for p in plan.fragment.partials)
                        if noise.epsilon_spent else ())
        return Release(table=table, report=report)

    def explain(self, sql: str, *, analyst: str, settings: Settings = Settings()) -> dict:
        """The plan, every site's decision and ε cost, and the expected 95 % half-width of
        each aggregate — without running the query or spending budget."""
        prepared = self._preparer.prepare(sql)
        plan = prepared.plan
        settings = self._with_default_epsilon(settings)
        request = QueryRequest(sql=sql, analyst=analyst, settings=settings)
        sites = [client.explain(request) for client in self.clients]
        return {"fragment": plan.fragment.sql, "combine": plan.combine_sql,
                "post": plan.post_sql, "sites": sites,
                "partials": expected_widths(plan, sites), "notes": list(plan.notes)}

    @property
    def site_catalogs(self) -> dict[str, SiteCatalog]:
        """What each site publishes: its released tables and columns with their public
        facts (roles, domains, bounds), and its policy's requirements."""
        return dict(self._site_catalogs)

    def health(self) -> list[tuple[str, dict | Exception, float]]:
        """Every site's health answer (or the error) and the round trip in milliseconds."""
        def probe(client):
            started = time.perf_counter()
            try:
                answer = client.health()
            except Exception as err:  # noqa: BLE001 - reported per site, never raised
                answer = err
            return client.name, answer, (time.perf_counter() - started) * 1000
        with cf.ThreadPoolExecutor(max_workers=len(self.clients)) as pool:
            return list(pool.map(probe, self.clients))

    def budget(self, analyst: str) -> list[dict]:
        """The analyst's budget at every site."""
        return [client.budget(analyst) for client in self.clients]

    def _with_default_epsilon(self, settings: Settings) -> Settings:
        if self.requirements.noise != "none" and settings.get("epsilon") is None and (
                self.requirements.epsilon is not None):
            # Every site spends the same ε: the strictest per-query limit of the federation.
            return Settings(tuple(sorted(settings.values + (
                ("epsilon", self.requirements.epsilon),))))
        return settings

    def _check_enough_sites(self, gathered) -> None:
        """``fail``: any failing site fails the query.  ``partial``: release when at least
        ``min_sites`` answered; the report names the sites that did not."""
        if not gathered.failures:
            return
        if self.on_site_failure == "partial":
            if len(gathered.replies) >= self.min_sites:
                return
            causes = "; ".join(str(e) for _, e in gathered.failures)
            raise OperationalError(
                f"only {len(gathered.replies)} of {len(self.clients)} sites answered, fewer "
                f"than min_sites={self.min_sites}; nothing was released ({causes})")
        raise_for_failures(gathered)

    def close(self) -> None:
        self._dispatcher.close()
        for client in self.clients:
            client.close()
        if self.key_holder is not None:
            self.key_holder.close()


def _secure_notes(requirements, noise) -> tuple[str, ...]:
    if requirements.aggregation != "secure" or not noise.epsilon_spent:
        return ()
    return ("secure aggregation adds Gaussian noise shares (one central-strength draw in "
            "the sum): the ε a query asks for is charged as the same zCDP ρ, shown here as "
            "its ε at the policy's δ",)


def _shared_domains(catalogs: Sequence[SiteCatalog]) -> tuple:
    """(table, column) → public domain, for columns every site publishes the same domain
    of (the coordinator lays out secure-aggregation slots from them, as the sites do)."""
    seen: dict = {}
    for catalog in catalogs:
        for table in catalog.tables:
            for column in table.columns:
                key = (table.name.lower(), column.name.lower())
                seen.setdefault(key, []).append(column.domain)
    return tuple((key, domains[0]) for key, domains in sorted(seen.items())
                 if len(domains) == len(catalogs) and domains[0] is not None
                 and all(d == domains[0] for d in domains))
