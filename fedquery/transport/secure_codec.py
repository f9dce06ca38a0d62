"""Versioned wire format between the coordinator and the key holder (secure aggregation).

Three messages, each an Arrow table whose schema metadata (key ``fedquery-secure``) holds a
JSON header with a ``version`` and a ``kind``; every field is checked on the way in, and
bytes (ciphertexts, signatures, the public context) travel as Arrow binary values — never
pickle, never base64 inside JSON:

``public_context`` (key holder → anyone)
    header ``{version, kind, epoch, profile, fingerprint}``; one row, column ``context``
    (binary): the public BFV context.  The decoder checks that its SHA-256 is the fingerprint.

``release_request`` (coordinator → key holder)
    header ``{version, kind, query_id, participants, epoch, layout, contributions}`` where
    ``layout`` is :func:`fedquery.protect.slots.layout_to_json` and ``contributions`` lists
    ``{site, context_fingerprint, requirements}`` per site (requirements as an object with
    every :class:`~fedquery.ir.Requirements` field).  Rows ``(role, site, part, data)``:
    ``("ciphertext", site, i, bytes)`` for the i-th ciphertext of a site,
    ``("signature", site, 0, bytes)`` for its Ed25519 signature and
    ``("summed", null, i, bytes)`` for the i-th ciphertext of the coordinator's sum.  Sent as
    many small record batches (a 50-site request is ~13 MB), e.g. over Flight DoExchange.

``release_reply`` (key holder → coordinator)
    header ``{version, kind, suppressed, participants, epoch}``; the rows are the released
    combined cells (group columns, ``c_*``, ``__sites``, ``__suppressed``, ``__units``,
    ``__units_reported``).

Anything malformed raises :class:`~fedquery.transport.codec.MalformedMessage`.

>>> blob = b"not really a context"
>>> import hashlib
>>> fp = hashlib.sha256(blob).hexdigest()
>>> decode_public_context(encode_public_context(3, "standard", blob, fp)) == (3, blob, fp)
True
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from typing import Any

import pyarrow as pa

from fedquery.errors import DataError, StaleEpoch  # noqa: F401 - re-exported: the codec decodes it
from fedquery.ir import Requirements, SecureReleaseRequest, SignedContribution
from fedquery.protect.slots import layout_from_json, layout_to_json
from fedquery.transport.codec import MalformedMessage

VERSION = 1
HEADER_KEY = b"fedquery-secure"
MAX_SITES = 1000  # he.MAX_SUMMANDS: no more contributions are ever summed
MAX_CIPHERTEXTS = 4096  # per contribution (4096 × 4096 slots is far beyond any layout)
MAX_QUERY_ID = 256
BATCH_ROWS = 4  # rows per record batch when streaming a request (≤ ~1.8 MB, wide profile)

ROLES = ("ciphertext", "signature", "summed")
REQUEST_SCHEMA = pa.schema([("role", pa.string()), ("site", pa.string()),
                            ("part", pa.int32()), ("data", pa.large_binary())])
_CONTEXT_SCHEMA = pa.schema([("context", pa.large_binary())])


# -- helpers ----------------------------------------------------------------------------------

def _with_header(table: pa.Table, header: dict) -> pa.Table:
    try:
        text = json.dumps(header, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as err:
        raise DataError(f"cannot encode the {header.get('kind')} header: {err}") from None
    return table.replace_schema_metadata({HEADER_KEY: text.encode()})


def _header(table: pa.Table, kind: str) -> dict:
    if not isinstance(table, pa.Table):
        raise MalformedMessage(f"a {kind} must be an Arrow table")
    raw = (table.schema.metadata or {}).get(HEADER_KEY)
    if raw is None:
        raise MalformedMessage(f"the {kind} has no fedquery-secure header")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MalformedMessage(f"the {kind} header is not UTF-8 JSON") from None
    if not isinstance(obj, dict):
        raise MalformedMessage(f"the {kind} header must be a JSON object")
    if obj.get("version") != VERSION:
        raise MalformedMessage(f"unsupported {kind} version {obj.get('version')!r} (this "
                               f"end speaks version {VERSION})")
    if obj.get("kind") != kind:
        raise MalformedMessage(f"expected a {kind}, got {obj.get('kind')!r}")
    return obj


def _exact_keys(obj: dict, keys: set[str], what: str) -> None:
    missing, extra = keys - set(obj), set(obj) - keys
    if missing:
        raise MalformedMessage(f"{what} is missing field(s) {', '.join(sorted(missing))}")
    if extra:
        raise MalformedMessage(f"{what} has unknown field(s) {', '.join(sorted(extra))}")


def _typed(obj: dict, name: str, kind: type | tuple, what: str) -> Any:
    value = obj[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in (
            kind if isinstance(kind, tuple) else (kind,))):
        raise MalformedMessage(f"{what} field {name!r} has the wrong type")
    return value


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 200:
        raise MalformedMessage(f"{what} must be a non-empty name")
    return value


def _fingerprint(value: Any, what: str) -> str:
    if (not isinstance(value, str) or len(value) != 64
            or any(c not in "0123456789abcdef" for c in value.lower())):
        raise MalformedMessage(f"{what} must be a SHA-256 hex digest")
    return value.lower()


def to_ipc(table: pa.Table) -> bytes:
    """An Arrow IPC stream of ``table`` (schema metadata included)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=BATCH_ROWS)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes, what: str) -> pa.Table:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessage(f"a {what} must be bytes")
    try:
        return pa.ipc.open_stream(pa.py_buffer(bytes(data))).read_all()
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as err:
        raise MalformedMessage(f"the {what} is not an Arrow IPC stream: {err}") from None


