"""Policy files: read a steward's YAML, validate it, and build the typed :class:`Policy`.

The only reader of policy YAML.  Three passes, each reporting *every* problem it finds, one per
line, sorted by position, as ``FILE:LINE:COLUMN: KEY.PATH: what was expected``:

1. YAML: ``yaml.safe_load`` only, plus a node pass (``yaml.compose``) that gives each key its
   line and column and rejects what PyYAML would accept silently: a key written twice (the last
   one would win), a key that is not text (``1:``), ``yes``/``no``/``on``/``off`` (booleans
   in YAML 1.1: write true/false, or quote the text), ``.inf`` and ``.nan``.
2. The JSON Schema shipped beside this module (``policy.schema.json``, exported by
   ``fedquery policy schema``); an unknown key gets "did you mean ...?".
3. What a schema cannot express: ``{$env: NAME}`` secrets (resolved here, never shown), bounds
   order, roles against bounds/domain/uses, privacy units, epsilon against budget, gaussian
   needs delta, case-insensitive duplicate names, and the site the caller expects.

A table's ``privacy_unit`` is an identifier column: if the steward does not list it under
``columns`` it is added as ``{role: identifier}``; if listed, it must have that role.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from fedquery.errors import ConfigError
from fedquery.policy.domains import NAMED_DOMAINS
from fedquery.policy.model import Analyst, ColumnPolicy, Disclosure, Noise, Policy, TablePolicy

Problem = tuple[tuple, str]  # (key path such as ("noise", "delta"), message)

_TAG = "tag:yaml.org,2002:"
_WORDS = {"object": "a mapping", "array": "a list", "string": "text", "boolean": "true or false",
          "integer": "a whole number", "number": "a number", "null": "nothing"}
_LIMITS = (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="),
           ("exclusiveMaximum", "<"))


def schema_text() -> str:
    """The exact text of the policy JSON Schema (pretty-printed, ending in a newline)."""
    return resources.files("fedquery.policy").joinpath("policy.schema.json").read_text("utf-8")


def load_policy(path: str | os.PathLike[str], *, site: str | None = None,
                resolve_secrets: bool = True) -> Policy:
    """Read and validate one policy file; ``site``, if given, must match the file's ``site``.

    With ``resolve_secrets=False`` (``fedquery policy check`` on a steward's laptop),
    ``{$env: NAME}`` token hashes are checked for shape only and the analyst keeps an empty
    hash, so the policy cannot authenticate anyone.
    Raises ConfigError listing every problem, one per line, the first in the file first.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the policy file: {err.strerror}",
                          path=str(path)) from None
    data, root = _parse(path, text)
    problems = [p for error in _validator().iter_errors(data) for p in _explain(error)]
    if not problems:
        problems = (_resolve_secrets(data) if resolve_secrets else _blank_secrets(data))
        problems += _cross_checks(data, site)
    if problems:
        raise _failure(path, root, problems)
    return _build(data, path)


# -- pass 1: YAML --------------------------------------------------------------------------------

