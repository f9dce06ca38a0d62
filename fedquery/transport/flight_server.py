"""A site as an Arrow Flight service.

- ``DoGet(ticket)``: the ticket is a codec-encoded analyst request; the reply streams the
  site's protected partials with the reply header in the schema metadata.
- ``DoAction``: ``catalog`` (what the policy releases), ``health``, ``budget``.
- Authentication lives in middleware: ``authorization: Bearer <token>`` is hashed and
  compared with the token hashes of the site's policy.  The authenticated analyst — never a
  name in the request — is the one the site answers, audits and charges.
"""

from __future__ import annotations

import dataclasses

import hashlib
import hmac
import json
import logging

import pyarrow.flight as flight

from fedquery.errors import Error
from fedquery.ir import QueryRequest
from fedquery.transport import codec
from fedquery.transport.wire_errors import to_flight_error

log = logging.getLogger(__name__)

QUERY_ROLES = frozenset({"analyst"})
BUDGET_ROLES = frozenset({"analyst", "steward"})


class _Identity(flight.ServerMiddleware):
    def __init__(self, analyst: str, roles: tuple[str, ...]) -> None:
        self.analyst = analyst
        self.roles = frozenset(roles)


class BearerAuthFactory(flight.ServerMiddlewareFactory):
    """Checks ``authorization: Bearer <token>`` against the policy's sha256 token hashes."""

    def __init__(self, analysts: dict) -> None:
        super().__init__()
        self._by_hash = {a.token_sha256: a for a in analysts.values() if a.token_sha256}

    def start_call(self, info, headers):
        values = headers.get("authorization") or headers.get("Authorization") or []
        if not values:
            raise flight.FlightUnauthenticatedError("no bearer token: send 'authorization: "
                                                    "Bearer <token>'")
        scheme, _, token = values[0].partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise flight.FlightUnauthenticatedError("malformed authorization header: expected "
                                                    "'Bearer <token>'")
        digest = hashlib.sha256(token.encode()).hexdigest()
        for known, analyst in self._by_hash.items():
            if hmac.compare_digest(known, digest):
                return _Identity(analyst.name, analyst.roles)
        raise flight.FlightUnauthenticatedError("unknown token")


def _identity(context) -> _Identity:
    identity = context.get_middleware("auth")
    if identity is None:  # pragma: no cover - the middleware always runs first
        raise flight.FlightUnauthenticatedError("not authenticated")
    return identity


def _require(identity: _Identity, roles: frozenset[str], what: str) -> None:
    if not identity.roles & roles:
        raise flight.FlightUnauthorizedError(
            f"analyst {identity.analyst!r} is not allowed to {what} at this site (needs role "
            f"{' or '.join(sorted(roles))})")


class SiteFlightServer(flight.FlightServerBase):
    """Serves one :class:`~fedquery.site.service.SiteService` over Flight."""

    def __init__(self, service, location: str, *, tls_certificates=None) -> None:
        super().__init__(location, tls_certificates=tls_certificates,
                         middleware={"auth": BearerAuthFactory(service.policy.analysts)})
        self.service = service

    # -- queries ---------------------------------------------------------------------------

    def do_get(self, context, ticket):
        identity = _identity(context)
        _require(identity, QUERY_ROLES, "run queries")
        try:
            request = codec.decode_request(ticket.ticket)
            # the analyst is who the token says, whatever the request claims
            request = dataclasses.replace(request, analyst=identity.analyst)
            reply = self.service.query(request)
        except Exception as err:  # noqa: BLE001 - every error leaves as a typed Flight error
            if not isinstance(err, flight.FlightError):
                log.info("site=%s refused or failed: %s", self.service.name,
                         type(err).__name__)
                if not isinstance(err, Error):
                    log.exception("site=%s internal error", self.service.name)
                err = to_flight_error(err)
            raise err from None
        header = json.dumps(codec.reply_header(reply)).encode()
        table = reply.partials.replace_schema_metadata({b"fedquery": header})
        return flight.RecordBatchStream(table)

    # -- actions -------------------------------------------------------------------------------

    def list_actions(self, context):
        return [("catalog", "tables and columns this site's policy releases"),
                ("health", "liveness"), ("budget", "the calling analyst's budget"),
                ("explain", "a query's decision, epsilon cost and noise, without running it")]

    def do_action(self, context, action):
        identity = _identity(context)
        if action.type == "catalog":
            yield flight.Result(codec.encode_catalog(self.service.catalog()))
        elif action.type == "health":
            yield flight.Result(json.dumps(self.service.health()).encode())
        elif action.type == "explain":
            _require(identity, QUERY_ROLES, "explain queries")
            try:
                request = codec.decode_request(action.body.to_pybytes())
                request = QueryRequest(sql=request.sql, analyst=identity.analyst,
                                       settings=request.settings)
                body = self.service.explain(request)
            except Exception as err:  # noqa: BLE001 - typed Flight errors only
                raise (err if isinstance(err, flight.FlightError)
                       else to_flight_error(err)) from None
            yield flight.Result(json.dumps(body).encode())
        elif action.type == "budget":
            _require(identity, BUDGET_ROLES, "read budgets")
            yield flight.Result(json.dumps(self.service.budget(identity.analyst)).encode())
        else:
            raise flight.FlightServerError(f"unknown action {action.type!r}; known: catalog, "
                                           "health, budget, explain")


    # -- everything else is refused with a typed error ----------------------------------------

    def _unserved(self, what: str):
        raise flight.FlightServerError(f"{what} is not offered by a fedquery site: send a query "
                                       "(DoGet) or an action (catalog, health, budget, explain)")

    def list_flights(self, context, criteria):
        self._unserved("ListFlights")

    def get_flight_info(self, context, descriptor):
        self._unserved("GetFlightInfo")

    def do_put(self, context, descriptor, reader, writer):
        self._unserved("DoPut")

    def do_exchange(self, context, descriptor, reader, writer):
        self._unserved("DoExchange")
