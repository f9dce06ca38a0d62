"""Public code lists shipped with fedquery: the *named domains* a policy may declare.

A column whose policy says ``domain: icd10_chapter`` may be released as a GROUP BY key with
exactly these values (every key is released, empty ones as zero or suppressed), because the
list itself is public knowledge: WHO ICD-10 chapters, the WHO ATC classification (level 1),
the NUTS-2 regions of the Netherlands, common age bands, sex, smoker status and the names of
common laboratory tests.  Releasing a value of a public list discloses nothing about a patient.

Plain tuples and dicts only; no IO.  The synthetic hospitals (``fedquery.demo``) draw their
data from these same lists, so demo policies and demo data agree.
"""

from __future__ import annotations

from typing import NamedTuple


class IcdChapter(NamedTuple):
    """One WHO ICD-10 chapter: roman numeral, title, and inclusive block range ``"A00-B99"``."""

    numeral: str
    title: str
    codes: str


class AtcGroup(NamedTuple):
    """One ATC anatomical main group (level 1): the letter and its WHO name."""

    letter: str
    name: str


class AgeBand(NamedTuple):
    """An age band with inclusive bounds in whole years; ``high`` is None for an open band."""

    label: str
    low: int
    high: int | None


class LabTest(NamedTuple):
    """A laboratory test: its reporting unit and the plausible range (inclusive) of values."""

    unit: str
    low: float
    high: float


#: The 22 chapters of WHO ICD-10 (2019 edition), in order.
ICD10_CHAPTERS: tuple[IcdChapter, ...] = (
    IcdChapter("I", "Certain infectious and parasitic diseases", "A00-B99"),
    IcdChapter("II", "Neoplasms", "C00-D48"),
    IcdChapter("III", "Diseases of the blood and blood-forming organs and certain disorders "
                      "involving the immune mechanism", "D50-D89"),
    IcdChapter("IV", "Endocrine, nutritional and metabolic diseases", "E00-E90"),
    IcdChapter("V", "Mental and behavioural disorders", "F00-F99"),
    IcdChapter("VI", "Diseases of the nervous system", "G00-G99"),
    IcdChapter("VII", "Diseases of the eye and adnexa", "H00-H59"),
    IcdChapter("VIII", "Diseases of the ear and mastoid process", "H60-H95"),
    IcdChapter("IX", "Diseases of the circulatory system", "I00-I99"),
    IcdChapter("X", "Diseases of the respiratory system", "J00-J99"),
    IcdChapter("XI", "Diseases of the digestive system", "K00-K93"),
    IcdChapter("XII", "Diseases of the skin and subcutaneous tissue", "L00-L99"),
    IcdChapter("XIII", "Diseases of the musculoskeletal system and connective tissue", "M00-M99"),
    IcdChapter("XIV", "Diseases of the genitourinary system", "N00-N99"),
    IcdChapter("XV", "Pregnancy, childbirth and the puerperium", "O00-O99"),
    IcdChapter("XVI", "Certain conditions originating in the perinatal period", "P00-P96"),
    IcdChapter("XVII", "Congenital malformations, deformations and chromosomal abnormalities",
               "Q00-Q99"),
    IcdChapter("XVIII", "Symptoms, signs and abnormal clinical and laboratory findings, "
                        "not elsewhere classified", "R00-R99"),
    IcdChapter("XIX", "Injury, poisoning and certain other consequences of external causes",
               "S00-T98"),
    IcdChapter("XX", "External causes of morbidity and mortality", "V01-Y98"),
    IcdChapter("XXI", "Factors influencing health status and contact with health services",
               "Z00-Z99"),
    IcdChapter("XXII", "Codes for special purposes", "U00-U85"),
)

