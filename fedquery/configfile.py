"""Config files: YAML + a JSON Schema -> validated data, or one ConfigError naming every problem.

Shared by the policy, connector and federation loaders; each adds its own cross-field checks
and builds its own typed object::

    data, root = read_yaml(path, "policy")        # syntax errors and bad keys raise ConfigError
    problems = SCHEMA.problems(data)              # every schema problem, in a person's words
    if not problems:
        problems = own_checks(data)               # may use env_value() for {$env: NAME}
    if problems:
        raise config_error(path, root, problems)  # FILE:LINE:COLUMN: key.path: message

A :data:`Problem` is ``(key path, message)``, the key path a tuple such as ``("noise", "delta")``
or ``("tables", "t", "bounds", 1)``.  Messages never echo text that might be a secret: text of
the wrong type, or text that does not match in a field that also accepts ``{$env: NAME}``.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from fedquery.errors import ConfigError

Problem = tuple[tuple, str]  # (key path such as ("noise", "delta"), message)

_TOP = "(top level)"
_TAG = "tag:yaml.org,2002:"
_WORDS = {"object": "a mapping", "array": "a list", "string": "text", "boolean": "true or false",
          "integer": "a whole number", "number": "a number", "null": "nothing"}
_LIMITS = (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="),
           ("exclusiveMaximum", "<"))


# -- YAML ----------------------------------------------------------------------------------------

def read_yaml(path: str | os.PathLike[str], what: str, *,
              located: bool = True) -> tuple[object, yaml.Node | None]:
    """The data of a YAML file and its node tree (``None`` for an empty file).

    ``what`` names the file in a read error: ``cannot read the {what} file``.  Besides syntax
    errors (``FILE:LINE:COLUMN: YAML syntax error: ...``) it refuses what PyYAML accepts
    silently: a key written twice (the last would win), a key that is not text (``1:``),
    ``yes``/``no``/``on``/``off`` (booleans in YAML 1.1), ``.inf`` and ``.nan``.
    ``located=False`` is the older format of :func:`config_error`.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        root, data = yaml.compose(text, Loader=yaml.SafeLoader), yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or "it is not UTF-8 text"
        raise ConfigError(f"{path}: cannot read the {what} file: {reason}",
                          path=str(path)) from None
    except yaml.YAMLError as err:
        mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", "") or str(err)
        context, at = getattr(err, "context", None), getattr(err, "context_mark", None)
        if context and at:
            problem += f" ({context} at line {at.line + 1}, column {at.column + 1})"
        where = "" if not mark else (f"{mark.line + 1}:{mark.column + 1}:" if located else
                                     f" line {mark.line + 1}, column {mark.column + 1}:")
        raise ConfigError(f"{path}:{where} YAML syntax error: {problem}", path=str(path)) from None
    problems: list[Problem] = []
    _check_nodes(root, (), problems, set())
    if problems:
        raise config_error(path, root, problems, located=located)
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


# -- the JSON Schema -----------------------------------------------------------------------------

