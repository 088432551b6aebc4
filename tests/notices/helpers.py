"""Helpers of the expiry-notice tests: running the command, the events and mails a run leaves.

Not collected (no ``test_`` prefix).
"""

from datetime import timedelta
from io import StringIO
from typing import Any

from django.core import mail
from django.core.management import call_command

from tests.helpers import T0
from tokens_app.models import APIToken, TokenEvent

WEEK = timedelta(days=7)
NOTICE = TokenEvent.Kind.EXPIRY_NOTICE


def run(*args: str) -> str:
    """Run notify_expiring_tokens in-process and return its stdout."""
    out = StringIO()
    call_command("notify_expiring_tokens", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def notices() -> list[tuple[str, dict[str, Any]]]:
    """Every expiry-notice event as (key id, detail), oldest first."""
    events = TokenEvent.objects.filter(kind=NOTICE).order_by("pk")
    return [(e.key_id, e.detail) for e in events]


def snapshot() -> tuple[int, int]:
    """What a run may change: mails sent and events written."""
    return len(mail.outbox), TokenEvent.objects.count()


def expiring(issue: Any, owner: Any, delta: timedelta, **kwargs: Any) -> Any:
    """Issue a token for *owner* that expires *delta* after T0."""
    return issue(owner, expires_at=T0 + delta, **kwargs)


def detail(token: APIToken, within: timedelta = WEEK) -> dict[str, Any]:
    assert token.expires_at is not None
    return {
        "within_seconds": int(within.total_seconds()),
        "expires_at": token.expires_at.isoformat(),
    }