def _parse(path: Path, text: str) -> tuple[object, yaml.Node | None]:
    """The loaded data and its node tree; YAML errors and bad keys raise ConfigError."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{mark.line + 1}:{mark.column + 1}:" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        context, at = getattr(err, "context", None), getattr(err, "context_mark", None)
        if context and at:
            problem += f" ({context} at line {at.line + 1}, column {at.column + 1})"
        raise ConfigError(f"{path}:{where} YAML syntax error: {problem}", path=str(path)) from None
    problems: list[Problem] = []
    _check_nodes(root, (), problems, set())
    if problems:
        raise _failure(path, root, problems)
    return data, root


def _check_nodes(node, at: tuple, problems: list[Problem], seen: set[int]) -> None:
    """Keys are text and unique in their mapping; numbers finite; booleans true or false."""
    if node is None or id(node) in seen:  # an alias is checked once
        return
    seen.add(id(node))
    if isinstance(node, yaml.ScalarNode) and node.tag == _TAG + "float" \
            and node.value.lower().lstrip("+-") in (".inf", ".nan"):
        problems.append((at, "expected a finite number, got .inf or .nan"))
    if isinstance(node, yaml.ScalarNode) and node.tag == _TAG + "bool" \
            and node.value.lower() not in ("true", "false"):  # YAML 1.1: NO (Norway) is false
        problems.append((at, f"{node.value} reads as a boolean: write true or false, or quote "
                         f"'{node.value}' if you mean the text"))
    for i, item in enumerate(node.value if isinstance(node, yaml.SequenceNode) else ()):
        _check_nodes(item, (*at, i), problems, seen)
    names: set[str] = set()
    for key, value in node.value if isinstance(node, yaml.MappingNode) else ():
        here = (*at, key.value)
        if key.tag not in (_TAG + "str", _TAG + "merge"):
            problems.append((here, f"the key {key.value!r} must be text; quote it"))
        elif key.value in names:
            problems.append((here, f"duplicate key {key.value!r}: each key may appear once"))
        else:
            names.add(key.value)
        _check_nodes(value, here, problems, seen)


# -- pass 2: the JSON Schema ---------------------------------------------------------------------

@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(schema_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _explain(error: jsonschema.ValidationError) -> list[Problem]:
    """``[(key path, message)]`` for one schema error, in a steward's words."""
    at, check, value, schema = (tuple(error.absolute_path), error.validator, error.instance,
                                error.schema)
    if "propertyNames" in error.relative_schema_path:
        return [((*at, value), f"{value!r} is not a valid name: expected {_expected(schema)}")]
    if check == "additionalProperties":
        if "patternProperties" in schema:  # a bad name: explained by its propertyNames error
            return []
        allowed = list(schema["properties"])
        return [((*at, name), f"unknown key {name!r}{_did_you_mean(name, allowed)} "
                 f"(allowed here: {', '.join(allowed)})") for name in value if name not in allowed]
    if check == "required":
        return [((*at, name), f"missing required key {name!r}: "
                 f"{schema['properties'][name]['description']}")
                for name in error.validator_value if name not in value]
    if check == "oneOf":
        return _explain_branches(error)
    if check == "pattern":  # the value might be a secret: never echo it
        return [(at, f"the value does not match: expected {_expected(schema)}")]
    if check == "uniqueItems":
        return [(at, f"expected {_expected(schema)}, without repeated values")]
    if check in ("enum", "const") or _kind(value) in ("integer", "number"):
        hint = _did_you_mean(value, schema["enum"]) if check == "enum" else ""
        return [(at, f"expected {_expected(schema)}, got {_show(value)}{hint}")]
    got = f"a list of {len(value)}" if isinstance(value, list) else _words(value)
    return [(at, f"expected {_expected(schema)}, got {got}")]


def _explain_branches(error: jsonschema.ValidationError) -> list[Problem]:
    """A ``oneOf``: explain the one branch that fits the value's type, else name every branch."""
    fitting = [i for i, branch in enumerate(error.validator_value)
               if _fits(error.instance, _resolve(branch))]
    if len(fitting) == 1:
        return [p for sub in error.context if sub.relative_schema_path[0] == fitting[0]
                for p in _explain(sub)]
    return [(tuple(error.absolute_path), f"expected {_expected(error.schema)}, "
             f"got {_words(error.instance)}")]


