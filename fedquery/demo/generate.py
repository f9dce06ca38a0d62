"""Deterministic synthetic hospitals: five patient-level tables per site, written to DuckDB.

Each site gets ``patients``, ``diagnoses``, ``labs``, ``treatments`` and ``outcomes`` (see
``TABLE_SCHEMAS``).  Sites differ in size, age mix, case mix and the regions they serve: site
index 0, 1, 2, 3 are a university hospital (older, complex patients), a regional general
hospital, a young-family hospital with a paediatric and maternity department, and a community
hospital with an elderly population; further sites cycle through these profiles with their own
regions and random stream.

Generation is vectorised numpy + pyarrow and deterministic: the same ``(site, n_patients, seed,
site_index)`` gives equal tables.  numpy's generator is right here because this is synthetic
data, not privacy noise (all noise lives in ``fedquery.protect``).  Ages and follow-up are
measured at the reference date 2026-01-01; event dates lie in 2015-01-01 .. 2025-12-31.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fedquery.demo.codelists import (
    ATC_COMMON_CODES,
    ATC_LEVEL1,
    ICD10_CHAPTERS,
    ICD10_COMMON_CODES,
    LAB_TESTS,
    REGIONS,
    SEX,
    SMOKER,
)

TABLE_SCHEMAS: dict[str, pa.Schema] = {
    "patients": pa.schema([
        ("patient_id", pa.string()), ("sex", pa.string()), ("birth_year", pa.int32()),
        ("age", pa.int32()), ("region", pa.string()), ("bmi", pa.float64()),
        ("smoker", pa.string()), ("postcode", pa.string()),
    ]),
    "diagnoses": pa.schema([
        ("patient_id", pa.string()), ("icd10_code", pa.string()),
        ("icd10_chapter", pa.string()), ("diagnosis_date", pa.date32()),
    ]),
    "labs": pa.schema([
        ("patient_id", pa.string()), ("test_name", pa.string()), ("value", pa.float64()),
        ("unit", pa.string()), ("lab_date", pa.date32()),
    ]),
    "treatments": pa.schema([
        ("patient_id", pa.string()), ("atc_code", pa.string()), ("atc_group", pa.string()),
        ("start_date", pa.date32()), ("end_date", pa.date32()),
    ]),
    "outcomes": pa.schema([
        ("patient_id", pa.string()), ("followup_days", pa.int32()), ("death", pa.int32()),
    ]),
}

REFERENCE_YEAR = 2026  # ages and follow-up are measured at REFERENCE_YEAR-01-01

_EPOCH = dt.date(1970, 1, 1)
_FIRST_DAY = (dt.date(2015, 1, 1) - _EPOCH).days
_LAST_DAY = (dt.date(2025, 12, 31) - _EPOCH).days
_REFERENCE_DAY = (dt.date(REFERENCE_YEAR, 1, 1) - _EPOCH).days
_MAX_AGE = 105
_SITE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

_REGIONS_PER_SITE = 4
_REGION_STEP = 3  # neighbouring sites share one region
_REGION_WEIGHTS = (0.40, 0.25, 0.20, 0.15)
_POSTCODES_PER_REGION = 750  # 4-digit postcodes 1000..9999, a block per region


class SiteProfile(NamedTuple):
    """The shape of one kind of hospital."""

    kind: str
    child_share: float          # share of patients aged 0-17
    adult_age_mean: float       # adults' age ~ Normal(mean, sd), clipped to 18..105
    adult_age_sd: float
    female_share: float
    morbidity: float            # multiplier on diagnoses and treatments per patient
    chapter_factors: dict[str, float]  # case mix relative to the base chapter weights


PROFILES: tuple[SiteProfile, ...] = (
    SiteProfile("university", 0.05, 63.0, 15.0, 0.48, 1.25,
                {"II": 2.2, "III": 1.5, "VI": 1.4, "IX": 1.3, "XVII": 1.5, "XXI": 1.3}),
    SiteProfile("regional", 0.12, 52.0, 18.0, 0.51, 1.0,
                {"XIX": 1.5, "XIII": 1.2, "XI": 1.2}),
    SiteProfile("young_family", 0.42, 33.0, 11.0, 0.55, 0.85,
                {"XV": 4.0, "XVI": 6.0, "XVII": 3.0, "X": 1.5, "I": 1.5, "II": 0.5,
                 "IX": 0.5}),
    SiteProfile("community_elderly", 0.06, 70.0, 13.0, 0.56, 1.1,
                {"IX": 1.4, "IV": 1.3, "XIII": 1.3, "XIV": 1.2, "XV": 0.3}),
)

_CHAPTERS = tuple(chapter.numeral for chapter in ICD10_CHAPTERS)
_BASE_CHAPTER_WEIGHTS = {
    "I": 4, "II": 6, "III": 2, "IV": 9, "V": 6, "VI": 4, "VII": 3, "VIII": 2, "IX": 14, "X": 9,
    "XI": 8, "XII": 4, "XIII": 9, "XIV": 5, "XV": 2, "XVI": 0.5, "XVII": 0.5, "XVIII": 6,
    "XIX": 6, "XX": 1, "XXI": 4, "XXII": 1,
}
_AGE_GROUP_BOUNDS = (18, 65)  # children, adults, elderly
_AGE_GROUP_CHAPTER_FACTORS: tuple[dict[str, float], ...] = (
    {"I": 2.0, "II": 0.1, "IV": 0.4, "V": 0.8, "VII": 0.5, "VIII": 2.5, "IX": 0.1, "X": 2.5,
     "XIII": 0.3, "XIV": 0.3, "XV": 0.3, "XVI": 8.0, "XVII": 5.0, "XIX": 1.5},
    {},
    {"II": 1.8, "IV": 1.3, "V": 0.8, "VII": 1.5, "IX": 1.8, "XIII": 1.4, "XIV": 1.5, "XV": 0.0,
     "XVI": 0.0, "XVII": 0.2},
)
_PREGNANCY, _PERINATAL = _CHAPTERS.index("XV"), _CHAPTERS.index("XVI")
_SYMPTOMS, _HEALTH_CONTACT = _CHAPTERS.index("XVIII"), _CHAPTERS.index("XXI")

_ICD_CODES = tuple(code for numeral in _CHAPTERS for code in ICD10_COMMON_CODES[numeral])
_ICD_OFFSETS = np.cumsum([0] + [len(ICD10_COMMON_CODES[c]) for c in _CHAPTERS[:-1]])

_ATC_GROUPS = tuple(group.letter for group in ATC_LEVEL1)
_ATC_CODES = tuple(code for letter in _ATC_GROUPS for code in ATC_COMMON_CODES[letter])
_ATC_OFFSETS = np.cumsum([0] + [len(ATC_COMMON_CODES[g]) for g in _ATC_GROUPS[:-1]])
_ATC_WEIGHTS = {"A": 14, "B": 10, "C": 18, "D": 5, "G": 5, "H": 5, "J": 14, "L": 4, "M": 8,
                "N": 16, "P": 1, "R": 8, "S": 3, "V": 1}
_CHAPTER_ATC = {  # the drug group typically prescribed for a diagnosis in the chapter
    "I": "J", "II": "L", "III": "B", "IV": "A", "V": "N", "VI": "N", "VII": "S", "VIII": "S",
    "IX": "C", "X": "R", "XI": "A", "XII": "D", "XIII": "M", "XIV": "G", "XV": "G", "XVI": "J",
    "XVII": "C", "XVIII": "N", "XIX": "N", "XX": "N", "XXI": "J", "XXII": "J",
}
_CHAPTER_ATC_INDEX = np.array([_ATC_GROUPS.index(_CHAPTER_ATC[c]) for c in _CHAPTERS])
_LINKED_TREATMENT_SHARE = 0.6
_ONGOING_TREATMENT_SHARE = 0.30
_MEAN_TREATMENT_DAYS = 120.0

_LAB_NAMES = tuple(LAB_TESTS)
_LAB_WEIGHTS = (  # per test, in LAB_TESTS order: without / with diabetes
    (0.06, 0.10, 0.08, 0.18, 0.16, 0.16, 0.16, 0.10),
    (0.25, 0.10, 0.06, 0.12, 0.10, 0.08, 0.09, 0.20),
)
_LAB_DECIMALS = {"HbA1c": 0, "LDL": 1, "HDL": 2, "creatinine": 0, "eGFR": 0, "CRP": 1,
                 "haemoglobin": 0, "glucose": 1}

_NULL_SHARE = {"bmi": 0.03, "smoker": 0.02, "lab_value": 0.01}


class _Cohort(NamedTuple):
    """Per-patient attributes, as arrays of length n_patients."""

    female: np.ndarray
    age: np.ndarray
    birth_day: np.ndarray   # days since 1970-01-01 of 1 January of the birth year
    region: np.ndarray      # index into REGIONS
    postcode: np.ndarray
    bmi: np.ndarray
    smoker: np.ndarray      # index into SMOKER


class _Diagnoses(NamedTuple):
    """Diagnosis rows, sorted by patient then date."""

    patient: np.ndarray
    chapter: np.ndarray     # index into ICD10_CHAPTERS
    code: np.ndarray        # index into _ICD_CODES
    day: np.ndarray


class _Flags(NamedTuple):
    """Per-patient conditions derived from the diagnoses, driving labs and outcomes."""

    diabetes: np.ndarray
    kidney_disease: np.ndarray
    anaemia: np.ndarray
    inflammation: np.ndarray
    neoplasm: np.ndarray
    circulatory: np.ndarray


class _LabRows(NamedTuple):
    """What a lab value depends on, per lab row."""

    age: np.ndarray
    female: np.ndarray
    diabetes: np.ndarray
    kidney_disease: np.ndarray
    anaemia: np.ndarray
    inflammation: np.ndarray


# ---------------------------------------------------------------------------- sites

def site_names(n_sites: int) -> tuple[str, ...]:
    """Names of the first ``n_sites`` demo sites: hospital_a … hospital_z, hospital_aa, …"""
    if n_sites < 0:
        raise ValueError("n_sites must be >= 0")
    return tuple(f"hospital_{_letters(i)}" for i in range(n_sites))


def _letters(index: int) -> str:
    """0 → 'a', 25 → 'z', 26 → 'aa' (bijective base 26)."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return letters


