"""Shared fixtures of the attack suite: the demo federation, its sites, and refusal checks.

Every attack is sent twice: through the engine (an analyst) and straight to each site's
``SiteService`` (a malicious coordinator that skips the coordinator's own checks).  A site
trusts nobody (DESIGN.md §2), so it must refuse on its own.

Acceptable refusals:

- engine: a :class:`PolicyViolation` carrying the expected rule id; for a hidden column, a
  column or a table the policy does not release, also a :class:`CatalogError` (the
  coordinator's catalog is filtered by the sites' policies, so it may not know the name);
- site: a :class:`PolicyViolation` carrying the expected rule id, every hit naming that site;
- either: the error class(es) a case names (``NotSupportedError`` for SQL outside the
  supported subset, ``SqlParseError`` for several statements, ``CatalogError`` for table
  functions), with a fragment of the message.

Whatever the refusal, its message must not contain a value of the data (DESIGN.md §2).
"""

from __future__ import annotations

import dataclasses

import re
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pytest

from fedquery.demo.generate import generate_federation_tables
from fedquery.errors import CatalogError, Error, PolicyViolation
from fedquery.ir import QueryRequest
from fedquery.policy.load import load_policy


def _exact(policy):
    """The demo policy without its noise: this suite tests enforcement and disclosure control
    on exact results (differential privacy has its own tests in tests/dp)."""
    return dataclasses.replace(policy, noise=dataclasses.replace(policy.noise, mechanism="none"))
from fedquery.site.adapter import DuckDBAdapter
from fedquery.site.service import SiteService
from fedquery.testing import local_federation

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
SITES = ("hospital_a", "hospital_b", "hospital_c")
SIZES = (400, 300, 350)
SEED = 11
# A coordinator whose catalog is filtered by policy may not know these names at all.
CATALOG_RULES = frozenset({"R-HIDDEN", "R-COLUMN", "R-TABLE"})

# The first nhs_number values of the unreleased column (below): never in a message either.
_EXTRA_SECRETS = ("9990000001", "9990000002")
_ID_RE = re.compile(r"[a-z][a-z0-9_]*:P\d+")
_FOUR_DIGITS_RE = re.compile(r"(?<!\d)\d{4}(?!\d)")


@dataclass(frozen=True)
class DataValues:
    """Values of the data that no refusal message may contain."""

    patient_ids: frozenset[str]
    postcodes: frozenset[str]
    extra: frozenset[str] = field(default_factory=frozenset)

    def leaked(self, message: str) -> list[str]:
        found = [t for t in _ID_RE.findall(message) if t in self.patient_ids]
        found += [t for t in _FOUR_DIGITS_RE.findall(message) if t in self.postcodes]
        found += [v for v in self.extra if v in message]
        return found


class Refusals:
    """Assertions on refusals, shared by the test modules through the ``expect`` fixture
    (with ``--import-mode=importlib`` a conftest cannot be imported).

    An attack (see ``test_refused.Attack``) has ``sql``; ``rule``, the policy rule id the site
    must fire, or ``error`` (a class or a tuple) and ``match`` (a regex of the message) for
    refusals before the policy runs; and ``also``, further accepted error classes.
    """

    def __init__(self, values: DataValues) -> None:
        self.values = values

    def no_data_values(self, err: BaseException) -> None:
        text = str(err)
        text += "".join(f"\n{h.subject} {h.message} {h.hint}" for h in getattr(err, "rules", ()))
        leaked = self.values.leaked(text)
        assert not leaked, f"refusal message contains data values {leaked}: {text}"

    def _other(self, attack, err: Error) -> bool:
        """``err`` is one of the case's explicitly accepted error classes (checked here)."""
        accepted = attack.also + ((attack.error if isinstance(attack.error, tuple)
                                   else (attack.error,)) if attack.error else ())
        if not isinstance(err, accepted):
            return False
        if attack.error is not None and isinstance(err, attack.error) and attack.match:
            assert re.search(attack.match, str(err)), f"{attack.match!r} not in: {err}"
        return True

    def assert_engine_refuses(self, conn, attack) -> Error:
        """The engine refuses ``attack`` (nothing is released) as the case expects."""
        with pytest.raises(Error) as caught:
            rows = conn.cursor().execute(attack.sql).fetchall()
            pytest.fail(f"the engine released {rows[:5]}")
        err = caught.value
        if attack.rule is not None and isinstance(err, PolicyViolation):
            fired = {h.rule for h in err.rules}
            assert attack.rule in fired, f"expected {attack.rule}, fired {sorted(fired)}: {err}"
        elif attack.rule in CATALOG_RULES and isinstance(err, CatalogError):
            pass
        else:
            assert self._other(attack, err), f"unexpected refusal {type(err).__name__}: {err}"
        self.no_data_values(err)
        return err

    def assert_site_refuses(self, service: SiteService, attack) -> Error:
        """``service`` refuses ``attack`` sent straight to it, as a malicious coordinator."""
        with pytest.raises(Error) as caught:
            reply = service.query(QueryRequest(attack.sql, "mallory"))
            pytest.fail(f"site {service.name} released {reply.partials.to_pylist()[:5]}")
        err = caught.value
        if attack.rule is not None and isinstance(err, PolicyViolation):
            fired = {h.rule for h in err.rules}
            assert attack.rule in fired, f"expected {attack.rule}, fired {sorted(fired)}: {err}"
            assert {h.site for h in err.rules} == {service.name}, err
            assert service.name in str(err) and attack.rule in str(err)
        else:
            assert self._other(attack, err), f"unexpected refusal {type(err).__name__}: {err}"
        self.no_data_values(err)
        return err


