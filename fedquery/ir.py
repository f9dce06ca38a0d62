"""Frozen dataclasses passed between the stages of a query.

No behaviour and no IO lives here: a stage receives one of these and returns a new one, so no
stage can quietly change what an earlier one decided.  The planner may add requirements to a
Decision, never drop one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

# ---------------------------------------------------------------------------------------------
# Catalog


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str  # DuckDB type name, e.g. "INTEGER", "DECIMAL(15,2)", "VARCHAR"
    # What the site's policy publishes about the column (public facts only): its role, its
    # public domain, its clamp bounds, the uses and aggregate families it allows.
    role: str | None = None
    domain: tuple | None = None
    bounds: tuple[float, float] | None = None
    uses: tuple[str, ...] | None = None
    aggregates: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TableInfo:
    name: str
    columns: tuple[ColumnInfo, ...]
    privacy_unit: str | None = None

    def column(self, name: str) -> ColumnInfo | None:
        for col in self.columns:
            if col.name == name:
                return col
        return None


@dataclass(frozen=True)
class SiteCatalog:
    """What one site says it holds (already filtered by its own policy), and the public
    summary of its policy's requirements."""

    site: str
    tables: tuple[TableInfo, ...]
    requirements: Requirements | None = None


# ---------------------------------------------------------------------------------------------
# Session settings and policy decision


@dataclass(frozen=True)
class Settings:
    """Session settings sent with every query (``SET name = value``)."""

    values: tuple[tuple[str, Any], ...] = ()

    def get(self, name: str, default: Any = None) -> Any:
        for key, value in self.values:
            if key == name:
                return value
        return default


@dataclass(frozen=True)
class RuleHit:
    """One policy rule that fired: its id, where, on what, and how to fix the query."""

    rule: str
    site: str
    subject: str
    message: str
    hint: str = ""


@dataclass(frozen=True)
class Requirements:
    """What the protection stage must do, the strictest over all participating sites."""

    min_cell_count: int = 1
    dominance: tuple[int, float] | None = None  # (n, k): top n contributors hold > k% of a sum
    min_sites: int = 1
    max_groups: int | None = None
    noise: str = "none"  # none | laplace | gaussian
    aggregation: str = "plain"  # plain | secure
    epsilon: float | None = None
    delta: float | None = None
    zero_cells_disclosive: bool = False

    @property
    def needs_cell_checks(self) -> bool:
        return self.min_cell_count > 1 or self.dominance is not None or (
            self.zero_cells_disclosive)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    requirements: Requirements
    fired: tuple[RuleHit, ...] = ()
    policy_hash: str = ""


# ---------------------------------------------------------------------------------------------
# Plan


@dataclass(frozen=True)
class Partial:
    """One additive (or combinable) partial column that each site computes per group.

    ``kind`` is one of ``count``, ``sum``, ``sumsq``, ``min``, ``max``, ``count_distinct_unit``;
    ``combine`` is the aggregate that merges it across sites (``SUM``, ``MIN`` or ``MAX``).
    """

    name: str
    kind: str
    sql: str  # the site-side aggregate expression, DuckDB dialect
    combine: str
    argument: str = ""  # the aggregated expression (for bounding); "" for COUNT(*)
    condition: str = ""  # the aggregate's FILTER (WHERE ...) condition, "" if none
    # Set by contribution bounding (differential privacy):
    per_row: float = 0.0  # the most one row can add, in the partial's (encoded) units
    sensitivity: float = 0.0  # the most one unit can move the partial vector (L1 and L2)
    fixed_point: int = 1  # sums travel as integers: value × fixed_point
    arg_bounds: tuple[float, float] | None = None  # the clamp applied to the argument


@dataclass(frozen=True)
class Bounding:
    """The site policy's contribution bounds: the inputs of the differential-privacy rewrite."""

    row_caps: tuple[tuple[str, int], ...] = ()  # table → max rows per unit (max_rows_per_unit)
    column_bounds: tuple[tuple[tuple[str, str], tuple[float, float]], ...] = ()
    domains: tuple[tuple[tuple[str, str], tuple], ...] = ()
    hash_key: str = ""  # the site's secret for ordering rows when capping (not random())
    fixed_point: int = 100  # sums of real values are released to 1/fixed_point
    # The most rows any unit has in each table, counted on the very data the fragment will
    # read (site statistics, ``site.unit_stats``; never leave the site).  Where they show
    # that no unit can exceed the cap, the fragment keeps every row without the cap's
    # GROUP BY (the same rows the cap would keep).
    observed_rows: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class CellChecks:
    """Which columns of the site's result carry its disclosure checks (never sent on)."""

    min_cell_count: int
    dominance: tuple[int, float] | None
    zero_cells_disclosive: bool
    contributors: tuple[str, ...]  # columns "__n_i": units contributing to an aggregate
    dominant: tuple[tuple[str, str], ...] = ()  # ("__top_j", "__abs_j") per checked sum