SITE_NAMES: tuple[str, ...] = site_names(3)  # the default demo federation


def site_regions(site_index: int) -> tuple[str, ...]:
    """The regions served by the site at ``site_index``; each occurs at that site only."""
    return tuple(REGIONS[i] for i in _site_region_indices(site_index))


def _site_region_indices(site_index: int) -> np.ndarray:
    start = _REGION_STEP * site_index
    return (start + np.arange(_REGIONS_PER_SITE)) % len(REGIONS)


def site_profile(site_index: int) -> SiteProfile:
    """The hospital profile of the site at ``site_index`` (profiles cycle)."""
    return PROFILES[site_index % len(PROFILES)]


# ---------------------------------------------------------------------------- public API

def generate_site_tables(site: str, n_patients: int, *, seed: int = 42,
                         site_index: int = 0) -> dict[str, pa.Table]:
    """The five tables of one synthetic site, keyed by table name (see ``TABLE_SCHEMAS``).

    ``patient_id`` is ``"<site>:P<7-digit number>"``, so ids never collide across sites.
    """
    if not _SITE_NAME.match(site):
        raise ValueError(f"site name {site!r} must be a letter followed by letters, digits, _")
    if n_patients < 0 or site_index < 0 or seed < 0:
        raise ValueError("n_patients, site_index and seed must be >= 0")
    rng = np.random.default_rng([seed, site_index])
    profile = site_profile(site_index)
    cohort = _draw_cohort(rng, n_patients, profile, _site_region_indices(site_index))
    diagnoses = _draw_diagnoses(rng, cohort, profile)
    flags = _diagnosis_flags(n_patients, diagnoses)
    ids = _patient_ids(site, n_patients)
    return {
        "patients": _patients_table(rng, ids, cohort),
        "diagnoses": _diagnoses_table(ids, diagnoses),
        "labs": _labs_table(rng, ids, cohort, flags),
        "treatments": _treatments_table(rng, ids, cohort, diagnoses, profile),
        "outcomes": _outcomes_table(rng, ids, cohort, flags),
    }


