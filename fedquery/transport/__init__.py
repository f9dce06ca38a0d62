"""Transport between coordinator and sites: one interface, in-process or Arrow Flight."""

from fedquery.transport.base import SiteClient

__all__ = ["SiteClient"]