# -- requirements -----------------------------------------------------------------------------

_REQUIREMENT_FIELDS = {"min_cell_count", "dominance", "min_sites", "max_groups", "noise",
                       "aggregation", "epsilon", "delta", "zero_cells_disclosive"}


def requirements_to_json(req: Requirements) -> dict:
    """Every field of ``req`` as a JSON object (the inverse of
    :func:`requirements_from_json`)."""
    return {"min_cell_count": req.min_cell_count,
            "dominance": [req.dominance[0], req.dominance[1]] if req.dominance else None,
            "min_sites": req.min_sites, "max_groups": req.max_groups, "noise": req.noise,
            "aggregation": req.aggregation, "epsilon": req.epsilon, "delta": req.delta,
            "zero_cells_disclosive": req.zero_cells_disclosive}


def _number(value: Any, what: str, *, integer: bool = False, optional: bool = False):
    if value is None and optional:
        return None
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or (
            isinstance(value, float) and not math.isfinite(value)):
        raise MalformedMessage(f"{what} must be a{'n integer' if integer else ' number'}")
    return value


def requirements_from_json(obj: Any, what: str = "requirements") -> Requirements:
    if not isinstance(obj, dict):
        raise MalformedMessage(f"{what} must be an object")
    _exact_keys(obj, _REQUIREMENT_FIELDS, what)
    dominance = obj["dominance"]
    if dominance is not None:
        if not isinstance(dominance, list) or len(dominance) != 2:
            raise MalformedMessage(f"{what}: dominance must be [n, k] or null")
        dominance = (_number(dominance[0], f"{what}: dominance n", integer=True),
                     float(_number(dominance[1], f"{what}: dominance k")))
    for name in ("noise", "aggregation"):
        if not isinstance(obj[name], str):
            raise MalformedMessage(f"{what}: {name} must be text")
    if not isinstance(obj["zero_cells_disclosive"], bool):
        raise MalformedMessage(f"{what}: zero_cells_disclosive must be true or false")
    epsilon = _number(obj["epsilon"], f"{what}: epsilon", optional=True)
    delta = _number(obj["delta"], f"{what}: delta", optional=True)
    return Requirements(
        min_cell_count=_number(obj["min_cell_count"], f"{what}: min_cell_count", integer=True),
        dominance=dominance,
        min_sites=_number(obj["min_sites"], f"{what}: min_sites", integer=True),
        max_groups=_number(obj["max_groups"], f"{what}: max_groups", integer=True,
                           optional=True),
        noise=obj["noise"], aggregation=obj["aggregation"],
        epsilon=None if epsilon is None else float(epsilon),
        delta=None if delta is None else float(delta),
        zero_cells_disclosive=obj["zero_cells_disclosive"])


# -- public context ---------------------------------------------------------------------------

def encode_public_context_request(profile: str) -> bytes:
    """The body of the ``public_context`` action."""
    return json.dumps({"version": VERSION, "kind": "public_context_request",
                       "profile": profile}).encode()


def decode_public_context_request(data: bytes) -> str:
    try:
        obj = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError, TypeError):
        raise MalformedMessage("the public context request is not UTF-8 JSON") from None
    if not isinstance(obj, dict) or obj.get("version") != VERSION or obj.get(
            "kind") != "public_context_request":
        raise MalformedMessage(f"unsupported public context request (this end speaks "
                               f"version {VERSION})")
    _exact_keys(obj, {"version", "kind", "profile"}, "the public context request")
    return _name(obj["profile"], "the profile")


