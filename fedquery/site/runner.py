"""Build a site service from the files its operator and steward write."""

from __future__ import annotations

from pathlib import Path

from fedquery.errors import ConfigError
from fedquery.policy.load import load_policy
from fedquery.site.connector import load_connector, open_adapter, privacy_units
from fedquery.site.service import SiteService


def build_site_service(connector_path: Path, policy_path: Path,
                       state_dir: Path | None = None) -> SiteService:
    """Connector + policy → a SiteService with its audit log in ``state_dir``."""
    connector = load_connector(connector_path)
    policy = load_policy(policy_path)
    if policy.site and policy.site != connector.site:
        raise ConfigError(f"{policy_path}: the policy is for site {policy.site!r} but the "
                          f"connector {connector_path} is for {connector.site!r}",
                          path=str(policy_path), key="site")
    state = Path(state_dir) if state_dir is not None else Path("state") / connector.site
    state.mkdir(parents=True, exist_ok=True)
    return SiteService(connector.site, open_adapter(connector), policy,
                       privacy_units(connector), state_dir=state)
