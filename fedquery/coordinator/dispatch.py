"""Fan a request out to every site concurrently, with a deadline per site."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fedquery.errors import (BudgetExhausted, DatabaseError, DataError, InterfaceError,
                             NotSupportedError, OperationalError, PolicyViolation,
                             ProgrammingError, SiteError, SiteUnavailable)
from fedquery.ir import QueryRequest, SiteReply
from fedquery.policy import refusal

log = logging.getLogger(__name__)

# Errors about the query itself: every site would say the same, so they reach the analyst as is.
QUERY_ERRORS = (ProgrammingError, NotSupportedError)


@dataclass(frozen=True)
class Gathered:
    replies: tuple[SiteReply, ...]
    failures: tuple[tuple[str, Exception], ...]


class Dispatcher:
    def __init__(self, clients: Sequence, max_workers: int | None = None) -> None:
        self.clients = list(clients)
        self._pool = cf.ThreadPoolExecutor(max_workers=max_workers or max(len(clients), 1) * 2,
                                           thread_name_prefix="fedquery-dispatch")

    def gather(self, request: QueryRequest, timeout: float | None,
               progress: Callable[[int, int], None] | None = None,
               only: set[str] | None = None) -> Gathered:
        """Ask every site (or the sites named in ``only``); collect replies and per-site
        failures (never raises for a site)."""
        clients = [c for c in self.clients if only is None or c.name in only]
        futures = {self._pool.submit(client.query, request, timeout): client
                   for client in clients}
        deadline = None if timeout is None else time.monotonic() + timeout
        replies, failures = [], []
        pending = set(futures)
        while pending:
            wait = None if deadline is None else max(deadline - time.monotonic(), 0)
            done, pending = cf.wait(pending, timeout=wait, return_when=cf.FIRST_COMPLETED)
            if not done:
                break
            for future in done:
                client = futures[future]
                try:
                    replies.append(future.result())
                except QUERY_ERRORS as err:
                    failures.append((client.name, err))
                except (BudgetExhausted, DataError) as err:  # keep the class; name the site
                    failures.append((client.name, type(err)(f"site {client.name!r}: {err}")))
                except (DatabaseError, InterfaceError) as err:
                    failures.append((client.name, err if isinstance(err, SiteError)
                                     else SiteError(client.name, str(err))))
                except Exception as err:  # noqa: BLE001 - a broken site must not break us
                    log.exception("site %s failed", client.name)
                    failures.append((client.name, SiteError(client.name,
                                                            f"{type(err).__name__}: {err}")))
            if progress is not None:
                progress(len(replies), len(clients))
        for future in pending:
            future.cancel()
            client = futures[future]
            failures.append((client.name, SiteUnavailable(
                client.name, f"no answer within the deadline of {timeout:g} s")))
        return Gathered(tuple(replies), tuple(failures))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def raise_for_failures(gathered: Gathered) -> None:
    """Raise the most relevant failure: policy refusals of every refusing site together, then
    other query errors, else the first site failure."""
    refusals = [err for _, err in gathered.failures if isinstance(err, PolicyViolation)]
    if len(refusals) > 1:
        raise refusal(tuple(hit for err in refusals for hit in err.rules))
    for _, err in gathered.failures:
        if isinstance(err, QUERY_ERRORS):
            raise err
    for _, err in gathered.failures:
        if isinstance(err, BudgetExhausted | DataError):
            raise err
    for _, err in gathered.failures:
        if isinstance(err, OperationalError):
            raise err
    if gathered.failures:
        raise gathered.failures[0][1]
