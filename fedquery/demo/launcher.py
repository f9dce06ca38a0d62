"""Start and stop a demo federation's sites as separate ``fedquery site serve`` processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from fedquery.errors import OperationalError


@dataclass
class SiteProcesses:
    """Running site processes; a context manager that always stops what it started."""

    directory: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __enter__(self) -> SiteProcesses:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, site: str, port: int, *, wait: float = 30.0,
              federation: Path | None = None, extra: tuple[str, ...] = ()) -> None:
        """Start ``site`` on ``port`` (with ``federation``: ready for secure aggregation;
        ``extra``: more ``site serve`` options)."""
        d = self.directory
        command = ["site", "serve", str(d / "connectors" / f"{site}.yaml"),
                   "--policy", str(d / "policies" / f"{site}.yaml"), *extra]
        if federation is not None:
            command += ["--federation", str(federation)]
        self._launch(site, command, port, wait)

    def start_key_holder(self, name: str, port: int, federation: Path, *,
                         wait: float = 30.0) -> None:
        """Start the key holder (certificate ``name``) on ``port``."""
        self._launch(name, ["keyholder", "serve", "--federation", str(federation),
                            "--token-file", str(self.directory / "coordinator.token")],
                     port, wait, state_subdir="keys")

    def _launch(self, name: str, command: list[str], port: int, wait: float,
                state_subdir: str | None = None) -> None:
        d = self.directory
        state = d / "state" / name
        state.mkdir(parents=True, exist_ok=True)
        port_file = state / "port"
        port_file.unlink(missing_ok=True)
        command = [sys.executable, "-m", "fedquery.cli.main", *command,
                   "--host", "127.0.0.1", "--port", str(port),
                   "--tls-cert", str(d / "certs" / f"{name}.pem"),
                   "--tls-key", str(d / "certs" / f"{name}.key"),
                   "--state-dir", str(state / state_subdir if state_subdir else state),
                   "--port-file", str(port_file)]
        log = open(state / "site.log", "ab")  # noqa: SIM115 - owned by the child process
        self.processes[name] = subprocess.Popen(command, stdout=log, stderr=log,
                                                stdin=subprocess.DEVNULL,
                                                start_new_session=True)
        log.close()
        deadline = time.monotonic() + wait
        while not port_file.exists():
            if self.processes[name].poll() is not None:
                raise OperationalError(f"{name} exited while starting; see "
                                       f"{state / 'site.log'}")
            if time.monotonic() > deadline:
                raise OperationalError(f"{name} did not start within {wait:g} s; see "
                                       f"{state / 'site.log'}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.processes.values():
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.processes.clear()
