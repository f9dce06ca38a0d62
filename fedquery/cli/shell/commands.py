"""The shell's backslash commands: one registry, from which ``\\?`` and completion are built."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import sqlglot

from fedquery.cli.output import render
from fedquery.cli.shell.session import ShellSession
from fedquery.errors import Error


@dataclass(frozen=True)
class Command:
    name: str
    args: str  # usage of the argument, e.g. "[TABLE]"
    argument: str | None  # what completion offers: "table", "site", "format", "sql", ...
    help: str
    run: Callable[[ShellSession, str], bool | None]


COMMANDS: dict[str, Command] = {}


def command(name: str, args: str = "", argument: str | None = None):
    """Register a handler ``run(session, argument_text)``; its docstring's first line is the
    help text.  Returning False ends the shell."""
    def register(run):
        COMMANDS[name] = Command(name, args, argument, run.__doc__.strip().splitlines()[0], run)
        return run
    return register


def completion_spec() -> dict[str, str | None]:
    return {name: c.argument for name, c in COMMANDS.items()}


def run_command(session: ShellSession, text: str) -> bool:
    name, _, argument = text.strip().partition(" ")
    name = name.rstrip(";")
    entry = COMMANDS.get(name)
    if entry is None:
        close = [n for n in COMMANDS if n.startswith(name[:2])]
        hint = f"; did you mean {' or '.join(close)}?" if close and name != "\\" else ""
        session.error(f"unknown command {name}{hint} (\\? lists the commands)")
        return True
    try:
        return entry.run(session, argument.strip().rstrip(";").strip()) is not False
    except (Error, OSError, ValueError) as err:
        session.error(err)
        return True


def _table(session: ShellSession, rows: list[dict], title: str | None = None) -> str:
    if not rows:
        return "(none)\n"
    names = list(rows[0])
    columns = {n: pa.array([_text(r.get(n)) for r in rows], pa.string()) for n in names}
    return render(pa.table(columns), "table", title=title, width=session.width())


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    return str(value)


def _same_or_per_site(values: dict[str, str]) -> str:
    distinct = set(values.values())
    if len(distinct) <= 1:
        return next(iter(distinct), "")
    return "; ".join(f"{site}: {value}" for site, value in values.items())


# -- the commands ---------------------------------------------------------------------------

@command("\\?")
def _help(session: ShellSession, argument: str) -> None:
    """Show the commands."""
    width = max(len(f"{c.name} {c.args}") for c in COMMANDS.values())
    lines = [f"  {(c.name + ' ' + c.args).ljust(width)}  {c.help}" for c in COMMANDS.values()]
    session.echo("Commands (anything else is SQL, ended by ';'):\n" + "\n".join(lines))


@command("\\d", "[TABLE]", "table")
def _describe(session: ShellSession, argument: str) -> None:
    """List the tables, or describe TABLE: columns, types, domains, bounds, what sites allow."""
    engine = session.connection.engine
    catalogs = engine.site_catalogs
    if not argument:
        rows = [{"table": name, "columns": len(table.columns),
                 "privacy unit": table.privacy_unit or "",
                 "sites": "all" if not table.missing_at
                 else f"missing at {', '.join(table.missing_at)}"}
                for name, table in sorted(engine.catalog.tables.items())]
        session.echo(_table(session, rows))
        return
    name = argument.lower().strip('"')
    table = engine.catalog.tables.get(name)
    if table is None:
        known = ", ".join(sorted(engine.catalog.tables))
        raise ValueError(f"no table {argument!r} is released; tables: {known}")
    rows = []
    for column, typ in table.columns.items():
        per_site = {site: c for site, catalog in catalogs.items()
                    for t in catalog.tables if t.name == name
                    for c in t.columns if c.name.lower() == column}
        domain = {s: _domain_text(c.domain) for s, c in per_site.items()}
        bounds = {s: "" if c.bounds is None else f"[{c.bounds[0]:g}, {c.bounds[1]:g}]"
                  for s, c in per_site.items()}
        allows = {s: _allows_text(c) for s, c in per_site.items()}
        rows.append({"column": column, "type": typ,
                     "role": _same_or_per_site({s: c.role or "" for s, c in per_site.items()}),
                     "domain": _same_or_per_site(domain), "bounds": _same_or_per_site(bounds),
                     "sites allow": _same_or_per_site(allows)})
    unit = f"; privacy unit: {table.privacy_unit}" if table.privacy_unit else ""
    session.echo(_table(session, rows, title=f"{name}{unit}"))
    for column, problem in sorted(table.problems.items()):
        session.echo(f"  not queryable: {problem}")


def _domain_text(domain) -> str:
    if domain is None:
        return ""
    values = [str(v) for v in domain]
    shown = ", ".join(values[:6])
    return f"{shown}, … ({len(values)} values)" if len(values) > 6 else shown


def _allows_text(column) -> str:
    parts = []
    if column.uses is not None:
        parts.append("/".join(column.uses))
    if column.aggregates is not None:
        parts.append("aggregates: " + "/".join(column.aggregates))
    return "; ".join(parts)


@command("\\sites")
def _sites(session: ShellSession, argument: str) -> None:
    """Every site's health and round-trip latency."""
    rows = []
    for site, answer, ms in session.connection.engine.health():
        if isinstance(answer, BaseException):
            rows.append({"site": site, "status": f"down: {answer}", "latency": "",
                         "tables": ""})
        else:
            rows.append({"site": site, "status": answer.get("status", "?"),
                         "latency": f"{ms:.1f} ms", "tables": answer.get("tables", "")})
    session.echo(_table(session, rows))


