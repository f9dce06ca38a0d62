"""Text → qualified, supported AST: the front end shared by the coordinator and every site.

>>> analyze("select SEX, count(*) from patients group by 1", {"patients": {"sex": "VARCHAR"}}).sql()
'SELECT "patients"."sex" AS "sex", COUNT(*) AS "_col_1" FROM "patients" AS "patients" GROUP BY "patients"."sex"'
"""

from __future__ import annotations

from sqlglot import exp

from fedquery.sql.parse import parse_statement
from fedquery.sql.qualify import Schema, qualify_query
from fedquery.sql.support import check_statement_kind, check_supported


def analyze(sql: str | exp.Expression, schema: Schema) -> exp.Expression:
    """Parse (unless given an AST), check the statement kind, qualify, check the subset."""
    statement = parse_statement(sql) if isinstance(sql, str) else sql
    check_statement_kind(statement)
    qualified = qualify_query(statement, schema)
    check_supported(qualified)
    return qualified
