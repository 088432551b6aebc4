"""Expiry notices: tell each owner, once per window, which of their tokens expire soon.

A token that simply stops working breaks its owner's clients without warning, and
rotation cannot save it (a rotated token keeps its expiry), so the owner must issue
a replacement in time. ``notify_expiring_tokens`` emails every owner one list of
their active tokens that expire within the window, and records one
``expiry_notice`` event per token listed.

The event is also what makes the run idempotent: a token counts as notified for a
window when it has an ``expiry_notice`` event whose ``detail`` holds the same window
(``within_seconds``) and the token's current ``expires_at``. Running the same window
again sends nothing new; a different window (say 7 days, then 1 day) is a new
notice, so an operator can schedule a reminder and a last call.
"""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.db import transaction
from django.template.loader import render_to_string
from django.utils.timesince import timeuntil
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from tokens_app.core import clock, labels
from tokens_app.models import APIToken, TokenEvent, token_database
from tokens_app.services.audit import record_event
from tokens_app.services.caller import OPERATOR, Caller

logger = logging.getLogger("tokens_app")

MAX_NOTICE_WINDOW = timedelta(days=365)
TEMPLATE = "tokens_app/email/expiry_notice.txt"


@dataclass(frozen=True)
class OwnerNotice:
    """One owner's email: who, and the key ids of the tokens it lists (never a secret)."""

    username: str
    key_ids: tuple[str, ...]


@dataclass(frozen=True)
class NoticeFailure:
    """An owner whose email could not be sent; nothing was recorded, a later run retries."""

    username: str
    key_ids: tuple[str, ...]
    error: str


@dataclass(frozen=True)
class NoticeResult:
    """What one ``notify_expiring_tokens`` call did (or, under ``dry_run``, would do)."""

    now: datetime
    until: datetime
    """The window: active tokens expiring after ``now`` and at or before ``until``."""
    within_seconds: int
    sent: tuple[OwnerNotice, ...]
    """Owners emailed; under ``dry_run``, owners that would be emailed."""
    skipped_without_email: tuple[OwnerNotice, ...]
    """Owners with due tokens but no email address: nothing sent or recorded for them."""
    failed: tuple[NoticeFailure, ...]
    dry_run: bool

    @property
    def owners_emailed(self) -> int:
        return len(self.sent)

    @property
    def tokens_noticed(self) -> int:
        return sum(len(notice.key_ids) for notice in self.sent)


def _validate(within: Any) -> int:
    """Return *within* in whole seconds; raise ``ValidationError`` before anything is read.

    Whole seconds because the window is recorded (and matched) as ``within_seconds``.
    """
    if (
        not isinstance(within, timedelta)
        or within.microseconds
        or not timedelta(0) < within <= MAX_NOTICE_WINDOW
    ):
        raise ValidationError(
            {
                "within": _(
                    "Give a duration in whole seconds, more than zero and at most %(max)d days."
                )
                % {"max": MAX_NOTICE_WINDOW.days}
            }
        )
    return int(within.total_seconds())


def _expiring(now: datetime, until: datetime) -> Any:
    """Active tokens expiring in (now, until]: ``usable`` already excludes the rest."""
    return APIToken.objects.usable(now).filter(expires_at__gt=now, expires_at__lte=until)


def _expiry(token: APIToken) -> datetime:
    # Every token handled here has one: the window query requires it.
    return cast(datetime, token.expires_at)


def _same_moment(recorded: Any, expires_at: datetime) -> bool:
    try:
        return isinstance(recorded, str) and datetime.fromisoformat(recorded) == expires_at
    except ValueError:
        return False


def _not_yet_notified(candidates: Any, within_seconds: int, lock: bool = False) -> list[APIToken]:
    """The tokens of *candidates* without a notice for this window and their current expiry.

    With *lock*, the token rows are locked first (inside the caller's transaction), so
    the events read next are the ones that count. Matched in Python rather than in
    JSON SQL, which differs between databases; a token has at most a few notices.
    """
    rows = candidates.select_for_update(of=("self",)) if lock else candidates
    tokens: list[APIToken] = list(rows.order_by("expires_at", "pk"))
    notices: dict[int, list[dict[str, Any]]] = {}
    for token_id, detail in TokenEvent.objects.filter(
        token__in=[t.pk for t in tokens], kind=TokenEvent.Kind.EXPIRY_NOTICE
    ).values_list("token_id", "detail"):
        notices.setdefault(token_id, []).append(detail if isinstance(detail, dict) else {})
    return [
        token
        for token in tokens
        if not any(
            d.get("within_seconds") == within_seconds
            and _same_moment(d.get("expires_at"), _expiry(token))
            for d in notices.get(token.pk, [])
        )
    ]


def _email_of(owner: Any) -> str:
    # Custom user models name (or lack) the field; EMAIL_FIELD says which it is.
    field = owner.get_email_field_name() if hasattr(owner, "get_email_field_name") else "email"
    return str(getattr(owner, field, "") or "").strip()


