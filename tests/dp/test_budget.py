"""Budgets through the engine: exhaustion releases nothing, session settings change what is
charged, budgets persist across a site restart, failing queries spend nothing.

Every federation keeps its sites' state (ledger, key, cache) under ``tmp_path``.  The ledger
counts zCDP ρ; a laplace query asking ε over m partials is charged m · (ε/m)² / 2.
"""

from __future__ import annotations

import math
import re

import pytest

from fedquery.errors import (BudgetExhausted, InterfaceError, NotSupportedError,
                             OperationalError, PolicyViolation, ProgrammingError)
from fedquery.protect.noise import budget_rho, rho_for

BUDGET_EPSILON = 5.0  # at δ = 1e-7: ρ ≈ 0.399, room for 3 COUNT queries at ε = 0.5
DELTA = 1e-7
QUERY_RHO = 0.5 ** 2 / 2  # COUNT(*) at ε = 0.5: one partial


@pytest.fixture
def table(make_table):
    return make_table(pid=[1, 1, 2, 3, 4, 5], g=["a", "a", "b", "a", "b", "b"],
                      x=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])


@pytest.fixture
def budgeted(federation, make_policy, table, tmp_path):
    """Two sites with the same budget (ε 5 at δ 1e-7), laplace, at most ε 1 per query."""
    def make(state_dir=None, **options):
        policy = make_policy("laplace", budget=BUDGET_EPSILON, delta=DELTA, max_epsilon=1.0)
        return federation({"s1": table, "s2": table}, policy,
                          state_dir=state_dir or tmp_path / "state", **options)
    return make


def fits() -> int:
    return math.floor(budget_rho(BUDGET_EPSILON, DELTA) / QUERY_RHO + 1e-9)


def distinct_count(i: int) -> str:
    """COUNT(*) whose canonical form differs per i (an always-true predicate): no cache hit."""
    return f"SELECT COUNT(*) FROM t WHERE x < {1000 + i}"


def exhaust(cur, start: int = 0) -> int:
    """Run distinct queries until the budget refuses one; return how many were answered."""
    for i in range(start, start + 100):
        try:
            cur.execute(distinct_count(i))
        except OperationalError as err:
            assert "exhausted" in str(err)
            return i - start
    raise AssertionError("the budget never ran out")


# --- exhaustion -------------------------------------------------------------------------------

def test_exhaustion_says_spent_remaining_requested_and_releases_nothing(budgeted, ledger_state):
    conn = budgeted()
    cur = conn.cursor()
    cur.execute("SET epsilon = 0.5")
    assert fits() == 3
    for i in range(fits()):
        cur.execute(distinct_count(i))
        assert dict(cur.fq_report.epsilon_spent) == {"s1": 0.5, "s2": 0.5}
    before = ledger_state(conn)
    assert before == {s: (pytest.approx(fits() * QUERY_RHO, rel=1e-9), 0.0)
                      for s in ("s1", "s2")}

    fresh = conn.cursor()
    with pytest.raises(OperationalError) as info:
        fresh.execute(distinct_count(99))
    message = str(info.value)
    assert "exhausted" in message
    numbers = {k: float(v) for k, v in re.findall(
        r"(spent|remaining|requested) rho=([0-9.e+-]+)", message)}
    assert set(numbers) == {"spent", "remaining", "requested"}, message
    total = budget_rho(BUDGET_EPSILON, DELTA)
    assert numbers["spent"] == pytest.approx(fits() * QUERY_RHO, rel=1e-5)
    assert numbers["requested"] == pytest.approx(QUERY_RHO, rel=1e-5)
    assert numbers["remaining"] == pytest.approx(total - fits() * QUERY_RHO, rel=1e-5)
    assert numbers["remaining"] < numbers["requested"]

    # nothing released: no result on the cursor, and no site's ledger moved
    assert fresh.fq_report is None and fresh.description is None
    with pytest.raises(InterfaceError):
        fresh.fetchall()
    assert ledger_state(conn) == before
    # and it stays refused (no reservation leaked, nothing half-spent)
    with pytest.raises(OperationalError, match="exhausted"):
        fresh.execute(distinct_count(100))
    assert ledger_state(conn) == before


def test_exhaustion_reaches_the_analyst_as_budget_exhausted(budgeted):
    cur = budgeted().cursor()
    cur.execute("SET epsilon = 0.5")
    for i in range(fits()):
        cur.execute(distinct_count(i))
    with pytest.raises(BudgetExhausted):
        cur.execute(distinct_count(99))


def test_a_refused_query_leaves_no_stale_result_on_the_same_cursor(budgeted):
    cur = budgeted().cursor()
    cur.execute("SET epsilon = 0.5")
    for i in range(fits()):
        cur.execute(distinct_count(i))
    with pytest.raises(OperationalError):
        cur.execute(distinct_count(99))
    assert cur.fq_report is None
    with pytest.raises(InterfaceError):
        cur.fetchall()


