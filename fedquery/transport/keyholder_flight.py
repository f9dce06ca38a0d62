"""The key holder as an Arrow Flight service, and the client that reaches it.

- ``DoAction("public_context", {version, kind, profile})`` → one result: the
  :func:`~fedquery.transport.secure_codec.encode_public_context` stream.  Open to every TLS
  client (sites fetch the context they encrypt under; it holds no secret).
- ``DoAction("health")`` → JSON ``{status, epoch, profiles, sites}``.
- ``DoExchange(command "release")``: the coordinator streams a
  :func:`~fedquery.transport.secure_codec.release_request_table` (many small record
  batches: 50 sites × 3 × 88 KB do not fit one gRPC message), the key holder answers with the
  :func:`~fedquery.transport.secure_codec.release_reply_table`.  Needs ``authorization:
  Bearer <token>`` whose SHA-256 the key holder was configured with (the coordinator's).

A bearer token, when sent, must be a known one (else ``FlightUnauthenticatedError``), so a
misconfigured coordinator learns it at its first call.  Errors leave as typed Flight errors
(:func:`fedquery.transport.wire_errors.to_flight_error`) and come back as the same fedquery
classes (an allow-list), never with a stack trace or a value.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.flight as flight

from fedquery import errors
from fedquery.errors import ConfigError, InterfaceError, OperationalError
from fedquery.ir import SecureReleaseRequest
from fedquery.transport import secure_codec
from fedquery.transport.codec import MalformedMessage
from fedquery.transport.wire_errors import to_flight_error

log = logging.getLogger(__name__)

RELEASE = b"release"
_NAME = "the key holder"


# ---------------------------------------------------------------------------------------------
# Server


class _Caller(flight.ServerMiddleware):
    def __init__(self, coordinator: bool) -> None:
        self.coordinator = coordinator


class CoordinatorTokenFactory(flight.ServerMiddlewareFactory):
    """Marks a call as the coordinator's when it carries a token whose SHA-256 is known;
    a call without a token is anonymous (public context, health); a wrong token is refused."""

    def __init__(self, token_sha256: Iterable[str]) -> None:
        super().__init__()
        self._hashes = tuple(h.strip().lower() for h in token_sha256)

    def start_call(self, info, headers):
        values = headers.get("authorization") or headers.get("Authorization") or []
        if not values:
            return _Caller(False)
        scheme, _, token = values[0].partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise flight.FlightUnauthenticatedError("malformed authorization header: expected "
                                                    "'Bearer <token>'")
        digest = hashlib.sha256(token.encode()).hexdigest()
        if any(hmac.compare_digest(known, digest) for known in self._hashes):
            return _Caller(True)
        raise flight.FlightUnauthenticatedError("unknown token")


def _check_hash(value: str) -> str:
    text = value.strip().lower() if isinstance(value, str) else ""
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ConfigError("the coordinator's token hash must be a SHA-256 hex digest (64 hex "
                          "digits)", key="token_sha256")
    return text


def _to_flight_error(err: BaseException) -> flight.FlightError:
    if isinstance(err, flight.FlightError):
        return err
    if isinstance(err, errors.Error):
        return to_flight_error(err)
    return flight.FlightInternalError("internal error at the key holder; its operator can "
                                      "find the details in the key holder's log")


class KeyHolderFlightServer(flight.FlightServerBase):
    """Serves one :class:`~fedquery.keyholder.service.KeyHolderService` over Flight.

    ``token_sha256``: the SHA-256 (hex) of the coordinator's bearer token, or several."""

    def __init__(self, service, location: str, *, token_sha256: str | Iterable[str],
                 tls_certificates=None) -> None:
        hashes = [token_sha256] if isinstance(token_sha256, str) else list(token_sha256)
        if not hashes:
            raise ConfigError("the key holder needs the SHA-256 of the coordinator's token",
                              key="token_sha256")
        hashes = [_check_hash(h) for h in hashes]
        super().__init__(location, tls_certificates=tls_certificates,
                         middleware={"auth": CoordinatorTokenFactory(hashes)})
        self.service = service

    def _caller(self, context) -> _Caller:
        caller = context.get_middleware("auth")
        if caller is None:  # pragma: no cover - the middleware always runs first
            raise flight.FlightUnauthenticatedError("not authenticated")
        return caller

    def list_actions(self, context):
        return [("public_context", "the current epoch's public BFV context of a profile"),
                ("health", "liveness and the current key epoch")]

    def do_action(self, context, action):
        self._caller(context)
        try:
            if action.type == "public_context":
                profile = secure_codec.decode_public_context_request(action.body.to_pybytes())
                epoch, blob, fingerprint = self.service.public_context(profile)
                body = secure_codec.encode_public_context(epoch, profile, blob, fingerprint)
            elif action.type == "health":
                body = json.dumps(self.service.health()).encode()
            else:
                raise flight.FlightServerError(f"unknown action {action.type!r}; known: "
                                               "public_context, health")
        except Exception as err:  # noqa: BLE001 - every error leaves as a typed Flight error
            raise _to_flight_error(err) from None
        yield flight.Result(body)

    def do_exchange(self, context, descriptor, reader, writer):
        caller = self._caller(context)
        if descriptor.descriptor_type != flight.DescriptorType.CMD or descriptor.command \
                != RELEASE:
            raise flight.FlightServerError("the key holder's only exchange is the command "
                                           "'release'")
        if not caller.coordinator:
            raise flight.FlightUnauthenticatedError("a release needs the coordinator's bearer "
                                                    "token: send 'authorization: Bearer "
                                                    "<token>'")
        try:
            request = secure_codec.decode_release_request_table(reader.read_all())
            table, info = self.service.release(request)
            reply = secure_codec.release_reply_table(table, info)
        except Exception as err:  # noqa: BLE001 - typed Flight errors only
            if not isinstance(err, errors.Error | flight.FlightError):
                log.exception("key holder: internal error during a release")
            raise _to_flight_error(err) from None
        writer.begin(reply.schema)
        writer.write_table(reply)

    def _unserved(self, what: str):
        raise flight.FlightServerError(f"{what} is not offered by the key holder: use the "
                                       "actions public_context and health, or the exchange "
                                       "'release'")

    def list_flights(self, context, criteria):
        self._unserved("ListFlights")

    def get_flight_info(self, context, descriptor):
        self._unserved("GetFlightInfo")

    def do_get(self, context, ticket):
        self._unserved("DoGet")

    def do_put(self, context, descriptor, reader, writer):
        self._unserved("DoPut")


