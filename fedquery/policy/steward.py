"""Data-steward tools that need no data: lint warnings, plain-language explanations, and
steward-written test cases (SQL → allow / refuse: rule id).

A query is checked against the columns the policy itself lists, so everything here runs on a
laptop with only the policy files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from fedquery.errors import (CatalogError, ConfigError, Error, NotSupportedError,
                             SqlParseError)
from fedquery.ir import RuleHit
from fedquery.plan import plan_query
from fedquery.policy.contributions import bounding_of
from fedquery.policy.decide import strictest
from fedquery.policy.enforce import enforce
from fedquery.policy.load import load_policy
from fedquery.policy.model import Policy
from fedquery.protect.noise import DEFAULT_DELTA, half_width, plan_noise
from fedquery.sql import analyze

NOT_SUPPORTED = "NOT-SUPPORTED"
SYNTAX = "SYNTAX"


def schema_from_policy(policy: Policy) -> dict[str, dict[str, str]]:
    """The columns a policy lists, typed loosely (bounded columns numeric) for qualification."""
    return {table: {col: ("DOUBLE" if spec.bounds else "VARCHAR")
                    for col, spec in entry.columns.items()}
            for table, entry in (policy.tables or {}).items()}


def lint(policy: Policy) -> list[str]:
    """Warnings for risky but valid settings."""
    out = []
    d, noise = policy.disclosure, policy.noise
    if d.min_cell_count < 5:
        out.append(f"W-MIN-CELL: min_cell_count {d.min_cell_count} is below 5; most European "
                   "health statistics use 5 or 10")
    if d.dominance is None:
        out.append("W-DOMINANCE: no dominance rule: a sum held by one or two patients is "
                   "released")
    if noise.max_epsilon_per_query is not None and noise.max_epsilon_per_query > 1:
        out.append(f"W-EPSILON: max_epsilon_per_query {noise.max_epsilon_per_query:g} is above "
                   "1: each query may reveal a lot")
    if noise.mechanism != "none" and noise.budget_epsilon is None:
        out.append("W-NO-BUDGET: noise without a per-analyst budget: repeated queries can "
                   "average the noise away")
    for table, entry in (policy.tables or {}).items():
        for col, spec in entry.columns.items():
            if spec.role == "quasi_identifier" and "group_by" in spec.uses and spec.domain is None:
                out.append(f"W-QI-GROUPABLE: quasi-identifier {table}.{col} may be grouped by "
                           "without a public domain")
    return out


@dataclass(frozen=True)
class Verdict:
    site: str
    allowed: bool
    hits: tuple[RuleHit, ...] = ()
    error: str = ""  # a refusal that is not a policy rule (unsupported SQL, syntax)
    rule_ids: tuple[str, ...] = ()


def judge(sql: str, policy: Policy) -> Verdict:
    """Would ``policy`` let ``sql`` through?  Never runs anything."""
    site = policy.site or policy.name
    try:
        query = analyze(sql, schema_from_policy(policy))
    except SqlParseError as err:
        return Verdict(site, False, error=str(err), rule_ids=(SYNTAX,))
    except CatalogError as err:
        rule = "R-TABLE" if "unknown table" in str(err) else "R-COLUMN"
        what = "table" if rule == "R-TABLE" else "column"
        name = str(err).split("'")[1] if "'" in str(err) else ""
        hit = RuleHit(rule, site, name, f"the {what} {name!r} is not released by the policy",
                      f"ask the site's data steward to release the {what} in its policy")
        return Verdict(site, False, (hit,), rule_ids=(rule,))
    except NotSupportedError as err:
        return Verdict(site, False, error=str(err), rule_ids=(NOT_SUPPORTED,))
    units = {t: e.privacy_unit for t, e in (policy.tables or {}).items() if e.privacy_unit}
    hits = enforce(query, policy, site, units)
    return Verdict(site, not hits, hits, rule_ids=tuple(h.rule for h in hits))


def _noise_lines(sql: str, policy: Policy) -> list[str]:
    """Under noise: the ε the query spends at this site and each aggregate's expected 95 %
    half-width from this site's noise alone (no data, no budget)."""
    noise = policy.noise
    if noise.mechanism == "none":
        return []
    units = {t: e.privacy_unit for t, e in (policy.tables or {}).items() if e.privacy_unit}
    epsilon = noise.max_epsilon_per_query or 1.0
    try:
        plan = plan_query(analyze(sql, schema_from_policy(policy)), units,
                          policy.requirements(), bounding_of(policy, "explain"))
        costs = plan_noise(plan.fragment.partials, plan.fragment.row_cap, noise.mechanism,
                           epsilon, noise.delta or DEFAULT_DELTA, plan.fragment.threshold)
    except Error as err:
        return [f"  - under noise the query is refused: {err}"]
    lines = [f"  - spends epsilon {epsilon:g} per query here (zCDP rho {costs.rho:.4g}; "
             f"each patient contributes at most {plan.fragment.row_cap} row(s))"]
    for partial, cost in zip(plan.fragment.partials, costs.partials):
        width = half_width([(noise.mechanism, cost.scale)]) / cost.fixed_point
        lines.append(f"  - {partial.sql}: ± {width:.3g} (95%, this site's noise)")
    return lines


