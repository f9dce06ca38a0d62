"""The shell for real, through a pseudo-terminal: ``fedquery demo`` on a terminal takes the tour,
then opens the shell on its TLS site processes; a user types queries, a multi-line query, a
completion, backslash commands and a mistake, then ``\\q`` — and every site stops."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest
from click.testing import CliRunner

from fedquery.cli.main import main

_SCRIPT = Path(sys.executable).with_name("fedquery")
FEDQUERY = str(_SCRIPT) if _SCRIPT.exists() else None
PROMPT = "fedquery>"  # the space after it is drawn as a cursor move


def live_sites(directory: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and "site serve" in command and str(directory) in command:
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def demo_dir(tmp_path):
    directory = tmp_path / "demo"
    yield directory
    leftovers = live_sites(directory)
    for pid in leftovers:
        os.killpg(pid, signal.SIGKILL)
    assert not leftovers, f"site processes left running: {leftovers}"


@pytest.mark.skipif(FEDQUERY is None, reason="the fedquery console script is not installed")
def test_demo_opens_the_shell_on_a_terminal_and_a_user_works_in_it(demo_dir, tmp_path):
    history = tmp_path / "history"
    env = {**os.environ, "FEDQUERY_HISTORY": str(history), "TERM": "xterm",
           "PROMPT_TOOLKIT_NO_CPR": "1", "COLUMNS": "160", "LINES": "50"}
    child = pexpect.spawn(FEDQUERY, ["demo", "--dir", str(demo_dir), "--patients", "300"],
                          env=env, encoding="utf-8", timeout=90, dimensions=(50, 160))
    transcript = io.StringIO()
    child.logfile_read = transcript
    try:
        child.expect_exact("The sites stay up while the shell is open")
        child.expect_exact(PROMPT)

        # a query: the table, then its privacy report under it
        child.send("SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex ORDER BY sex;\r")
        child.expect_exact("(3 rows)")
        child.expect_exact("sites answered: hospital_a, hospital_b, hospital_c")
        child.expect_exact("± = 95% interval")
        child.expect_exact(PROMPT)

        # a multi-line query: Enter without ';' continues the statement
        child.send("SELECT region,\r")
        child.expect_exact("..>")
        child.send("COUNT(*) AS n FROM patients GROUP BY region;\r")
        child.expect_exact("(13 rows)")
        child.expect_exact(PROMPT)

        # completion of a column: Tab completes "bm" to the only column that starts so
        child.send("SELECT AVG(bm")
        child.send("\t")
        child.send(") AS mean_bmi FROM patients;\r")
        child.expect(r"mean_bmi\s*┃")
        child.expect_exact("(1 row)")
        child.expect_exact(PROMPT)

        child.send("\\d patients\r")
        child.expect_exact("privacy unit: patient_id")
        child.expect_exact(PROMPT)

        child.send("\\budget\r")
        child.expect_exact("ε remaining")
        child.expect_exact("hospital_c")
        child.expect_exact(PROMPT)

        # a mistake: one readable paragraph, and the shell keeps going
        child.send("SELEC 1;\r")
        child.expect_exact("error: syntax error")
        child.expect_exact(PROMPT)
        child.send("SELECT COUNT(*) AS again FROM patients;\r")
        child.expect_exact("(1 row)")
        child.expect_exact(PROMPT)

        child.send("\\q\r")
        child.expect_exact("demo sites stopped.")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    text = transcript.getvalue()
    assert child.exitstatus == 0, text[-3000:]
    assert "Traceback" not in text
    assert re.search(r"mean_bmi\s*┃", text)
    # the history persists the statements, including the completed one
    saved = history.read_text()
    assert "SELECT AVG(bmi) AS mean_bmi FROM patients;" in saved
    assert "SELECT region,\n+COUNT(*) AS n FROM patients GROUP BY region;" in saved


def test_demo_without_a_terminal_or_with_no_shell_stops_after_the_tour(tmp_path):
    result = subprocess.run([sys.executable, "-m", "fedquery.cli.main", "demo", "--dir",
                             str(tmp_path / "demo"), "--patients", "300", "--no-shell"],
                            capture_output=True, text=True, timeout=240,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert "fedquery shell" not in result.stdout
    assert "-- The privacy budget left at each site" in result.stdout
    assert result.stdout.rstrip().endswith("demo sites stopped.")


def test_shell_needs_a_federation(tmp_path, monkeypatch):
    monkeypatch.delenv("FEDQUERY_FEDERATION", raising=False)
    result = CliRunner().invoke(main, ["shell"])
    assert result.exit_code == 2
    assert "no federation: pass --federation FILE or set FEDQUERY_FEDERATION" in result.output