def test_an_answered_query_stays_free_after_exhaustion(budgeted, ledger_state):
    """The noise cache answers a repeated query at no cost, even with the budget spent."""
    conn = budgeted()
    cur = conn.cursor()
    cur.execute("SET epsilon = 0.5")
    answered = exhaust(cur)
    assert answered == fits()
    before = ledger_state(conn)
    cur.execute(distinct_count(0))
    assert cur.fq_report.cached_sites == ("s1", "s2")
    assert dict(cur.fq_report.epsilon_spent) == {"s1": 0.0, "s2": 0.0}
    assert ledger_state(conn) == before


def test_budgets_are_per_analyst(budgeted, ledger_state, tmp_path):
    conn = budgeted()
    cur = conn.cursor()
    cur.execute("SET epsilon = 0.5")
    exhaust(cur)
    bob = budgeted(state_dir=tmp_path / "state", user="bob").cursor()
    bob.execute("SET epsilon = 0.5")
    bob.execute(distinct_count(500))
    assert ledger_state(conn, "bob")["s1"] == (pytest.approx(QUERY_RHO), 0.0)


# --- session settings ---------------------------------------------------------------------------

def test_epsilon_above_the_policy_limit_is_refused_with_r_epsilon(federation, make_policy,
                                                                  table, ledger_state):
    conn = federation({"s1": table, "s2": table}, make_policy("laplace", budget=1e3))
    cur = conn.cursor()
    cur.execute("SET epsilon = 1.5")  # a session setting: checked by each site at query time
    with pytest.raises(PolicyViolation) as info:
        cur.execute("SELECT COUNT(*) FROM t")
    assert {(h.rule, h.site) for h in info.value.rules} == {("R-EPSILON", "s1"),
                                                            ("R-EPSILON", "s2")}
    assert "R-EPSILON" in str(info.value) and "at most 1" in str(info.value)
    assert ledger_state(conn) == {"s1": (0.0, 0.0), "s2": (0.0, 0.0)}
    cur.execute("SET epsilon = 1.0")  # exactly the limit is allowed
    cur.execute("SELECT COUNT(*) FROM t")
    assert dict(cur.fq_report.epsilon_spent) == {"s1": 1.0, "s2": 1.0}


@pytest.mark.parametrize("statement,error", [
    ("SET epsilon = 0", ProgrammingError), ("SET epsilon = -1", ProgrammingError),
    ("SET epsilon = 'abc'", ProgrammingError), ("SET delta = 1", ProgrammingError),
    ("SET delta = 0", ProgrammingError), ("SET bogus = 1", ProgrammingError),
    ("RESET bogus", ProgrammingError)])
def test_invalid_settings_are_refused_at_set(budgeted, statement, error):
    conn = budgeted()
    with pytest.raises(error):
        conn.cursor().execute(statement)
    assert conn.settings.values == ()


def test_set_and_reset_epsilon_change_what_is_charged(federation, make_policy, table,
                                                      ledger_state):
    conn = federation({"s1": table, "s2": table}, make_policy("laplace", budget=1e3))
    cur = conn.cursor()
    sql = "SELECT COUNT(*), SUM(x) FROM t WHERE x < {}"  # two partials: ε/2 each

    def charged(i: int, expected_epsilon: float) -> None:
        before = ledger_state(conn)["s1"][0]
        cur.execute(sql.format(1000 + i))
        assert dict(cur.fq_report.epsilon_spent) == {"s1": expected_epsilon,
                                                     "s2": expected_epsilon}
        rho = ledger_state(conn)["s1"][0] - before
        assert rho == pytest.approx(2 * (expected_epsilon / 2) ** 2 / 2, rel=1e-6)

    charged(0, 1.0)  # the policy's max_epsilon_per_query is the default
    cur.execute("SET epsilon = 0.5")
    charged(1, 0.5)
    cur.execute("SET epsilon TO 0.25;")
    charged(2, 0.25)
    cur.execute("RESET epsilon")
    charged(3, 1.0)
    cur.execute("SET epsilon = 0.2")
    cur.execute("SET delta = 1e-9")
    charged(4, 0.2)
    cur.execute("RESET ALL")
    assert conn.settings.values == ()
    charged(5, 1.0)


