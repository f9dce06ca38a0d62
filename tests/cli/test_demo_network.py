"""``fedquery demo`` over the network: site processes over TLS, the tour, and nothing left behind.

Run as a user would (the console script in a subprocess), then look in /proc for any
``fedquery site serve`` process that still serves the demo directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedquery.demo.showcase import REFUSED, SHOWCASE

SITES = ("hospital_a", "hospital_b", "hospital_c")
_SCRIPT = Path(sys.executable).with_name("fedquery")
FEDQUERY = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "fedquery.cli.main"]


def site_processes(directory: Path) -> list[tuple[int, str]]:
    """(pid, command line) of every live ``site serve`` process whose command names
    ``directory``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # gone meanwhile, or not ours to read
        command = " ".join(a.decode(errors="replace") for a in argv if a)
        if state != "Z" and "site serve" in command and str(directory) in command:
            found.append((int(entry.name), command))
    return found


@pytest.fixture
def demo_dir(tmp_path):
    directory = tmp_path / "demo"
    yield directory
    leftovers = site_processes(directory)
    for pid, _ in leftovers:   # never leave a site behind, even when a test fails
        os.killpg(pid, signal.SIGKILL)
    assert not leftovers, f"site processes left running: {leftovers}"


def test_demo_tour_over_tls_sites_leaves_no_site_running(demo_dir):
    started = time.monotonic()
    result = subprocess.run([*FEDQUERY, "demo", "--dir", str(demo_dir), "--patients", "300"],
                            capture_output=True, text=True, timeout=240,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr + result.stdout
    out = result.stdout
    assert "each a separate site process serving Arrow Flight over TLS" in out
    assert f"federation file: {demo_dir / 'federation.yaml'}" in out
    for title, *_ in SHOWCASE:
        assert f"-- {title}" in out
    assert out.count(f"sites answered: {', '.join(SITES)}") >= len(SHOWCASE)
    assert f"-- {REFUSED[0]}" in out
    assert "   refused: " in out
    assert "R-IDENTIFIER" in out
    assert out.rstrip().endswith("demo sites stopped.")
    assert "Traceback" not in result.stderr
    assert site_processes(demo_dir) == []

    # each site ran as its own process, was stopped by a signal and said so in its log
    for site in SITES:
        log = (demo_dir / "state" / site / "site.log").read_text()
        assert f"event=listening site={site} endpoint=grpc+tls://127.0.0.1:" in log
        assert f"event=stopped site={site}" in log
        assert "Traceback" not in log
    assert time.monotonic() - started < 240


def test_demo_init_up_query_then_ctrl_c(demo_dir):
    """``demo init`` + ``demo up`` in the foreground; ``fedquery query`` with no further flags
    than --federation; Ctrl-C (SIGINT) stops every site."""
    init = subprocess.run([*FEDQUERY, "demo", "init", str(demo_dir), "--patients", "300"],
                          capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    federation = demo_dir / "federation.yaml"
    assert f"wrote {federation}" in init.stdout
    assert site_processes(demo_dir) == []          # init starts nothing

    up = subprocess.Popen([*FEDQUERY, "demo", "up", str(demo_dir)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "press Ctrl-C" in line:
                break
        assert any("sites are up" in line for line in lines), "".join(lines) + up.stderr.read()
        assert len(site_processes(demo_dir)) == len(SITES)

        answer = subprocess.run([*FEDQUERY, "query", "--federation", str(federation),
                                 "--format", "csv",
                                 "SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex"],
                                capture_output=True, text=True, timeout=60)
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout.splitlines()[0] == "sex,n"
        assert f"sites answered: {', '.join(SITES)}" in answer.stderr

        up.send_signal(signal.SIGINT)
        out, err = up.communicate(timeout=20)
    finally:
        if up.poll() is None:   # a failed assertion above: still stop the sites cleanly
            up.send_signal(signal.SIGINT)
            try:
                up.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                up.kill()
                up.communicate()
    assert up.returncode == 0, err
    assert out.rstrip().endswith("sites stopped.")
    assert "Traceback" not in err
    assert site_processes(demo_dir) == []
