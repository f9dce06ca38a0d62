"""Policy files: read a steward's YAML, validate it, and build the typed :class:`Policy`.

The only reader of policy YAML.  Three passes, each reporting *every* problem it finds, one per
line, sorted by position, as ``FILE:LINE:COLUMN: KEY.PATH: what was expected``:

1. YAML (:func:`fedquery.configfile.read_yaml`): syntax errors with their line and column, and
   what PyYAML would accept silently (a key written twice, ``yes``/``no``, ``.inf``, ...).
2. The JSON Schema shipped beside this module (``policy.schema.json``, exported by
   ``fedquery policy schema``), explained by :class:`fedquery.configfile.Schema`; an unknown
   key gets "did you mean ...?".
3. What a schema cannot express (here): ``{$env: NAME}`` secrets (resolved, never shown), bounds
   order, roles against bounds/domain/uses, privacy units, epsilon against budget, gaussian
   needs delta, case-insensitive duplicate names, and the site the caller expects.

A table's ``privacy_unit`` is an identifier column: if the steward does not list it under
``columns`` it is added as ``{role: identifier}``; if listed, it must have that role.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from fedquery.configfile import Problem, Schema, config_error, env_value, read_yaml
from fedquery.policy.domains import NAMED_DOMAINS
from fedquery.policy.model import Analyst, ColumnPolicy, Disclosure, Noise, Policy, TablePolicy

_SCHEMA = Schema("fedquery.policy", "policy.schema.json")


def schema_text() -> str:
    """The exact text of the policy JSON Schema (pretty-printed, ending in a newline)."""
    return _SCHEMA.text()


def load_policy(path: str | os.PathLike[str], *, site: str | None = None,
                resolve_secrets: bool = True) -> Policy:
    """Read and validate one policy file; ``site``, if given, must match the file's ``site``.

    With ``resolve_secrets=False`` (``fedquery policy check`` on a steward's laptop),
    ``{$env: NAME}`` token hashes are checked for shape only and the analyst keeps an empty
    hash, so the policy cannot authenticate anyone.
    Raises ConfigError listing every problem, one per line, the first in the file first.
    """
    path = Path(path)
    data, root = read_yaml(path, "policy")
    problems = _SCHEMA.problems(data)
    if not problems:
        problems = (_resolve_secrets(data) if resolve_secrets else _blank_secrets(data))
        problems += _cross_checks(data, site)
    if problems:
        raise config_error(path, root, problems)
    return _build(data, path)


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
        value = env_value(token, at := ("analysts", name, "token_sha256"))
        if isinstance(value, tuple):
            problems.append(value)
        elif not re.fullmatch(_SCHEMA.validator.schema["$defs"]["sha256_hex"]["pattern"], value):
            problems.append((at, f"environment variable {token['$env']} does not hold a sha256 "
                             "hex digest (64 lowercase hex characters; never the token itself)"))
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
                  honest_sites=int(data.get("honest_sites", 1)),
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
