"""The demo federation: synthetic hospitals on disk and the showcase queries."""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

from fedquery.demo.generate import site_names, write_federation

TABLES = ("patients", "diagnoses", "labs", "treatments", "outcomes")

SHOWCASE = (
    ("Patients per region and sex",
     "SELECT region, sex, COUNT(*) AS patients FROM patients GROUP BY ALL "
     "ORDER BY region, sex LIMIT 8"),
    ("Mean BMI by age band among adults with type 2 diabetes",
     "SELECT CASE WHEN age < 40 THEN '18-39' WHEN age < 65 THEN '40-64' ELSE '65+' END "
     "AS age_band, COUNT(*) AS patients, AVG(bmi) AS mean_bmi FROM patients "
     "WHERE age >= 18 AND patient_id IN "
     "(SELECT patient_id FROM diagnoses WHERE icd10_code LIKE 'E11%') "
     "GROUP BY age_band ORDER BY age_band"),
    ("Mortality (%) by ICD-10 chapter, the five highest",
     "SELECT d.icd10_chapter, COUNT(DISTINCT d.patient_id) AS patients, "
     "100.0 * COUNT(DISTINCT d.patient_id) FILTER (WHERE o.death = 1) "
     "/ COUNT(DISTINCT d.patient_id) AS mortality_pct "
     "FROM diagnoses d JOIN outcomes o USING (patient_id) "
     "GROUP BY 1 ORDER BY mortality_pct DESC, 1 LIMIT 5"),
    ("Smoking and BMI",
     "SELECT smoker, COUNT(*) AS patients, AVG(bmi) AS mean_bmi, "
     "COUNT(*) FILTER (WHERE bmi >= 30) AS obese FROM patients GROUP BY smoker "
     "ORDER BY smoker NULLS LAST"),
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


def demo_engine(paths: dict[str, Path], audit_dir: Path):
    """An in-process engine over the demo hospitals' DuckDB files and policies."""
    from fedquery.engine import Engine
    from fedquery.policy.load import load_policy
    from fedquery.site.adapter import DuckDBAdapter
    from fedquery.site.service import SiteService
    from fedquery.transport.inprocess import InProcessClient

    audit_dir.mkdir(parents=True, exist_ok=True)
    clients = []
    for index, (site, path) in enumerate(paths.items()):
        service = SiteService(site, DuckDBAdapter.from_duckdb_file(path, TABLES),
                              policy=load_policy(demo_policy_path(index)),
                              privacy_units={t: "patient_id" for t in TABLES},
                              audit_path=audit_dir / f"{site}.jsonl")
        clients.append(InProcessClient(service))
    return Engine(clients)


def run_tour(conn, echo, fmt: str = "table") -> None:
    """The guided tour: showcase queries with their reports, then a refused query."""
    from fedquery.cli.output import describe_report, render
    from fedquery.errors import PolicyViolation

    for title, sql in SHOWCASE:
        started = time.perf_counter()
        cursor = conn.cursor().execute(sql)
        elapsed = (time.perf_counter() - started) * 1000
        echo(f"-- {title}\n{sql}\n")
        echo(render(cursor.fetch_arrow_table(), fmt, cursor.fq_report.intervals))
        echo(f"   {describe_report(cursor.fq_report)}; {elapsed:.0f} ms\n")
    title, sql = SHOWCASE[0]
    echo("-- The first query again, written differently: answered from each site's cache, "
         "so repeating it spends nothing and averages nothing away\n")
    cursor = conn.cursor().execute(sql.lower().replace("group by all", "group by 1, 2"))
    echo(render(cursor.fetch_arrow_table(), fmt, cursor.fq_report.intervals))
    echo(f"   {describe_report(cursor.fq_report)}\n")
    title, sql = REFUSED
    echo(f"-- {title}\n{sql}\n")
    try:
        conn.cursor().execute(sql)
    except PolicyViolation as err:
        echo(f"   refused: {err}\n")
