"""The shell's behaviour, driven through ShellSession.handle (what the prompt loop calls) over
the demo hospitals in-process, under their real differential-privacy policies."""

from __future__ import annotations

import io
import json
import re

import pytest

from fedquery.cli.shell.commands import COMMANDS
from fedquery.cli.shell.session import ShellSession, statement_complete
from fedquery.dbapi import Connection
from fedquery.demo.showcase import demo_engine, ensure_demo_data

COUNT_BY_SEX = "SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex ORDER BY sex;"


@pytest.fixture(scope="module")
def demo_paths(tmp_path_factory):
    return ensure_demo_data(tmp_path_factory.mktemp("demo"), 3, 400, seed=3)


@pytest.fixture
def shell(demo_paths, tmp_path):
    connection = Connection(demo_engine(demo_paths, tmp_path / "state"), user="analyst")
    out, err = io.StringIO(), io.StringIO()
    session = ShellSession(connection, out=out, err=err)
    yield session, out, err
    session.close()
    connection.close()


def run(shell, *lines):
    session, out, err = shell
    out.seek(0), out.truncate(), err.seek(0), err.truncate()
    for line in lines:
        assert session.handle(line) is True
    return out.getvalue(), err.getvalue()


def test_a_query_shows_its_table_and_privacy_report_under_it(shell):
    out, err = run(shell, COUNT_BY_SEX)
    assert err == ""
    table, report = out.split("(3 rows)")
    assert "┃ sex" in table and " ± " in table  # noisy counts with their 95 % interval
    assert "sites answered: hospital_a, hospital_b, hospital_c" in report
    assert "mode plain/laplace, epsilon spent: hospital_a 0.5, hospital_b 0.5, " \
           "hospital_c 0.5" in report
    assert "epsilon left: hospital_a " in report
    assert "± = 95% interval" in report


def test_a_suppressed_cell_is_marked_in_the_table_and_the_report(shell):
    out, _ = run(shell, COUNT_BY_SEX)
    [null_row] = [line for line in out.splitlines() if line.startswith("│ NULL")]
    assert "suppressed" in null_row  # the withheld count, not the NULL group key
    assert "1 cell(s) suppressed (rows 3)" in out


def test_a_multi_statement_input_runs_each(shell):
    out, _ = run(shell, "SELECT COUNT(*) AS a FROM patients; SELECT COUNT(*) AS b FROM labs;")
    assert out.count("sites answered") == 2
    assert re.search(r"┃ +a ┃", out) and re.search(r"┃ +b ┃", out)


def test_errors_are_one_paragraph_and_the_shell_keeps_running(shell):
    out, err = run(shell, "SELEC 1;")
    assert err.startswith("error: syntax error")
    assert "^" in err  # a caret under the position
    out, err = run(shell, "SELECT AVG(bmi) FROM patients WHERE patient_id = 'x';")
    assert "R-IDENTIFIER at hospital_a" in err and "hint:" in err
    out, err = run(shell, COUNT_BY_SEX)
    assert err == "" and "(3 rows)" in out


def test_set_changes_the_session_epsilon(shell):
    out, _ = run(shell, "SET epsilon = 0.25;", COUNT_BY_SEX)
    assert out.startswith("SET\n")
    assert "epsilon spent: hospital_a 0.25" in out


def test_describe_lists_tables_and_describes_one_with_policy_facts(shell):
    out, _ = run(shell, "\\d")
    for table in ("patients", "labs", "diagnoses", "treatments", "outcomes"):
        assert f"│ {table}" in out
    out, _ = run(shell, "\\d patients")
    assert "privacy unit: patient_id" in out
    assert "│ sex" in out and "F, M" in out  # the public domain
    assert "[10, 70]" in out  # bmi's clamp bounds
    assert "identifier" in out
    assert "postcode" not in out  # hidden by the policies: not even named
    _, err = run(shell, "\\d nosuch")
    assert "no table 'nosuch' is released" in err


def test_budget_shows_what_is_left_and_drops_after_a_query(shell):
    before, _ = run(shell, "\\budget")
    assert "hospital_b" in before and "ε remaining" in before
    run(shell, COUNT_BY_SEX)
    after, _ = run(shell, "\\budget")
    assert before != after


def test_sites_shows_health_and_latency(shell):
    out, _ = run(shell, "\\sites")
    assert out.count("│ ok ") == 3 and " ms " in out


