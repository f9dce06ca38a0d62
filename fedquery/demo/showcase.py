"""The demo federation: synthetic hospitals on disk and the showcase queries."""

from __future__ import annotations

from pathlib import Path

from fedquery.demo.generate import site_names, write_federation

TABLES = ("patients", "diagnoses", "labs", "treatments", "outcomes")

SHOWCASE = (
    ("Patients per hospital region and sex",
     "SELECT region, sex, COUNT(*) AS patients FROM patients GROUP BY ALL "
     "ORDER BY region, sex LIMIT 8"),
    ("Mean HbA1c (mmol/mol) by age band among patients with type 2 diabetes",
     "SELECT CASE WHEN p.age < 40 THEN '18-39' WHEN p.age < 65 THEN '40-64' "
     "ELSE '65+' END AS age_band, COUNT(DISTINCT p.patient_id) AS patients, "
     "ROUND(AVG(l.value), 1) AS mean_hba1c, ROUND(STDDEV_SAMP(l.value), 1) AS sd "
     "FROM patients p JOIN labs l ON l.patient_id = p.patient_id "
     "WHERE l.test_name = 'HbA1c' AND p.age >= 18 AND p.patient_id IN "
     "(SELECT patient_id FROM diagnoses WHERE icd10_code LIKE 'E11%') "
     "GROUP BY age_band ORDER BY age_band"),
    ("Mortality (%) by ICD-10 chapter, the five highest",
     "SELECT d.icd10_chapter, COUNT(DISTINCT d.patient_id) AS patients, "
     "ROUND(100.0 * COUNT(DISTINCT d.patient_id) FILTER (WHERE o.death = 1) "
     "/ COUNT(DISTINCT d.patient_id), 1) AS mortality_pct "
     "FROM diagnoses d JOIN outcomes o USING (patient_id) "
     "GROUP BY 1 ORDER BY mortality_pct DESC, 1 LIMIT 5"),
    ("Smoking and BMI",
     "SELECT smoker, COUNT(*) AS patients, ROUND(AVG(bmi), 2) AS mean_bmi, "
     "COUNT(*) FILTER (WHERE bmi >= 30) AS obese FROM patients GROUP BY smoker "
     "ORDER BY smoker NULLS LAST"),
)


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
