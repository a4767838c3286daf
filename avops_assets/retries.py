"""Retries for I/O-bound assets: an unreachable object store is retried, nothing else is.

A step that fails because S3 is down succeeds once it is back (every write is content-addressed
and the ref moves last, so a retry starts from a consistent state); a step that fails for any
other reason would fail the same way again, so it fails at once.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from avops.s3store import ObjectStoreUnavailable

IO_RETRY = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL)


@contextmanager
def transient_only() -> Iterator[None]:
    try:
        yield
    except ObjectStoreUnavailable:
        raise  # retried by IO_RETRY
    except dg.Failure as exc:
        raise dg.Failure(exc.description, metadata=exc.metadata, allow_retries=False) from exc
    except Exception as exc:  # noqa: BLE001 - re-raised with its cause, just not retried
        raise dg.Failure(f"{type(exc).__name__}: {exc}", allow_retries=False) from exc
