"""How many rows each privacy unit has, per table: the statistics that let a differentially
private fragment skip its row cap where the cap cannot bind.

Under noise, every fragment keeps at most ``max_rows_per_unit`` rows of each unit
(``plan.bounding``); doing so costs a GROUP BY over the units on every query.  When the most
rows any unit has in a table is within the cap — as in data whose steward set the cap at or
above the real maximum — the cap keeps every row anyway, and the site may read them all
directly: the same rows, hence the same partials and the same sensitivity.

The counts must describe the very data the fragment reads.  So they are taken only from
engines whose ``data_version()`` changes exactly when that data does (``exact_data_version``:
DuckDB; not PostgreSQL, whose write counters lag a commit by up to a second), are recounted
whenever the version changes, and are thrown away if it changes while they are counted; the
site also checks the version again after the fragment ran (``SiteService``).

The counts never leave the site.  They make a query faster when no unit exceeds a cap: like
every other dependence of a site's response time on its data, that is outside what
differential privacy protects (README, trust model: "What differential privacy does not
cover: time").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping

log = logging.getLogger(__name__)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class UnitRowStats:
    """``current()``: (data version, ((table, most rows of one unit), ...)) for the capped
    tables that have a privacy unit; counted once per data version."""

    def __init__(self, adapter, units: Mapping[str, str], tables: Iterable[str]) -> None:
        self._adapter = adapter
        self._units = {t: units[t] for t in tables if t in units}
        self._lock = threading.Lock()
        self._version: str | None = None
        self._observed: tuple[tuple[str, int], ...] = ()

    def current(self) -> tuple[str, tuple[tuple[str, int], ...]] | None:
        """The counts for the data as it is now, or None when it changed while they were
        being counted (the caller then caps as usual)."""
        if not self._units:
            return None
        version = self._adapter.data_version()
        with self._lock:
            if version == self._version:
                return version, self._observed
            observed = tuple(sorted((table, self._most_rows(table, unit))
                                    for table, unit in self._units.items()))
            if self._adapter.data_version() != version:
                return None
            self._version, self._observed = version, observed
            log.info("event=unit_row_stats version=%s %s", version,
                     " ".join(f"{t}={n}" for t, n in observed))
            return version, observed

    def _most_rows(self, table: str, unit: str) -> int:
        sql = (f"SELECT COALESCE(MAX(n), 0) AS n FROM (SELECT COUNT(*) AS n FROM "
               f"{_quote(table)} GROUP BY {_quote(unit)}) AS s")
        return int(self._adapter.execute(sql).column(0)[0].as_py())
