"""Versioned, schema-checked wire codec between coordinator and sites.

Requests and catalogs are JSON objects with a ``version`` field, checked field by field (no
``eval``, no pickle).  Replies are Arrow IPC streams whose schema metadata carries the reply
header.  Anything malformed raises :class:`MalformedMessage` naming what was wrong.

>>> from fedquery.ir import QueryRequest, Settings
>>> req = QueryRequest("SELECT COUNT(*) FROM t", "alice", Settings((("epsilon", 0.5),)), "q1")
>>> decode_request(encode_request(req)) == req
True
>>> decode_request(b'{"version": 99}')
Traceback (most recent call last):
...
fedquery.transport.codec.MalformedMessage: unsupported request version 99 (this site speaks version 1)
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from fedquery.errors import InterfaceError
from fedquery.ir import (ColumnInfo, QueryRequest, Requirements, SecureRound, Settings,
                         SiteCatalog,
                         SiteReply, TableInfo)

VERSION = 1
MAX_SQL_BYTES = 1_000_000  # an analyst query longer than 1 MB is refused unread
_SCALARS = (str, int, float, bool, type(None))


class MalformedMessage(InterfaceError):
    """A request or reply that does not follow the wire format."""


def _load(data: bytes, what: str) -> dict:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessage(f"{what} must be bytes")
    try:
        obj = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MalformedMessage(f"{what} is not UTF-8 JSON: {err}") from None
    except (ValueError, RecursionError):  # huge integers, absurd nesting
        raise MalformedMessage(f"{what} is not acceptable JSON (too deeply nested or a "
                               "number too long)") from None
    try:
        json.dumps(obj, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, ValueError):
        raise MalformedMessage(f"{what} holds text that is not valid Unicode, or a number "
                               "that is not finite") from None
    if not isinstance(obj, dict):
        raise MalformedMessage(f"{what} must be a JSON object")
    version = obj.get("version")
    if version != VERSION:
        raise MalformedMessage(f"unsupported {what} version {version!r} (this site speaks "
                               f"version {VERSION})")
    return obj


def _field(obj: dict, name: str, kind: type | tuple, what: str, default: Any = ...) -> Any:
    if name not in obj:
        if default is ...:
            raise MalformedMessage(f"{what} is missing field {name!r}")
        return default
    value = obj[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MalformedMessage(f"{what} field {name!r} has the wrong type")
    return value


# -- requests -------------------------------------------------------------------------------

def encode_request(request: QueryRequest) -> bytes:
    return json.dumps({
        "version": VERSION, "sql": request.sql, "analyst": request.analyst,
        "settings": [[k, v] for k, v in request.settings.values],
        "query_id": request.query_id, "fingerprint": request.fingerprint,
        **({} if request.secure is None else {"secure": {
            "participants": list(request.secure.participants),
            "requirements": _requirements_to_json(request.secure.requirements),
            "epoch": request.secure.epoch}}),
    }).encode()


def decode_request(data: bytes) -> QueryRequest:
    if len(data) > MAX_SQL_BYTES + 64_000:
        raise MalformedMessage(f"request of {len(data)} bytes exceeds the limit of "
                               f"{MAX_SQL_BYTES} bytes of SQL")
    obj = _load(data, "request")
    known = {"version", "sql", "analyst", "settings", "query_id", "fingerprint", "secure"}
    extra = set(obj) - known
    if extra:
        raise MalformedMessage(f"request has unknown fields: {', '.join(sorted(extra))}")
    sql = _field(obj, "sql", str, "request")
    settings = _field(obj, "settings", list, "request", [])
    pairs = []
    for item in settings:
        if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str)
                or not isinstance(item[1], _SCALARS)):
            raise MalformedMessage("request settings must be [name, scalar] pairs")
        pairs.append((item[0], item[1]))
    return QueryRequest(sql=sql, analyst=_field(obj, "analyst", str, "request"),
                        settings=Settings(tuple(pairs)),
                        query_id=_field(obj, "query_id", str, "request", ""),
                        fingerprint=_field(obj, "fingerprint", str, "request", ""),
                        secure=_secure_round(obj.get("secure")))


def _secure_round(obj: Any) -> SecureRound | None:
    if obj is None:
        return None
    if not isinstance(obj, dict) or set(obj) != {"participants", "requirements", "epoch"}:
        raise MalformedMessage("request field 'secure' must be an object with participants, "
                               "requirements and epoch")
    participants = obj["participants"]
    if not (isinstance(participants, list) and participants
            and all(isinstance(p, str) for p in participants)):
        raise MalformedMessage("secure participants must be a non-empty list of site names")
    if not isinstance(obj["epoch"], int) or isinstance(obj["epoch"], bool):
        raise MalformedMessage("secure epoch must be an integer")
    requirements = _requirements_from_json(obj["requirements"])
    if requirements is None:
        raise MalformedMessage("secure requirements are missing")
    return SecureRound(tuple(participants), requirements, obj["epoch"])


# -- catalogs -------------------------------------------------------------------------------

def _requirements_to_json(req: Requirements | None) -> dict | None:
    if req is None:
        return None
    return {"min_cell_count": req.min_cell_count,
            "dominance": list(req.dominance) if req.dominance else None,
            "min_sites": req.min_sites, "max_groups": req.max_groups, "noise": req.noise,
            "aggregation": req.aggregation, "epsilon": req.epsilon, "delta": req.delta,
            "zero_cells_disclosive": req.zero_cells_disclosive}


def _requirements_from_json(obj: Any) -> Requirements | None:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise MalformedMessage("catalog requirements must be an object")
    try:
        dominance = obj.get("dominance")
        return Requirements(
            min_cell_count=int(obj["min_cell_count"]),
            dominance=(int(dominance[0]), float(dominance[1])) if dominance else None,
            min_sites=int(obj["min_sites"]), max_groups=obj.get("max_groups"),
            noise=str(obj["noise"]), aggregation=str(obj["aggregation"]),
            epsilon=obj.get("epsilon"), delta=obj.get("delta"),
            zero_cells_disclosive=bool(obj.get("zero_cells_disclosive", False)))
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise MalformedMessage(f"catalog requirements are malformed: {err}") from None


_FACTS = ("role", "domain", "bounds", "uses", "aggregates")


def _column_to_json(column: ColumnInfo) -> list:
    facts = {k: list(v) if isinstance(v, tuple) else v
             for k in _FACTS if (v := getattr(column, k)) is not None}
    return [column.name, column.type, facts] if facts else [column.name, column.type]


def _column_from_json(item: Any) -> ColumnInfo:
    if not (isinstance(item, list) and len(item) in (2, 3)
            and all(isinstance(x, str) for x in item[:2])):
        raise MalformedMessage("catalog columns must be [name, type] or [name, type, facts]")
    facts = item[2] if len(item) == 3 else {}
    if not isinstance(facts, dict) or set(facts) - set(_FACTS):
        raise MalformedMessage(f"catalog column {item[0]!r} has malformed facts")
    try:
        bounds = facts.get("bounds")
        return ColumnInfo(
            item[0], item[1], role=facts.get("role"),
            domain=tuple(facts["domain"]) if facts.get("domain") is not None else None,
            bounds=(float(bounds[0]), float(bounds[1])) if bounds is not None else None,
            uses=tuple(map(str, facts["uses"])) if facts.get("uses") is not None else None,
            aggregates=tuple(map(str, facts["aggregates"]))
            if facts.get("aggregates") is not None else None)
    except (TypeError, ValueError, IndexError) as err:
        raise MalformedMessage(f"catalog column {item[0]!r} has malformed facts: {err}") \
            from None


def encode_catalog(catalog: SiteCatalog) -> bytes:
    return json.dumps({
        "version": VERSION, "site": catalog.site,
        "tables": [{"name": t.name, "privacy_unit": t.privacy_unit,
                    "columns": [_column_to_json(c) for c in t.columns]}
                   for t in catalog.tables],
        "requirements": _requirements_to_json(catalog.requirements),
    }, default=str).encode()


def decode_catalog(data: bytes) -> SiteCatalog:
    obj = _load(data, "catalog")
    tables = []
    for t in _field(obj, "tables", list, "catalog"):
        if not isinstance(t, dict):
            raise MalformedMessage("catalog tables must be objects")
        cols = _field(t, "columns", list, "catalog table")
        tables.append(TableInfo(_field(t, "name", str, "catalog table"),
                                tuple(_column_from_json(c) for c in cols),
                                _field(t, "privacy_unit", (str, type(None)), "catalog table",
                                       None)))
    return SiteCatalog(_field(obj, "site", str, "catalog"), tuple(tables),
                       _requirements_from_json(obj.get("requirements")))


# -- replies --------------------------------------------------------------------------------

def reply_header(reply: SiteReply) -> dict:
    return {"version": VERSION, "site": reply.site, "fingerprint": reply.fingerprint,
            "suppressed": reply.suppressed, "meta": [[k, v] for k, v in reply.meta]}


def reply_from_header(header: dict, table: pa.Table) -> SiteReply:
    meta = _field(header, "meta", list, "reply", [])
    if not all(isinstance(m, list) and len(m) == 2 and isinstance(m[0], str) for m in meta):
        raise MalformedMessage("reply meta must be [name, value] pairs")
    return SiteReply(site=_field(header, "site", str, "reply"),
                     fingerprint=_field(header, "fingerprint", str, "reply"),
                     partials=table.replace_schema_metadata(None),
                     suppressed=_field(header, "suppressed", int, "reply", 0),
                     meta=tuple((k, v) for k, v in meta))


def encode_reply(reply: SiteReply) -> bytes:
    header = json.dumps(reply_header(reply)).encode()
    table = reply.partials.replace_schema_metadata({b"fedquery": header})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def decode_reply(data: bytes) -> SiteReply:
    try:
        table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
    except (pa.ArrowInvalid, pa.ArrowException) as err:
        raise MalformedMessage(f"reply is not an Arrow IPC stream: {err}") from None
    return decode_reply_table(table)


def decode_reply_table(table: pa.Table) -> SiteReply:
    """A reply from an Arrow table whose schema metadata carries the reply header."""
    raw = (table.schema.metadata or {}).get(b"fedquery")
    if raw is None:
        raise MalformedMessage("reply has no fedquery header")
    return reply_from_header(_load(raw, "reply"), table)