# ---------------------------------------------------------------------------------------------
# Client


_CLASSES = {cls.__name__: cls for cls in (
    errors.ProgrammingError, errors.NotSupportedError, errors.OperationalError,
    errors.DataError, errors.InternalError, errors.InterfaceError, errors.ConfigError,
    secure_codec.StaleEpoch)}
_TLS_FAILURES = ("Ssl handshake failed", "certificate verify failed", "Peer name",
                 "certificate has expired")


def from_flight_error(err: flight.FlightError) -> errors.Error:
    """The fedquery error for a Flight error from the key holder."""
    detail = str(err).split(". Detail:")[0]
    if isinstance(err, flight.FlightUnauthenticatedError):
        return OperationalError(f"{_NAME} refused the call: authentication failed ({detail})")
    if isinstance(err, flight.FlightUnauthorizedError):
        return OperationalError(f"{_NAME} refused the call: not authorised ({detail})")
    if isinstance(err, flight.FlightTimedOutError | flight.FlightCancelledError):
        return OperationalError(f"{_NAME} did not answer within the deadline ({detail})")
    if isinstance(err, flight.FlightUnavailableError):
        if any(marker in detail for marker in _TLS_FAILURES):
            return OperationalError(f"TLS verification of {_NAME} failed; check the CA in "
                                    "federation.yaml and the key holder's certificate")
        return OperationalError(f"cannot reach {_NAME}: {detail}")
    extra = getattr(err, "extra_info", None)
    if extra:
        try:
            payload = json.loads(extra.decode())
        except (UnicodeDecodeError, json.JSONDecodeError):
            payload = None
        if isinstance(payload, dict) and payload.get("version") == 1:
            message = str(payload.get("message", ""))
            if payload.get("type") == MalformedMessage.__name__:
                return InterfaceError(f"{_NAME} rejected the request as malformed: {message}")
            cls = _CLASSES.get(payload.get("type"))
            if cls is not None:
                return cls(message)
    if isinstance(err, flight.FlightInternalError):
        return errors.InternalError(f"internal error at {_NAME}: {detail}")
    return OperationalError(f"{_NAME}: {detail}")