def public_context_table(epoch: int, profile: str, blob: bytes, fingerprint: str) -> pa.Table:
    table = pa.table([pa.array([bytes(blob)], pa.large_binary())], schema=_CONTEXT_SCHEMA)
    return _with_header(table, {"version": VERSION, "kind": "public_context", "epoch": epoch,
                                "profile": profile, "fingerprint": fingerprint})


def encode_public_context(epoch: int, profile: str, blob: bytes, fingerprint: str) -> bytes:
    """The key holder's current public context of ``profile``, as an Arrow IPC stream."""
    return to_ipc(public_context_table(epoch, profile, blob, fingerprint))


def decode_public_context(data: bytes, profile: str | None = None) -> tuple[int, bytes, str]:
    """``(epoch, blob, fingerprint)``; refuses a blob whose SHA-256 is not the fingerprint,
    and (with ``profile``) a context of another profile."""
    table = from_ipc(data, "public context")
    header = _header(table, "public_context")
    _exact_keys(header, {"version", "kind", "epoch", "profile", "fingerprint"},
                "the public context header")
    epoch = _typed(header, "epoch", int, "the public context header")
    got = _name(header["profile"], "the public context's profile")
    if profile is not None and got != profile:
        raise MalformedMessage(f"asked for the {profile!r} public context, got {got!r}")
    fingerprint = _fingerprint(header["fingerprint"], "the public context's fingerprint")
    if table.schema.names != ["context"] or table.num_rows != 1 or not pa.types.is_binary(
            table.schema.field("context").type) and not pa.types.is_large_binary(
            table.schema.field("context").type):
        raise MalformedMessage("the public context must be one binary value")
    blob = table.column("context")[0].as_py()
    if blob is None or not hmac.compare_digest(hashlib.sha256(blob).hexdigest(), fingerprint):
        raise MalformedMessage("the public context does not match its fingerprint")
    return epoch, blob, fingerprint


# -- release request --------------------------------------------------------------------------

def release_request_table(request: SecureReleaseRequest) -> pa.Table:
    """The request as one Arrow table (header in the schema metadata)."""
    roles, sites, parts, data = [], [], [], []

    def row(role: str, site: str | None, part: int, blob: bytes) -> None:
        roles.append(role)
        sites.append(site)
        parts.append(part)
        data.append(bytes(blob))

    for c in request.contributions:
        for i, blob in enumerate(c.ciphertexts):
            row("ciphertext", c.site, i, blob)
        row("signature", c.site, 0, c.signature)
    for i, blob in enumerate(request.summed):
        row("summed", None, i, blob)
    table = pa.table([pa.array(roles, pa.string()), pa.array(sites, pa.string()),
                      pa.array(parts, pa.int32()), pa.array(data, pa.large_binary())],
                     schema=REQUEST_SCHEMA)
    header = {"version": VERSION, "kind": "release_request", "query_id": request.query_id,
              "participants": list(request.participants), "epoch": request.epoch,
              "layout": layout_to_json(request.layout),
              "contributions": [{"site": c.site,
                                 "context_fingerprint": c.context_fingerprint,
                                 "requirements": requirements_to_json(c.requirements)}
                                for c in request.contributions]}
    return _with_header(table, header)


def encode_release_request(request: SecureReleaseRequest) -> bytes:
    return to_ipc(release_request_table(request))


def decode_release_request(data: bytes) -> SecureReleaseRequest:
    return decode_release_request_table(from_ipc(data, "release request"))


def _check_schema(table: pa.Table) -> None:
    schema = table.schema
    if schema.names != REQUEST_SCHEMA.names:
        raise MalformedMessage(f"a release request has the columns "
                               f"{', '.join(REQUEST_SCHEMA.names)}")
    for name in ("role", "site"):
        if not (pa.types.is_string(schema.field(name).type)
                or pa.types.is_large_string(schema.field(name).type)):
            raise MalformedMessage(f"release request column {name!r} must be text")
    if not pa.types.is_integer(schema.field("part").type):
        raise MalformedMessage("release request column 'part' must be integers")
    kind = schema.field("data").type
    if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
        raise MalformedMessage("release request column 'data' must be binary")


def _parts(found: dict[int, bytes], what: str) -> tuple[bytes, ...]:
    if not found:
        raise MalformedMessage(f"{what} has no ciphertext")
    if sorted(found) != list(range(len(found))):
        raise MalformedMessage(f"{what}: ciphertext parts must be numbered 0..n-1")
    return tuple(found[i] for i in range(len(found)))


