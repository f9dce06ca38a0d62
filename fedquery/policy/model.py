"""The typed policy model and the built-in named policies.

Everything downstream of the YAML loader (``policy/load.py``) sees only these frozen
dataclasses.  A policy is *fail closed*: when ``tables`` is given, a table or column it does
not mention cannot be queried.  ``tables=None`` means every table and column is queryable as
an attribute (the built-in ``open`` policy, for public or synthetic data).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field

from fedquery.errors import ConfigError
from fedquery.ir import Requirements

ROLES = ("identifier", "hidden", "quasi_identifier", "attribute")
USES = ("group_by", "filter", "aggregate")
AGGREGATES = ("COUNT", "COUNT_DISTINCT", "SUM", "AVG", "MIN", "MAX", "VAR", "STDDEV")
MECHANISMS = ("none", "laplace", "gaussian")
AGGREGATION_MODES = ("plain", "secure")


@dataclass(frozen=True)
class ColumnPolicy:
    role: str = "attribute"
    bounds: tuple[float, float] | None = None  # clamp range for numeric aggregates
    domain: tuple | None = None  # public category list (resolved from a named list if named)
    domain_name: str | None = None  # e.g. "icd10_chapter" when the domain is a named list
    uses: frozenset[str] = frozenset(USES)
    aggregates: frozenset[str] | None = None  # allowed aggregate families; None = all


@dataclass(frozen=True)
class TablePolicy:
    privacy_unit: str | None = None
    max_rows_per_unit: int | None = None
    columns: dict[str, ColumnPolicy] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Disclosure:
    min_cell_count: int = 10
    dominance: tuple[int, float] | None = (2, 85.0)  # (n, k): top n units hold > k % of a sum
    min_sites: int = 1
    max_groups: int | None = None
    zero_cells_disclosive: bool = False
    exact_extremes: bool = False  # MIN/MAX of real values allowed


@dataclass(frozen=True)
class Noise:
    mechanism: str = "none"
    max_epsilon_per_query: float | None = None
    delta: float | None = None
    budget_epsilon: float | None = None  # per analyst, at this site


@dataclass(frozen=True)
class Analyst:
    name: str
    token_sha256: str
    roles: tuple[str, ...] = ("analyst",)


@dataclass(frozen=True)
class Policy:
    """A site's disclosure decisions."""

    name: str
    site: str | None = None
    disclosure: Disclosure = Disclosure()
    noise: Noise = Noise()
    aggregation: str = "plain"
    honest_sites: int = 1  # secure aggregation: noise shares sized for h non-colluding sites
    analysts: dict[str, Analyst] = field(default_factory=dict, hash=False)
    tables: dict[str, TablePolicy] | None = field(default=None, hash=False)
    source: str = ""  # the file it was loaded from, or "builtin:<name>"

    def requirements(self) -> Requirements:
        d = self.disclosure
        return Requirements(min_cell_count=d.min_cell_count, dominance=d.dominance,
                            min_sites=d.min_sites, max_groups=d.max_groups,
                            noise=self.noise.mechanism, aggregation=self.aggregation,
                            epsilon=self.noise.max_epsilon_per_query, delta=self.noise.delta,
                            zero_cells_disclosive=d.zero_cells_disclosive)

    def table(self, name: str) -> TablePolicy | None:
        """The policy of ``name``; for an open policy, every table is an attribute table."""
        if self.tables is None:
            return TablePolicy()
        return self.tables.get(name.lower())

    def column(self, table: str, column: str) -> ColumnPolicy | None:
        entry = self.table(table)
        if entry is None:
            return None
        if self.tables is None:
            return ColumnPolicy()
        return entry.columns.get(column.lower())

    @functools.cached_property
    def content_hash(self) -> str:
        """sha256 of the policy's content (not its source path): recorded in every audit
        line so an auditor can tell which policy decided.  Computed once (the policy is
        frozen): it is on every query's path."""
        content = asdict(self)
        content.pop("source", None)
        blob = json.dumps(content, sort_keys=True, default=sorted).encode()
        return hashlib.sha256(blob).hexdigest()


OPEN = Policy(name="open", disclosure=Disclosure(min_cell_count=1, dominance=None,
                                                  exact_extremes=True),
              source="builtin:open")

# For real patient data when a steward has not written a policy yet: nothing is queryable
# (fail closed) until tables are listed, small cells are suppressed, noise is on.
STRICT_DEFAULT = Policy(
    name="strict-default",
    disclosure=Disclosure(min_cell_count=10, dominance=(2, 85.0), min_sites=2, max_groups=100),
    noise=Noise(mechanism="laplace", max_epsilon_per_query=1.0, delta=None, budget_epsilon=10.0),
    aggregation="plain", tables={}, source="builtin:strict-default")

BUILTIN = {"open": OPEN, "strict-default": STRICT_DEFAULT}


def resolve_policy(policy: str | Policy) -> Policy:
    """A Policy from a built-in name, a policy file path, or a Policy."""
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, str) and policy in BUILTIN:
        return BUILTIN[policy]
    if isinstance(policy, str) and policy.endswith((".yaml", ".yml")):
        from fedquery.policy.load import load_policy
        return load_policy(policy)
    raise ConfigError(f"unknown policy {policy!r}; built-in policies: {', '.join(BUILTIN)}, "
                      "or give the path of a policy YAML file", key="policy")
