"""fedquery errors across the wire: a site turns its error into a typed Flight error with a
small JSON payload; the coordinator turns it back into the same fedquery class.

Only messages travel, never stack traces; an unexpected exception at a site becomes a
``FlightInternalError`` that says to look in the site's log.
"""

from __future__ import annotations

import json

import pyarrow.flight as flight

from fedquery import errors
from fedquery.ir import RuleHit
from fedquery.transport.codec import MalformedMessage

# Error classes a site may send back, by name (an allow-list: nothing else is rebuilt).
_CLASSES = {cls.__name__: cls for cls in (
    errors.ProgrammingError, errors.NotSupportedError, errors.SqlParseError,
    errors.CatalogError, errors.PolicyViolation, errors.BudgetExhausted,
    errors.OperationalError, errors.DataError, errors.InternalError, errors.InterfaceError,
    MalformedMessage)}


def to_flight_error(err: BaseException) -> flight.FlightError:
    """The Flight error a site raises for ``err``."""
    if not isinstance(err, errors.Error):
        return flight.FlightInternalError("internal error at the site; its operator can find "
                                          "the details in the site's log")
    payload = {"version": 1, "type": type(err).__name__, "message": str(err)}
    if isinstance(err, errors.PolicyViolation):
        payload["rules"] = [[h.rule, h.site, h.subject, h.message, h.hint] for h in err.rules]
    if isinstance(err, errors.SqlParseError):
        payload.update(line=err.line, column=err.column, excerpt=err.excerpt,
                       message=err.message)
    return flight.FlightServerError(str(err), extra_info=json.dumps(payload).encode())


_TLS_FAILURES = ("Ssl handshake failed", "certificate verify failed", "Peer name",
                 "certificate has expired")


def _rebuild(site: str, payload: dict) -> errors.Error:
    cls = _CLASSES.get(payload.get("type"))
    message = str(payload.get("message", ""))
    if cls is None:
        return errors.SiteError(site, message or "unknown error")
    if cls is errors.PolicyViolation:
        rules = tuple(RuleHit(*map(str, r)) for r in payload.get("rules", [])
                      if isinstance(r, list) and len(r) == 5)
        return errors.PolicyViolation(message, rules=rules)
    if cls is errors.SqlParseError:
        return errors.SqlParseError(message, line=payload.get("line"),
                                    column=payload.get("column"),
                                    excerpt=payload.get("excerpt"))
    if cls is MalformedMessage:
        return errors.SiteError(site, f"the site rejected the request as malformed: {message}")
    return cls(message)


def from_flight_error(site: str, err: flight.FlightError) -> errors.Error:
    """The fedquery error the coordinator raises for a Flight error from ``site``."""
    detail = str(err).split(". Detail:")[0]
    if isinstance(err, flight.FlightUnauthenticatedError):
        return errors.SiteError(site, f"authentication failed: {detail}")
    if isinstance(err, flight.FlightUnauthorizedError):
        return errors.SiteError(site, f"not authorised: {detail}")
    if isinstance(err, flight.FlightTimedOutError | flight.FlightCancelledError):
        return errors.SiteUnavailable(site, f"no answer within the deadline ({detail})")
    if isinstance(err, flight.FlightUnavailableError):
        if any(marker in detail for marker in _TLS_FAILURES):
            reason = detail.rsplit("SSL routines::", 1)[-1] if "SSL routines::" in detail else (
                detail.rsplit(": ", 1)[-1])
            return errors.SiteError(site, f"TLS verification of the site failed ({reason}); "
                                    "check the federation CA in federation.yaml and the "
                                    "site's certificate")
        return errors.SiteUnavailable(site, f"cannot reach the site: {detail}")
    extra = getattr(err, "extra_info", None)
    if extra:
        try:
            payload = json.loads(extra.decode())
        except (UnicodeDecodeError, json.JSONDecodeError):
            payload = None
        if isinstance(payload, dict) and payload.get("version") == 1:
            return _rebuild(site, payload)
    if isinstance(err, flight.FlightInternalError):
        return errors.SiteError(site, f"internal error at the site: {detail}")
    return errors.SiteError(site, detail)
