"""``manage.py notify_expiring_tokens``: email owners whose tokens expire soon, once per window."""

from datetime import timedelta
from typing import Any

from django.core.management.base import CommandError, CommandParser

from tokens_app import services
from tokens_app.core.durations import parse_duration
from tokens_app.management.base import TokenCommand


def _within(value: str) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise CommandError(f"--within: {exc}") from None


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _tokens(key_ids: tuple[str, ...]) -> str:
    # Key ids are public identifiers; they let an operator find the tokens.
    return f"{_plural(len(key_ids), 'token')} ({', '.join(key_ids)})"


def _summary(result: services.NoticeResult) -> str:
    owners = _plural(result.owners_emailed, "owner")
    tokens = _plural(result.tokens_noticed, "token")
    until = result.until.isoformat(timespec="seconds")
    tail = (
        f"{len(result.skipped_without_email)} without an email address skipped, "
        f"{len(result.failed)} failed"
    )
    if result.dry_run:
        return (
            f"Would email {owners} about {tokens} expiring by {until}; {tail}; "
            "nothing was sent or recorded."
        )
    return f"Emailed {owners} about {tokens} expiring by {until}; {tail}."


class Command(TokenCommand):
    help = (
        "Email each owner of active tokens that expire within --within (default 7d) one "
        "notice listing them, and record it in the audit trail. A token is notified once "
        "per window: running the same --within again sends nothing new, a different "
        "--within (say 1d after 7d) notifies again. Owners without an email address are "
        "skipped. --dry-run only reports. Exits non-zero if any email could not be sent."
    )
    option_fields = frozenset({"within"})

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--within",
            default="7d",
            help="Notify about tokens expiring within this long: 7d, 2w, 36h; at most "
            "365d (default 7d).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Report what would be sent; send nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        within = _within(options["within"])
        result = services.notify_expiring_tokens(
            within=within, dry_run=options["dry_run"], caller=self.caller
        )
        self.stdout.write(_summary(result))
        for notice in result.sent:
            self.stdout.write(f"{notice.username}: {_tokens(notice.key_ids)}")
        for notice in result.skipped_without_email:
            self.stdout.write(
                f"{notice.username}: skipped, no email address; {_tokens(notice.key_ids)}"
            )
        for failure in result.failed:
            self.stdout.write(
                f"{failure.username}: not sent, {failure.error}; {_tokens(failure.key_ids)}"
            )
        if result.failed:
            names = ", ".join(failure.username for failure in result.failed)
            raise CommandError(
                f"could not email {_plural(len(result.failed), 'owner')} ({names}); "
                "nothing was recorded for them, so the next run retries"
            )
