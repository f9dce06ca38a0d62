"""The key holder of secure aggregation (DESIGN.md §2, §4; research note §2.2, §5.3–5.4, §7).

It holds the BFV secret keys of the current key epoch, publishes the public contexts, and
decrypts only the federation-wide sum of one query's signed contributions — once per query
id, after checking every signature, re-summing the contributions itself and range-checking
every slot — then applies the combined disclosure checks before anything is released.

- :mod:`fedquery.keyholder.service`: :class:`~fedquery.keyholder.service.KeyHolderService`.
- :mod:`fedquery.keyholder.client`: the ``KeyHolderClient`` protocol the coordinator uses and
  its in-process implementation (Arrow Flight: :mod:`fedquery.transport.keyholder_flight`).

This package imports nothing from ``fedquery.site`` or ``fedquery.coordinator`` (an
import-linter contract), and this ``__init__`` imports nothing at all, so that importing the
client protocol never loads the service.
"""