def _resolve(schema: dict) -> dict:
    """Follow a local ``$ref`` into ``$defs``."""
    if "$ref" in schema:
        return _validator().schema["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _fits(value: object, schema: dict) -> bool:
    """Whether ``value`` has a JSON type that ``schema`` (type, const or enum) accepts."""
    if "const" in schema or "enum" in schema:
        types = {_kind(v) for v in schema.get("enum", [schema.get("const")])}
    else:
        types = set(_listed(schema.get("type", [])))
    kind = _kind(value)
    return kind in types or (kind == "integer" and "number" in types)


def _expected(schema: dict) -> str:
    """What a schema accepts, in words: "a whole number >= 1", "one of 'plain', 'secure'"."""
    if "$ref" in schema or "pattern" in schema:  # $defs describe themselves
        return _resolve(schema)["description"]
    if "oneOf" in schema:
        return " or ".join(_expected(branch) for branch in schema["oneOf"])
    if "const" in schema:
        return _show(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(map(_show, schema["enum"]))
    if schema.get("type") == "array":
        count = schema.get("minItems")
        size = f"exactly {count} " if count == schema.get("maxItems") else ""
        more = f" (at least {count})" if count and not size else ""
        return f"a list of {size}items, each {_expected(schema['items'])}{more}"
    words = " or ".join(_WORDS[t] for t in _listed(schema.get("type", [])))
    limits = " and ".join(f"{op} {schema[key]:g}" for key, op in _LIMITS if key in schema)
    return f"{words} {limits}".strip()


# -- pass 3: secrets and cross-field checks ------------------------------------------------------

def _blank_secrets(data: dict) -> list[Problem]:
    """Leave ``{$env: NAME}`` secrets unresolved: an empty hash matches no token."""
    for entry in data.get("analysts", {}).values():
        if isinstance(entry["token_sha256"], dict):
            entry["token_sha256"] = ""
    return []


def _resolve_secrets(data: dict) -> list[Problem]:
    """Replace each ``{$env: NAME}`` token hash by the variable's value (checked, never shown)."""
    problems = []
    for name, entry in data.get("analysts", {}).items():
        if not isinstance(token := entry["token_sha256"], dict):
            continue
        at, var = ("analysts", name, "token_sha256"), token["$env"]
        value = os.environ.get(var, "")
        if not value:
            problems.append((at, f"environment variable {var} is not set (or empty); this "
                             f"value is written {{$env: {var}}}: set {var} before loading"))
        elif not re.fullmatch(_validator().schema["$defs"]["sha256_hex"]["pattern"], value):
            problems.append((at, f"environment variable {var} does not hold a sha256 hex "
                             "digest (64 lowercase hex characters; never the token itself)"))
        else:
            entry["token_sha256"] = value
    return problems


def _cross_checks(data: dict, site: str | None) -> list[Problem]:
    """Rules between fields that a JSON Schema cannot express."""
    problems = []
    if site is not None and data["site"] != site:
        problems.append((("site",), f"this policy is for site {data['site']!r}, "
                         f"but it was loaded for site {site!r}"))
    noise = data.get("noise", {})
    if noise.get("mechanism") == "gaussian" and "delta" not in noise:
        problems.append((("noise", "mechanism"), "the gaussian mechanism needs noise.delta "
                         "(e.g. delta: 1.0e-7)"))
    budget, per_query = noise.get("budget", {}).get("epsilon"), noise.get("max_epsilon_per_query")
    if budget is not None and per_query is not None and per_query > budget:
        problems.append((("noise", "max_epsilon_per_query"), f"{per_query:g} is more than the "
                         f"whole budget (noise.budget.epsilon = {budget:g})"))
    owners: dict[str, str] = {}
    for name, entry in data.get("analysts", {}).items():
        token = entry["token_sha256"]
        if isinstance(token, str) and token and owners.setdefault(token, name) != name:
            problems.append((("analysts", name, "token_sha256"), "the same token hash as "
                             f"analyst {owners[token]!r}: each analyst needs their own token"))
    problems += _same_names(data["tables"], ("tables",))
    for table, entry in data["tables"].items():
        problems += _check_table(("tables", table), entry)
    return problems


def _same_names(names: dict, at: tuple) -> list[Problem]:
    """SQL names are case-insensitive: two names that differ only in case are one name."""
    first: dict[str, str] = {}
    return [((*at, name), f"{name!r} and {first[name.lower()]!r} are the same name (names are "
             "case-insensitive)") for name in names if first.setdefault(name.lower(), name) != name]


def _check_table(at: tuple, table: dict) -> list[Problem]:
    """A table's privacy unit and row cap, and each column's role against its settings."""
    columns, unit = table["columns"], table.get("privacy_unit")
    problems = _same_names(columns, (*at, "columns"))
    if unit is None and "max_rows_per_unit" in table:
        problems.append(((*at, "max_rows_per_unit"), "needs privacy_unit: rows are counted "
                         "per person"))
    for name, column in columns.items():
        here, role = (*at, "columns", name), column.get("role", "attribute")
        if unit is not None and name.lower() == unit.lower() and role != "identifier":
            problems.append(((*here, "role"), f"column {name!r} is the table's privacy_unit, so "
                             f"its role must be identifier, not {role}"))
        if role in ("identifier", "hidden"):
            problems += [((*here, key), f"{role} columns take no {key}: they are never released, "
                          "so it would be pointless and confusing")
                         for key in ("bounds", "domain", "uses", "aggregates") if key in column]
        low, high = column.get("bounds", (0, 1))
        if not low < high:
            problems.append(((*here, "bounds"), f"expected [low, high] with low < high, got "
                             f"[{low:g}, {high:g}]"))
        if "aggregates" in column and "aggregate" not in column.get("uses", ["aggregate"]):
            problems.append(((*here, "aggregates"), "aggregates are listed, but uses does not "
                             "include aggregate"))
    return problems


# -- building the typed model --------------------------------------------------------------------

def _build(data: dict, path: Path) -> Policy:
    """The typed Policy of validated data; omitted fields take the model's defaults."""
    disclosure = dict(data.get("disclosure", {}))
    if "dominance" in disclosure:
        rule = disclosure["dominance"]
        disclosure["dominance"] = (rule["n"], float(rule["k"])) if rule else None
    noise = {key: value if key == "mechanism" else float(value)
             for key, value in data.get("noise", {}).items() if key != "budget"}
    if "budget" in data.get("noise", {}):
        noise["budget_epsilon"] = float(data["noise"]["budget"]["epsilon"])
    analysts = {name: Analyst(name=name, token_sha256=entry["token_sha256"],
                              roles=tuple(entry.get("roles", ("analyst",))))
                for name, entry in data.get("analysts", {}).items()}
    return Policy(name=data["site"], site=data["site"], disclosure=Disclosure(**disclosure),
                  noise=Noise(**noise), aggregation=data.get("aggregation", "plain"),
                  analysts=analysts, source=str(path),
                  tables={name.lower(): _table(entry) for name, entry in data["tables"].items()})


def _table(entry: dict) -> TablePolicy:
    """A TablePolicy; names are lower-cased, the privacy unit is added as an identifier."""
    columns = {name.lower(): _column(spec) for name, spec in entry["columns"].items()}
    unit = entry.get("privacy_unit")
    if unit is not None:
        unit = unit.lower()
        columns.setdefault(unit, ColumnPolicy(role="identifier"))
    return TablePolicy(privacy_unit=unit, max_rows_per_unit=entry.get("max_rows_per_unit"),
                       columns=columns)


def _column(spec: dict) -> ColumnPolicy:
    """A ColumnPolicy; a named domain is resolved to its public list."""
    fields: dict = {"role": spec.get("role", "attribute")}
    if "bounds" in spec:
        fields["bounds"] = tuple(float(v) for v in spec["bounds"])
    if isinstance(spec.get("domain"), str):
        fields["domain"], fields["domain_name"] = NAMED_DOMAINS[spec["domain"]], spec["domain"]
    elif "domain" in spec:
        fields["domain"] = tuple(spec["domain"])
    for key in ("uses", "aggregates"):
        if key in spec:
            fields[key] = frozenset(spec[key])
    return ColumnPolicy(**fields)


# -- reporting -----------------------------------------------------------------------------------

def _failure(path: Path, root, problems: list[Problem]) -> ConfigError:
    """One ConfigError listing every problem as ``FILE:LINE:COLUMN: KEY: message``."""
    located = sorted((*_locate(root, at), _dotted(at), text) for at, text in problems)
    lines = dict.fromkeys(f"{path}:{line}:{col}: {key}: {text}" for line, col, key, text in located)
    return ConfigError("\n".join(lines), path=str(path), key=located[0][2])


def _locate(root, at: tuple) -> tuple[int, int]:
    """1-based line and column of the key at ``at`` (or of its nearest existing ancestor)."""
    node, mark = root, getattr(root, "start_mark", None)
    for part in at:
        if isinstance(node, yaml.MappingNode):
            keys = [(key, value) for key, value in node.value if key.value == part]
            if not keys:
                break
            mark, node = keys[-1][0].start_mark, keys[-1][1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part]
            mark = node.start_mark
        else:
            break
    return (mark.line + 1, mark.column + 1) if mark else (1, 1)


def _dotted(at: tuple) -> str:
    """``("tables", "labs", "columns", "value", "bounds", 1)`` -> ``tables.labs...bounds[1]``."""
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in at)
    return text.lstrip(".") or "(top level)"


def _did_you_mean(word: object, choices) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _listed(types: str | list[str]) -> list[str]:
    return [types] if isinstance(types, str) else types


def _kind(value: object) -> str:
    """The JSON type of a value (``date`` etc. for YAML-only types)."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
             float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _words(value: object) -> str:
    """What kind of value this is, in words; never the value itself (it might be a secret)."""
    return _WORDS.get(_kind(value), f"a {_kind(value)}")


def _show(value: object) -> str:
    """A (non-secret) value as a steward wrote it: 'text' quoted; numbers, true, false, null."""
    return json.dumps(value) if _kind(value) in ("boolean", "integer", "number", "null") \
        else repr(value)
