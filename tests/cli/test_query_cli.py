"""``fedquery query`` as a script would run it, against real demo site processes over TLS.

Results on standard output in the chosen format, the privacy report on standard error, and the
exit code says what happened: 0 answered, 1 refused as written (policy, unsupported or invalid
SQL: ``exit_code_for`` maps ProgrammingError/NotSupportedError to 1), 2 every other error
(a site that cannot be reached, a bad federation file, usage).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fedquery.cli.query import EXIT_ERROR, EXIT_OK, EXIT_REFUSED
from fedquery.demo.federation import free_port, init_demo
from fedquery.demo.launcher import SiteProcesses
from fedquery.transport.federation import load_federation

SITES = ("hospital_a", "hospital_b", "hospital_c")
QUERY = "SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex ORDER BY sex"
REPORT = "sites answered: hospital_a, hospital_b, hospital_c"   # the report line begins so
_SCRIPT = Path(sys.executable).with_name("fedquery")
FEDQUERY = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "fedquery.cli.main"]


@pytest.fixture(scope="module")
def federation(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("query_cli_demo")
    path = init_demo(directory, sites=3, patients=300, seed=1)
    with SiteProcesses(directory) as processes:
        for site in load_federation(path).sites:
            processes.start(site.name, int(site.endpoint.rsplit(":", 1)[1]))
        yield path


@pytest.fixture(scope="module")
def expected(federation) -> list[tuple[str | None, int | None]]:
    """The released answer to QUERY, through the Python API.  When the demo policies add
    noise, each site answers the same query again from its noise cache: the command line must
    print exactly these values too."""
    import fedquery
    with fedquery.connect(federation) as conn:
        return conn.cursor().execute(QUERY).fetchall()


def fedquery_cli(*args: str, stdin: str | None = None, env: dict | None = None,
                 cwd: Path | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "FEDQUERY_FEDERATION"}
    environment.update(env or {})
    return subprocess.run([*FEDQUERY, *args], input=stdin if stdin is not None else "",
                          capture_output=True, text=True, timeout=120, env=environment,
                          cwd=cwd)


def query(federation: Path, *args: str, **options) -> subprocess.CompletedProcess:
    return fedquery_cli("query", "--federation", str(federation), *args, **options)


def csv_rows(text: str) -> list[tuple[str | None, int | None]]:
    """The data rows of QUERY's csv output (an empty field is NULL)."""
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["sex", "n"]
    return [(sex or None, int(n) if n else None) for sex, n in rows[1:]]


def reported(stderr: str) -> bool:
    return any(line.startswith(REPORT) for line in stderr.splitlines())


# ---------------------------------------------------------------------------------------------
# Answers: stdout in each format, the report on stderr, exit 0


def test_csv(federation, expected):
    result = query(federation, "--format", "csv", QUERY)
    assert result.returncode == EXIT_OK, result.stderr
    assert csv_rows(result.stdout) == expected
    assert reported(result.stderr)
    assert REPORT not in result.stdout


def test_json(federation, expected):
    result = query(federation, "--format", "json", QUERY)
    assert result.returncode == EXIT_OK, result.stderr
    assert json.loads(result.stdout) == [{"sex": s, "n": n} for s, n in expected]
    assert reported(result.stderr)


def test_markdown(federation, expected):
    result = query(federation, "--format", "markdown", QUERY)
    assert result.returncode == EXIT_OK, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["| sex | n |", "|---|---|"]
    assert len(lines) == 2 + len(expected)
    for line, (sex, n) in zip(lines[2:], expected):
        # a noisy value carries its 95 % interval, "| F | 439 ± 26 |"; a withheld one says so
        assert re.fullmatch(rf"\| {'NULL' if sex is None else sex} \| "
                            rf"{'suppressed' if n is None else n}(\.0+)?( ± [0-9.]+)? \|",
                            line), line
    assert reported(result.stderr)


def test_table_is_the_default(federation, expected):
    result = query(federation, QUERY)
    assert result.returncode == EXIT_OK, result.stderr
    lines = result.stdout.splitlines()
    assert any("sex" in line and " n " in line for line in lines)
    for sex, n in expected:
        sex, n = ("NULL" if sex is None else sex), ("suppressed" if n is None else str(n))
        assert any(re.search(rf"\b{sex}\b.*\b{n}\b", line) for line in lines), sex
    assert reported(result.stderr)


def test_trailing_semicolon_and_whitespace_are_accepted(federation, expected):
    result = query(federation, "--format", "csv", f"  {QUERY} ;\n")
    assert result.returncode == EXIT_OK, result.stderr
    assert csv_rows(result.stdout) == expected


# ---------------------------------------------------------------------------------------------
# Where the SQL comes from


