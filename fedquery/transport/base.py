"""The one interface the coordinator uses to talk to a site, however it is reached."""

from __future__ import annotations

from typing import Protocol

from fedquery.ir import QueryRequest, SiteCatalog, SiteReply


class SiteClient(Protocol):
    """A site as the coordinator sees it.  Implementations: in-process and Arrow Flight."""

    name: str

    def catalog(self) -> SiteCatalog:
        """The tables and columns the site's policy releases, and its requirements."""

    def query(self, request: QueryRequest, timeout: float | None = None) -> SiteReply:
        """Send the analyst's SQL; receive protected partials (or a typed error)."""

    def explain(self, request: QueryRequest) -> dict:
        """The site's decision, ε cost and noise for a query, without running it."""

    def budget(self, analyst: str) -> dict:
        """The analyst's budget at the site."""

    def health(self) -> dict:
        """Liveness and version information."""

    def close(self) -> None:
        """Release connections."""
