"""``fedquery site ...``: commands for a site operator."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from fedquery.cli.serving import serve_until_signalled, write_port_file


@click.group()
def site() -> None:
    """Run and inspect a site."""


@site.group()
def audit() -> None:
    """The site's hash-chained audit log."""


@audit.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--expect-head", help="A head hash exported earlier: it must still be in the log.")
def verify(file: str, expect_head: str | None) -> None:
    """Check the hash chain of an audit log; exit 1 if it was tampered with."""
    from fedquery.site.audit import verify as verify_log
    from fedquery.site.audit import verify_command_output
    code, text = verify_command_output(verify_log(file, expect_head=expect_head))
    click.echo(text)
    sys.exit(code)


def _check_port_free(host: str, port: int) -> None:
    import socket

    from fedquery.errors import ConfigError
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC itself binds
        try:
            sock.bind((host, port))
        except OSError as err:
            raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror} (is another "
                              "site already using the port?)", key="port") from None


@site.command()
@click.option("--state-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The site's state directory (the private keys are written there, 0600).")
def keys(state_dir: Path) -> None:
    """Create the site's secure-aggregation keys (if missing) and print the public halves to
    publish under the site in federation.yaml."""
    from fedquery.errors import Error
    from fedquery.site.runner import site_keys
    try:
        x25519, ed25519 = site_keys(state_dir)
    except Error as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    click.echo(f"x25519: {x25519}\ned25519: {ed25519}")


@site.command()
@click.argument("connector", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--policy", "policy_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The site's policy file, written by its data steward.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=0, show_default=True, help="0 picks a free port.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--insecure", is_flag=True,
              help="Serve plain grpc+tcp without TLS (closed test networks only).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the audit log (and budget ledger) live [default: state/<site>].")
@click.option("--port-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the bound port here once listening (for scripts using --port 0).")
@click.option("--federation", "federation_path",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="federation.yaml: with a key_holder section the site takes part in secure "
                   "aggregation (its keys in --state-dir, see `fedquery site keys`).")
@click.option("--key-holder", is_flag=True,
              help="Also act as the federation's key holder (secure aggregation), on "
                   "--key-holder-port, with its keys under --state-dir/keyholder; needs "
                   "--federation and --key-holder-token-file.")
@click.option("--key-holder-port", default=0, show_default=True,
              help="The key holder's port (0 picks a free one, written to "
                   "--state-dir/keyholder.port).")
@click.option("--key-holder-token-file", type=click.Path(exists=True, dir_okay=False,
                                                         path_type=Path),
              help="A file (mode 0600) holding the coordinator's token for releases.")
def serve(connector: Path, policy_path: Path, host: str, port: int, tls_cert: Path | None,
          tls_key: Path | None, insecure: bool, state_dir: Path | None,
          port_file: Path | None, federation_path: Path | None, key_holder: bool,
          key_holder_port: int, key_holder_token_file: Path | None) -> None:
    """Serve one site over Arrow Flight until SIGINT or SIGTERM (optionally also the key
    holder of secure aggregation, in the same process on its own port)."""
    from fedquery.errors import Error
    from fedquery.site.runner import build_site_service
    from fedquery.transport.certs import check_key_pair
    from fedquery.transport.flight_server import SiteFlightServer

    log = logging.getLogger("fedquery.site")
    if insecure == bool(tls_cert and tls_key) or bool(tls_cert) != bool(tls_key):
        raise click.UsageError("give --tls-cert and --tls-key (TLS), or --insecure (plain text "
                               "for a closed test network)")
    if key_holder and (federation_path is None or key_holder_token_file is None):
        raise click.UsageError("--key-holder needs --federation (the sites' signing keys) and "
                               "--key-holder-token-file (the coordinator's token)")
    holder = None
    try:
        if not insecure:
            check_key_pair(tls_cert, tls_key)
        if port:
            _check_port_free(host, port)
        service = build_site_service(connector, policy_path, state_dir, federation_path)
        tls = None
        scheme = "grpc+tcp"
        if not insecure:
            tls = [(tls_cert.read_bytes(), tls_key.read_bytes())]
            scheme = "grpc+tls"
        else:
            log.warning("event=insecure site=%s serving plain text without TLS", service.name)
        server = SiteFlightServer(service, f"{scheme}://{host}:{port}", tls_certificates=tls)
        if key_holder:
            holder = _start_key_holder(federation_path, key_holder_token_file,
                                       service.state_dir, f"{scheme}://{host}:{key_holder_port}",
                                       tls)
    except (Error, OSError) as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    except Exception as err:  # noqa: BLE001 - Arrow reports a failed start as ArrowException
        click.echo(f"error: the site could not listen on {host}:{port} ({err}); is the port "
                   "in use, and do --tls-cert and --tls-key belong together?", err=True)
        sys.exit(2)
    endpoint = f"{scheme}://{host}:{server.port}"
    write_port_file(port_file, server.port)
    log.warning("event=listening site=%s endpoint=%s", service.name, endpoint)
    serve_until_signalled(server, log, f"site={service.name}")
    if holder is not None:
        holder_server, holder_service = holder
        holder_server.shutdown()
        holder_service.close()
    service.close()
    log.warning("event=stopped site=%s", service.name)


def _start_key_holder(federation_path: Path, token_file: Path, state_dir: Path,
                      location: str, tls):
    """The key holder role inside a site process: its own service, state and port."""
    from fedquery.cli.keyholder import _token_hash
    from fedquery.keyholder.service import KeyHolderService
    from fedquery.transport.federation import load_federation
    from fedquery.transport.keyholder_flight import KeyHolderFlightServer

    federation = load_federation(federation_path, secrets=False)
    holder_service = KeyHolderService(Path(state_dir) / "keyholder", federation.signing_keys)
    try:
        holder_server = KeyHolderFlightServer(holder_service, location,
                                              token_sha256=_token_hash(None, token_file),
                                              tls_certificates=tls)
    except BaseException:
        holder_service.close()
        raise
    write_port_file(Path(state_dir) / "keyholder.port", holder_server.port)
    logging.getLogger("fedquery.keyholder").warning(
        "event=listening keyholder endpoint=%s epoch=%d (in a site process)",
        location.rsplit(":", 1)[0] + f":{holder_server.port}", holder_service.epoch)
    return holder_server, holder_service
