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


def render(table: pa.Table, fmt: str = "table", title: str | None = None) -> str:
    """``table`` as text in one of :data:`FORMATS`."""
    rows = rows_of(table)
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
    console = Console(file=io.StringIO(), width=120, force_terminal=False)
    console.print(grid)
    return console.file.getvalue()


def describe_report(report) -> str:
    """One line under a result: who answered, what was suppressed, caveats."""
    parts = [f"sites answered: {', '.join(report.sites_answered)}"]
    if report.sites_failed:
        parts.append("sites failed: " + ", ".join(s for s, _ in report.sites_failed))
    if report.suppressed_cells:
        rows = ", ".join(str(i + 1) for i in report.suppressed_rows)
        parts.append(f"{report.suppressed_cells} cell(s) suppressed (rows {rows})")
    parts += list(report.notes)
    return "; ".join(parts)