def generate_federation_tables(n_sites: int = 3, patients_per_site: int | Sequence[int] = 1000,
                               *, seed: int = 42) -> dict[str, dict[str, pa.Table]]:
    """``{site: {table: Table}}`` for ``n_sites`` sites.

    ``patients_per_site`` is one size for every site or one size per site.
    """
    sizes = _site_sizes(n_sites, patients_per_site)
    return {site: generate_site_tables(site, size, seed=seed, site_index=index)
            for index, (site, size) in enumerate(zip(site_names(n_sites), sizes))}


def write_site_duckdb(path: str | os.PathLike[str], tables: dict[str, pa.Table]) -> None:
    """Write ``tables`` into a new DuckDB file at ``path``, atomically replacing any old file.

    The database is built in a temporary directory next to ``path`` and moved into place with
    ``os.replace`` only once complete, so readers see either the old file or the new one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    for name in tables:
        if not _TABLE_NAME.match(name):
            raise ValueError(f"invalid table name {name!r}")
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as scratch:
        staged = Path(scratch) / target.name
        connection = duckdb.connect(str(staged))
        try:
            for name, table in tables.items():
                connection.register("__fedquery_source", table)
                connection.execute(f'CREATE TABLE "{name}" AS SELECT * FROM __fedquery_source')
                connection.unregister("__fedquery_source")
            connection.execute("CHECKPOINT")
        finally:
            connection.close()
        os.replace(staged, target)


def write_federation(directory: str | os.PathLike[str], n_sites: int = 3,
                     patients_per_site: int | Sequence[int] = 100_000, *,
                     seed: int = 42) -> dict[str, Path]:
    """Write ``directory/data/<site>.duckdb`` for each site; returns ``{site: path}``.

    Sites are generated and written one at a time, so memory holds one site's tables.
    """
    sizes = _site_sizes(n_sites, patients_per_site)
    data_dir = Path(directory) / "data"
    paths: dict[str, Path] = {}
    for index, (site, size) in enumerate(zip(site_names(n_sites), sizes)):
        paths[site] = data_dir / f"{site}.duckdb"
        write_site_duckdb(paths[site],
                          generate_site_tables(site, size, seed=seed, site_index=index))
    return paths


def _site_sizes(n_sites: int, patients_per_site: int | Sequence[int]) -> tuple[int, ...]:
    """One patient count per site."""
    if isinstance(patients_per_site, int):
        return (patients_per_site,) * n_sites
    sizes = tuple(patients_per_site)
    if len(sizes) != n_sites:
        raise ValueError(f"patients_per_site has {len(sizes)} sizes for {n_sites} sites")
    return sizes


# ---------------------------------------------------------------------------- sampling helpers

def _draw_categorical(rng: np.random.Generator, group: np.ndarray,
                      weights: Sequence[Sequence[float]]) -> np.ndarray:
    """For each row, an index drawn from ``weights[group[row]]`` (inverse-CDF, vectorised)."""
    u = rng.random(group.size)
    drawn = np.zeros(group.size, dtype=np.int64)
    for g, w in enumerate(weights):
        rows = group == g
        cdf = np.cumsum(w, dtype=np.float64)
        index = np.searchsorted(cdf / cdf[-1], u[rows], side="right")
        drawn[rows] = np.minimum(index, len(w) - 1)  # guards u ≈ 1 against rounding
    return drawn


def _rows_per_patient(rng: np.random.Generator, mean_rows: np.ndarray,
                      max_rows: int) -> np.ndarray:
    """Patient index of each row, with Poisson(mean_rows) rows per patient capped at max_rows."""
    counts = np.minimum(rng.poisson(mean_rows), max_rows)
    return np.repeat(np.arange(mean_rows.size), counts)


def _uniform_days(rng: np.random.Generator, first: np.ndarray, last: int) -> np.ndarray:
    """A uniformly drawn day in ``first .. last`` (inclusive) per row."""
    return first + np.floor(rng.random(first.size) * (last - first + 1)).astype(np.int64)


def _earliest_day(cohort: _Cohort, patient: np.ndarray) -> np.ndarray:
    """The first possible event day of each row's patient: 2015-01-01 or birth, if later."""
    return np.maximum(_FIRST_DAY, cohort.birth_day[patient])