@command("\\budget")
def _budget(session: ShellSession, argument: str) -> None:
    """Your privacy budget at every site: ε total, spent, remaining."""
    rows = []
    for entry in session.connection.cursor().fq_budget():
        if entry.get("mechanism", "none") == "none":
            rows.append({"site": entry.get("site"), "mechanism": "none (exact)",
                         "ε budget": "", "ε spent": "", "ε remaining": "unlimited"})
            continue
        remaining = entry.get("epsilon_remaining")
        rows.append({"site": entry.get("site"), "mechanism": entry.get("mechanism"),
                     "ε budget": entry.get("epsilon_budget"),
                     "ε spent": entry.get("epsilon_spent"),
                     "ε remaining": "unlimited" if remaining is None else remaining})
    session.echo(_table(session, rows))


@command("\\policy", "[SITE]", "site")
def _policy(session: ShellSession, argument: str) -> None:
    """What each site's policy requires (or one SITE's, with its tables)."""
    catalogs = session.connection.engine.site_catalogs
    if argument and argument not in catalogs:
        raise ValueError(f"no site {argument!r}; sites: {', '.join(catalogs)}")
    rows = []
    for site, catalog in catalogs.items():
        if argument and site != argument:
            continue
        req = catalog.requirements
        if req is None:
            rows.append({"site": site, "min cell": "?"})
            continue
        rows.append({
            "site": site, "min cell": req.min_cell_count,
            "dominance": "" if not req.dominance else f"({req.dominance[0]}, "
                                                       f"{req.dominance[1]:g}%)",
            "min sites": req.min_sites, "max groups": req.max_groups or "",
            "noise": req.noise, "ε per query": req.epsilon, "δ": req.delta,
            "aggregation": req.aggregation})
    session.echo(_table(session, rows))
    if argument:
        tables = [{"table": t.name, "privacy unit": t.privacy_unit or "",
                   "columns": ", ".join(c.name for c in t.columns)}
                  for t in catalogs[argument].tables]
        session.echo(_table(session, tables, title=f"tables released by {argument}"))