def test_policy_shows_requirements_per_site(shell):
    out, _ = run(shell, "\\policy")
    assert "│ hospital_b │ 11 " in out  # hospital_b's minimum cell count
    out, _ = run(shell, "\\policy hospital_a")
    assert "tables released by hospital_a" in out and "hospital_b" not in out
    _, err = run(shell, "\\policy nowhere")
    assert "no site 'nowhere'" in err


def test_explain_spends_nothing(shell):
    before, _ = run(shell, "\\budget")
    out, _ = run(shell, "\\explain SELECT sex, COUNT(*) FROM patients GROUP BY sex")
    assert "allowed" in out and "expected ± (95%)" in out and "-- site fragment" in out
    after, _ = run(shell, "\\budget")
    assert before == after


def test_format_timing_and_output_file(shell, tmp_path):
    out, _ = run(shell, "\\format json", "\\timing on", COUNT_BY_SEX)
    rows = json.loads(out[out.index("["):out.index("]") + 1])
    assert [r["sex"] for r in rows] == ["F", "M", None]
    assert "time: " in out
    target = tmp_path / "result.csv"
    out, _ = run(shell, "\\format csv", f"\\o {target}", COUNT_BY_SEX, "\\o")
    assert target.read_text().splitlines()[0] == "sex,n"
    assert "sex,n" not in out and "sites answered" in out  # reports stay on the terminal
    _, err = run(shell, "\\format yaml")
    assert "unknown format 'yaml'" in err


def test_include_runs_a_file_of_sql_and_commands(shell, tmp_path):
    script = tmp_path / "script.sql"
    script.write_text("-- a script\n\\format csv\nSELECT COUNT(*) AS n\n  FROM patients;\n"
                      "SELECT COUNT(*) AS m FROM labs;\n")
    out, err = run(shell, f"\\i {script}")
    assert err == ""
    assert "\nn\n" in out and "\nm\n" in out
    _, err = run(shell, f"\\i {tmp_path / 'missing.sql'}")
    assert "No such file" in err


def test_help_is_generated_from_the_registry(shell):
    out, _ = run(shell, "\\?")
    for name, entry in COMMANDS.items():
        assert name in out and entry.help in out


def test_unknown_command_suggests_and_quit_ends(shell):
    _, err = run(shell, "\\budgte")
    assert "unknown command \\budgte" in err and "\\budget" in err
    session, _, _ = shell
    assert session.handle("\\q") is False
    assert session.handle("quit") is False


@pytest.mark.parametrize(("text", "submit"), [
    ("SELECT 1", False), ("SELECT 1;", True), ("SELECT ';'", False),
    ("SELECT 1 -- done;", False), ("SELECT 1;  ", True), ("\\d", True), ("", True),
    ("SELECT 1\nFROM t;", True), ("exit", True),
])
def test_enter_submits_only_a_finished_statement(text, submit):
    assert statement_complete(text) is submit


class _SlowClient:
    """A site that answers after a pause (a real in-process site underneath)."""

    def __init__(self, client, pause: float) -> None:
        self._client, self._pause = client, pause
        self.name = client.name

    def query(self, request, timeout=None):
        import time
        time.sleep(self._pause)
        return self._client.query(request, timeout)

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_a_slow_query_shows_progress_and_erases_it(demo_paths, tmp_path, monkeypatch):
    from fedquery.cli.shell import session as session_module
    from fedquery.engine import Engine

    monkeypatch.setattr(session_module, "PROGRESS_AFTER", 0.05)
    fast = demo_engine(demo_paths, tmp_path / "state")
    clients = [c if c.name != "hospital_c" else _SlowClient(c, 0.6) for c in fast.clients]
    connection = Connection(Engine(clients), user="analyst")
    out, err = io.StringIO(), io.StringIO()
    session = ShellSession(connection, out=out, err=err, interactive=True)
    session.handle(COUNT_BY_SEX)
    progress = err.getvalue()
    assert "\r0/3 sites…" in progress or "\r2/3 sites…" in progress
    assert "\r2/3 sites…" in progress  # two fast sites answered, the slow one not yet
    assert progress.endswith("\r\x1b[K")  # erased before the result is printed
    assert "(3 rows)" in out.getvalue()
    connection.close()


def test_a_fast_query_shows_no_progress(shell, monkeypatch):
    from fedquery.cli.shell import session as session_module

    monkeypatch.setattr(session_module, "PROGRESS_AFTER", 5.0)  # "a moment", on any machine
    session, out, err = shell
    session.interactive = True
    session.handle(COUNT_BY_SEX)
    assert "sites…" not in err.getvalue()