def _age_group(age: np.ndarray) -> np.ndarray:
    """0 for children, 1 for adults, 2 for the elderly."""
    return np.digitize(age, _AGE_GROUP_BOUNDS)


# ---------------------------------------------------------------------------- patients

def _draw_cohort(rng: np.random.Generator, n: int, profile: SiteProfile,
                 regions: np.ndarray) -> _Cohort:
    """Demographics, region and risk factors of ``n`` patients."""
    child = rng.random(n) < profile.child_share
    adult_age = np.rint(rng.normal(profile.adult_age_mean, profile.adult_age_sd, n))
    age = np.where(child, rng.integers(0, 18, n), np.clip(adult_age, 18, _MAX_AGE))
    age = age.astype(np.int64)
    female = rng.random(n) < profile.female_share
    birth_day = (_birth_year(age) - 1970).astype("datetime64[Y]").astype("datetime64[D]")
    region = regions[_draw_categorical(rng, np.zeros(n, np.int64), [_REGION_WEIGHTS])]
    postcode = 1000 + region * _POSTCODES_PER_REGION + rng.integers(0, _POSTCODES_PER_REGION, n)
    return _Cohort(female, age, birth_day.astype(np.int64), region, postcode,
                   _draw_bmi(rng, age), _draw_smoking(rng, age))


