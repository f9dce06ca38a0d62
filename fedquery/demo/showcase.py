"""The demo federation: synthetic hospitals on disk and the showcase queries."""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import NamedTuple

from fedquery.demo.generate import site_names, write_federation

TABLES = ("patients", "diagnoses", "labs", "treatments", "outcomes")

class Showcase(NamedTuple):
    title: str
    sql: str
    setup: tuple[str, ...] = ()  # session statements run before, reset after


SHOWCASE = (
    Showcase("A cohort: adult patients by sex and age band",
             "SELECT sex, CASE WHEN age < 40 THEN '18-39' WHEN age < 65 THEN '40-64' "
             "ELSE '65+' END AS age_band, COUNT(*) AS patients FROM patients WHERE age >= 18 "
             "GROUP BY ALL ORDER BY ALL"),
    Showcase("A mean lab value: HbA1c (mmol/mol) by region, one result per patient (the "
             "policy allows 12 lab rows per patient; counting one means 12× less noise)",
             "SELECT p.region, AVG(l.value) AS mean_hba1c FROM labs l JOIN patients p "
             "USING (patient_id) WHERE l.test_name = 'HbA1c' AND l.value BETWEEN 20 AND 120 "
             "GROUP BY p.region ORDER BY p.region",
             ("SET max_rows_per_unit = 1",)),
    Showcase("Mortality (%) by ICD-10 chapter, the five highest",
             "SELECT d.icd10_chapter, COUNT(DISTINCT d.patient_id) AS patients, "
             "100.0 * COUNT(DISTINCT d.patient_id) FILTER (WHERE o.death = 1) "
             "/ COUNT(DISTINCT d.patient_id) AS mortality_pct "
             "FROM diagnoses d JOIN outcomes o USING (patient_id) "
             "GROUP BY 1 ORDER BY mortality_pct DESC, 1 LIMIT 5"),
)

# A query every site refuses: it probes one patient by pseudonym.
REFUSED = ("A probe for one patient (refused by every site's policy)",
           "SELECT AVG(bmi) FROM patients WHERE patient_id = 'hospital_a:P0000042'")


def demo_policy_path(site_index: int) -> Path:
    """The steward-written policy of demo hospital ``site_index``, shipped with fedquery (the
    three policies also appear in the repository's ``policies/``); a fourth hospital and
    beyond reuse them in turn."""
    folder = resources.files("fedquery.demo").joinpath("policies")
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".yaml"))
    return Path(str(folder.joinpath(names[site_index % len(names)])))


def ensure_demo_data(directory: Path, n_sites: int, patients_per_site: int,
                     seed: int) -> dict[str, Path]:
    """Write the demo hospitals' DuckDB files under ``directory/data`` unless present."""
    paths = {site: directory / "data" / f"{site}.duckdb" for site in site_names(n_sites)}
    stamp = directory / "data" / "GENERATED"
    wanted = f"sites={n_sites} patients={patients_per_site} seed={seed}\n"
    if all(p.exists() for p in paths.values()) and stamp.exists() and stamp.read_text() == wanted:
        return paths
    written = write_federation(directory, n_sites, patients_per_site, seed=seed)
    stamp.write_text(wanted)
    return written


def demo_engine(paths: dict[str, Path], state_dir: Path):
    """An in-process engine over the demo hospitals' DuckDB files and policies; each site
    keeps its audit log, budget ledger and key under ``state_dir/<site>``."""
    from fedquery.engine import Engine
    from fedquery.policy.load import load_policy
    from fedquery.site.adapter import DuckDBAdapter
    from fedquery.site.service import SiteService
    from fedquery.transport.inprocess import InProcessClient

    clients = []
    for index, (site, path) in enumerate(paths.items()):
        service = SiteService(site, DuckDBAdapter.from_duckdb_file(path, TABLES),
                              policy=load_policy(demo_policy_path(index)),
                              privacy_units={t: "patient_id" for t in TABLES},
                              state_dir=state_dir / site)
        clients.append(InProcessClient(service))
    return Engine(clients)


def run_tour(conn, echo, fmt: str = "table") -> None:
    """The guided tour: showcase queries with their privacy reports, a repeat answered from
    the noise cache, a refused query with the rules that refused it, and the budget left."""
    from fedquery.cli.output import render, report_parts
    from fedquery.errors import PolicyViolation

    def show(cursor, elapsed_ms=None) -> None:
        report = cursor.fq_report
        echo(render(cursor.fetch_arrow_table(), fmt, report.intervals,
                    suppressed_rows=report.suppressed_rows,
                    withheld_columns=report.withheld_columns))
        lines = report_parts(report) + ([f"{elapsed_ms:.0f} ms"] if elapsed_ms else [])
        echo("".join(f"   {line}\n" for line in lines))

    for title, sql, setup in SHOWCASE:
        echo(f"-- {title}\n" + "".join(f"{s};\n" for s in setup) + f"{sql}\n")
        for statement in setup:
            conn.cursor().execute(statement)
        started = time.perf_counter()
        cursor = conn.cursor().execute(sql)
        show(cursor, (time.perf_counter() - started) * 1000)
        if setup:
            conn.cursor().execute("RESET ALL")
    title, sql, _ = SHOWCASE[0]
    echo("-- The first query again, written differently: answered from each site's cache, "
         "so repeating it spends nothing and averages nothing away\n")
    show(conn.cursor().execute(sql.lower().replace("group by all", "group by 1, 2")))
    title, sql = REFUSED
    echo(f"-- {title}\n{sql}\n")
    try:
        conn.cursor().execute(sql)
    except PolicyViolation as err:
        echo(f"   refused: {err}\n")
    echo("-- The privacy budget left at each site (fq_budget(); \\budget in the shell)\n")
    for entry in conn.cursor().fq_budget():
        left = entry.get("epsilon_remaining")
        echo(f"   {entry['site']}: ε {entry.get('epsilon_spent', 0):.3g} spent of "
             f"{entry.get('epsilon_budget')}, {'unlimited' if left is None else f'{left:.3g}'}"
             " left")
    echo("")
