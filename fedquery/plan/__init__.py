"""Planner: pure AST rewrites from a qualified query to a FederatedPlan.

No IO, no randomness, no budget: the same query and catalog always give the same plan, so
the coordinator and every site derive the same fragment independently.
"""

from fedquery.plan.planner import RULES, plan_query

__all__ = ["RULES", "plan_query"]