def _birth_year(age: np.ndarray) -> np.ndarray:
    """The birth year of someone aged ``age`` on 1 January of REFERENCE_YEAR."""
    return REFERENCE_YEAR - 1 - age


def _draw_bmi(rng: np.random.Generator, age: np.ndarray) -> np.ndarray:
    """Right-skewed BMI by age, in 15..60, one decimal."""
    child = age < 18
    mean = np.where(child, 15.5 + 0.45 * age, 24.5 + 0.06 * np.minimum(age - 18, 50))
    spread = np.where(child, 2.5, 4.8) / mean
    bmi = mean * np.exp(spread * rng.standard_normal(age.size) - spread**2 / 2)
    return np.round(np.clip(bmi, 15.0, 60.0), 1)


def _draw_smoking(rng: np.random.Generator, age: np.ndarray) -> np.ndarray:
    """Smoking status index into SMOKER: young children never smoke, teenagers rarely."""
    weights = ((1.0, 0.0, 0.0), (0.90, 0.02, 0.08), (0.52, 0.28, 0.20))
    return _draw_categorical(rng, np.digitize(age, (12, 18)), weights)


def _patient_ids(site: str, n: int) -> pa.Array:
    """``<site>:P0000001`` … as a string array."""
    numbers = pc.cast(pa.array(np.arange(1, n + 1)), pa.string())
    return pc.binary_join_element_wise(f"{site}:P", pc.utf8_lpad(numbers, 7, "0"), "")


def _patients_table(rng: np.random.Generator, ids: pa.Array, cohort: _Cohort) -> pa.Table:
    """The ``patients`` table, with NULLs in bmi and smoker."""
    n = len(ids)
    bmi_null = rng.random(n) < _NULL_SHARE["bmi"]
    smoker_null = rng.random(n) < _NULL_SHARE["smoker"]
    return pa.Table.from_arrays([
        ids,
        _strings(SEX, np.where(cohort.female, 0, 1)),
        _int32(_birth_year(cohort.age)),
        _int32(cohort.age),
        _strings(REGIONS, cohort.region),
        pa.array(cohort.bmi, pa.float64(), mask=bmi_null),
        _strings(SMOKER, cohort.smoker, smoker_null),
        pc.cast(pa.array(cohort.postcode), pa.string()),
    ], schema=TABLE_SCHEMAS["patients"])


