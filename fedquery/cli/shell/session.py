"""One shell session: its settings (format, timing, output file) and what one input does.

Free of prompt_toolkit, so the whole behaviour of the shell can be driven from tests: the
interactive loop (:mod:`fedquery.cli.shell.app`) only reads input and calls :meth:`handle`.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from typing import TextIO

from fedquery.cli.output import FORMATS, render, report_parts
from fedquery.cli.shell.completion import split_statements, tokens
from fedquery.errors import Error

# A query slower than this gets a progress line ("2/3 sites…") while the sites answer.
PROGRESS_AFTER = 0.3


def statement_complete(text: str) -> bool:
    """Whether Enter should submit ``text``: a backslash command, an exit word, an empty line,
    or SQL whose last token is ``;`` (outside strings and comments)."""
    stripped = text.strip()
    if not stripped or stripped.startswith("\\") or stripped.lower() in ("quit", "exit"):
        return True
    toks = tokens(stripped)
    return bool(toks) and toks[-1] == ";"


class Progress:
    """``answered/total sites…`` on the terminal, shown only for a query slower than
    :data:`PROGRESS_AFTER` and erased when the answer arrives."""

    def __init__(self, stream: TextIO | None, total: int) -> None:
        """``stream``: where the line goes (None: nowhere, e.g. not a terminal)."""
        self.stream, self.total = stream, total
        self.answered = 0
        self._done = threading.Event()
        self._shown = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __call__(self, answered: int, total: int) -> None:
        self.answered, self.total = answered, total

    def _run(self) -> None:
        if self.stream is None or self._done.wait(PROGRESS_AFTER):
            return
        while not self._done.is_set():
            self.stream.write(f"\r{self.answered}/{self.total} sites…")
            self.stream.flush()
            self._shown = True
            self._done.wait(0.1)

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


class ShellSession:
    """The state of one shell and the meaning of one input line (SQL or ``\\command``)."""

    def __init__(self, connection, *, out: TextIO | None = None, err: TextIO | None = None,
                 fmt: str = "table", interactive: bool = False) -> None:
        self.connection = connection
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.format = fmt
        self.timing = False
        self.interactive = interactive
        self.output_file: TextIO | None = None
        self.output_path: str | None = None

    # -- what the completer needs ---------------------------------------------------------------

    def catalog(self) -> dict[str, dict[str, str]]:
        """Table → usable column → type, as the federation's policies release them."""
        return {name: dict(table.columns)
                for name, table in sorted(self.connection.engine.catalog.tables.items())}

    def sites(self) -> list[str]:
        return [client.name for client in self.connection.engine.clients]

    # -- output ------------------------------------------------------------------------------

    def echo(self, text: str = "") -> None:
        """Terminal output (messages, reports, command answers)."""
        self.out.write(text if text.endswith("\n") else text + "\n")
        self.out.flush()

    def emit(self, text: str) -> None:
        """Query results: to the terminal, or to the file chosen with ``\\o``."""
        target = self.output_file or self.out
        target.write(text if text.endswith("\n") else text + "\n")
        target.flush()

    def error(self, err: BaseException) -> None:
        self.err.write(f"error: {err}\n")
        self.err.flush()

    def width(self) -> int:
        return max(shutil.get_terminal_size((120, 24)).columns, 40) if self.interactive else 120

    # -- input ---------------------------------------------------------------------------------

    def handle(self, text: str) -> bool:
        """Run one input; False when the shell should end.  Errors are reported, never
        raised: the shell keeps running."""
        stripped = text.strip()
        if not stripped:
            return True
        if stripped.lower() in ("quit", "exit"):
            return False
        if stripped.startswith("\\"):
            from fedquery.cli.shell.commands import run_command
            return run_command(self, stripped)
        for statement in split_statements(stripped):
            self.run_sql(statement)
        return True

    def run_sql(self, sql: str) -> None:
        sql = sql.strip().rstrip(";").strip()
        if not sql:
            return
        cursor = self.connection.cursor()
        started = time.perf_counter()
        try:
            with Progress(self.err if self.interactive else None,
                          len(self.connection.engine.clients)) as progress:
                cursor.execute(sql, progress=progress)
        except Error as err:
            self.error(err)
            return
        elapsed = time.perf_counter() - started
        if cursor.fq_report is None:  # SET / RESET
            self.echo(sql.split(None, 1)[0].upper())
            return
        report = cursor.fq_report
        self.emit(render(cursor.fetch_arrow_table(), self.format, report.intervals,
                         suppressed_rows=report.suppressed_rows,
                         withheld_columns=report.withheld_columns, width=self.width()))
        rows = cursor.rowcount
        lines = [f"({rows} row{'s' if rows != 1 else ''})"] + report_parts(report)
        if self.timing:
            lines.append(f"time: {elapsed * 1000:.1f} ms")
        self.echo("\n".join("  " + line if i else line for i, line in enumerate(lines)))

    def set_output(self, path: str | None) -> None:
        if self.output_file is not None:
            self.output_file.close()
        self.output_file, self.output_path = None, None
        if path:
            self.output_file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - kept open
            self.output_path = path

    def set_format(self, fmt: str) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        self.format = fmt

    def close(self) -> None:
        self.set_output(None)