def _human(moment: datetime, now: datetime) -> str:
    # timeuntil joins number and unit with no-break spaces; plain text wants plain ones.
    return timeuntil(moment, now).replace("\xa0", " ")


def _message(owner: Any, tokens: list[APIToken], now: datetime, until: datetime) -> EmailMessage:
    """The notice for *owner*: quoted names, key ids and expiries, never anything secret.

    Names are user-chosen (and legacy ones may hold anything): each is shown as a quoted
    label on its own list line, with the key id beside it, never as text of ours.
    """
    context = {
        "username": owner.get_username(),
        "window": _human(until, now),
        "tokens": [
            {
                # A label the owner chose, shown quoted and neutralised (tokens_app.core.labels):
                # the template's autoescape is off, it is plain text.
                "label": labels.label(token.name),
                "key_id": token.key_id,
                "expires_at": _expiry(token).astimezone(UTC).isoformat(timespec="seconds"),
                "remaining": _human(_expiry(token), now),
            }
            for token in tokens
        ],
    }
    subject = ngettext("Your API token expires soon", "Your API tokens expire soon", len(tokens))
    body = render_to_string(TEMPLATE, context)
    return EmailMessage(subject=subject, body=body, to=[_email_of(owner)])


def _owners_with_expiring_tokens(now: datetime, until: datetime) -> list[Any]:
    # Only ids: the tokens are read one owner at a time, so memory stays flat.
    owner_ids = _expiring(now, until).order_by("owner_id").values_list("owner_id", flat=True)
    return list(owner_ids.distinct())


def _notify_owner(
    owner: Any, now: datetime, until: datetime, within_seconds: int, caller: Caller
) -> tuple[str, ...]:
    """Email *owner* the tokens still due, record them; return their key ids.

    One transaction with the token rows locked, so two concurrent runs cannot both
    notify a token: the second waits, then finds the first one's events. The events
    are written first and the email is sent last, still inside the transaction: if
    sending fails, the transaction rolls back and nothing is recorded, so a later run
    retries; if writing fails, nothing was sent.
    """
    with transaction.atomic(using=token_database()):
        due = _not_yet_notified(
            _expiring(now, until).filter(owner=owner), within_seconds, lock=True
        )
        if not due:
            return ()
        for token in due:
            detail = {
                "within_seconds": within_seconds,
                "expires_at": _expiry(token).isoformat(),
            }
            record_event(token, TokenEvent.Kind.EXPIRY_NOTICE, caller=caller, detail=detail)
        _message(owner, due, now, until).send(fail_silently=False)
    return tuple(token.key_id for token in due)


def notify_expiring_tokens(
    *, within: timedelta, dry_run: bool = False, caller: Caller = OPERATOR
) -> NoticeResult:
    """Email each owner of active tokens expiring within *within* one notice listing them.

    A token is listed once per window (see the module docstring); the notice and one
    ``expiry_notice`` event per token are committed together, or neither. An owner
    without an email address is skipped (nothing recorded); an owner whose email
    fails is reported in ``failed`` (nothing recorded) and the run goes on. Under
    *dry_run* nothing is sent or written.

    Raise ``ValidationError`` (key ``within``) unless *within* is a whole number of
    seconds, more than zero and at most 365 days; nothing is read or sent then.
    """
    within_seconds = _validate(within)
    now = clock.now()
    until = now + within
    sent: list[OwnerNotice] = []
    skipped: list[OwnerNotice] = []
    failed: list[NoticeFailure] = []
    for owner_id in _owners_with_expiring_tokens(now, until):
        candidates = _expiring(now, until).filter(owner_id=owner_id).select_related("owner")
        tokens = _not_yet_notified(candidates, within_seconds)
        if not tokens:  # all notified for this window already
            continue
        owner = tokens[0].owner
        planned = OwnerNotice(owner.get_username(), tuple(t.key_id for t in tokens))
        if not _email_of(owner):
            skipped.append(planned)
        elif dry_run:
            sent.append(planned)
        else:
            try:
                key_ids = _notify_owner(owner, now, until, within_seconds, caller)
            except Exception as exc:  # any backend error: report it, go on with the others
                error = " ".join(f"{type(exc).__name__}: {exc}".split())
                logger.warning("Expiry notice to user pk=%s not sent: %s", owner.pk, error)
                failed.append(NoticeFailure(planned.username, planned.key_ids, error))
                continue
            if key_ids:  # empty: a concurrent run notified them meanwhile
                sent.append(OwnerNotice(planned.username, key_ids))
    result = NoticeResult(
        now=now,
        until=until,
        within_seconds=within_seconds,
        sent=tuple(sent),
        skipped_without_email=tuple(skipped),
        failed=tuple(failed),
        dry_run=dry_run,
    )
    logger.info(
        "%s expiry notices to %d owners for %d API tokens expiring by %s "
        "(%d owners without email, %d failed)",
        "Dry run: would send" if dry_run else "Sent",
        result.owners_emailed,
        result.tokens_noticed,
        until.isoformat(),
        len(skipped),
        len(failed),
    )
    return result