# ---------------------------------------------------------------------------- diagnoses

def _draw_diagnoses(rng: np.random.Generator, cohort: _Cohort,
                    profile: SiteProfile) -> _Diagnoses:
    """0-8 diagnoses per patient (more when older), case mix by profile and age group."""
    patient = _rows_per_patient(rng, profile.morbidity * (0.8 + 0.045 * cohort.age), 8)
    chapter = _draw_categorical(rng, _age_group(cohort.age[patient]),
                                _chapter_weights(profile))
    day = _uniform_days(rng, _earliest_day(cohort, patient), _LAST_DAY)
    chapter, day = _enforce_life_stage(rng, chapter, day, cohort, patient)
    code = _draw_categorical(rng, chapter, [_zipf(len(ICD10_COMMON_CODES[c])) for c in _CHAPTERS])
    order = np.lexsort((day, patient))
    return _Diagnoses(patient[order], chapter[order], (_ICD_OFFSETS[chapter] + code)[order],
                      day[order])


def _chapter_weights(profile: SiteProfile) -> list[list[float]]:
    """Chapter weights per age group: base × site case mix × age-group factor."""
    return [[_BASE_CHAPTER_WEIGHTS[c] * profile.chapter_factors.get(c, 1.0)
             * factors.get(c, 1.0) for c in _CHAPTERS]
            for factors in _AGE_GROUP_CHAPTER_FACTORS]


def _zipf(n: int) -> np.ndarray:
    """Weights favouring the first items of a most-frequent-first list."""
    return 1.0 / np.arange(1, n + 1) ** 0.8