@command("\\explain", "SQL", "sql")
def _explain(session: ShellSession, argument: str) -> None:
    """What SQL would do: each site's decision, ε cost, expected ±, the plan — spends nothing."""
    if not argument:
        raise ValueError("usage: \\explain SELECT ...")
    plan = session.connection.cursor().fq_explain(argument)
    rows = []
    for site in plan["sites"]:
        rules = "; ".join(f"{r[0]} {r[1]}: {r[2]}" for r in site.get("rules", []))
        rows.append({"site": site.get("site"),
                     "decision": "allowed" if site.get("allowed") else f"refused: {rules}",
                     "mechanism": site.get("mechanism"),
                     "ε cost": site.get("epsilon") if site.get("mechanism") != "none" else 0,
                     "ε remaining": (site.get("budget") or {}).get("epsilon_remaining")})
    session.echo(_table(session, rows, title="sites"))
    partials = [{"aggregate": p["aggregate"], "kind": p["kind"],
                 "expected ± (95%)": p["half_width"] or "exact"} for p in plan["partials"]]
    session.echo(_table(session, partials, title="aggregates"))
    buffer = io.StringIO()
    buffer.write("-- the coordinator's plan; each site re-plans the query itself and, under "
                 "differential privacy,\n-- adds its own contribution bounds (row cap, clamps) "
                 "to its fragment\n")
    for title, sql in (("site fragment", plan["fragment"]), ("combine", plan["combine"]),
                       ("post-process", plan["post"])):
        if sql:
            buffer.write(f"-- {title}\n{_pretty(sql)}\n")
    for note in plan.get("notes", []):
        buffer.write(f"-- note: {note}\n")
    session.echo(buffer.getvalue())


def _pretty(sql: str) -> str:
    try:
        return sqlglot.transpile(sql, read="duckdb", write="duckdb", pretty=True)[0]
    except sqlglot.errors.SqlglotError:
        return sql


@command("\\format", "table|csv|json|markdown", "format")
def _format(session: ShellSession, argument: str) -> None:
    """Show results as a table, CSV, JSON or Markdown."""
    if not argument:
        session.echo(f"format: {session.format}")
        return
    session.set_format(argument)
    session.echo(f"format: {session.format}")


@command("\\timing", "[on|off]", "toggle")
def _timing(session: ShellSession, argument: str) -> None:
    """Show how long each query took."""
    if argument not in ("", "on", "off"):
        raise ValueError("usage: \\timing [on|off]")
    session.timing = (not session.timing) if not argument else argument == "on"
    session.echo(f"timing is {'on' if session.timing else 'off'}")


@command("\\o", "[FILE]", "file")
def _output(session: ShellSession, argument: str) -> None:
    """Send results to FILE (no FILE: back to the terminal)."""
    session.set_output(argument or None)
    session.echo(f"results go to {argument}" if argument else "results go to the terminal")


@command("\\i", "FILE", "file")
def _include(session: ShellSession, argument: str) -> bool:
    """Run the SQL and commands in FILE."""
    if not argument:
        raise ValueError("usage: \\i FILE")
    with open(argument, encoding="utf-8") as handle:
        text = handle.read()
    from fedquery.cli.shell.completion import split_statements
    for line in _commands_and_sql(text):
        if line.startswith("\\"):
            if not run_command(session, line):
                return False
        else:
            for statement in split_statements(line):
                session.run_sql(statement)
    return True


def _commands_and_sql(text: str) -> list[str]:
    """Backslash commands (one per line) and the SQL between them, in order."""
    out, sql = [], []
    for line in text.splitlines():
        if line.strip().startswith("\\") and not "".join(sql).strip():
            out.append(line.strip())
        elif line.strip().startswith("\\"):
            out.append("\n".join(sql))
            sql = []
            out.append(line.strip())
        else:
            sql.append(line)
    if "".join(sql).strip():
        out.append("\n".join(sql))
    return out


@command("\\q")
def _quit(session: ShellSession, argument: str) -> bool:
    """Quit."""
    return False

