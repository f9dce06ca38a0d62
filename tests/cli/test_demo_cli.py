"""`fedquery demo` end to end on a small federation (the README's first command, smaller)."""

from __future__ import annotations

from click.testing import CliRunner

from fedquery.cli.main import main


def test_demo_prints_showcase_answers(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--dir", str(tmp_path), "--patients", "400",
                                       "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert "sites answered: hospital_a, hospital_b, hospital_c" in result.output
    assert "sex,age_band,patients" in result.output
    assert "-- The privacy budget left at each site" in result.output
    assert (tmp_path / "data" / "hospital_a.duckdb").exists()
    # a second run reuses the generated data
    again = CliRunner().invoke(main, ["demo", "--dir", str(tmp_path), "--patients", "400"])
    assert again.exit_code == 0, again.output
