"""Build a site service from the files its operator and steward write."""

from __future__ import annotations

from pathlib import Path

from fedquery.errors import ConfigError
from fedquery.policy.load import load_policy
from fedquery.site.connector import load_connector, open_adapter, privacy_units
from fedquery.site.service import SiteService


MASK_KEY = "mask.key"  # the site's X25519 private key (secure-aggregation masks), mode 0600
SIGNING_KEY = "signing.key"  # the site's Ed25519 private key (contribution signatures)


def site_keys(state_dir: Path) -> tuple[str, str]:
    """Create the site's secure-aggregation key pairs under ``state_dir`` unless they exist;
    return their public keys (base64) for ``federation.yaml`` (``x25519``, ``ed25519``)."""
    from fedquery.protect import masks, signing

    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    mask_path, signing_path = state_dir / MASK_KEY, state_dir / SIGNING_KEY
    if not mask_path.exists():
        masks.save_private_key(mask_path, masks.generate_private_key())
    if not signing_path.exists():
        signing.save_private_key(signing_path, signing.generate_private_key())
    return (masks.public_key_text(masks.load_private_key(mask_path)),
            signing.public_key_text(signing.load_private_key(signing_path)))


def secure_config(federation_path: Path, site: str, state_dir: Path):
    """The site's part in secure aggregation, from the federation file (the key holder's
    endpoint and CA, every site's published mask key) and the keys in ``state_dir``."""
    from fedquery.protect import masks, signing
    from fedquery.site.secure import SecureSiteConfig
    from fedquery.transport.federation import key_holder_client, load_federation

    federation = load_federation(federation_path, secrets=False)
    if federation.key_holder is None:
        return None
    mask_path, signing_path = Path(state_dir) / MASK_KEY, Path(state_dir) / SIGNING_KEY
    for path in (mask_path, signing_path):
        if not path.exists():
            raise ConfigError(f"{path} is missing: create the site's keys with `fedquery site "
                              f"keys --state-dir {state_dir}` and publish them in "
                              f"{federation_path}")
    mask_key = masks.load_private_key(mask_path)
    published = federation.mask_keys.get(site)
    if published != mask_key.public_key().public_bytes_raw():
        raise ConfigError(f"{federation_path}: sites.{site}.x25519 is not this site's mask "
                          f"key ({mask_path}); publish the key `fedquery site keys` prints",
                          path=str(federation_path), key=f"sites.{site}.x25519")
    return SecureSiteConfig(key_holder_client(federation), mask_key,
                            signing.load_private_key(signing_path), federation.mask_keys)


def build_site_service(connector_path: Path, policy_path: Path,
                       state_dir: Path | None = None,
                       federation_path: Path | None = None) -> SiteService:
    """Connector + policy → a SiteService with its audit log in ``state_dir``; with a
    federation file that names a key holder, the site takes part in secure aggregation."""
    connector = load_connector(connector_path)
    policy = load_policy(policy_path)
    if policy.site and policy.site != connector.site:
        raise ConfigError(f"{policy_path}: the policy is for site {policy.site!r} but the "
                          f"connector {connector_path} is for {connector.site!r}",
                          path=str(policy_path), key="site")
    state = Path(state_dir) if state_dir is not None else Path("state") / connector.site
    state.mkdir(parents=True, exist_ok=True)
    secure = (secure_config(federation_path, connector.site, state)
              if federation_path is not None else None)
    return SiteService(connector.site, open_adapter(connector), policy,
                       privacy_units(connector), state_dir=state, secure=secure)
