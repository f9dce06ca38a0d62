"""The coordinator's view of a site reached over Arrow Flight (same interface as in-process).

TLS by default: the site's certificate is verified against the federation CA.  Plain
``grpc+tcp`` only when explicitly asked for (``insecure=True``), with a warning in the log.
"""

from __future__ import annotations

import json
import logging

import pyarrow.flight as flight

from fedquery.errors import ConfigError, InterfaceError
from fedquery.ir import QueryRequest, SiteCatalog, SiteReply
from fedquery.transport import codec
from fedquery.transport.wire_errors import from_flight_error

log = logging.getLogger(__name__)


class FlightSiteClient:
    def __init__(self, name: str, endpoint: str, token: str, *, ca_pem: bytes | None = None,
                 insecure: bool = False, connect_timeout: float = 10.0) -> None:
        if not token:
            raise ConfigError(f"no analyst token for site {name!r}")
        if endpoint.startswith("grpc+tcp://") or endpoint.startswith("grpc://"):
            if not insecure:
                raise ConfigError(f"site {name!r} endpoint {endpoint} is not TLS; use "
                                  "grpc+tls:// or allow plain text explicitly (insecure)")
            log.warning("site %s: talking plain text (grpc+tcp) — only for a closed test "
                        "network", name)
        elif not endpoint.startswith("grpc+tls://"):
            raise ConfigError(f"site {name!r}: endpoint must start with grpc+tls:// "
                              f"(got {endpoint!r})")
        elif ca_pem is None:
            raise ConfigError(f"site {name!r}: a TLS endpoint needs the federation CA "
                              "certificate to verify the site")
        self.name = name
        self.endpoint = endpoint
        self._headers = [(b"authorization", b"Bearer " + token.encode())]
        self._connect_timeout = connect_timeout
        # Reconnect quickly once a site is back (gRPC's default backoff grows to 120 s).
        self._client = flight.FlightClient(endpoint, tls_root_certs=ca_pem, generic_options=[
            ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000)])

    def _options(self, timeout: float | None) -> flight.FlightCallOptions:
        return flight.FlightCallOptions(timeout=timeout, headers=self._headers)

    def _action(self, kind: str, timeout: float | None, body: bytes = b"") -> bytes:
        try:
            results = list(self._client.do_action(flight.Action(kind, body),
                                                  self._options(timeout)))
        except flight.FlightError as err:
            raise from_flight_error(self.name, err) from err
        if len(results) != 1:
            raise InterfaceError(f"site {self.name!r}: {kind} returned {len(results)} results")
        return results[0].body.to_pybytes()

    def catalog(self) -> SiteCatalog:
        return codec.decode_catalog(self._action("catalog", self._connect_timeout))

    def health(self) -> dict:
        return json.loads(self._action("health", self._connect_timeout))

    def budget(self, analyst: str | None = None) -> dict:
        """The calling analyst's budget (the site knows who calls from the token)."""
        del analyst
        return json.loads(self._action("budget", self._connect_timeout))

    def explain(self, request: QueryRequest) -> dict:
        return json.loads(self._action("explain", self._connect_timeout,
                                       codec.encode_request(request)))

    def query(self, request: QueryRequest, timeout: float | None = None) -> SiteReply:
        ticket = flight.Ticket(codec.encode_request(request))
        try:
            reader = self._client.do_get(ticket, self._options(timeout))
            table = reader.read_all()
        except flight.FlightError as err:
            raise from_flight_error(self.name, err) from err
        return codec.decode_reply_table(table)

    def close(self) -> None:
        self._client.close()
