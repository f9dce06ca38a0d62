"""``fedquery demo init DIR --postgres DSN``: one demo hospital in PostgreSQL, a mixed
federation (two DuckDB sites, one PostgreSQL site) that answers end to end through the real
connector and policy files the command writes."""

from __future__ import annotations

import yaml
from click.testing import CliRunner

from fedquery.cli.main import main
from fedquery.dbapi import Connection
from fedquery.demo.federation import PG_DSN_ENV, init_demo
from fedquery.engine import Engine
from fedquery.site.runner import build_site_service
from fedquery.transport.inprocess import InProcessClient


def test_init_puts_the_last_hospital_in_postgresql_and_the_federation_answers(
        tmp_path, pg_schema, pg_dsn, monkeypatch):
    federation = init_demo(tmp_path, sites=3, patients=300, seed=11, postgres=pg_dsn,
                           pg_schema=pg_schema)
    assert federation.is_file()
    sources = {site: yaml.safe_load((tmp_path / "connectors" / f"{site}.yaml").read_text())
               ["source"] for site in ("hospital_a", "hospital_b", "hospital_c")}
    assert list(sources["hospital_a"]) == ["duckdb"] and list(sources["hospital_b"]) == ["duckdb"]
    assert sources["hospital_c"] == {"postgres": {"dsn": {"$env": PG_DSN_ENV},
                                                  "schema": pg_schema}}
    assert pg_dsn not in (tmp_path / "connectors" / "hospital_c.yaml").read_text()

    monkeypatch.setenv(PG_DSN_ENV, pg_dsn)
    services = [build_site_service(tmp_path / "connectors" / f"{site}.yaml",
                                   tmp_path / "policies" / f"{site}.yaml",
                                   tmp_path / "state" / site)
                for site in ("hospital_a", "hospital_b", "hospital_c")]
    assert type(services[2].adapter).__name__ == "PostgresAdapter"
    conn = Connection(Engine([InProcessClient(s) for s in services]), user="demo")
    try:
        cur = conn.cursor()
        cur.execute("SELECT sex, COUNT(*) AS patients, AVG(bmi) AS mean_bmi FROM patients "
                    "GROUP BY sex ORDER BY sex")
        rows = cur.fetchall()
        report = cur.fq_report
        assert report.sites_answered == ("hospital_a", "hospital_b", "hospital_c")
        by_sex = {r[0]: r for r in rows}  # the public domain: F, M and NULL, zeros included
        assert set(by_sex) <= {"F", "M", None} and {"F", "M"} <= set(by_sex)
        assert all(0 < by_sex[s][1] < 2000 for s in "FM")  # noisy, but sane
    finally:
        conn.close()


def test_the_init_command_takes_postgres_and_says_where_the_dsn_goes(tmp_path, pg_schema,
                                                                     pg_dsn):
    result = CliRunner().invoke(main, ["demo", "init", str(tmp_path), "--sites", "2",
                                       "--patients", "100", "--postgres", pg_dsn,
                                       "--pg-schema", pg_schema])
    assert result.exit_code == 0, result.output
    assert f"export {PG_DSN_ENV}=" in result.output
    assert pg_dsn not in result.output
    connector = yaml.safe_load((tmp_path / "connectors" / "hospital_b.yaml").read_text())
    assert connector["source"]["postgres"]["schema"] == pg_schema