@dataclass(frozen=True)
class SiteFragment:
    """The SQL a site runs on its own data and the shape of what it returns."""

    sql: str
    group_columns: tuple[str, ...]
    partials: tuple[Partial, ...]
    checks: CellChecks | None = None  # set when the fragment also computes cell checks
    row_cap: int = 0  # rows one unit may contribute, when contributions are bounded (DP)
    threshold: bool = False  # data-driven group keys: the site releases them by threshold


@dataclass(frozen=True)
class FederatedPlan:
    fragment: SiteFragment
    combine_sql: str  # over a relation named ``partials``; yields group columns + ``c_*`` columns
    post_sql: str  # over a relation named ``combined``; yields output columns ``o_*``
    post_interval_sql: str  # the same, also computing each output's 95 % interval ends
    output_names: tuple[str, ...]
    fingerprint: str  # sha256 of the fragment and combine, so sites and coordinator can agree
    tables: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # caveats the release report must carry
    aggregate_outputs: tuple[int, ...] = ()  # outputs computed from aggregates, not keys
    secure_groups: tuple[tuple, ...] | None = None  # secure aggregation: keys in slot order


# ---------------------------------------------------------------------------------------------
# Site replies and the release


@dataclass(frozen=True)
class SiteReply:
    site: str
    fingerprint: str
    partials: pa.Table
    suppressed: int = 0  # number of this site's cells suppressed by its own disclosure check
    meta: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Report:
    mode: str
    sites_answered: tuple[str, ...]
    sites_failed: tuple[tuple[str, str], ...] = ()
    suppressed_cells: int = 0
    suppressed_rows: tuple[int, ...] = ()  # indices of released rows whose values are withheld
    withheld_columns: tuple[int, ...] = ()  # columns withheld in those rows (the aggregates)
    epsilon_spent: tuple[tuple[str, float], ...] = ()  # per site, 0 when answered from cache
    notes: tuple[str, ...] = ()
    intervals: tuple = ()  # per row, per column: (low, high) of the 95 % interval, or None
    cached_sites: tuple[str, ...] = ()  # sites that answered from their noise cache
    noise: tuple[tuple[str, float], ...] = ()  # per aggregate: combined noise's 95 % ±
    budget_remaining: tuple[tuple[str, float | None], ...] = ()  # per site ε left (None: ∞)
    extra: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Release:
    table: pa.Table
    report: Report


@dataclass(frozen=True)
class SecureRound:
    """The coordinator's announcement of one secure-aggregation round: who takes part, the
    federation's strictest requirements (each site plans with the stricter of these and its
    own, so that every site lays out the same slots) and the key holder's key epoch."""

    participants: tuple[str, ...]
    requirements: Requirements
    epoch: int


@dataclass(frozen=True)
class SlotColumn:
    """One value column of a secure contribution: slots hold ``round(value × scale)``."""

    name: str  # "p_i" (a partial), "__n_i" / "__top_j" / "__abs_j" (checks), "__present"
    scale: int = 1
    decimals: int | None = None  # an exact DECIMAL result with this many decimals


@dataclass(frozen=True)
class SecureLayout:
    """What the slots of a secure contribution mean.  Every site derives it from the query
    and its policy and signs it; the key holder decrypts only when all layouts agree.
    Aggregate-major: value column ``c`` of group ``g`` is slot ``c × len(groups) + g``."""

    group_columns: tuple[str, ...]
    groups: tuple[tuple, ...]  # every key tuple of the public domains (NULL included)
    columns: tuple[SlotColumn, ...]
    checks: CellChecks | None  # the combined disclosure checks' columns (exact mode)
    profile: str  # BFV parameter profile, "standard" or "wide"
    bound: int  # the largest |slot| the federation's sum can hold (beyond it: wrapped)
    noise_sigma: float = 0.0  # standard deviation of the summed noise shares (0: exact)

    @property
    def length(self) -> int:
        return len(self.columns) * len(self.groups)


@dataclass(frozen=True)
class SignedContribution:
    """One site's encrypted, masked slots for one round, with what it signed: the round
    (query id, participants, key epoch's context fingerprint), the layout's digest and the
    site's own disclosure requirements."""

    site: str
    ciphertexts: tuple[bytes, ...]
    signature: bytes
    requirements: Requirements
    context_fingerprint: str


@dataclass(frozen=True)
class SecureReleaseRequest:
    """What the coordinator asks the key holder to decrypt: its homomorphic sum of the
    contributions, and the signed contributions themselves (the key holder re-sums them)."""

    query_id: str
    participants: tuple[str, ...]
    epoch: int
    layout: SecureLayout
    contributions: tuple[SignedContribution, ...]
    summed: tuple[bytes, ...]


@dataclass(frozen=True)
class QueryRequest:
    """What the coordinator sends a site: the analyst's original SQL, never a fragment."""

    sql: str
    analyst: str
    settings: Settings = Settings()
    query_id: str = ""
    fingerprint: str = ""  # the coordinator's plan fingerprint; the site checks it agrees
    secure: SecureRound | None = None  # set for a secure-aggregation round