# -- the demo federation -------------------------------------------------------------------------

@pytest.fixture(scope="session")
def demo_tables() -> dict[str, dict[str, pa.Table]]:
    return generate_federation_tables(n_sites=3, patients_per_site=list(SIZES), seed=SEED)


@pytest.fixture(scope="session")
def demo_policies():
    return {site: _exact(load_policy(POLICIES / f"{site}.yaml", site=site)) for site in SITES}


@pytest.fixture(scope="session")
def privacy_units(demo_tables) -> dict[str, str]:
    return {table: "patient_id" for table in demo_tables[SITES[0]]}


def _services(tables, policies, units) -> dict[str, SiteService]:
    """Site services built exactly like ``local_federation`` builds them."""
    return {name: SiteService(name, DuckDBAdapter.from_arrow(dict(tables[name])),
                              policy=policies[name], privacy_units=dict(units))
            for name in tables}


@pytest.fixture(scope="session")
def federation(demo_tables, demo_policies, privacy_units) -> Iterator:
    conn = local_federation(demo_tables, policy=demo_policies, privacy_units=privacy_units)
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def sites(demo_tables, demo_policies, privacy_units) -> Iterator[dict[str, SiteService]]:
    services = _services(demo_tables, demo_policies, privacy_units)
    yield services
    for service in services.values():
        service.close()


@pytest.fixture(scope="session")
def data_values(demo_tables) -> DataValues:
    ids, postcodes = set(), set()
    for tables in demo_tables.values():
        ids.update(tables["patients"]["patient_id"].to_pylist())
        postcodes.update(p for p in tables["patients"]["postcode"].to_pylist() if p)
    return DataValues(frozenset(ids), frozenset(postcodes), frozenset(_EXTRA_SECRETS))


@pytest.fixture(scope="session")
def expect(data_values) -> Refusals:
    return Refusals(data_values)


# -- a federation whose sites hold data their policies do not release -----------------------------

def _with_unreleased(tables: Mapping[str, pa.Table], offset: int) -> dict[str, pa.Table]:
    """The site's tables plus an ``admissions`` table and a ``patients.nhs_number`` column,
    neither of which the site's policy mentions (fail closed: both must be refused)."""
    out = dict(tables)
    patients = tables["patients"]
    n = patients.num_rows
    numbers = [f"{9990000001 + offset + i}" for i in range(n)]
    out["patients"] = patients.append_column("nhs_number", pa.array(numbers))
    out["admissions"] = pa.table({
        "patient_id": patients["patient_id"],
        "ward": pa.array([("cardiology", "oncology", "icu")[i % 3] for i in range(n)]),
        "length_of_stay": pa.array([(i * 7) % 30 for i in range(n)], pa.int32()),
    })
    return out


@pytest.fixture(scope="session")
def unreleased_tables(demo_tables) -> dict[str, dict[str, pa.Table]]:
    offsets = {site: i * 10_000 for i, site in enumerate(SITES)}
    return {site: _with_unreleased(demo_tables[site], offsets[site]) for site in SITES}


@pytest.fixture(scope="session")
def unreleased_units(unreleased_tables) -> dict[str, str]:
    return {table: "patient_id" for table in unreleased_tables[SITES[0]]}


@pytest.fixture(scope="session")
def unreleased_federation(unreleased_tables, demo_policies, unreleased_units) -> Iterator:
    conn = local_federation(unreleased_tables, policy=demo_policies,
                            privacy_units=unreleased_units)
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def unreleased_sites(unreleased_tables, demo_policies, unreleased_units):
    services = _services(unreleased_tables, demo_policies, unreleased_units)
    yield services
    for service in services.values():
        service.close()


# -- a small federation with max_groups 3 ---------------------------------------------------------

SMALL_POLICY = """\
version: 1
site: {site}
disclosure:
  min_cell_count: 5
  dominance: {{n: 2, k: 85}}
  max_groups: 3
tables:
  cohort:
    privacy_unit: patient_id
    max_rows_per_unit: 1
    columns:
      patient_id: {{role: identifier}}
      arm: {{domain: [A, B, C, D]}}
      sex: {{domain: sex}}
      dose: {{bounds: [0, 10]}}
"""


def _cohort(site: str, n: int = 80) -> pa.Table:
    return pa.table({
        "patient_id": [f"{site}:C{i:05d}" for i in range(n)],
        "arm": ["ABCD"[i % 4] for i in range(n)],
        "sex": ["FM"[i % 2] for i in range(n)],
        "dose": [float(i % 8) for i in range(n)],
    })


@pytest.fixture(scope="session")
def small_policies(tmp_path_factory):
    directory = tmp_path_factory.mktemp("small_policies")
    policies = {}
    for site in ("trial_a", "trial_b"):
        path = directory / f"{site}.yaml"
        path.write_text(textwrap.dedent(SMALL_POLICY.format(site=site)), encoding="utf-8")
        policies[site] = _exact(load_policy(path, site=site))
    return policies


@pytest.fixture(scope="session")
def small_tables() -> dict[str, dict[str, pa.Table]]:
    return {site: {"cohort": _cohort(site)} for site in ("trial_a", "trial_b")}


@pytest.fixture(scope="session")
def small_federation(small_tables, small_policies) -> Iterator:
    conn = local_federation(small_tables, policy=small_policies,
                            privacy_units={"cohort": "patient_id"})
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def small_sites(small_tables, small_policies):
    services = _services(small_tables, small_policies, {"cohort": "patient_id"})
    yield services
    for service in services.values():
        service.close()
