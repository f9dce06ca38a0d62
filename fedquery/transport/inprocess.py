"""In-process transport: the site service runs in this process, but every request and reply
still goes through the wire codec, so tests exercise the same path as Flight."""

from __future__ import annotations

import json

from fedquery.ir import QueryRequest, SiteCatalog, SiteReply
from fedquery.transport import codec


class InProcessClient:
    def __init__(self, service) -> None:
        self._service = service
        self.name = service.name

    def catalog(self) -> SiteCatalog:
        return codec.decode_catalog(codec.encode_catalog(self._service.catalog()))

    def query(self, request: QueryRequest, timeout: float | None = None) -> SiteReply:
        del timeout  # an in-process call cannot be abandoned midway; sites enforce their own
        wire_request = codec.decode_request(codec.encode_request(request))
        reply = self._service.query(wire_request)
        return codec.decode_reply(codec.encode_reply(reply))

    def explain(self, request: QueryRequest) -> dict:
        wire = codec.decode_request(codec.encode_request(request))
        return json.loads(json.dumps(self._service.explain(wire)))

    def budget(self, analyst: str) -> dict:
        return json.loads(json.dumps(self._service.budget(analyst)))

    def health(self) -> dict:
        return self._service.health()

    def close(self) -> None:
        self._service.close()
