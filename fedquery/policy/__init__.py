"""Policies: the only reader of policy files; allow/deny with reasons; requirements."""

from fedquery.policy.decide import decide, refusal, strictest
from fedquery.policy.model import Policy, resolve_policy

__all__ = ["Policy", "decide", "refusal", "resolve_policy", "strictest"]
