"""How the coordinator (and sites, for the public context) reach the key holder.

:class:`KeyHolderClient` is the one interface; implementations:

- :class:`InProcessKeyHolderClient` — the service runs in this process (tests, the demo), but
  every request and reply still goes through :mod:`fedquery.transport.secure_codec`, so tests
  exercise the same path as the wire;
- :class:`fedquery.transport.keyholder_flight.FlightKeyHolderClient` — Arrow Flight over TLS
  (``federation.yaml``'s ``key_holder`` section; see
  :func:`fedquery.transport.federation.key_holder_client`).
"""

from __future__ import annotations

from typing import Protocol

import pyarrow as pa

from fedquery.ir import SecureReleaseRequest
from fedquery.transport import secure_codec


class KeyHolderClient(Protocol):
    """The key holder as the coordinator sees it."""

    def public_context(self, profile: str) -> tuple[int, bytes, str]:
        """``(epoch, public context blob, SHA-256 fingerprint)`` of ``profile`` ("standard"
        or "wide") in the key holder's current epoch."""

    def release(self, request: SecureReleaseRequest) -> tuple[pa.Table, dict]:
        """Decrypt the round's sum once and release the combined cells:
        ``(table, {"suppressed": n, "participants": [...], "epoch": e})``.  Raises
        :class:`~fedquery.errors.StaleEpoch` when the key epoch moved on, and
        ``InternalError`` when an integrity check failed (the keys were rotated then)."""

    def close(self) -> None:
        """Release connections."""


class InProcessKeyHolderClient:
    """A :class:`KeyHolderClient` over a :class:`~fedquery.keyholder.service.KeyHolderService`
    in this process, through the wire codec."""

    def __init__(self, service, *, close_service: bool = False) -> None:
        self._service = service
        self._close_service = close_service

    def public_context(self, profile: str) -> tuple[int, bytes, str]:
        profile = secure_codec.decode_public_context_request(
            secure_codec.encode_public_context_request(profile))
        epoch, blob, fingerprint = self._service.public_context(profile)
        return secure_codec.decode_public_context(
            secure_codec.encode_public_context(epoch, profile, blob, fingerprint), profile)

    def release(self, request: SecureReleaseRequest) -> tuple[pa.Table, dict]:
        wire = secure_codec.decode_release_request(secure_codec.encode_release_request(request))
        table, info = self._service.release(wire)
        return secure_codec.decode_release_reply(secure_codec.encode_release_reply(table, info))

    def health(self) -> dict:
        return dict(self._service.health())

    def close(self) -> None:
        if self._close_service:
            self._service.close()
