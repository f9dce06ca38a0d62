"""The typed policy model and the built-in named policies.

The full steward-facing YAML language lives beside this module; everything downstream sees
only :class:`Policy`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from fedquery.errors import ConfigError
from fedquery.ir import Requirements


@dataclass(frozen=True)
class Policy:
    """A site's disclosure decisions.  ``open`` = public or synthetic data."""

    name: str
    min_cell_count: int = 10
    dominance: tuple[int, float] | None = (2, 85.0)
    min_sites: int = 1
    max_groups: int | None = None
    noise: str = "none"
    aggregation: str = "plain"
    all_columns_queryable: bool = False

    def requirements(self) -> Requirements:
        return Requirements(min_cell_count=self.min_cell_count, dominance=self.dominance,
                            min_sites=self.min_sites, max_groups=self.max_groups,
                            noise=self.noise, aggregation=self.aggregation)

    @property
    def content_hash(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()


OPEN = Policy(name="open", min_cell_count=1, dominance=None, all_columns_queryable=True)

BUILTIN = {"open": OPEN}


def resolve_policy(policy: str | Policy) -> Policy:
    """A Policy from a built-in name or a Policy."""
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, str) and policy in BUILTIN:
        return BUILTIN[policy]
    raise ConfigError(f"unknown policy {policy!r}; built-in policies: {', '.join(BUILTIN)}",
                      key="policy")