def test_set_delta_changes_what_a_gaussian_query_is_charged(federation, make_policy, table,
                                                            ledger_state):
    conn = federation({"s1": table}, make_policy("gaussian", delta=1e-3, budget=1e3))
    cur = conn.cursor()

    def charged(i: int, epsilon: float, delta: float) -> float:
        before = ledger_state(conn)["s1"][0]
        cur.execute(f"SELECT COUNT(*) FROM t WHERE x < {1000 + i}")
        rho = ledger_state(conn)["s1"][0] - before
        # all of the query's ρ(ε, δ) is used, never more
        assert rho_for(epsilon, delta) * (1 - 1e-6) <= rho <= rho_for(epsilon, delta) * (
            1 + 1e-12)
        assert cur.fq_report.epsilon_spent[0][1] == pytest.approx(epsilon, rel=1e-5)
        return rho

    default = charged(0, 1.0, 1e-3)
    cur.execute("SET delta = 1e-7")  # a smaller delta than the policy's is a stricter query
    stricter = charged(1, 1.0, 1e-7)
    assert stricter < default
    cur.execute("SET epsilon = 0.5")
    charged(2, 0.5, 1e-7)
    cur.execute("RESET delta")
    charged(3, 0.5, 1e-3)
    # a larger delta than the policy's would buy less noise for the same epsilon: refused
    cur.execute("SET delta = 0.5")
    with pytest.raises(PolicyViolation, match="R-DELTA"):
        cur.execute("SELECT COUNT(*) FROM t WHERE x < 2000")
    cur.execute("RESET ALL")
    assert charged(4, 1.0, 1e-3) == pytest.approx(default, rel=1e-12)


def test_gaussian_without_a_policy_delta_uses_the_default(federation, make_policy, table,
                                                         ledger_state):
    """A policy built in code without delta (YAML requires one for gaussian) gets the default
    δ = 1e-7, and a query may not ask for more."""
    conn = federation({"s1": table}, make_policy("gaussian", delta=None, budget=10.0))
    cur = conn.cursor()
    cur.execute("SELECT COUNT(*) FROM t")
    assert ledger_state(conn)["s1"][0] == pytest.approx(rho_for(1.0, 1e-7), rel=1e-6)
    cur.execute("SET delta = 1e-3")
    with pytest.raises(PolicyViolation, match="R-DELTA"):
        cur.execute("SELECT COUNT(*) FROM t WHERE x < 7")


# --- persistence --------------------------------------------------------------------------------

def test_budgets_persist_across_a_site_restart(budgeted, ledger_state, tmp_path):
    state = tmp_path / "persistent"
    first = budgeted(state_dir=state)
    cur = first.cursor()
    cur.execute("SET epsilon = 0.5")
    cur.execute(distinct_count(0))
    spent = ledger_state(first)
    assert spent["s1"][0] == pytest.approx(QUERY_RHO)
    first.close()

    second = budgeted(state_dir=state)  # new processes' worth of state: ledger from disk
    assert ledger_state(second) == spent
    cur = second.cursor()
    cur.execute("SET epsilon = 0.5")
    assert exhaust(cur, start=1) == fits() - 1  # what was spent before still counts
    second.close()

    third = budgeted(state_dir=state)
    cur = third.cursor()
    cur.execute("SET epsilon = 0.5")
    with pytest.raises(OperationalError, match="exhausted"):
        cur.execute(distinct_count(50))
    assert ledger_state(third)["s1"][0] == pytest.approx(fits() * QUERY_RHO)


# --- failures spend nothing ---------------------------------------------------------------------

def test_a_query_failing_on_the_data_is_charged_and_says_nothing_about_it(budgeted,
                                                                         ledger_state):
    """Whether a fragment fails can depend on the data ('a' is no integer): a failure after
    the fragment ran is charged like an answer, or failing queries would be free yes/no
    oracles; and the database's message (which quotes values) stays in the site's log."""
    conn = budgeted()
    cur = conn.cursor()
    cur.execute("SET epsilon = 0.5")
    with pytest.raises(OperationalError, match="could not evaluate the query") as err:
        cur.execute("SELECT COUNT(*) FROM t WHERE CAST(g AS INTEGER) > 0")
    assert "'a'" not in str(err.value) and "Conversion Error:" not in str(err.value)
    state = ledger_state(conn)
    assert state["s1"] == (pytest.approx(QUERY_RHO), 0.0)
    assert state["s2"] == (pytest.approx(QUERY_RHO), 0.0)


@pytest.mark.parametrize("sql", [
    "SELECT SUM(y) FROM t",  # y has no bounds: the bound cannot be computed
    "SELECT SUM(x / y) FROM t",
    "SELECT MAX(x) FROM t",
])
def test_a_refused_query_spends_nothing(budgeted, ledger_state, sql):
    conn = budgeted()
    with pytest.raises(NotSupportedError):
        conn.cursor().execute(sql)
    assert ledger_state(conn) == {"s1": (0.0, 0.0), "s2": (0.0, 0.0)}


def test_a_very_large_budget_works(federation, make_policy, table):
    conn = federation({"s1": table}, make_policy("laplace", budget=1e6))
    cur = conn.cursor()
    cur.execute("SELECT COUNT(*) FROM t")
    assert cur.fetchall()
