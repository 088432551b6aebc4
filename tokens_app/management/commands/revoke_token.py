"""``manage.py revoke_token``: revoke one token by key id or by the token itself."""

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser

from tokens_app import services
from tokens_app.management.base import TokenCommand, validation_message


class Command(TokenCommand):
    help = "Revoke a token at once. Name it by its key id or paste the whole token."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("reference", metavar="KEY_ID_OR_TOKEN", help="Key id or full token.")
        parser.add_argument(
            "--reason", default="", help="Why it is revoked (kept in the audit trail)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        token = services.find_token(options["reference"])
        if token is None:
            raise CommandError("no token matches that key id or token")
        try:
            revoked = services.revoke_token(token, reason=options["reason"], via="command")
        except ValidationError as exc:
            raise CommandError(validation_message(exc)) from None
        owner = token.owner.get_username()
        if revoked:
            self.stdout.write(f"Revoked token {token.key_id} ({token.name!r} of {owner}).")
        else:
            self.stdout.write(
                f"Token {token.key_id} ({token.name!r} of {owner}) was already revoked."
            )
