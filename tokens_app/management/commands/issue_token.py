"""``manage.py issue_token``: issue a token from a shell or a deploy script."""

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.core.management.base import CommandError, CommandParser
from django.utils import timezone

from tokens_app import services
from tokens_app.core.durations import parse_duration
from tokens_app.management.base import TokenCommand, dumps, token_as_dict

T = TypeVar("T")


def _duration(value: str) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _moment(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(
            f"invalid --expires-at {value!r}: use ISO-8601, e.g. 2030-01-31T12:00:00+00:00"
        ) from None
    # A date without a zone is read in the project's TIME_ZONE, as Django does.
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment


def _optional(convert: Callable[[str], T], value: str | None) -> T | None:
    # An empty value ("--expires-in=$UNSET") is an error, not a silent default.
    return None if value is None else convert(value)


def _scope_list(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",")]
    if not value.strip() or any(not name for name in names):
        raise CommandError(f"invalid --scopes {value!r}: give comma-separated scope names")
    return names


def _networks(values: list[str]) -> list[str]:
    entries = [entry.strip() for value in values for entry in value.split(",")]
    if any(not entry for entry in entries):
        raise CommandError("invalid --allow-ip: give an address or CIDR network, e.g. 10.0.0.0/8")
    return entries


def _non_empty(flag: str, value: str | None) -> str:
    # Given but empty ("--rate=$UNSET") is a mistake, not a request for the default.
    if value is not None and not value.strip():
        raise CommandError(f"invalid {flag}: give a value such as 1000/h")
    return value or ""


class Command(TokenCommand):
    help = (
        "Issue an API token for USERNAME and print it once on stdout (alone, so "
        "TOKEN=$(manage.py issue_token ...) works). The token cannot be shown again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="Owner of the token (an existing, active user).")
        parser.add_argument(
            "--name", required=True, help="Name, unique among the owner's active tokens."
        )
        parser.add_argument(
            "--scopes", required=True, help="Comma-separated scopes, e.g. notes:read,notes:write."
        )
        expiry = parser.add_mutually_exclusive_group()
        expiry.add_argument("--expires-in", help="Lifetime such as 30d, 12h or 90m.")
        expiry.add_argument("--expires-at", help="Expiry as ISO-8601, e.g. 2030-01-31T12:00:00Z.")
        expiry.add_argument(
            "--no-expiry", action="store_true", help="Never expire (only if settings allow it)."
        )
        parser.add_argument("--description", default="", help="Free text: what the token is for.")
        parser.add_argument(
            "--allow-ip",
            action="append",
            default=[],
            metavar="CIDR",
            help="Address or CIDR network the token works from (repeat, or comma-separate).",
        )
        parser.add_argument(
            "--rate",
            help="Rate limit such as 1000/h (default: DEFAULT_TOKEN_RATE, if set).",
        )
        parser.add_argument(
            "--json", action="store_true", help="Print one JSON object (key 'token') instead."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        owner = self.get_user(options["username"])
        issued = services.issue_token(
            owner,
            name=options["name"],
            scopes=_scope_list(options["scopes"]),
            description=options["description"],
            expires_in=_optional(_duration, options["expires_in"]),
            expires_at=_optional(_moment, options["expires_at"]),
            never_expires=options["no_expiry"],
            allowed_ips=_networks(options["allow_ip"]),
            rate_limit=_non_empty("--rate", options["rate"]),
            caller=self.caller,
        )
        if options["json"]:
            self.stdout.write(dumps({"token": issued.plaintext, **token_as_dict(issued.token)}))
        else:
            self.stdout.write(issued.plaintext)