def _enforce_life_stage(rng: np.random.Generator, chapter: np.ndarray, day: np.ndarray,
                        cohort: _Cohort, patient: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pregnancy codes only for women aged 15-50; perinatal codes only within 4 weeks of birth.

    Impossible pregnancy rows become chapter XXI, perinatal rows of patients born before 2015
    become chapter XVIII.
    """
    birth = cohort.birth_day[patient]
    age_at_event = (day - birth) / 365.25
    fertile = cohort.female[patient] & (age_at_event >= 15) & (age_at_event <= 50)
    chapter = np.where((chapter == _PREGNANCY) & ~fertile, _HEALTH_CONTACT, chapter)
    perinatal = chapter == _PERINATAL
    chapter = np.where(perinatal & (birth < _FIRST_DAY), _SYMPTOMS, chapter)
    newborn_day = birth + rng.integers(0, 29, day.size)
    day = np.where(chapter == _PERINATAL, newborn_day, day)
    return chapter, day


def _diagnosis_flags(n: int, diagnoses: _Diagnoses) -> _Flags:
    """Which patients have diabetes, CKD, anaemia, infections/respiratory disease, cancer, CVD."""
    code_prefix = np.array([code[:3] for code in _ICD_CODES])[diagnoses.code]
    chapter = np.array(_CHAPTERS)[diagnoses.chapter]

    def patients_with(rows: np.ndarray) -> np.ndarray:
        flag = np.zeros(n, dtype=bool)
        flag[diagnoses.patient[rows]] = True
        return flag

    return _Flags(
        diabetes=patients_with(np.isin(code_prefix, ("E10", "E11"))),
        kidney_disease=patients_with(code_prefix == "N18"),
        anaemia=patients_with(chapter == "III"),
        inflammation=patients_with(np.isin(chapter, ("I", "X", "XXII"))),
        neoplasm=patients_with(chapter == "II"),
        circulatory=patients_with(chapter == "IX"),
    )


def _diagnoses_table(ids: pa.Array, diagnoses: _Diagnoses) -> pa.Table:
    """The ``diagnoses`` table."""
    return pa.Table.from_arrays([
        ids.take(pa.array(diagnoses.patient)),
        _strings(_ICD_CODES, diagnoses.code),
        _strings(_CHAPTERS, diagnoses.chapter),
        _dates(diagnoses.day),
    ], schema=TABLE_SCHEMAS["diagnoses"])


# ---------------------------------------------------------------------------- labs

def _labs_table(rng: np.random.Generator, ids: pa.Array, cohort: _Cohort,
                flags: _Flags) -> pa.Table:
    """0-12 lab results per patient, values depending on age, sex and diagnoses."""
    patient = _rows_per_patient(rng, 4.0 * (0.55 + 0.009 * cohort.age), 12)
    test = _draw_categorical(rng, flags.diabetes[patient].astype(np.int64), _LAB_WEIGHTS)
    rows = _LabRows(cohort.age[patient], cohort.female[patient], flags.diabetes[patient],
                    flags.kidney_disease[patient], flags.anaemia[patient],
                    flags.inflammation[patient])
    value = _lab_values(test, rng.standard_normal(patient.size), rows)
    value_null = rng.random(patient.size) < _NULL_SHARE["lab_value"]
    day = _uniform_days(rng, _earliest_day(cohort, patient), _LAST_DAY)
    order = np.lexsort((day, patient))
    units = tuple(LAB_TESTS[name].unit for name in _LAB_NAMES)
    return pa.Table.from_arrays([
        ids.take(pa.array(patient[order])),
        _strings(_LAB_NAMES, test[order]),
        pa.array(value[order], pa.float64(), mask=value_null[order]),
        _strings(units, test[order]),
        _dates(day[order]),
    ], schema=TABLE_SCHEMAS["labs"])


def _lab_values(test: np.ndarray, z: np.ndarray, rows: _LabRows) -> np.ndarray:
    """Each row's value of its test from a standard normal draw ``z``, clipped and rounded."""
    value = np.empty(test.size)
    for index, name in enumerate(_LAB_NAMES):
        selected = test == index
        subset = _LabRows(*(column[selected] for column in rows))
        spec = LAB_TESTS[name]
        raw = _LAB_MODELS[name](z[selected], subset)
        value[selected] = np.round(np.clip(raw, spec.low, spec.high), _LAB_DECIMALS[name])
    return value


def _creatinine(z: np.ndarray, r: _LabRows) -> np.ndarray:
    """Lognormal around a sex- and age-dependent level; children lower, CKD much higher."""
    base = np.where(r.female, 68.0, 84.0) * (1 + 0.006 * np.maximum(r.age - 40, 0))
    base = np.where(r.age < 13, 45.0, base) * np.where(r.kidney_disease, 2.4, 1.0)
    return base * np.exp(0.18 * z)


def _egfr(z: np.ndarray, r: _LabRows) -> np.ndarray:
    """Falling with age after 20; around 38 with chronic kidney disease."""
    base = np.maximum(118.0 - 0.85 * np.maximum(r.age - 20, 0), 15.0)
    return np.where(r.kidney_disease, 38.0, base) + 12.0 * z


def _haemoglobin(z: np.ndarray, r: _LabRows) -> np.ndarray:
    """Lower in children and women; 28 g/L lower with a blood disorder (chapter III)."""
    base = np.where(r.age < 13, 125.0, np.where(r.female, 136.0, 150.0))
    return base - np.where(r.anaemia, 28.0, 0.0) + 11.0 * z


#: Per test: (standard normal draws, the rows' context) → raw values, before clipping/rounding.
_LAB_MODELS: dict[str, Callable[[np.ndarray, _LabRows], np.ndarray]] = {
    "HbA1c": lambda z, r: np.where(r.diabetes, 60.0 + 14.0 * z, 36.0 + 4.5 * z),
    "LDL": lambda z, r: np.where(r.diabetes, 2.5, 3.1) + 0.005 * (r.age - 50) + 0.85 * z,
    "HDL": lambda z, r: np.where(r.female, 1.6, 1.3) - np.where(r.diabetes, 0.2, 0.0) + 0.35 * z,
    "creatinine": _creatinine,
    "eGFR": _egfr,
    "CRP": lambda z, r: np.exp(np.log(np.where(r.inflammation, 12.0, 2.0)) + 1.1 * z),
    "haemoglobin": _haemoglobin,
    "glucose": lambda z, r: np.where(r.diabetes, 9.0 + 2.8 * z, 5.3 + 0.6 * z),
}


# ---------------------------------------------------------------------------- treatments

def _treatments_table(rng: np.random.Generator, ids: pa.Array, cohort: _Cohort,
                      diagnoses: _Diagnoses, profile: SiteProfile) -> pa.Table:
    """0-6 treatments per patient; most follow one of the patient's diagnoses."""
    patient = _rows_per_patient(rng, profile.morbidity * (0.45 + 0.03 * cohort.age), 6)
    linked, dx_row = _link_to_diagnoses(rng, patient, diagnoses, cohort.age.size)
    group = _draw_categorical(rng, np.zeros(patient.size, np.int64),
                              [[_ATC_WEIGHTS[g] for g in _ATC_GROUPS]])
    group[linked] = _CHAPTER_ATC_INDEX[diagnoses.chapter[dx_row]]
    code = _draw_categorical(rng, group, [_zipf(len(ATC_COMMON_CODES[g])) for g in _ATC_GROUPS])
    first = _earliest_day(cohort, patient)
    first[linked] = diagnoses.day[dx_row]
    start = _uniform_days(rng, first, _LAST_DAY)
    duration = 1 + np.floor(rng.exponential(_MEAN_TREATMENT_DAYS, patient.size))
    end = np.minimum(start + duration.astype(np.int64), _LAST_DAY)
    ongoing = rng.random(patient.size) < _ONGOING_TREATMENT_SHARE
    order = np.lexsort((start, patient))
    return pa.Table.from_arrays([
        ids.take(pa.array(patient[order])),
        _strings(_ATC_CODES, (_ATC_OFFSETS[group] + code)[order]),
        _strings(_ATC_GROUPS, group[order]),
        _dates(start[order]),
        _dates(end[order], ongoing[order]),
    ], schema=TABLE_SCHEMAS["treatments"])


def _link_to_diagnoses(rng: np.random.Generator, patient: np.ndarray, diagnoses: _Diagnoses,
                       n_patients: int) -> tuple[np.ndarray, np.ndarray]:
    """Which treatment rows treat one of their patient's diagnoses, and that diagnosis's row.

    Returns a boolean mask over the treatment rows and the diagnosis row of each linked one.
    """
    per_patient = np.bincount(diagnoses.patient, minlength=n_patients)
    dx_count = per_patient[patient]
    dx_first = (np.cumsum(per_patient) - per_patient)[patient]  # rows are sorted by patient
    linked = (rng.random(patient.size) < _LINKED_TREATMENT_SHARE) & (dx_count > 0)
    pick = np.floor(rng.random(patient.size) * dx_count).astype(np.int64)
    return linked, (dx_first + pick)[linked]


# ---------------------------------------------------------------------------- outcomes

def _outcomes_table(rng: np.random.Generator, ids: pa.Array, cohort: _Cohort,
                    flags: _Flags) -> pa.Table:
    """One row per patient: follow-up (1..3650 days, at most since birth) and death."""
    n = cohort.age.size
    logit = (-7.5 + 0.07 * cohort.age + 1.0 * flags.neoplasm + 0.5 * flags.circulatory
             + 0.3 * flags.inflammation)
    death = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    followup = np.where(death, rng.integers(1, 1826, n), rng.integers(30, 3651, n))
    followup = np.minimum(followup, _REFERENCE_DAY - cohort.birth_day)
    return pa.Table.from_arrays([ids, _int32(followup), _int32(death)],
                                schema=TABLE_SCHEMAS["outcomes"])


# ---------------------------------------------------------------------------- arrow columns

def _strings(values: Sequence[str], index: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    """``values[index]`` as a string array, NULL where ``null`` is true."""
    return pa.array(values, pa.string()).take(pa.array(index, pa.int64(), mask=null))


def _int32(values: np.ndarray) -> pa.Array:
    """An int32 array (the SQL INTEGER type)."""
    return pa.array(values.astype(np.int32), pa.int32())


def _dates(days: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    """Days since 1970-01-01 as a date32 array, NULL where ``null`` is true."""
    return pa.array(days.astype(np.int32), pa.date32(), mask=null)
