"""Golden fixtures per planner rule (see conftest.py for the file format)."""

from __future__ import annotations

import os
from collections import defaultdict

import pytest

from fedquery.plan import plan_query
from fedquery.plan.planner import RULES
from fedquery.sql import analyze


def test_every_rule_has_fixtures(golden):
    cases = golden.load_cases()
    files = {c.file.stem for c in cases}
    expected = {"groups", "decompose", "fragment", "combine"}
    assert expected <= files, f"missing golden files: {expected - files}"
    assert len(RULES) == 8 and len(cases) >= 30


def test_golden(golden, golden_case):
    plan = plan_query(analyze(golden_case.sql, golden.SCHEMA), golden.UNITS)
    actual = {"fragment": plan.fragment.sql, "combine": plan.combine_sql, "post": plan.post_sql}
    for section in golden.SECTIONS:
        assert actual[section] == golden_case.expected.get(section), (
            f"{section} of {golden_case.name} differs:\n"
            f"expected: {golden_case.expected.get(section)}\nactual:   {actual[section]}")


@pytest.mark.skipif(not os.environ.get("FEDQUERY_UPDATE_GOLDEN"), reason="set "
                    "FEDQUERY_UPDATE_GOLDEN=1 to rewrite the golden files from the planner")
def test_update_golden_files(golden):
    by_file = defaultdict(list)
    for case in golden.load_cases():
        plan = plan_query(analyze(case.sql, golden.SCHEMA), golden.UNITS)
        by_file[case.file].append(golden.render(case.name, case.sql, plan))
    for path, blocks in by_file.items():
        header = path.read_text().split("-- name: ")[0]
        path.write_text(header + "\n".join(blocks))
    assert by_file
