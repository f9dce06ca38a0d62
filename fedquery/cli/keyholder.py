"""``fedquery keyholder ...``: run the key holder of secure aggregation."""

from __future__ import annotations

import hashlib
import logging
import stat
import sys
from pathlib import Path

import click

from fedquery.cli.serving import serve_until_signalled, write_port_file


@click.group()
def keyholder() -> None:
    """Run the key holder of secure aggregation (it decrypts only federation-wide sums)."""


def _token_hash(token_sha256: str | None, token_file: Path | None) -> str:
    if bool(token_sha256) == bool(token_file):
        raise click.UsageError("give the coordinator's token as --token-sha256 HASH or "
                               "--token-file FILE (one of them)")
    if token_sha256:
        return token_sha256.strip().lower()
    mode = stat.S_IMODE(token_file.stat().st_mode)
    if mode & 0o077:
        raise click.UsageError(f"the token file {token_file} is readable by others (mode "
                               f"{mode:o}); run: chmod 600 {token_file}")
    token = token_file.read_text().strip()
    if not token:
        raise click.UsageError(f"the token file {token_file} is empty")
    return hashlib.sha256(token.encode()).hexdigest()


@keyholder.command()
@click.option("--federation", "federation_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="federation.yaml: the sites and their published ed25519 keys.")
@click.option("--state-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where the key epochs' private keys (mode 0600) and the used query ids "
                   "live.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=0, show_default=True, help="0 picks a free port.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--insecure", is_flag=True,
              help="Serve plain grpc+tcp without TLS (closed test networks only).")
@click.option("--token-sha256", help="SHA-256 (hex) of the coordinator's bearer token.")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A file (mode 0600) holding the coordinator's bearer token.")
@click.option("--epoch-queries", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Rotate the keys after this many releases (and after any failed check).")
@click.option("--port-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the bound port here once listening (for scripts using --port 0).")
def serve(federation_path: Path, state_dir: Path, host: str, port: int, tls_cert: Path | None,
          tls_key: Path | None, insecure: bool, token_sha256: str | None,
          token_file: Path | None, epoch_queries: int, port_file: Path | None) -> None:
    """Serve the key holder over Arrow Flight until SIGINT or SIGTERM."""
    from fedquery.cli.site import _check_port_free
    from fedquery.errors import ConfigError, Error
    from fedquery.keyholder.service import KeyHolderService
    from fedquery.transport.certs import check_key_pair
    from fedquery.transport.federation import load_federation
    from fedquery.transport.keyholder_flight import KeyHolderFlightServer

    log = logging.getLogger("fedquery.keyholder")
    if insecure == bool(tls_cert and tls_key) or bool(tls_cert) != bool(tls_key):
        raise click.UsageError("give --tls-cert and --tls-key (TLS), or --insecure (plain text "
                               "for a closed test network)")
    digest = _token_hash(token_sha256, token_file)
    service = None
    try:
        federation = load_federation(federation_path, secrets=False)
        signing_keys = federation.signing_keys
        if not signing_keys:
            raise ConfigError(f"{federation_path}: no site publishes an ed25519 key: the key "
                              "holder could verify no contribution (sites.<name>.ed25519)",
                              path=str(federation_path))
        if not insecure:
            check_key_pair(tls_cert, tls_key)
        if port:
            _check_port_free(host, port)
        service = KeyHolderService(state_dir, signing_keys, epoch_queries=epoch_queries)
        tls = None
        scheme = "grpc+tcp"
        if not insecure:
            tls = [(tls_cert.read_bytes(), tls_key.read_bytes())]
            scheme = "grpc+tls"
        else:
            log.warning("event=insecure keyholder serving plain text without TLS")
        server = KeyHolderFlightServer(service, f"{scheme}://{host}:{port}",
                                       token_sha256=digest, tls_certificates=tls)
    except (Error, OSError) as err:
        if service is not None:
            service.close()
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    except Exception as err:  # noqa: BLE001 - Arrow reports a failed start as ArrowException
        if service is not None:
            service.close()
        click.echo(f"error: the key holder could not listen on {host}:{port} ({err}); is the "
                   "port in use, and do --tls-cert and --tls-key belong together?", err=True)
        sys.exit(2)
    endpoint = f"{scheme}://{host}:{server.port}"
    write_port_file(port_file, server.port)
    log.warning("event=listening keyholder endpoint=%s epoch=%d sites=%d", endpoint,
                service.epoch, len(signing_keys))
    serve_until_signalled(server, log, "keyholder")
    service.close()
    log.warning("event=stopped keyholder")