class Schema:
    """A JSON Schema (draft 2020-12) shipped beside the code: ``Schema("fedquery.policy",
    "policy.schema.json")``; ``package`` may also be a directory.  Read on first use.

    Subclasses may override :meth:`explain` to word some checks their own way.
    """

    def __init__(self, package: str | os.PathLike[str], name: str) -> None:
        self.package, self.name = package, name

    def text(self) -> str:
        """The exact text of the schema file."""
        folder = resources.files(self.package) if isinstance(self.package, str) \
            else Path(self.package)
        return folder.joinpath(self.name).read_text(encoding="utf-8")

    @functools.cached_property
    def validator(self) -> jsonschema.Draft202012Validator:
        schema = json.loads(self.text())
        jsonschema.Draft202012Validator.check_schema(schema)
        return jsonschema.Draft202012Validator(schema)

    def problems(self, data: object) -> list[Problem]:
        """Every way ``data`` breaks the schema, as ``[(key path, message)]`` (unsorted)."""
        return list(dict.fromkeys(p for error in self.validator.iter_errors(data)
                                  for p in self.explain(error)))

    def explain(self, error: jsonschema.ValidationError) -> list[Problem]:
        """``[(key path, message)]`` for one schema error, in a steward's words."""
        at, check, value, schema = (tuple(error.absolute_path), error.validator, error.instance,
                                    error.schema)
        if "propertyNames" in error.relative_schema_path:
            return [((*at, value), f"{value!r} is not a valid name: expected "
                     f"{self._expected(schema)}")]
        if check == "additionalProperties":
            if "patternProperties" in schema:  # a bad name: explained by its propertyNames error
                return []
            allowed = list(schema.get("properties", {}))
            return [((*at, name), f"unknown key {name!r}{did_you_mean(name, allowed)} (allowed "
                     f"here: {', '.join(allowed)})") for name in value if name not in allowed]
        if check == "required":
            about = {name: schema.get("properties", {}).get(name, {}).get("description")
                     for name in error.validator_value if name not in value}
            return [((*at, name), f"missing required key {name!r}" + (f": {text}" if text else ""))
                    for name, text in about.items()]
        if check == "oneOf":
            return self._explain_branches(error)
        if check == "pattern":  # text where {$env: NAME} is accepted too may be a secret
            parent = error.parent
            secret = parent is not None and parent.validator == "oneOf" \
                and parent.absolute_path == error.absolute_path and any(
                    "$env" in self._resolve(branch).get("properties", {})
                    for branch in parent.validator_value)
            shown = "the value does not match" if secret else f"{value!r} is not valid"
            return [(at, f"{shown}: expected {self._expected(schema)}")]
        if check in ("minProperties", "maxProperties"):
            return [(at, f"expected {schema.get('description') or self._expected(schema)}; "
                     f"got {', '.join(map(str, value)) or 'none'}")]
        if check == "minLength" and error.validator_value == 1:
            return [(at, "must not be empty: expected "
                     f"{schema.get('description') or self._expected(schema)}")]
        if check == "uniqueItems":
            return [(at, f"expected {self._expected(schema)}, without repeated values")]
        if check in ("enum", "const") or _kind(value) in ("integer", "number"):
            hint = did_you_mean(value, schema["enum"]) if check == "enum" else ""
            return [(at, f"expected {self._expected(schema)}, got {_show(value)}{hint}")]
        got = f"a list of {len(value)}" if isinstance(value, list) else _words(value)
        return [(at, f"expected {self._expected(schema)}, got {got}")]

    def _explain_branches(self, error: jsonschema.ValidationError) -> list[Problem]:
        """A ``oneOf``: explain the one branch that fits the value's type, else name them all."""
        fitting = [i for i, branch in enumerate(error.validator_value)
                   if _fits(error.instance, self._resolve(branch))]
        if len(fitting) == 1:
            return [p for sub in error.context if sub.relative_schema_path[0] == fitting[0]
                    for p in self.explain(sub)]
        return [(tuple(error.absolute_path), f"expected {self._expected(error.schema)}, "
                 f"got {_words(error.instance)}")]

    def _resolve(self, schema: dict) -> dict:
        """Follow a local ``$ref`` into ``$defs``."""
        if "$ref" in schema:
            return self.validator.schema["$defs"][schema["$ref"].rsplit("/", 1)[1]]
        return schema

    def _expected(self, schema: dict) -> str:
        """What a schema accepts, in words: "a whole number >= 1", "one of 'plain', 'secure'"."""
        if ("$ref" in schema or "pattern" in schema) and "description" in self._resolve(schema):
            return self._resolve(schema)["description"]  # $defs describe themselves
        schema = self._resolve(schema)
        if "oneOf" in schema:
            return " or ".join(self._expected(branch) for branch in schema["oneOf"])
        if "const" in schema:
            return _show(schema["const"])
        if "enum" in schema:
            return "one of " + ", ".join(map(_show, schema["enum"]))
        if schema.get("type") == "array":
            count = schema.get("minItems")
            size = f"exactly {count} " if count == schema.get("maxItems") else ""
            more = f" (at least {count})" if count and not size else ""
            return f"a list of {size}items, each {self._expected(schema['items'])}{more}"
        words = " or ".join(_WORDS[t] for t in _listed(schema.get("type", [])))
        limits = " and ".join(f"{op} {schema[key]:g}" for key, op in _LIMITS if key in schema)
        return f"{words} {limits}".strip()


