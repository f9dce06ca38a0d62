"""Golden planner fixtures: input SQL → expected site fragment, combine and post-processing.

Each ``fixtures/<rule>.sql`` file holds cases separated by ``-- name:`` lines; within a case,
``-- fragment:``, ``-- combine:`` and ``-- post:`` introduce the expected SQL.  Regenerate after
an intended planner change with ``FEDQUERY_UPDATE_GOLDEN=1 pytest tests/plan`` and review the
diff.
"""

from __future__ import annotations

import re

import pytest
from dataclasses import dataclass
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
SECTIONS = ("fragment", "combine", "post")

SCHEMA = {
    "patients": {"patient_id": "VARCHAR", "sex": "VARCHAR", "birth_year": "INTEGER",
                 "age": "INTEGER", "region": "VARCHAR", "bmi": "DOUBLE", "smoker": "VARCHAR",
                 "postcode": "VARCHAR"},
    "diagnoses": {"patient_id": "VARCHAR", "icd10_code": "VARCHAR",
                  "icd10_chapter": "VARCHAR", "diagnosis_date": "DATE"},
    "labs": {"patient_id": "VARCHAR", "test_name": "VARCHAR", "value": "DOUBLE",
             "unit": "VARCHAR", "lab_date": "DATE"},
}
UNITS = {t: "patient_id" for t in SCHEMA}


@dataclass
class Case:
    file: Path
    name: str
    sql: str
    expected: dict[str, str]


def load_cases() -> list[Case]:
    cases = []
    for path in sorted(FIXTURES.glob("*.sql")):
        for block in re.split(r"^-- name: ", path.read_text(), flags=re.M)[1:]:
            name, _, body = block.partition("\n")
            parts = re.split(r"^-- (fragment|combine|post):\s*$", body, flags=re.M)
            expected = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
            cases.append(Case(path, name.strip(), parts[0].strip(), expected))
    return cases


def render(case_name: str, sql: str, plan) -> str:
    return (f"-- name: {case_name}\n{sql}\n-- fragment:\n{plan.fragment.sql}\n"
            f"-- combine:\n{plan.combine_sql}\n-- post:\n{plan.post_sql}\n")


def pytest_generate_tests(metafunc):
    if "golden_case" in metafunc.fixturenames:
        cases = load_cases()
        metafunc.parametrize("golden_case", cases,
                             ids=[f"{c.file.stem}:{c.name}" for c in cases])


class _Golden:
    SCHEMA = SCHEMA
    UNITS = UNITS
    SECTIONS = SECTIONS
    load_cases = staticmethod(load_cases)
    render = staticmethod(render)



@pytest.fixture
def golden():
    return _Golden
