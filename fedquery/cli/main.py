"""``fedquery`` command line entry point."""

from __future__ import annotations

import logging
import os

import click

from fedquery.cli.certs import certs as certs_group
from fedquery.cli.demo import demo as demo_group
from fedquery.cli.keyholder import keyholder as keyholder_group
from fedquery.cli.policy import policy as policy_group
from fedquery.cli.query import query as query_command
from fedquery.cli.shell import shell as shell_command
from fedquery.cli.site import site as site_group

# gRPC logs every failed TLS handshake to stderr unless told otherwise.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


@click.group()
@click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug).")
@click.version_option(package_name="fedquery")
def main(verbose: int) -> None:
    """fedquery: privacy-preserving federated SQL for health research networks."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")


main.add_command(certs_group)
main.add_command(demo_group)
main.add_command(keyholder_group)
main.add_command(query_command)
main.add_command(policy_group)
main.add_command(site_group)
main.add_command(shell_command)


if __name__ == "__main__":
    main()
