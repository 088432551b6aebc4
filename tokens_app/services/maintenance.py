"""Housekeeping: delete tokens that ended long ago, keeping their audit trail.

Revoked and expired tokens are kept for a while so their owners and staff can see
what happened to them; after that they only slow the tables down. Pruning deletes
the token rows but never the ``TokenEvent`` rows: each event keeps a copy of its
token's key id, so the audit trail stays readable with ``token`` set to NULL.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext_lazy as _

from tokens_app import invalidation
from tokens_app.core import clock
from tokens_app.models import APIToken, TokenEvent, token_database

logger = logging.getLogger("tokens_app")

MIN_BATCH_SIZE = 1
MAX_BATCH_SIZE = 10_000
DEFAULT_BATCH_SIZE = 1000


@dataclass(frozen=True)
class PruneResult:
    """What one ``prune_tokens`` call did (or, under ``dry_run``, would do)."""

    cutoff: datetime
    """Tokens that ended at or before this moment were pruned."""
    tokens: int
    """Tokens deleted; under ``dry_run``, tokens that would be deleted."""
    events_kept: int
    """Audit events of those tokens, kept with ``token`` set to NULL."""
    dry_run: bool


def _validate(older_than: Any, batch_size: Any) -> None:
    # Checked before anything is read or written, so bad input deletes nothing.
    errors: dict[str, Any] = {}
    if not isinstance(older_than, timedelta) or older_than < timedelta(0):
        errors["older_than"] = _("Give a duration of zero or more.")
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or not MIN_BATCH_SIZE <= batch_size <= MAX_BATCH_SIZE
    ):
        errors["batch_size"] = _("Give a whole number from %(min)d to %(max)d.") % {
            "min": MIN_BATCH_SIZE,
            "max": MAX_BATCH_SIZE,
        }
    if errors:
        raise ValidationError(errors)


def _prune_batch(cutoff: datetime, pks: list[int]) -> tuple[int, int]:
    """Delete the still-prunable tokens among *pks*; return (tokens deleted, events kept).

    Both statements re-apply ``prunable(cutoff)`` rather than trusting *pks*, so a
    token that changed since the pks were read is neither detached nor deleted.
    """
    doomed = APIToken.objects.prunable(cutoff).filter(pk__in=pks)
    # Ended tokens: every cached copy already refuses them, so no invalidation per row.
    with transaction.atomic(using=token_database()), invalidation.quiet():
        events = TokenEvent.objects.filter(token__in=doomed.values("pk")).update(token=None)
        _, deleted = doomed.delete()
    return deleted.get(APIToken._meta.label, 0), events


def prune_tokens(
    *,
    older_than: timedelta,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[int, int], None] | None = None,
) -> PruneResult:
    """Delete tokens that were revoked or expired more than *older_than* ago.

    Their audit events are kept (``token`` becomes NULL; ``key_id`` stays). The work
    is done in transactions of at most *batch_size* tokens, so a large table is never
    loaded into memory and no lock is held for the whole run. ``progress(done,
    total)`` is called after each batch, *total* being the count at the start.
    Under *dry_run* only counts are read and nothing is written.

    Raise ``ValidationError`` (keyed by argument) for a negative *older_than* or a
    *batch_size* outside 1..10000; nothing is deleted then.
    """
    _validate(older_than, batch_size)
    # Whole seconds, rounded down: the cutoff printed to the operator is then exact,
    # and rounding never prunes a token younger than asked.
    cutoff = (clock.now() - older_than).replace(microsecond=0)
    prunable = APIToken.objects.prunable(cutoff)
    total = prunable.count()
    if dry_run:
        events = TokenEvent.objects.filter(token__in=prunable.values("pk")).count()
        result = PruneResult(cutoff=cutoff, tokens=total, events_kept=events, dry_run=True)
        logger.info(
            "Dry run: would prune %d API tokens that ended before %s (%d audit events)",
            total,
            cutoff.isoformat(),
            events,
        )
        return result
    done = events = 0
    last_pk = 0
    while True:
        # Keyset pagination: only pks are read, batch_size at a time, and every loop
        # moves past the last pk, so the loop ends even if a row refuses to go.
        pks = list(
            prunable.filter(pk__gt=last_pk).order_by("pk").values_list("pk", flat=True)[:batch_size]
        )
        if not pks:
            break
        last_pk = pks[-1]
        deleted, detached = _prune_batch(cutoff, pks)
        done += deleted
        events += detached
        if progress is not None:
            progress(done, total)
    logger.info(
        "Pruned %d API tokens that ended before %s; %d audit events kept",
        done,
        cutoff.isoformat(),
        events,
    )
    return PruneResult(cutoff=cutoff, tokens=done, events_kept=events, dry_run=False)
