"""``manage.py prune_tokens``: delete long-ended tokens, keep their audit events."""

import re
from datetime import timedelta
from typing import Any

from django.core.management.base import CommandError, CommandParser, OutputWrapper

from tokens_app import services
from tokens_app.core.durations import parse_duration
from tokens_app.management.base import TokenCommand
from tokens_app.services.maintenance import DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE

_INTEGER = re.compile(r"[+-]?[0-9]+")


def _older_than(value: str) -> timedelta:
    # "0" is the one addition to parse_duration's rules: "every token that has ended".
    if isinstance(value, str) and value.strip() == "0":
        return timedelta(0)
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise CommandError(f"--older-than: {exc}; or 0 for every ended token") from None


def _batch_size(value: Any) -> Any:
    # Only the text-to-int step happens here; the range rule is the service's, and
    # anything that is not an integer is passed on for it to reject with its message.
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value)
    return value


def _no_style(text: str) -> str:
    # Django paints stderr red on a terminal; progress is not an error.
    return text


class _Progress:
    """``\\rpruned X/Y tokens`` on a terminal, one line rewritten in place.

    The line is ended as soon as the count is reached, before the service logs its
    summary to the same stderr; ``close()`` ends it otherwise (rows that vanished
    meanwhile, an error), so nothing else is ever written onto it.
    """

    def __init__(self, stream: OutputWrapper) -> None:
        self.stream = stream
        self.open = False

    def __call__(self, done: int, total: int) -> None:
        finished = done >= total
        ending = "\n" if finished else ""
        self.stream.write(f"\rpruned {done}/{total} tokens", style_func=_no_style, ending=ending)
        self.stream.flush()
        self.open = not finished

    def close(self) -> None:
        if self.open:
            self.stream.write("", style_func=_no_style)
            self.open = False


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


class Command(TokenCommand):
    help = (
        "Delete API tokens that were revoked or expired more than --older-than ago "
        "(default 90d), in batches of --batch-size. Their audit events are kept, with "
        "the token's key id, so the history stays readable. --dry-run only counts."
    )
    option_fields = frozenset({"older_than", "batch_size"})

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            default="90d",
            help="Prune tokens that ended at least this long ago: 90d, 12w, 36h, or 0 "
            "for every ended token (default 90d).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be pruned; delete nothing."
        )
        parser.add_argument(
            "--batch-size",
            default=DEFAULT_BATCH_SIZE,
            help=f"Tokens deleted per transaction, 1 to {MAX_BATCH_SIZE} "
            f"(default {DEFAULT_BATCH_SIZE}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        older_than = _older_than(options["older_than"])
        # A live counter is for a person watching; logs and cron mail get the summary.
        progress = _Progress(self.stderr) if self.stderr.isatty() else None
        try:
            result = services.prune_tokens(
                older_than=older_than,
                dry_run=options["dry_run"],
                batch_size=_batch_size(options["batch_size"]),
                progress=progress,
            )
        finally:
            if progress is not None:
                progress.close()
        cutoff = result.cutoff.isoformat()
        tokens = _plural(result.tokens, "token")
        if result.dry_run:
            self.stdout.write(
                f"Would prune {tokens} that ended before {cutoff}; nothing was deleted."
            )
        else:
            events = _plural(result.events_kept, "audit event")
            self.stdout.write(f"Pruned {tokens} that ended before {cutoff}; {events} kept.")