# -- secrets and reporting -----------------------------------------------------------------------

def env_value(value: str | dict, at: tuple) -> str | Problem:
    """``value`` itself, or for ``{$env: NAME}`` the variable's value; a Problem if it is unset."""
    if isinstance(value, str):
        return value
    name = value["$env"]
    if os.environ.get(name):
        return os.environ[name]
    return (at, f"environment variable {name} is not set (or empty); this value is written "
            f"{{$env: {name}}}: set {name} before loading")


def config_error(path: str | os.PathLike[str], root: yaml.Node | None,
                 problems: list[Problem], *, located: bool = True) -> ConfigError:
    """One ConfigError listing every problem, one per line, the first in the file first.

    A line is ``FILE:LINE:COLUMN: key.path: message``, at the key (or its nearest ancestor in
    the file); ``located=False`` writes ``FILE: key.path: message``.  ``.path`` is the file and
    ``.key`` the first line's key path (``None`` for the document itself).

    >>> root = yaml.compose("a: 1\\nb: {c: x}\\n", Loader=yaml.SafeLoader)
    >>> print(config_error("f.yaml", root, [(("b", "c"), "expected a number"), (("a",), "no")]))
    f.yaml:1:1: a: no
    f.yaml:2:5: b.c: expected a number
    """
    found = sorted((*_locate(root, at), dotted(at), text) for at, text in problems)
    lines = dict.fromkeys(f"{path}:{line}:{col}: {key}: {text}" if located
                          else f"{path}: {key}: {text}" for line, col, key, text in found)
    first = found[0][2]
    return ConfigError("\n".join(lines), path=str(path), key=None if first == _TOP else first)


def _locate(root, at: tuple) -> tuple[int, int]:
    """1-based line and column of the key at ``at`` (or of its nearest existing ancestor)."""
    node, mark = root, getattr(root, "start_mark", None)
    for part in at:
        if isinstance(node, yaml.MappingNode):
            keys = [(key, value) for key, value in node.value if key.value == part]
            if not keys:
                break
            mark, node = keys[-1][0].start_mark, keys[-1][1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) \
                and part < len(node.value):
            node = node.value[part]
            mark = node.start_mark
        else:
            break
    return (mark.line + 1, mark.column + 1) if mark else (1, 1)


def dotted(at: tuple) -> str:
    """A key path as written in messages.

    >>> dotted(("tables", "labs", "bounds", 1)), dotted(())
    ('tables.labs.bounds[1]', '(top level)')
    """
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in at)
    return text.lstrip(".") or _TOP


def did_you_mean(word: object, choices) -> str:
    """``"; did you mean 'X'?"`` for the closest choice, or ``""``.

    >>> did_you_mean("tabels", ["site", "tables"]), did_you_mean("zzz", ["site"])
    ("; did you mean 'tables'?", '')
    """
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


def _fits(value: object, schema: dict) -> bool:
    """Whether ``value`` has a JSON type that ``schema`` (type, const or enum) accepts."""
    if "const" in schema or "enum" in schema:
        types = {_kind(v) for v in schema.get("enum", [schema.get("const")])}
    else:
        types = set(_listed(schema.get("type", [])))
    kind = _kind(value)
    return kind in types or (kind == "integer" and "number" in types)


def _show(value: object) -> str:
    """A (non-secret) value as written: 'text' quoted; numbers, true, false, null."""
    return json.dumps(value) if _kind(value) in ("boolean", "integer", "number", "null") \
        else repr(value)