#: The 14 ATC anatomical main groups (level 1), in WHO order.
ATC_LEVEL1: tuple[AtcGroup, ...] = (
    AtcGroup("A", "Alimentary tract and metabolism"),
    AtcGroup("B", "Blood and blood forming organs"),
    AtcGroup("C", "Cardiovascular system"),
    AtcGroup("D", "Dermatologicals"),
    AtcGroup("G", "Genito-urinary system and sex hormones"),
    AtcGroup("H", "Systemic hormonal preparations, excluding sex hormones and insulins"),
    AtcGroup("J", "Antiinfectives for systemic use"),
    AtcGroup("L", "Antineoplastic and immunomodulating agents"),
    AtcGroup("M", "Musculo-skeletal system"),
    AtcGroup("N", "Nervous system"),
    AtcGroup("P", "Antiparasitic products, insecticides and repellents"),
    AtcGroup("R", "Respiratory system"),
    AtcGroup("S", "Sensory organs"),
    AtcGroup("V", "Various"),
)

#: Age bands in whole years at the reference date (2026-01-01).
AGE_BANDS: tuple[AgeBand, ...] = (
    AgeBand("0-17", 0, 17),
    AgeBand("18-39", 18, 39),
    AgeBand("40-64", 40, 64),
    AgeBand("65-79", 65, 79),
    AgeBand("80+", 80, None),
)

SEX: tuple[str, ...] = ("F", "M")
SMOKER: tuple[str, ...] = ("never", "former", "current")

#: The 12 NUTS-2 regions (provinces) of the Netherlands, north to south; each demo site serves
#: four consecutive ones (wrapping around), so neighbouring sites share one region.
REGIONS: tuple[str, ...] = (
    "Groningen", "Friesland", "Drenthe", "Overijssel", "Gelderland", "Flevoland",
    "Utrecht", "Noord-Holland", "Zuid-Holland", "Zeeland", "Noord-Brabant", "Limburg",
)

#: Laboratory tests, their units (µ is U+00B5 MICRO SIGN) and plausible value ranges.
LAB_TESTS: dict[str, LabTest] = {
    "HbA1c": LabTest("mmol/mol", 20.0, 150.0),
    "LDL": LabTest("mmol/L", 0.5, 8.0),
    "HDL": LabTest("mmol/L", 0.3, 3.5),
    "creatinine": LabTest("\u00b5mol/L", 20.0, 1200.0),
    "eGFR": LabTest("mL/min/1.73m2", 3.0, 150.0),
    "CRP": LabTest("mg/L", 0.1, 300.0),
    "haemoglobin": LabTest("g/L", 50.0, 200.0),
    "glucose": LabTest("mmol/L", 2.0, 30.0),
}

#: Public value lists by domain name, for policies that declare ``domain: <name>``.
NAMED_DOMAINS: dict[str, tuple[str, ...]] = {
    "sex": SEX,
    "smoker": SMOKER,
    "age_band": tuple(band.label for band in AGE_BANDS),
    "region": REGIONS,
    "icd10_chapter": tuple(chapter.numeral for chapter in ICD10_CHAPTERS),
    "atc_group": tuple(group.letter for group in ATC_LEVEL1),
    "lab_test": tuple(LAB_TESTS),
}


#: One line per named domain, for stewards (``fedquery policy explain`` and the guide).
DOMAIN_DESCRIPTIONS: dict[str, str] = {
    "sex": "administrative sex: F, M",
    "smoker": "smoking status: never, former, current",
    "age_band": "age bands in whole years: 0-17, 18-39, 40-64, 65-79, 80+",
    "region": "the 12 NUTS-2 regions (provinces) of the Netherlands, e.g. Groningen",
    "icd10_chapter": "the 22 WHO ICD-10 chapters as roman numerals: I .. XXII",
    "atc_group": "the 14 WHO ATC anatomical main groups (level 1): A, B, C, D, G, H, J, L, M, "
                 "N, P, R, S, V",
    "lab_test": "common laboratory tests: " + ", ".join(LAB_TESTS),
}
