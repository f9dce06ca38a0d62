"""Render released tables and reports for the terminal and for scripts."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

import pyarrow as pa
from rich.console import Console
from rich.table import Table

FORMATS = ("table", "csv", "json", "markdown")


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.6g}" if abs(value) < 1e6 else f"{value:,.0f}"
    return str(value)


def rows_of(table: pa.Table) -> list[tuple]:
    columns = [c.to_pylist() for c in table.columns]
    return list(zip(*columns)) if columns else []


def _with_interval(value: Any, interval) -> str:
    if interval is None or value is None or not isinstance(value, int | float):
        return _cell(value)
    low, high = interval
    if low is None or high is None:
        return _cell(value)
    width = max(value - low, high - value)
    if math.isnan(width) or math.isinf(width):
        return f"{_cell(value)} ± ∞"  # noisy, but no finite bound (e.g. a ratio near 0/0)
    if width <= 0:
        return _cell(value)
    digits = max(0, 1 - math.floor(math.log10(width)))  # two significant digits of the width
    return f"{value:.{digits}f} ± {width:.{digits}f}"


SUPPRESSED = "suppressed"


def render(table: pa.Table, fmt: str = "table", intervals=(), title: str | None = None,
           suppressed_rows=(), withheld_columns=None, width: int = 120) -> str:
    """``table`` as text in one of :data:`FORMATS`; for people (table, markdown) a noisy value
    is shown with its 95 % interval, ``412 ± 6``, and a withheld cell of a suppressed row as
    ``suppressed`` (``withheld_columns``: which columns are withheld there, default all);
    csv and json carry the values alone (NULL where withheld)."""
    rows = rows_of(table)
    if fmt in ("table", "markdown"):
        marked = set(suppressed_rows)
        withheld = set(range(table.num_columns) if withheld_columns is None
                       else withheld_columns)
        rows = [tuple(SUPPRESSED if r in marked and c in withheld and v is None else v
                      for c, v in enumerate(row)) for r, row in enumerate(rows)]
        if intervals:
            rows = [tuple(_with_interval(v, i) for v, i in zip(row, ivs))
                    for row, ivs in zip(rows, intervals)]
    names = table.column_names
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        writer.writerows(["" if v is None else v for v in row] for row in rows)
        return out.getvalue()
    if fmt == "json":
        return json.dumps([dict(zip(names, row)) for row in rows], default=str, indent=1) + "\n"
    if fmt == "markdown":
        lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
        lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
        return "\n".join(lines) + "\n"
    grid = Table(title=title, title_justify="left", header_style="bold")
    for field in table.schema:
        numeric = pa.types.is_integer(field.type) or pa.types.is_floating(
            field.type) or pa.types.is_decimal(field.type)
        grid.add_column(field.name, justify="right" if numeric else "left")
    for row in rows:
        grid.add_row(*(_cell(v) for v in row))
    console = Console(file=io.StringIO(), width=width, force_terminal=False)
    console.print(grid)
    return console.file.getvalue()


def report_parts(report) -> list[str]:
    """The privacy report of a result, one fact per item: who answered, the protection mode,
    what it cost and what is left, what is noisy or suppressed, caveats."""
    parts = [f"sites answered: {', '.join(report.sites_answered)}"]
    if report.epsilon_spent:
        spent = ", ".join(f"{site} {eps:g}" for site, eps in report.epsilon_spent)
        parts.append(f"mode {report.mode}, epsilon spent: {spent}")
    else:
        parts.append(f"mode {report.mode}")
    if report.budget_remaining:
        parts.append("epsilon left: " + ", ".join(
            f"{site} {'unlimited' if eps is None else format(eps, '.4g')}"
            for site, eps in report.budget_remaining))
    if report.cached_sites:
        parts.append(f"from the noise cache at {', '.join(report.cached_sites)} (no budget "
                     "spent)")
    if report.intervals:
        parts.append("± = 95% interval")
    if report.noise:
        parts.append("combined noise (95%): " + ", ".join(
            f"{aggregate} ±{width:.3g}" for aggregate, width in report.noise))
    if report.sites_failed:
        parts.append("sites failed: " + ", ".join(s for s, _ in report.sites_failed))
    if report.suppressed_cells:
        rows = ", ".join(str(i + 1) for i in report.suppressed_rows)
        parts.append(f"{report.suppressed_cells} cell(s) suppressed (rows {rows})")
    return parts + list(report.notes)


def describe_report(report) -> str:
    """The privacy report on one line (for ``fedquery query``'s standard error)."""
    return "; ".join(report_parts(report))