class FlightKeyHolderClient:
    """A :class:`~fedquery.keyholder.client.KeyHolderClient` over Arrow Flight.

    ``token`` (the coordinator's) is needed for :meth:`release` only; sites fetch the public
    context without one.  TLS by default, verified against ``ca_pem``."""

    def __init__(self, endpoint: str, token: str | None = None, *, ca_pem: bytes | None = None,
                 insecure: bool = False, timeout: float = 120.0,
                 connect_timeout: float = 10.0) -> None:
        if endpoint.startswith(("grpc+tcp://", "grpc://")):
            if not insecure:
                raise ConfigError(f"the key holder endpoint {endpoint} is not TLS; use "
                                  "grpc+tls:// or allow plain text explicitly (insecure)")
            log.warning("key holder: talking plain text (grpc+tcp) — only for a closed test "
                        "network")
        elif not endpoint.startswith("grpc+tls://"):
            raise ConfigError(f"the key holder endpoint must start with grpc+tls:// (got "
                              f"{endpoint!r})")
        elif ca_pem is None:
            raise ConfigError("a TLS key holder endpoint needs the federation CA certificate "
                              "to verify it")
        self.endpoint = endpoint
        self._headers = [(b"authorization", b"Bearer " + token.encode())] if token else []
        self._has_token = bool(token)
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._client = flight.FlightClient(endpoint, tls_root_certs=ca_pem, generic_options=[
            ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000)])

    def _options(self, timeout: float | None) -> flight.FlightCallOptions:
        return flight.FlightCallOptions(timeout=timeout, headers=self._headers)

    def _action(self, kind: str, body: bytes = b"") -> bytes:
        try:
            results = list(self._client.do_action(flight.Action(kind, body),
                                                  self._options(self._connect_timeout)))
        except flight.FlightError as err:
            raise from_flight_error(err) from err
        if len(results) != 1:
            raise InterfaceError(f"{_NAME}: {kind} returned {len(results)} results")
        return results[0].body.to_pybytes()

    def public_context(self, profile: str) -> tuple[int, bytes, str]:
        data = self._action("public_context",
                            secure_codec.encode_public_context_request(profile))
        return secure_codec.decode_public_context(data, profile)

    def health(self) -> dict:
        return json.loads(self._action("health"))

    def release(self, request: SecureReleaseRequest) -> tuple[pa.Table, dict]:
        if not self._has_token:
            raise ConfigError("no token for the key holder: a release needs the coordinator's "
                              "token (federation.yaml: key_holder.token or token_file)",
                              key="key_holder")
        table = secure_codec.release_request_table(request)
        descriptor = flight.FlightDescriptor.for_command(RELEASE)
        try:
            writer, reader = self._client.do_exchange(descriptor, self._options(self._timeout))
            with writer:
                writer.begin(table.schema)
                writer.write_table(table, max_chunksize=secure_codec.BATCH_ROWS)
                writer.done_writing()
                reply = reader.read_all()
        except flight.FlightError as err:
            raise from_flight_error(err) from err
        return secure_codec.decode_release_reply_table(reply)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> FlightKeyHolderClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