def decode_release_request_table(table: pa.Table) -> SecureReleaseRequest:
    """The request in ``table``, checked field by field and row by row."""
    header = _header(table, "release_request")
    what = "the release request header"
    _exact_keys(header, {"version", "kind", "query_id", "participants", "epoch", "layout",
                         "contributions"}, what)
    query_id = _typed(header, "query_id", str, what)
    if not query_id or len(query_id) > MAX_QUERY_ID:
        raise MalformedMessage(f"the query id must have 1 to {MAX_QUERY_ID} characters")
    participants = _typed(header, "participants", list, what)
    if not participants or len(participants) > MAX_SITES:
        raise MalformedMessage(f"a release request names 1 to {MAX_SITES} participants")
    participants = tuple(_name(p, "a participant") for p in participants)
    epoch = _typed(header, "epoch", int, what)
    if not isinstance(header["layout"], dict):
        raise MalformedMessage("the layout must be an object")
    try:
        layout = layout_from_json(header["layout"])
    except DataError as err:
        raise MalformedMessage(str(err)) from None
    entries = _typed(header, "contributions", list, what)
    if len(entries) > MAX_SITES:
        raise MalformedMessage(f"a release request holds at most {MAX_SITES} contributions")
    facts = {}
    for entry in entries:
        if not isinstance(entry, dict):
            raise MalformedMessage("each contribution must be an object")
        _exact_keys(entry, {"site", "context_fingerprint", "requirements"}, "a contribution")
        site = _name(entry["site"], "a contribution's site")
        if site in facts:
            raise MalformedMessage(f"site {site!r} has two contributions")
        facts[site] = (_fingerprint(entry["context_fingerprint"],
                                    f"the context fingerprint of {site!r}"),
                       requirements_from_json(entry["requirements"],
                                              f"the requirements of {site!r}"))
    _check_schema(table)
    ciphertexts: dict[str, dict[int, bytes]] = {site: {} for site in facts}
    signatures: dict[str, bytes] = {}
    summed: dict[int, bytes] = {}
    columns = (table.column(n).to_pylist() for n in ("role", "site", "part", "data"))
    for role, site, part, blob in zip(*columns):
        if role not in ROLES:
            raise MalformedMessage(f"unknown release request row role {role!r}")
        if blob is None or part is None or not 0 <= part < MAX_CIPHERTEXTS:
            raise MalformedMessage("a release request row has no data or a bad part number")
        if role == "summed":
            if site is not None:
                raise MalformedMessage("a summed ciphertext names no site")
            target = summed
        else:
            if site not in facts:
                raise MalformedMessage(f"a {role} row names a site without a contribution")
            if role == "signature":
                if part != 0 or site in signatures:
                    raise MalformedMessage(f"site {site!r} has more than one signature")
                signatures[site] = blob
                continue
            target = ciphertexts[site]
        if part in target:
            raise MalformedMessage("a ciphertext part appears twice")
        target[part] = blob
    contributions = []
    for site, (fingerprint, requirements) in facts.items():
        if site not in signatures:
            raise MalformedMessage(f"the contribution of {site!r} has no signature")
        contributions.append(SignedContribution(
            site=site, ciphertexts=_parts(ciphertexts[site], f"the contribution of {site!r}"),
            signature=signatures[site], requirements=requirements,
            context_fingerprint=fingerprint))
    return SecureReleaseRequest(query_id=query_id, participants=participants, epoch=epoch,
                                layout=layout, contributions=tuple(contributions),
                                summed=_parts(summed, "the coordinator's sum"))


# -- release reply ----------------------------------------------------------------------------

def release_reply_table(table: pa.Table, info: dict) -> pa.Table:
    """The released cells with the reply header (suppressed, participants, epoch)."""
    return _with_header(table, {"version": VERSION, "kind": "release_reply",
                                "suppressed": int(info["suppressed"]),
                                "participants": list(info["participants"]),
                                "epoch": int(info["epoch"])})


def encode_release_reply(table: pa.Table, info: dict) -> bytes:
    return to_ipc(release_reply_table(table, info))


def decode_release_reply_table(table: pa.Table) -> tuple[pa.Table, dict]:
    header = _header(table, "release_reply")
    what = "the release reply header"
    _exact_keys(header, {"version", "kind", "suppressed", "participants", "epoch"}, what)
    suppressed = _typed(header, "suppressed", int, what)
    if suppressed < 0:
        raise MalformedMessage("the suppressed count must not be negative")
    participants = _typed(header, "participants", list, what)
    info = {"suppressed": suppressed,
            "participants": [_name(p, "a participant") for p in participants],
            "epoch": _typed(header, "epoch", int, what)}
    return table.replace_schema_metadata(None), info


def decode_release_reply(data: bytes) -> tuple[pa.Table, dict]:
    return decode_release_reply_table(from_ipc(data, "release reply"))