def test_sql_from_stdin(federation, expected):
    result = query(federation, "--format", "csv", stdin=QUERY + ";\n")
    assert result.returncode == EXIT_OK, result.stderr
    assert csv_rows(result.stdout) == expected


def test_sql_from_a_file(federation, expected, tmp_path):
    sql = tmp_path / "query.sql"
    sql.write_text(QUERY.replace(" FROM", "\nFROM").replace(" GROUP", "\n  GROUP") + ";\n")
    result = query(federation, "--format", "csv", "-f", str(sql))
    assert result.returncode == EXIT_OK, result.stderr
    assert csv_rows(result.stdout) == expected


def test_a_comment_in_the_sql_file_does_not_change_a_noisy_answer(federation, expected,
                                                                   tmp_path):
    import fedquery
    with fedquery.connect(federation) as conn:
        if conn.cursor().execute(QUERY).fq_report.mode.endswith("/none"):
            pytest.skip("the demo policies add no noise: every answer is exact")
    sql = tmp_path / "query.sql"
    sql.write_text(f"-- patients by sex\n{QUERY};\n")
    result = query(federation, "--format", "csv", "-f", str(sql))
    assert result.returncode == EXIT_OK, result.stderr
    assert csv_rows(result.stdout) == expected
    assert "from the noise cache" in result.stderr


def test_sql_from_dash_f_dash_reads_stdin(federation, expected):
    result = query(federation, "--format", "csv", "-f", "-", stdin=QUERY)
    assert result.returncode == EXIT_OK, result.stderr
    assert csv_rows(result.stdout) == expected


def test_federation_from_the_environment(federation, expected):
    result = fedquery_cli("query", "--format", "csv", QUERY,
                          env={"FEDQUERY_FEDERATION": str(federation)})
    assert result.returncode == EXIT_OK, result.stderr
    assert csv_rows(result.stdout) == expected


# ---------------------------------------------------------------------------------------------
# Refused as written: exit 1, nothing on stdout, the reason on stderr


def test_policy_refusal_exits_1(federation):
    result = query(federation, "SELECT AVG(bmi) FROM patients WHERE patient_id = 'x'")
    assert result.returncode == EXIT_REFUSED
    assert result.stdout == ""
    assert result.stderr.startswith("error: refused by the policy of")
    assert "R-IDENTIFIER" in result.stderr
    for site in SITES:
        assert site in result.stderr
    assert "Traceback" not in result.stderr


def test_unsupported_aggregate_exits_1(federation):
    result = query(federation, "SELECT MEDIAN(bmi) FROM patients")
    assert result.returncode == EXIT_REFUSED
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert "MEDIAN" in result.stderr
    assert "Traceback" not in result.stderr


def test_syntax_error_exits_1_with_its_position(federation):
    """A SqlParseError is a ProgrammingError: the query as written is refused (exit 1)."""
    result = query(federation, "SELEC sex FROM patients")
    assert result.returncode == EXIT_REFUSED
    assert result.stdout == ""
    assert "line 1, column" in result.stderr
    assert "SELEC sex FROM patients" in result.stderr


def test_unknown_column_exits_1(federation):
    result = query(federation, "SELECT no_such_column, COUNT(*) FROM patients GROUP BY 1")
    assert result.returncode == EXIT_REFUSED
    assert result.stdout == ""
    assert "no_such_column" in result.stderr


# ---------------------------------------------------------------------------------------------
# Other errors: exit 2


def test_unreachable_site_exits_2_naming_it(federation):
    """hospital_b's endpoint points at a port nobody listens on."""
    port = load_federation(federation).sites[1].endpoint.rsplit(":", 1)[1]
    broken = federation.with_name("federation-dead-port.yaml")   # same folder: same CA, token
    broken.write_text(federation.read_text().replace(f"127.0.0.1:{port}",
                                                     f"127.0.0.1:{free_port()}"))
    result = query(broken, QUERY)
    assert result.returncode == EXIT_ERROR
    assert result.stdout == ""
    assert result.stderr.startswith("error: site 'hospital_b': cannot reach the site")
    assert "Traceback" not in result.stderr


def test_invalid_federation_file_exits_2(tmp_path):
    bad = tmp_path / "federation.yaml"
    bad.write_text("version: 1\nsites:\n  a: {endpoint: 'grpc+tcp://127.0.0.1:1'}\n")
    result = query(bad, QUERY)
    assert result.returncode == EXIT_ERROR
    assert "sites.a.endpoint" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_federation_is_a_usage_error(tmp_path):
    result = fedquery_cli("query", QUERY, cwd=tmp_path)
    assert result.returncode == 2
    assert "no federation" in result.stderr
    assert "--federation" in result.stderr
    assert result.stdout == ""


def test_nonexistent_federation_file_is_a_usage_error(tmp_path):
    result = query(tmp_path / "nowhere.yaml", QUERY)
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert result.stdout == ""
