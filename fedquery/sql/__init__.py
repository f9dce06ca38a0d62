"""SQL front end: text → parsed, qualified AST checked against the supported subset.

No policies and no IO here.
"""

from fedquery.sql.analyze import analyze
from fedquery.sql.parse import parse_statement
from fedquery.sql.qualify import qualify_query
from fedquery.sql.support import check_supported

__all__ = ["analyze", "check_supported", "parse_statement", "qualify_query"]