def explain(sql: str, policies: list[Policy]) -> str:
    """What each site would let this query return, and why — in plain language."""
    lines = []
    verdicts = [(p, judge(sql, p)) for p in policies]
    for policy, verdict in verdicts:
        name = verdict.site
        if verdict.allowed:
            d = policy.disclosure
            lines.append(f"{name}: allowed.")
            noisy = policy.noise.mechanism != "none"
            lines.append(f"  - cells with fewer than {d.min_cell_count} patients"
                         f"{' (by their noisy count)' if noisy else ''} are suppressed and "
                         "flagged")
            if noisy:
                lines.append("  - each patient's contribution is bounded (row cap and value "
                             "bounds) instead of the dominance rule")
            elif d.dominance:
                lines.append(f"  - a sum where the {d.dominance[0]} largest contributors hold "
                             f"more than {d.dominance[1]:g}% is suppressed")
            if d.max_groups:
                lines.append(f"  - at most {d.max_groups} groups")
            lines.append(f"  - noise: {policy.noise.mechanism}; aggregation: "
                         f"{policy.aggregation}")
            lines += _noise_lines(sql, policy)
        elif verdict.error:
            lines.append(f"{name}: refused ({verdict.rule_ids[0]}): {verdict.error}")
        else:
            lines.append(f"{name}: refused by {len(verdict.hits)} rule(s):")
            for hit in verdict.hits:
                hint = f" — hint: {hit.hint}" if hit.hint else ""
                lines.append(f"  - {hit.rule} on {hit.subject or 'the query'}: {hit.message}"
                             f"{hint}")
    if len(policies) > 1:
        req = strictest(p.requirements() for p in policies)
        allowed = sum(v.allowed for _, v in verdicts)
        lines.append(f"federation: {allowed} of {len(policies)} sites allow the query; the "
                     f"strictest rules apply: min cell {req.min_cell_count}, dominance "
                     f"{req.dominance or 'none'}, min sites {req.min_sites}, noise {req.noise},"
                     f" aggregation {req.aggregation}")
    return "\n".join(lines)


@dataclass(frozen=True)
class CaseResult:
    name: str
    passed: bool
    detail: str


def _expected(case: dict, where: str) -> str:
    expect = case.get("expect")
    if expect == "allow":
        return "allow"
    if isinstance(expect, dict) and set(expect) == {"refuse"} and isinstance(
            expect["refuse"], str):
        return expect["refuse"]
    raise ConfigError(f"{where}: expect must be 'allow' or {{refuse: RULE-ID}}, got "
                      f"{expect!r}", key="expect")


def run_cases(path: str | os.PathLike[str]) -> list[CaseResult]:
    """Run a steward's policy test file: ``{version: 1, policy: FILE, cases: [...]}``, or
    ``policies: [FILE, ...]`` to hold every listed policy to the same cases."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read test cases: {err}", path=str(path)) from None
    files = [doc.get("policy")] if isinstance(doc, dict) and "policy" in doc else (
        doc.get("policies") if isinstance(doc, dict) else None)
    if (not isinstance(doc, dict) or doc.get("version") != 1 or not isinstance(
            doc.get("cases"), list) or not isinstance(files, list) or not files
            or not all(isinstance(f, str) for f in files)):
        raise ConfigError(f"{path}: expected {{version: 1, policy: FILE (or policies: [FILE, "
                          "...]), cases: [...]}", path=str(path))
    if not doc["cases"]:
        raise ConfigError(f"{path}: cases is empty: write at least one case", path=str(path))
    results = []
    for file in files:
        policy = load_policy(path.parent / file, resolve_secrets=False)
        results += _run_policy_cases(path, policy, doc["cases"], len(files) > 1)
    return results


def _run_policy_cases(path: Path, policy: Policy, cases: list, prefix: bool) -> list[CaseResult]:
    results = []
    for i, case in enumerate(cases):
        where = f"{path}: cases[{i}]"
        if not isinstance(case, dict) or not isinstance(case.get("sql"), str):
            raise ConfigError(f"{where}: each case needs name, sql and expect", path=str(path))
        name = str(case.get("name", f"case {i + 1}"))
        if prefix:
            name = f"{policy.site or policy.name}: {name}"
        expected = _expected(case, where)
        try:
            verdict = judge(case["sql"], policy)
        except Error as err:
            results.append(CaseResult(name, False, f"error: {err}"))
            continue
        if expected == "allow":
            ok = verdict.allowed
            detail = "allowed" if ok else f"refused by {', '.join(verdict.rule_ids)}"
        else:
            ok = not verdict.allowed and expected in verdict.rule_ids
            detail = ("allowed" if verdict.allowed
                      else f"refused by {', '.join(verdict.rule_ids)}")
        results.append(CaseResult(name, ok, f"expected {expected}, got {detail}"))
    return results
